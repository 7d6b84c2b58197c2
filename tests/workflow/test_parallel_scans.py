"""Parallel scans within a session under the global cap: the server never sees more connections
or requests in flight than `xnat.max_connections`, with sessions and scans both in parallel."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from workflow_helpers import ADMIN, Study, file_md5s, read_json, users_file

from xnat_prep import manifest, paths
from xnat_prep.server.testing import running_server

pytestmark = pytest.mark.workflow

LOCAL_ONLY = {"upload": {"enabled": False}, "custom_variables": {"enabled": False}}
ZIP_PATH = "/resources/DICOM/files"


@pytest.fixture(scope="module")
def three_sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Study]:
    """A server of its own: DEMO with three subjects of one tiny session (4 scans) each."""
    from xnat_prep.demodata import seed_server

    base = tmp_path_factory.mktemp("parallel")
    with running_server(base / "xnat-data", users_file=users_file(base / "users.yaml")) as server:
        csv = base / "subjects.csv"
        seed_server(server.url, *ADMIN, "DEMO", 3, 1, "tiny", subject_labels=["P1", "P2", "P3"], csv=csv)
        yield Study(server, csv, base)


def stats(study: Study, method: str = "GET") -> dict:
    resp = requests.request(method, f"{study.url}/xapi/xnatprep/stats", auth=ADMIN, timeout=30)
    resp.raise_for_status()
    return resp.json()


def zip_overlaps(log: list[dict]) -> dict[str, int]:
    """Per session ID: the most of its scan zips the server was answering at once (the log's
    in_flight counts all requests, so this counts from the requests' own intervals)."""
    from datetime import datetime

    spans: dict[str, list[tuple[float, float]]] = {}
    for r in log:
        if r["path"].endswith(ZIP_PATH) and "format=zip" in r["query"]:
            end = datetime.fromisoformat(r["time"]).timestamp()
            spans.setdefault(r["path"].split("/")[3], []).append((end - r["duration_ms"] / 1000, end))
    most = {}
    for session, intervals in spans.items():
        points = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
        now = peak = 0
        for _, step in points:
            now += step
            peak = max(peak, now)
        most[session] = peak
    return most


def test_cap_holds_with_parallel_sessions_and_scans(three_sessions: Study, tmp_path: Path) -> None:
    """3 sessions x 4 scans, k = 2, cap 4, each zip answered after 1.5 s: two sessions at a time,
    two scans each; the server's count of connections and of requests in flight reaches 4 and
    never exceeds it (a job holding 1 unit for its 2 connections would make it 6), though the
    third job starts beside them and waits for its slots; k = 1 gives the same files and
    receipts (bar timings)."""
    study = three_sessions
    study.faults(f"latency_ms=1500,path={ZIP_PATH}$")
    try:
        runs = {}
        for k in (2, 1):
            config = study.config(
                tmp_path / f"k{k}", xnat={"max_connections": 4, "scans_in_parallel": k}, **LOCAL_ONLY
            )
            time.sleep(2)  # the faults request's connection is counted until the server sees it closed
            stats(study, "DELETE")
            result = study.snakemake(tmp_path / f"k{k}", config, "--cores", "4")
            assert result.rc == 0, result.output[-3000:]
            runs[k] = (result, stats(study))
    finally:
        study.faults(None)
    result, seen = runs[2]
    assert seen["max_connections"] == 4, seen  # the cap is used ...
    assert seen["max_in_flight"] == 4, seen  # ... and never exceeded
    assert max(r["connections"] for r in result.requests) <= 4
    # scans of one session side by side (the log's end times are whole seconds: at least 2)
    assert max(zip_overlaps(result.requests).values()) >= 2
    assert "--parallel 2" in result.output  # printshellcmds: the job got its units
    # the third session's job started beside the first two (Snakemake's limit is twice the cap
    # with the slot pool) and waited for its connection slots, ready to send: the cap held above
    logs = [p.read_text() for p in (tmp_path / "k2" / "logs" / "download_session").rglob("*.log")]
    assert len(logs) == 3
    assert sum("XNAT connection slot(s)" in text for text in logs) >= 1, logs
    _, serial = runs[1]
    assert serial["max_in_flight"] <= 4
    # same files and receipts with k = 1
    root2, root1 = tmp_path / "k2" / "results", tmp_path / "k1" / "results"
    rows = manifest.read_scans(root2 / paths.SCANS_TSV)
    assert len(rows) == 12
    for row in rows:
        key = (row.project, row.subject, row.session, row.scan)
        assert file_md5s(paths.dicom_dir(root2, *key)) == file_md5s(paths.dicom_dir(root1, *key))
        assert file_md5s(paths.nifti_dir(root2, *key)) == file_md5s(paths.nifti_dir(root1, *key))
        receipt2, receipt1 = (read_json(paths.download_receipt(r, *key)) for r in (root2, root1))
        assert without_timing(receipt2) == without_timing(receipt1)


def without_timing(data: dict) -> dict:
    return {k: v for k, v in data.items() if k not in ("duration_s", "finished")}
