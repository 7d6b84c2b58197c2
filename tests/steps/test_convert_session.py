"""convert_session: a session's scans converted one after another, restartable per scan."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dicomfake import write_series

from xnat_prep import convert, paths, receipts

SCANS = ("1-T1w", "2-T2w", "3-FLAIR", "4-DWI")


def session_source(root: Path) -> Path:
    """A session's DICOM folder as the download leaves it: <scan>/ beside <scan>.json."""
    source = root / "dicom" / "E1"
    for i, scan in enumerate(SCANS, start=1):
        write_series(source / scan, n_slices=2 + i, size=8 + 4 * i, series_number=i, description=scan)
        (source / f"{scan}.json").write_text("{}\n")
    return source


def command(source: Path, receipt: Path, scans=SCANS, *extra: str) -> list[str]:
    tasks = [{"scan": s, "scan_id": s.split("-")[0], "scan_type": s.split("-")[1]} for s in scans]
    cmd = [sys.executable, "-m", "xnat_prep.cli", "--log", str(receipt.parent.parent / "log")]
    return [
        *cmd,
        "convert-session",
        "--source",
        str(source),
        "--scans",
        json.dumps(tasks),
        "--receipt",
        str(receipt),
        *extra,
    ]


def fake_dcm2niix(folder: Path, when: str, action: str) -> dict[str, str]:
    """An environment whose dcm2niix does ``action`` for the scan ``when``, else the real one."""
    real = convert.dcm2niix_binary()
    folder.mkdir(parents=True, exist_ok=True)
    fake = folder / "dcm2niix"
    fake.write_text(f'#!/bin/sh\ncase "$*" in *{when}*) {action};; esac\nexec {real} "$@"\n')
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


def state(receipt: Path) -> dict[str, tuple[int, list[tuple[str, str]]]]:
    """Per scan with a receipt: its receipt's mtime and its outputs' (name, md5)."""
    out = {}
    for scan in SCANS:
        path = paths.outputs_of(receipt) / f"{scan}.json"
        if path.exists():
            data = receipts.read(path)
            out[scan] = (path.stat().st_mtime_ns, sorted((o["name"], o["md5"]) for o in data["outputs"]))
    return out


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """One uninterrupted conversion of the session: the md5s every other run must reproduce."""
    root = tmp_path_factory.mktemp("clean")
    receipt = root / "nifti" / "E1.json"
    subprocess.run(command(session_source(root), receipt), check=True)
    return {scan: outputs for scan, (_, outputs) in state(receipt).items()}


def test_kill_9_during_a_session_then_rerun_converts_only_the_unfinished_scans(tmp_path, clean):
    source, receipt = session_source(tmp_path), tmp_path / "nifti" / "E1.json"
    # the job is killed (-9) while dcm2niix converts its third scan
    env = fake_dcm2niix(tmp_path / "bin", "3-FLAIR", "kill -9 $PPID; sleep 1; exit 1")
    killed = subprocess.run(command(source, receipt), env=env, check=False)
    assert killed.returncode == -9
    before = state(receipt)
    assert set(before) == {"1-T1w", "2-T2w"} and not receipt.exists()
    assert any(receipt.parent.glob("E1/.3-FLAIR.*.tmp"))  # the killed attempt's temporary folder
    # what a kill between atomic_write's temporary file and its rename leaves: a receipt's .part
    # (of a scan done before, of the scan in flight, of the session receipt)
    parts = [receipt.parent / "E1" / f".{s}.json.k1ll3d.part" for s in ("1-T1w", "3-FLAIR")]
    settings = receipt.parent / "E1" / f".{paths.CONVERT_SETTINGS_NAME}.k1ll3d.part"
    for part in [*parts, settings, receipt.parent / ".E1.json.k1ll3d.part"]:
        part.write_text('{"half": ')
    subprocess.run(command(source, receipt), check=True)
    assert not list(receipt.parent.glob(".*.part")) and not settings.exists()
    after = state(receipt)
    assert {s: after[s] for s in before} == before  # untouched: not converted again
    assert {scan: outputs for scan, (_, outputs) in after.items()} == clean  # identical md5s
    done = receipts.read(receipt)
    assert {s: r["converted_now"] for s, r in done["scans"].items()} == {
        "1-T1w": False,
        "2-T2w": False,
        "3-FLAIR": True,
        "4-DWI": True,
    }
    assert sorted(p.name for p in (receipt.parent / "E1").iterdir()) == sorted(
        [*SCANS, *(f"{s}.json" for s in SCANS), paths.CONVERT_SETTINGS_NAME]
    )  # no temporary folder left
    # and the convert receipts stand for the scans' in the upload and variables steps
    assert convert.scan_receipts([receipt]) == [receipt.parent / "E1" / f"{s}.json" for s in SCANS]


def test_a_scan_stopped_by_the_machine_fails_the_job_after_the_others(tmp_path, clean):
    source, receipt = session_source(tmp_path), tmp_path / "nifti" / "E1.json"
    env = fake_dcm2niix(tmp_path / "bin", "2-T2w", "exit 7")  # output folder read-only
    proc = subprocess.run(command(source, receipt), env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert (
        line.startswith("xnat-prep convert-session: error: ")
        and "1 of 4 scan(s) not converted: 2-T2w" in line
    )
    assert set(state(receipt)) == {"1-T1w", "3-FLAIR", "4-DWI"} and not receipt.exists()
    first = state(receipt)
    subprocess.run(command(source, receipt), check=True)
    after = state(receipt)
    assert {s: after[s] for s in first} == first
    assert {scan: outputs for scan, (_, outputs) in after.items()} == clean


def test_dcm2niix_asked_to_stop_stops_the_session(tmp_path, clean):
    """SIGTERM to dcm2niix alone (a user, a scheduler) is a stop, not a machine fault on one scan:
    the scans after it are not started, no session receipt; the rerun converts the rest."""
    source, receipt = session_source(tmp_path), tmp_path / "nifti" / "E1.json"
    env = fake_dcm2niix(tmp_path / "bin", "2-T2w", "kill -TERM $$")
    proc = subprocess.run(command(source, receipt), env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert "dcm2niix was killed by SIGTERM" in line and "2-T2w" in line
    assert set(state(receipt)) == {"1-T1w"} and not receipt.exists()
    subprocess.run(command(source, receipt), check=True)
    assert {scan: outputs for scan, (_, outputs) in state(receipt).items()} == clean


def test_new_settings_new_dicom_or_a_new_scan_convert_what_they_change(tmp_path):
    source, receipt = session_source(tmp_path), tmp_path / "nifti" / "E1.json"
    subprocess.run(command(source, receipt, SCANS[:3]), check=True)
    first = state(receipt)
    # a scan added to the selection: only it is converted
    subprocess.run(command(source, receipt), check=True)
    second = state(receipt)
    assert {s: second[s] for s in first} == first and set(second) == set(SCANS)
    # a scan downloaded again (its DICOM receipt rewritten): only it is converted
    (source / "2-T2w.json").write_text('{"again": true}\n')
    subprocess.run(command(source, receipt), check=True)
    third = state(receipt)
    assert [s for s in SCANS if third[s][0] != second[s][0]] == ["2-T2w"]
    # other dcm2niix options: every scan is converted again
    subprocess.run(command(source, receipt, SCANS, "--extra=-x n"), check=True)
    fourth = state(receipt)
    assert all(fourth[s][0] != third[s][0] for s in SCANS)
    assert receipts.read(receipt)["n_converted_now"] == len(SCANS)
    # the same options again: nothing to convert
    subprocess.run(command(source, receipt, SCANS, "--extra=-x n"), check=True)
    assert state(receipt) == fourth and receipts.read(receipt)["n_converted_now"] == 0
    # another gzip level: every scan again, and back to the default: again
    subprocess.run(command(source, receipt, SCANS, "--extra=-x n", "--gz-level=9"), check=True)
    fifth = state(receipt)
    assert all(fifth[s][0] != fourth[s][0] for s in SCANS)
    subprocess.run(command(source, receipt, SCANS, "--extra=-x n"), check=True)
    assert receipts.read(receipt)["n_converted_now"] == len(SCANS)


def test_bad_scans_argument_is_one_line(tmp_path):
    receipt = tmp_path / "nifti" / "E1.json"
    cmd = command(tmp_path, receipt)
    cmd[cmd.index("--scans") + 1] = '[{"scan": "../x"}]'
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and not receipt.exists()
    [line] = proc.stderr.splitlines()
    assert line.startswith("xnat-prep convert-session: error: --scans")
    shutil.rmtree(tmp_path / "nifti", ignore_errors=True)
