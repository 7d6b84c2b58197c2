"""Peak memory of one transfer job on a big scan: a scan of a few very large files, uploaded to
a server of its own (streamed PUTs), downloaded by ``xnat-prep download-session`` exactly as the
``download_session`` rule runs it, with the job's peak RSS from GNU time.

The contents are random (incompressible) bytes, not DICOM: the transfer path never parses
DICOM, and random data is the worst case for any compression on the way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import requests

from bench import measure
from bench.study import PASSWORD, USER
from xnat_prep import manifest
from xnat_prep.server.testing import ServerHandle

MiB = 1 << 20
SESSION = "/data/projects/BIG/subjects/BIG01/experiments/BIG01_MR1"


def _random_bytes(total: int) -> Iterator[bytes]:
    for offset in range(0, total, MiB):
        yield os.urandom(min(MiB, total - offset))


def upload(srv: ServerHandle, total_bytes: int, n_files: int) -> tuple[str, list[manifest.FileRow]]:
    """Create the big scan (scan 1, resource DICOM); its session ID and manifest file rows."""
    http = requests.Session()
    http.auth = (USER, PASSWORD)
    http.put(f"{srv.url}/data/projects/BIG", timeout=60).raise_for_status()
    resp = http.put(f"{srv.url}{SESSION}", params={"xsiType": "xnat:mrSessionData"}, timeout=60)
    resp.raise_for_status()
    session_id = resp.text.strip()
    scan = f"{srv.url}/data/experiments/{session_id}/scans/1"
    http.put(
        scan, params={"xsiType": "xnat:mrScanData", "xnat:mrScanData/type": "BIG"}, timeout=60
    ).raise_for_status()
    per_file = total_bytes // n_files
    for i in range(n_files):
        http.put(
            f"{scan}/resources/DICOM/files/big{i:03d}.dcm", data=_random_bytes(per_file), timeout=3600
        ).raise_for_status()
    listing = http.get(f"{scan}/resources/DICOM/files", params={"format": "json"}, timeout=60).json()
    rows = [
        manifest.FileRow("1", "DICOM", r["Name"], int(r["Size"]), r["digest"], r["URI"])
        for r in listing["ResultSet"]["Result"]
    ]
    return session_id, rows


def download_job(
    srv: ServerHandle, session_id: str, files: list[manifest.FileRow], work: Path, env: dict[str, str]
) -> measure.Run:
    """One ``download-session`` job (the ``download_session`` rule's command) for a session of just
    the big scan; its wall time and peak RSS."""
    file_list = work / "files.tsv"
    manifest.write_tsv(file_list, files)
    cmd = [
        sys.executable,
        "-m",
        "xnat_prep.cli",
        "download-session",
        "--files",
        str(file_list),
        "--session-id",
        session_id,
        "--scans",
        '[{"scan_id": "1", "resource": "DICOM", "scan": "1-BIG"}]',
        "--receipt",
        str(work / "BIG.json"),
        "--host",
        srv.url,
    ]
    return measure.run(cmd, env=env, log=work / "download-session.log")
