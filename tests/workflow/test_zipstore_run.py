"""dicom.store zip end to end through the bundled server and the real dcm2niix: the NIfTI are those
of the files mode, at most 2 DICOM files per scan stay on the shared filesystem, a verified zip
costs no request again, a changed zip is detected and fetched again, and a run killed during a zip
download or during conversion resumes to the same result."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from workflow_helpers import Study, all_files, file_md5s, read_json

from xnat_prep import dicomzip, manifest, paths

pytestmark = pytest.mark.workflow

ZIP_PATH = "/resources/DICOM/files"
LOCAL_ONLY = {"upload": {"enabled": False}, "custom_variables": {"enabled": False}}
# a 3D, a 4D, a DWI series and a scan without type, both sessions (no upload: the NIfTI are compared)
SCANS = {"include_types": ["T1w*", "fMRI*", "DWI*", ""]}
TIMEOUT = 1200  # a loaded shared machine: the runs are small, the CPU is not ours


def zip_config(study: Study, workdir: Path) -> dict[str, Any]:
    node = workdir / "node-local"
    node.mkdir(parents=True, exist_ok=True)
    return study.config(workdir, dicom={"store": "zip", "local_tmp": str(node)}, scans=SCANS, **LOCAL_ONLY)


@pytest.fixture(scope="module")
def reference(study: Study, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same selection in files mode (the default): its output root."""
    workdir = tmp_path_factory.mktemp("files-mode")
    result = study.snakemake(workdir, study.config(workdir, scans=SCANS, **LOCAL_ONLY), timeout=TIMEOUT)
    assert result.rc == 0, result.output[-3000:]
    return workdir / "results"


def zip_gets(result_requests: list[dict[str, Any]]) -> list[str]:
    """The scan zip GETs of a run, by path."""
    return [
        r["path"]
        for r in result_requests
        if r["method"] == "GET" and r["path"].endswith(ZIP_PATH) and "format=zip" in r["query"]
    ]


def scan_uri(scan: manifest.ScanRow) -> str:
    return f"/data/experiments/{scan.session_id}/scans/{scan.scan_id}{ZIP_PATH}"


def damage_an_entry(zipped: Path) -> None:
    """Flip one byte inside the first entry's data (same size; a new mtime)."""
    with zipfile.ZipFile(zipped) as archive:
        first = archive.read(archive.infolist()[0])
    data = bytearray(zipped.read_bytes())
    data[data.index(first[:4096]) + len(first[:4096]) // 2] ^= 0xFF
    zipped.write_bytes(bytes(data))


def dicom_files(root: Path) -> list[Path]:
    return all_files(root / "dicom")


def check_same_nifti(root: Path, reference: Path) -> list[manifest.ScanRow]:
    rows = manifest.read_scans(root / paths.SCANS_TSV)
    assert len(rows) == len(manifest.read_scans(reference / paths.SCANS_TSV)) > 0
    for scan in rows:
        where = (root, scan.project, scan.subject, scan.session, scan.scan)
        clean = (reference, scan.project, scan.subject, scan.session, scan.scan)
        assert file_md5s(paths.nifti_dir(*where)) == file_md5s(paths.nifti_dir(*clean)), scan.scan
        mine, theirs = read_json(paths.convert_receipt(*where)), read_json(paths.convert_receipt(*clean))
        assert (mine["status"], mine["n_dicom"], mine["n_converted"]) == (
            theirs["status"],
            theirs["n_dicom"],
            theirs["n_converted"],
        ), scan.scan
        assert [(o["name"], o["md5"]) for o in mine["outputs"]] == [
            (o["name"], o["md5"]) for o in theirs["outputs"]
        ]
    return rows


def test_zip_mode_end_to_end(study: Study, reference: Path, tmp_path: Path) -> None:
    config = zip_config(study, tmp_path)
    root = tmp_path / "results"
    ram_before = set(dicomzip.RAM_TMP.glob("xnat-prep-*"))
    first = study.snakemake(tmp_path, config, timeout=TIMEOUT)
    assert first.rc == 0, first.output[-3000:]
    assert "Traceback" not in first.output
    rows = check_same_nifti(root, reference)
    assert sorted(zip_gets(first.requests)) == sorted(scan_uri(s) for s in rows)  # one GET per scan

    # the shared filesystem holds one zip + one receipt per scan (and one receipt per session)
    sessions = {(s.project, s.subject, s.session) for s in rows}
    files = dicom_files(root)
    assert len(files) == 2 * len(rows) + len(sessions)
    assert len(files) - len(sessions) <= 2 * len(rows)
    for scan in rows:
        where = (root, scan.project, scan.subject, scan.session, scan.scan)
        zipped, receipt = paths.dicom_zip(*where), read_json(paths.download_receipt(*where))
        assert zipped.is_file() and not paths.dicom_dir(*where).exists()
        assert receipt["store"] == "zip" and receipt["n_files"] == scan.n_files
        assert receipt["zip"]["size"] == zipped.stat().st_size
        assert receipt["zip"]["mtime_ns"] == zipped.stat().st_mtime_ns
        assert len(receipt["listing_md5"]) == 32 and "files" not in receipt  # the manifest lists them
    # every unpacked copy removed; the scans were unpacked in RAM (all within dicom.ram_tmp_mb)
    assert list((tmp_path / "node-local").iterdir()) == []
    assert not [p for p in dicomzip.RAM_TMP.glob(f"xnat-prep-{dicomzip._host()}.*") if p not in ram_before]
    log = "\n".join(p.read_text() for p in (tmp_path / "logs" / "convert_session").rglob("*.log"))
    assert log.count(f"unpacked in {dicomzip.RAM_TMP}/") == len(rows), log[-2000:]
    plan = subprocess.run(
        ["xnat-prep", "plan", "--output-root", str(root), "--store", "zip"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "verified locally" in plan.stdout and f"{len(rows)}" in plan.stdout

    # rerun: nothing to do, no request for any zip
    again = study.snakemake(tmp_path, config, timeout=TIMEOUT)
    assert zip_gets(again.requests) == []

    # the download jobs run again (their session receipts gone, and a conversion in each session
    # to redo for the report, which needs them): verified zips cost nothing, a zip changed on disk since (its
    # receipt still there) is detected and fetched again, alone; a zip only touched is kept
    damaged = rows[0]
    touched = next(s for s in rows if s.session != damaged.session)
    bad = paths.dicom_zip(root, damaged.project, damaged.subject, damaged.session, damaged.scan)
    damage_an_entry(bad)
    same = paths.dicom_zip(root, touched.project, touched.subject, touched.session, touched.scan)
    os.utime(same, ns=(time.time_ns(), time.time_ns() + 10**9))  # same bytes, another mtime
    for scan in (damaged, touched):
        where = (root, scan.project, scan.subject, scan.session)
        paths.session_download_receipt(*where).unlink(missing_ok=True)
        paths.session_convert_receipt(*where).unlink(missing_ok=True)  # the session's conversion reruns ...
        paths.convert_receipt(*where, scan.scan).unlink()  # ... and converts this scan again
    (root / paths.SUMMARY_TSV).unlink()  # the report needs them again (missing inputs alone rerun nothing)
    redo = study.snakemake(tmp_path, config, timeout=TIMEOUT)
    assert redo.rc == 0, redo.output[-3000:]
    assert zip_gets(redo.requests) == [scan_uri(damaged)]
    for scan, zipped in ((damaged, bad), (touched, same)):
        receipt = read_json(paths.download_receipt(root, scan.project, scan.subject, scan.session, scan.scan))
        assert receipt["zip"]["mtime_ns"] == zipped.stat().st_mtime_ns
    log = "\n".join(p.read_text() for p in (tmp_path / "logs" / "download_session").rglob("*.log"))
    assert f"{bad}: changed since it was verified" in log or f"{bad.relative_to(tmp_path)}: changed" in log
    check_same_nifti(root, reference)  # the zip fetched again converts to the same NIfTI


def running(session: int, word: bytes) -> list[int]:
    """PIDs of the processes of process session ``session`` whose command line holds ``word``."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if word in (proc / "cmdline").read_bytes() and os.getsid(int(proc.name)) == session:
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def kill_when(run: subprocess.Popen, seen, what: str, timeout: float = 900) -> None:
    """SIGKILL the whole run (every job with it) once ``seen()`` is true."""
    deadline = time.monotonic() + timeout
    while not seen():
        assert run.poll() is None and time.monotonic() < deadline, f"no {what} seen"
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()


def test_zip_mode_killed_during_download_and_conversion(
    study: Study, reference: Path, tmp_path: Path
) -> None:
    config = zip_config(study, tmp_path)
    root = tmp_path / "results"
    uri_of = {}  # a scan's zip path -> its URI on the server

    def verified() -> dict[Path, int]:
        """The zips with their receipt (verified, kept), with their mtime."""
        return {
            p: p.stat().st_mtime_ns for p in root.glob("dicom/*/*/*/*.zip") if p.with_suffix(".json").exists()
        }

    # 1. kill -9 while a zip streams in (each zip answer is held back 800 ms), after some scans
    # of the session are kept already
    study.faults(f"latency_ms=800,path={ZIP_PATH}$")
    try:
        run = study.snakemake(tmp_path, config, background=True)
        assert isinstance(run, subprocess.Popen)
        kill_when(
            run,
            lambda: len(list(root.glob("dicom/*/*/*/*.zip"))) >= 2 and running(run.pid, b"download-session"),
            "zip download",
        )
    finally:
        study.faults(None)
    rows = manifest.read_scans(root / paths.SCANS_TSV)
    for scan in rows:
        uri_of[paths.dicom_zip(root, scan.project, scan.subject, scan.session, scan.scan)] = scan_uri(scan)
    kept = verified()
    assert kept, "no scan finished before the kill"
    assert len(kept) < len(rows)  # the kill came before the end
    # nothing at a final name is unverified: a zip gets its name only once every entry has checked
    # out, and its receipt right after; a kill between the two leaves it without one (the rerun
    # checks it again from the disk, no request), so it must hold exactly the manifest's files
    for scan in rows:
        zipped = paths.dicom_zip(root, scan.project, scan.subject, scan.session, scan.scan)
        if zipped.exists() and zipped not in kept:
            listed = manifest.read_session_files(
                paths.session_files(root, scan.project, scan.subject, scan.session)
            )[scan.scan_id]
            expected = {f.path: (f.size, f.md5) for f in listed if f.resource == scan.resource}
            assert dicomzip.check_entries(zipped, expected) == [], zipped
            kept[zipped] = zipped.stat().st_mtime_ns  # and it is not fetched or rewritten either
    assert sorted(root.glob("dicom/*/*/*/*.zip")) == sorted(kept)

    # 2. resume, and kill -9 during the conversions (a convert job unpacking or converting a zip)
    assert study.snakemake(tmp_path, config, "--unlock").rc == 0
    start = len(study.server.requests())
    run = study.snakemake(tmp_path, config, background=True)
    assert isinstance(run, subprocess.Popen)
    kill_when(run, lambda: bool(running(run.pid, b"convert-session")), "conversion")
    second = zip_gets(study.server.requests()[start:])
    assert not {uri_of[z] for z in kept} & set(second)  # verified zips are not fetched again
    kept = {**kept, **verified()}

    # 3. resume to the end: the NIfTI of the files mode, no verified zip fetched or rewritten
    assert study.snakemake(tmp_path, config, "--unlock").rc == 0
    resumed = study.snakemake(tmp_path, config, timeout=TIMEOUT)
    assert resumed.rc == 0, resumed.output[-3000:]
    check_same_nifti(root, reference)
    assert not {uri_of[z] for z in kept} & set(zip_gets(resumed.requests))
    for zipped, mtime in kept.items():
        assert zipped.stat().st_mtime_ns == mtime, zipped
    sessions = {(s.project, s.subject, s.session) for s in rows}
    assert len(dicom_files(root)) == 2 * len(rows) + len(sessions)
    hidden = [p for p in all_files(root) if any(part.startswith(".") for part in p.relative_to(root).parts)]
    assert hidden == []  # no temporary file or folder of the killed runs is left in the outputs
    assert dicomzip.sweep_stale(dicomzip.RAM_TMP) == 0  # nor in RAM: the resumed conversions swept it
