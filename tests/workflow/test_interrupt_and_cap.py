"""Killed runs resume to the same result; `xnat.max_connections` caps concurrent XNAT requests."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from datetime import datetime
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from workflow_helpers import Run, Study, all_files, file_md5s, read_json

from xnat_prep import manifest, paths

pytestmark = pytest.mark.workflow

LOCAL_ONLY = {"upload": {"enabled": False}, "custom_variables": {"enabled": False}}
ZIP_PATH = "/resources/DICOM/files"
LATENCY_MS = 4000


def zip_downloads(requests: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(start, end) of every scan zip download, from the server's request log.

    The log's time is the end (to the second, or finer); the start is that minus the duration.
    """
    out = []
    for r in requests:
        if r["path"].endswith(ZIP_PATH) and "format=zip" in r["query"]:
            end = datetime.fromisoformat(r["time"]).timestamp()
            out.append((end - r["duration_ms"] / 1000, end))
    return out


def largest_overlap(intervals: list[tuple[float, float]]) -> float:
    return max((min(a[1], b[1]) - max(a[0], b[0]) for a, b in combinations(intervals, 2)), default=0.0)


def test_max_connections_caps_downloads_unless_resources_given(study: Study, tmp_path: Path) -> None:
    """Two sessions (one download job each) of one scan, each zip takes 4 s, 2 cores. With a cap
    of 1 they do not overlap (with whole-second end times serial requests can appear to overlap by
    up to 1 s); with `--resources xnat_api=2` they run side by side (apparent overlap about 3-4 s)."""
    scans = {"include_types": ["fMRI*"]}  # one series in each subject's session
    config = study.config(tmp_path, xnat={"max_connections": 1}, scans=scans)
    config.update(LOCAL_ONLY)
    study.faults(f"latency_ms={LATENCY_MS},path={ZIP_PATH}$")
    try:
        capped = study.snakemake(tmp_path / "capped", config)
        lifted = study.snakemake(tmp_path / "lifted", config, "--resources", "xnat_api=2")
    finally:
        study.faults(None)
    assert capped.rc == 0 and lifted.rc == 0, (capped.output + lifted.output)[-3000:]
    serial, parallel = zip_downloads(capped.requests), zip_downloads(lifted.requests)
    assert len(serial) == len(parallel) == 2
    assert largest_overlap(serial) <= 1.0
    assert largest_overlap(parallel) >= 1.5


def running_downloads(session: int) -> list[int]:
    """PIDs of download_session job processes of the snakemake run in process session ``session``."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (
                b"download-session" in (proc / "cmdline").read_bytes()
                and os.getsid(int(proc.name)) == session
            ):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def check_nothing_partial_looks_complete(root: Path, clean: Run) -> None:
    """Every file a later run would trust is complete: verified DICOM, whole NIfTI folders."""
    rows = manifest.read_scans(root / paths.SCANS_TSV)
    for scan in rows:
        where = (root, scan.project, scan.subject, scan.session, scan.scan)
        expected = {
            f.path: f.md5 for f in manifest.read_session_files(paths.session_files(*where[:4]))[scan.scan_id]
        }
        dicom = paths.dicom_dir(*where)
        visible = (
            {k: v for k, v in file_md5s(dicom).items() if not Path(k).name.startswith(".")}
            if dicom.exists()
            else {}
        )
        assert all(expected[k] == v for k, v in visible.items()), scan.scan  # only verified files
        if paths.download_receipt(*where).exists():
            assert visible == expected
        nifti = paths.nifti_dir(*where)
        if nifti.exists():
            assert file_md5s(nifti) == file_md5s(paths.nifti_dir(*clean.where(scan))), scan.scan


def test_killed_run_resumes_to_the_clean_result(study: Study, main_run: Run, tmp_path: Path) -> None:
    rng = random.Random(int(time.time()))
    config = study.config(tmp_path, scans={"include_types": ["T1w*", "fMRI*", "DWI*", ""]}, **LOCAL_ONLY)
    root = tmp_path / "results"
    study.faults(f"latency_ms=800,path={ZIP_PATH}$")
    try:
        run = study.snakemake(tmp_path, config, background=True)
        assert isinstance(run, subprocess.Popen)
        deadline = time.monotonic() + 120
        # wait for a scan being fetched (its work folder exists while its zip is awaited, 800 ms),
        # kill that download job, later everything
        while not list(root.glob("dicom/*/*/*/.*.part")) or not running_downloads(run.pid):
            assert run.poll() is None and time.monotonic() < deadline, "no download seen"
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.5))
        for pid in running_downloads(run.pid)[:1]:
            os.kill(pid, signal.SIGKILL)
        time.sleep(rng.uniform(0.3, 2.5))
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    finally:
        study.faults(None)
    receipts_before = list(root.glob("dicom/*/*/*/*.json"))
    check_nothing_partial_looks_complete(root, main_run)

    assert study.snakemake(tmp_path, config, "--unlock").rc == 0
    resumed = study.snakemake(tmp_path, config)
    assert resumed.rc == 0, resumed.output[-3000:]
    rows = manifest.read_scans(root / paths.SCANS_TSV)
    assert {r.scan_type for r in rows} == {"T1w_MPRAGE", "fMRI_rest", "DWI_dir6", ""}
    assert len(receipts_before) < len(rows)  # the kill came before the end
    for scan in rows:
        where = (root, scan.project, scan.subject, scan.session, scan.scan)
        clean = main_run.where(scan)
        assert file_md5s(paths.dicom_dir(*where)) == file_md5s(paths.dicom_dir(*clean)), scan.scan
        assert file_md5s(paths.nifti_dir(*where)) == file_md5s(paths.nifti_dir(*clean)), scan.scan
        assert read_json(paths.convert_receipt(*where))["status"] == "converted"
    hidden = [p for p in all_files(root) if any(part.startswith(".") for part in p.relative_to(root).parts)]
    assert hidden == []  # no temporary file or folder of the killed run is left


def test_kill_during_a_session_conversion_reruns_only_its_unfinished_scans(
    study: Study, main_run: Run, tmp_path: Path
) -> None:
    """kill -9 of Snakemake and its jobs as soon as a convert_session job has converted a scan of
    its session: after --unlock the rerun converts only the scans without a receipt (the others'
    receipts are not rewritten) and the NIfTI files are the clean run's."""
    config = study.config(tmp_path, **LOCAL_ONLY)
    root = tmp_path / "results"
    run = study.snakemake(tmp_path, config, background=True)
    assert isinstance(run, subprocess.Popen)
    deadline = time.monotonic() + 240

    def inside_a_session() -> bool:
        done = root.glob("nifti/*/*/*/*-*.json")
        return any(not paths.receipt_of(p.parent).exists() for p in done)

    while not inside_a_session():
        if run.poll() is not None or time.monotonic() > deadline:
            run.kill()
            pytest.fail(f"no conversion seen: {''.join(run.communicate())[-3000:]}")
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    before = {p: p.stat().st_mtime_ns for p in root.glob("nifti/*/*/*/*-*.json")}
    unfinished = {p.parent for p in before if not paths.receipt_of(p.parent).exists()}
    assert unfinished  # killed inside a session, some of its scans done

    assert study.snakemake(tmp_path, config, "--unlock").rc == 0
    resumed = study.snakemake(tmp_path, config)
    assert resumed.rc in (0, 1), resumed.output[-3000:]  # 1: the demo's rejected series is reported
    rows = manifest.read_scans(root / paths.SCANS_TSV)
    for scan in rows:
        where = (root, scan.project, scan.subject, scan.session, scan.scan)
        assert file_md5s(paths.nifti_dir(*where)) == file_md5s(paths.nifti_dir(*main_run.where(scan)))
        assert (
            read_json(paths.convert_receipt(*where)) | VOLATILE_CONVERT
            == read_json(paths.convert_receipt(*main_run.where(scan))) | VOLATILE_CONVERT
        ), scan.scan
    assert {p: p.stat().st_mtime_ns for p in before} == before  # not converted again
    for folder in unfinished:  # its rerun converted only the scans the killed one had not
        receipt = read_json(paths.receipt_of(folder))
        assert receipt["n_converted_now"] == receipt["n_scans"] - sum(p.parent == folder for p in before)
    hidden = [p for p in all_files(root) if any(part.startswith(".") for part in p.relative_to(root).parts)]
    assert hidden == []  # the killed attempt's temporary folder is gone too


VOLATILE_CONVERT = {"date": "", "duration_s": 0}
