"""discover: scan selection, and one listing pass against the bundled server over HTTP."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xnat_prep import config, discover, manifest, paths
from xnat_prep.credentials import Credentials
from xnat_prep.demodata.protocols import session_protocol
from xnat_prep.discover import Selection
from xnat_prep.subjects import Subject
from xnat_prep.xnat_api import RetryPolicy

ADMIN = Credentials("admin", "admin", "test")


@pytest.mark.parametrize(
    ("selection", "scan_type", "description", "selected"),
    [
        (Selection(), "", "", True),  # "*" matches a scan without type
        (Selection(("",)), "", "x", True),
        (Selection(("",)), "T1w", "x", False),
        (Selection(("t1W*",)), "T1w_MPRAGE", "", True),  # case-insensitive
        (Selection(("*",), ("*LOCALIZER*",)), "localizer", "", False),
        (Selection(("*",), ("",)), "", "", False),
        (Selection(series_description="MPRAGE"), "T1w", "T1w_MPRAGE", True),
        (Selection(series_description="^MPRAGE"), "T1w", "T1w_MPRAGE", False),
        (Selection(series_description="(?i)mprage"), "T1w", "T1W_MPRAGE", True),
    ],
)
def test_selection(selection: Selection, scan_type: str, description: str, selected: bool) -> None:
    assert selection.matches(scan_type, description) is selected


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory):
    from xnat_prep.demodata import seed_server
    from xnat_prep.server.testing import running_server

    with running_server(tmp_path_factory.mktemp("discover") / "data") as server:
        seed_server(
            server.url, "admin", "admin", "DEMO", 1, 2, "tiny", edge_cases=True, subject_labels=["001"]
        )
        yield server


def run(server, tmp_path: Path, subjects: list[Subject], **scans):
    cfg = config.validate(
        {"xnat": {"host": server.url}, "subjects": {"csv": "-"}, "output_root": str(tmp_path), "scans": scans}
    )
    before = len(server.requests())
    result = discover.run_discovery(
        config.connection(cfg),
        subjects,
        discover.Selection.from_config(cfg["scans"]),
        cfg["output_root"],
        credentials=ADMIN,
        retry=RetryPolicy(attempts=8, backoff=0.01, max_backoff=0.05),
    )
    return result, server.requests()[before:]


def test_lists_each_level_once_and_writes_the_manifest(seeded, tmp_path: Path) -> None:
    result, requests = run(seeded, tmp_path, [Subject("DEMO", "001", (), 2)])
    specs = session_protocol("tiny", edge_cases=True)
    assert len(result.sessions) == 2 and len(result.scans) == 2 * len(specs) and result.errors == []
    listings = [r for r in requests if r["path"].startswith(("/data/projects/", "/data/experiments/"))]
    # 1 subject listing + 1 experiment listing + per session: scans + all their files
    assert len(listings) == 2 + 2 * 2
    rows = manifest.read_scans(tmp_path / paths.SCANS_TSV)
    assert rows == result.scans
    for session in result.sessions:
        files = manifest.read_session_files(paths.session_files(tmp_path, "DEMO", "001", session.session))
        assert sum(len(v) for v in files.values()) == sum(s.n_files for s in specs)
        assert all(
            len(f.md5) == 32 and f.size > 0 and f.resource == "DICOM" for v in files.values() for f in v
        )
    assert {r.scan for r in rows if r.scan_type == ""} == {
        f"{s.number}-unknown" for s in specs if not s.description
    }


def test_rediscovery_keeps_unchanged_files_and_drops_stale_ones(seeded, tmp_path: Path) -> None:
    run(seeded, tmp_path, [Subject("DEMO", "001", (), 2)])
    kept = paths.session_files(tmp_path, "DEMO", "001", "001_MR1")
    os.utime(kept, (1, 1))
    result, _ = run(seeded, tmp_path, [Subject("DEMO", "001", ("001_MR1",), 2)], include_types=["t1w*"])
    assert {r.session for r in result.scans} == {"001_MR1"}
    assert not paths.session_files(tmp_path, "DEMO", "001", "001_MR2").exists()
    assert kept.stat().st_mtime != 1  # content changed: only T1w files now
    run(seeded, tmp_path, [Subject("DEMO", "001", ("001_MR1",), 2)], include_types=["t1w*"])
    os.utime(kept, (1, 1))
    run(seeded, tmp_path, [Subject("DEMO", "001", ("001_MR1",), 2)], include_types=["t1w*"])
    assert kept.stat().st_mtime == 1  # same content: not rewritten


def test_problems_are_rows_not_failures(seeded, tmp_path: Path) -> None:
    subjects = [
        Subject("DEMO", "001", ("001_MR7",), 2),
        Subject("DEMO", "NOPE", (), 3),
        Subject("NOPROJ", "X", (), 4),
    ]
    result, _ = run(seeded, tmp_path, subjects)
    assert result.scans == []
    messages = {(e.subject, e.session): e.message for e in result.errors}
    assert messages[("001", "001_MR7")] == "session 001_MR7 not found for this subject"
    assert messages[("NOPE", "")] == "subject not found in project DEMO"
    assert messages[("X", "")] == "project NOPROJ: GET /data/projects/NOPROJ/subjects: not found (HTTP 404)"
    assert manifest.read_errors(tmp_path / paths.ERRORS_TSV) == result.errors


def test_transient_errors_are_retried(seeded, tmp_path: Path) -> None:
    import requests

    faults = seeded.url + "/xapi/xnatprep/faults"
    requests.put(
        faults,
        json={"spec": "seed=2,error=0.3,statuses=503,path=/scans"},
        auth=("admin", "admin"),
        timeout=10,
    ).raise_for_status()
    try:
        result, requests_seen = run(seeded, tmp_path, [Subject("DEMO", "001", (), 2)])
    finally:
        requests.delete(faults, auth=("admin", "admin"), timeout=10).raise_for_status()
    assert any(r["status"] == 503 for r in requests_seen)  # faults were injected ...
    assert result.errors == [] and len(result.sessions) == 2  # ... and retried away


class ListingStub:
    """A client whose session lists one scan with the given file paths."""

    def __init__(self, paths_listed: list[str], size: str = "1"):
        self.paths = paths_listed
        self.size = size

    def scans(self, session_id: str) -> list[dict]:
        return [{"ID": "1", "type": "T1w", "series_description": "t1"}]

    def session_files(self, session_id: str) -> list[dict]:
        return [
            {
                "URI": f"/data/experiments/E/scans/1/resources/DICOM/files/{p}",
                "collection": "DICOM",
                "Size": self.size,
            }
            for p in self.paths
        ]


@pytest.mark.parametrize(
    ("listed", "why"),
    [
        (["a.dcm", "../../etc/evil"], "leaves its directory"),
        (["a.dcm", "%2Fetc%2Fpasswd"], "absolute file path"),
        (["a%00.dcm"], "NUL character"),
    ],
)
def test_unsafe_paths_in_a_listing_skip_the_scan_with_one_error(listed, why) -> None:
    from xnat_prep.manifest import SessionIdentity

    session = SessionIdentity("P", "S", "SID", "E1", "E", "xnat:mrSessionData")
    stub = ListingStub(listed)
    found = discover._session_scans(stub, discover._session_listing(stub, session, "", Selection()))  # type: ignore[arg-type]
    assert found.scans == [] and found.files == {} and found.sessions == []
    [error] = found.errors
    assert error.session == "E1" and error.message.startswith("scan 1: ") and why in error.message


@pytest.mark.parametrize("size", ["-1", "12 kB", "1e3"])
def test_a_listed_size_that_is_not_a_size_skips_the_scan_with_one_error(size: str) -> None:
    from xnat_prep.manifest import SessionIdentity

    session = SessionIdentity("P", "S", "SID", "E1", "E", "xnat:mrSessionData")
    stub = ListingStub(["a.dcm", "b.dcm"], size)
    found = discover._session_scans(stub, discover._session_listing(stub, session, "", Selection()))  # type: ignore[arg-type]
    assert found.scans == [] and found.files == {}
    [error] = found.errors
    assert error.message == f"scan 1: file 'a.dcm': size {size!r} is not a file size; scan skipped"


def test_no_access_to_a_project_names_it_once() -> None:
    from xnat_prep.subjects import Subject as Row
    from xnat_prep.xnat_api import AccessDenied

    class Denied:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def subjects(self, project: str) -> list[dict]:
            raise AccessDenied(f"no read permission on project {project} for XNAT user u (HTTP 403 to GET x)")

    result = discover.discover(Denied, [Row("SECRET", "S01", (), 2)], Selection())  # type: ignore[arg-type]
    [error] = result.errors
    assert error.message.count("SECRET") == 1 and error.message.startswith("no read permission on project")
