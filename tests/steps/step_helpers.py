"""Helpers for the step tests: sessions imported into the real bundled server.

A module of its own (not conftest.py): test folders each have a conftest, and importing
`conftest` by name picks whichever folder pytest put first on sys.path.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import requests
from dicomfake import write_series

from xnat_prep.credentials import Credentials
from xnat_prep.manifest import FileRow
from xnat_prep.xnat_api import RetryPolicy

ADMIN = Credentials("admin", "admin", "test admin")
FAST_RETRY = RetryPolicy(attempts=8, total_seconds=60, backoff=0.02, max_backoff=0.2)


@dataclass
class Session:
    url: str
    session_id: str
    files: dict[str, list[FileRow]]  # scan ID -> the scan's DICOM files, as discovery lists them


def import_session(url: str, tmp: Path, label: str, series: list[dict]) -> Session:
    """Import one session (``series``: write_series kwargs) into project P1; list its files."""
    for i, kwargs in enumerate(series, start=1):
        write_series(tmp / label / str(i), series_number=i, **kwargs)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted((tmp / label).rglob("*.dcm")):
            zf.write(path, path.relative_to(tmp / label).as_posix())
    with requests.Session() as http:
        http.auth = (ADMIN.user, ADMIN.password)
        http.put(f"{url}/data/projects/P1").raise_for_status()
        answer = http.post(
            f"{url}/data/services/import",
            params={"project": "P1", "subject": f"sub-{label}", "session": label},
            data=buf.getvalue(),
            headers={"Content-Type": "application/zip"},
        )
        answer.raise_for_status()
        session_id = answer.text.strip().rsplit("/", 1)[1]
        files = {}
        for i in range(1, len(series) + 1):
            rows = http.get(
                f"{url}/data/experiments/{session_id}/scans/{i}/resources/DICOM/files",
                params={"format": "json"},
            ).json()["ResultSet"]["Result"]
            files[str(i)] = [
                FileRow(
                    str(i), "DICOM", r["URI"].split("/files/", 1)[1], int(r["Size"]), r["digest"], r["URI"]
                )
                for r in rows
            ]
    return Session(url, session_id, files)
