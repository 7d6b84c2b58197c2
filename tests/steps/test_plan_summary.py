"""summary and plan on a seeded study: figures equal what XNAT holds and what a download fetches,
within their request budgets (from the server's own request log)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from step_helpers import ADMIN, FAST_RETRY, import_session

from xnat_prep import discover, download, manifest, paths, plan, summary
from xnat_prep.demodata.protocols import session_protocol
from xnat_prep.subjects import Subject
from xnat_prep.xnat_api import Client, Connection, NotFound

N_SESSIONS = 2


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    from xnat_prep.demodata import seed_server
    from xnat_prep.server.testing import running_server

    with running_server(tmp_path_factory.mktemp("plan") / "data") as server:
        seed_server(server.url, "admin", "admin", "DEMO", 1, N_SESSIONS, "tiny", edge_cases=True)
        yield server


def client(server) -> Client:
    return Client(Connection(server.url), ADMIN, retry=FAST_RETRY)


def data_requests(server, mark: int) -> list[str]:
    """The paths of the data requests the server logged since ``mark`` (logins apart)."""
    login = ("/data/JSESSION", "/data/services/auth")
    return [r["path"] for r in server.requests()[mark:] if r["path"] not in login]


def test_summary_counts_in_two_requests_and_full_in_two_plus_one_per_session(seeded, tmp_path):
    specs = session_protocol("tiny", edge_cases=True)
    with client(seeded) as xs:
        mark = len(seeded.requests())
        counts = summary.collect(xs, "DEMO", counts_only=True)
        assert len(data_requests(seeded, mark)) == counts.requests == 2
        mark = len(seeded.requests())
        full = summary.collect(xs, "DEMO")
        made = data_requests(seeded, mark)
    assert len(made) == full.requests == 2 + N_SESSIONS
    assert sum(p.endswith("/scans/ALL/files") for p in made) == N_SESSIONS
    assert "/data/projects/DEMO/experiments" not in made  # the scan search carries the sessions
    # the sessions' file listings in parallel, each thread on a connection of its own: same cost
    with client(seeded) as xs:
        mark = len(seeded.requests())
        parallel = summary.collect(xs, "DEMO", connect=lambda: client(seeded), max_connections=2)
        assert len(data_requests(seeded, mark)) == parallel.requests == 2 + N_SESSIONS
    assert parallel.files == full.files and parallel.sessions == full.sessions
    found = summary.tables([full])
    project = found["projects"].iloc[0]
    assert (project["subjects"], project["sessions"], project["scans"]) == (
        1,
        N_SESSIONS,
        N_SESSIONS * len(specs),
    )
    assert project["sessions_by_type"] == f"xnat:mrSessionData={N_SESSIONS}"
    assert project["first_date"] and project["first_date"] <= project["last_date"]
    truth = [f for p in [full] for f in p.files]
    assert project["files"] == len(truth) and project["bytes"] == sum(f["size"] for f in truth) > 0
    assert project["md5_share"] == 1.0
    sessions = found["sessions"]
    assert set(sessions["subject"]) == {"SUB001"} and sessions["session"].str.startswith("SUB001").all()
    types = found["scan_types"]
    assert types["scans"].sum() == N_SESSIONS * len(specs)
    assert set(types["sessions"]) == {N_SESSIONS}
    # the edge cases: the duplicate 3D series shares its type and description; non-image series listed
    first_3d = next(s for s in specs if s.acquisition == "3D")
    assert types[types["series_description"] == first_3d.description]["scans"].iloc[0] == 2 * N_SESSIONS
    assert {"Screen Save", "Radiology Report", ""} <= set(types["series_description"])
    written = summary.write(found, tmp_path / "summary")
    assert {p.name for p in written} >= {"projects.tsv", "scan_types.tsv", "bytes_by_scan_type.png"}
    assert all(p.stat().st_size > 0 for p in written)
    counts_found = summary.tables([counts])
    counts_table = counts_found["projects"].iloc[0]
    assert counts_table["scans"] == project["scans"] and counts_table["bytes"] == ""
    for name in ("sessions", "scan_types"):  # counts-only: the same rows, without files and bytes
        mine = counts_found[name]
        key = list(mine.columns)
        same = found[name][key].sort_values(key).reset_index(drop=True)
        assert mine.sort_values(key).reset_index(drop=True).equals(same)


def test_summary_counts_empty_sessions_and_subjects_without_sessions(seeded):
    """Sessions without scans (one search row each, empty scan columns), scans without files and
    a subject without sessions, within the budgets; the experiment listing agrees."""
    with client(seeded) as xs:
        xs.put("/data/projects/EDGES")
        xs.put("/data/projects/EDGES/subjects/A")
        xs.put("/data/projects/EDGES/subjects/B")
        xs.put("/data/projects/EDGES/subjects/C")  # no session
        mr = {"xsiType": "xnat:mrSessionData"}
        xs.put("/data/projects/EDGES/subjects/A/experiments/A_MR1", {**mr, "date": "2021-03-04"})
        xs.put("/data/projects/EDGES/subjects/A/experiments/A_MR2", {**mr, "date": "2021-05-06"})  # empty
        xs.put("/data/projects/EDGES/subjects/B/experiments/B_CT1", {"xsiType": "xnat:ctSessionData"})
        for session, scan, kind, scan_type, description in [
            ("A/experiments/A_MR1", "1", "mr", "T1w", "t1_mpr"),
            ("A/experiments/A_MR1", "2", "mr", "T1w", "t1_mpr"),  # a duplicate type
            ("B/experiments/B_CT1", "7", "ct", "", "Dose Report"),  # no type, no files
        ]:
            xs.put(
                f"/data/projects/EDGES/subjects/{session}/scans/{scan}",
                {"xsiType": f"xnat:{kind}ScanData", "type": scan_type, "series_description": description},
            )
        mark = len(seeded.requests())
        counts = summary.collect(xs, "EDGES", counts_only=True)
        full = summary.collect(xs, "EDGES")
        made = data_requests(seeded, mark)
        experiments = xs.project_experiments("EDGES")
    # no file listing for the session without scans (it has none to list)
    assert (counts.requests, full.requests, len(made)) == (2, 2 + 2, 2 + 2 + 2)
    assert sorted(p.rsplit("/", 3)[0] for p in made if p.endswith("/scans/ALL/files")) == sorted(
        f"/data/experiments/{e['ID']}" for e in experiments if e["label"] != "A_MR2"
    )
    found = summary.tables([full])
    project = found["projects"].iloc[0]
    assert (project["subjects"], project["sessions"], project["scans"], project["files"]) == (3, 3, 3, 0)
    assert project["sessions_by_type"] == "xnat:ctSessionData=1, xnat:mrSessionData=2"
    assert (project["first_date"], project["last_date"]) == ("2021-03-04", "2021-05-06")
    assert project["md5_share"] == ""  # no files: no share
    sessions = found["sessions"].set_index("session")
    assert sorted(sessions.index) == sorted(e["label"] for e in experiments)
    assert sessions.loc[["A_MR1", "A_MR2", "B_CT1"], "scans"].tolist() == [2, 0, 1]
    assert sessions.loc["B_CT1", "subject"] == "B" and sessions.loc["A_MR2", "subject"] == "A"
    subjects = found["subjects"].set_index("subject")
    assert subjects.loc["A", "sessions"] == 2 and "C" not in subjects.index  # C: in the project count
    types = found["scan_types"]
    assert sorted(types[["scan_type", "series_description", "sessions", "scans"]].values.tolist()) == [
        ["", "Dose Report", 1, 1],
        ["T1w", "t1_mpr", 1, 2],
    ]


def test_summary_of_an_unknown_project_is_not_found(seeded):
    with client(seeded) as xs, pytest.raises(NotFound):
        summary.collect(xs, "NOPE")


def test_summary_command_bad_projects_one_line_each(seeded, tmp_path):
    """Unknown project: one error line, exit 2, nothing written; empty project: one line saying so."""
    env = os.environ | {"XNAT_HOST": seeded.url, "XNAT_USER": "admin", "XNAT_PASS": "admin"}
    requests.put(f"{seeded.url}/data/projects/EMPTY", auth=("admin", "admin"), timeout=30).raise_for_status()

    def summary_cli(project: str, out: Path) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "xnat_prep.cli", "summary", "--project", project, "--out", str(out)]
        return subprocess.run(command, capture_output=True, text=True, env=env, check=False)

    unknown = summary_cli("NOPE", tmp_path / "nope")
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [unknown.stderr.strip()]  # one line
    assert "project NOPE: not found, or no access" in unknown.stderr and "Traceback" not in unknown.stderr
    assert not (tmp_path / "nope").exists()
    empty = summary_cli("EMPTY", tmp_path / "empty")
    assert empty.returncode == 0, empty.stderr
    assert empty.stderr.strip() == "xnat-prep summary: project EMPTY is empty: no subjects, no sessions"
    assert (tmp_path / "empty" / "projects.tsv").exists()
    full = summary_cli("DEMO", tmp_path / "demo")
    assert full.returncode == 0 and "empty" not in full.stderr


def test_plan_matches_what_the_download_fetches(seeded, tmp_path):
    root = tmp_path / "results"
    selection = discover.Selection(exclude_types=("*localizer*",))
    result = discover.run_discovery(
        Connection(seeded.url),
        [Subject("DEMO", "SUB001", (), 2)],
        selection,
        root,
        credentials=ADMIN,
        retry=FAST_RETRY,
    )
    first = plan.build(root, upload=False, variables=False, group_components={"convert_session": 3})
    assert first.value("scans to download") == len(result.scans) > 0
    assert first.value("scans skipped") == len(result.skipped) > 0
    reasons = set(first.inventory["why_not"])
    assert any("scans.exclude_types" in r for r in reasons)
    assert set(first.inventory["selected"]) <= {"yes", "no", "some"}
    assert first.inventory["scans"].sum() == len(result.scans) + len(result.skipped)
    assert first.value("cluster jobs") == N_SESSIONS + 1  # download per session + one convert group
    # download one session for real: its figures are what the plan said
    session = result.sessions[0]
    where = (session.project, session.subject, session.session)
    scans = [s for s in result.scans if (s.project, s.subject, s.session) == where]
    mark = len(seeded.requests())
    receipt = download.download_session(
        Connection(seeded.url),
        session_id=session.session_id,
        scans=[download.ScanTask(s.scan_id, s.resource, s.scan) for s in scans],
        files=manifest.read_session_files(paths.session_files(root, *where)),
        receipt=paths.session_download_receipt(root, *where),
        credentials=ADMIN,
    )
    assert receipt["n_files"] == sum(s.n_files for s in scans) and receipt["bytes"] == sum(
        s.bytes for s in scans
    )
    assert (
        len(seeded.requests()) - mark == receipt["http_requests"] == len(scans)
    )  # 1 request per scan planned
    second = plan.build(root, upload=False, variables=False)
    assert second.value("verified locally") == len(scans)
    assert second.value("scans to download") == len(result.scans) - len(scans)
    assert plan.write(second, root)[1].read_text().startswith("scan_type\tseries_description\tsessions")


def test_grouping_from_the_slurm_profile():
    profile = Path(__file__).resolve().parents[2] / "profiles" / "slurm"
    assert plan.grouping(profile) == {"convert_session": 3}


def test_dicom_criteria_select_by_header_sampled_or_every_scan(tmp_path):
    """Scans 1 and 2 share XNAT type and description but not their ImageType; scan 3 is derived."""
    from xnat_prep.server.testing import running_server

    series = [
        {"description": "t1", "image_type": "ORIGINAL\\PRIMARY\\M\\ND"},
        {"description": "t1", "image_type": "DERIVED\\SECONDARY\\MPR"},
        {"description": "t1_moco", "image_type": "DERIVED\\PRIMARY\\MOCO"},
    ]
    with running_server(tmp_path / "xnat") as server:
        session = import_session(server.url, tmp_path / "dicom", "E1", [{"n_slices": 1, **s} for s in series])
        subjects = [Subject("P1", "sub-E1", (), 2)]

        def picked(sampling: str, root: Path) -> tuple[list[str], list[manifest.SkippedRow], int]:
            selection = discover.Selection(dicom=(("ImageType", "*original*"),), dicom_sampling=sampling)
            mark = len(server.requests())
            found = discover.run_discovery(
                Connection(server.url), subjects, selection, root, credentials=ADMIN, retry=FAST_RETRY
            )
            dumps = [r for r in server.requests()[mark:] if r["path"] == "/data/services/dicomdump"]
            return [s.scan_id for s in found.scans], found.skipped, len(dumps)

        scans, skipped, dumps = picked("series", tmp_path / "series")
        assert (scans, dumps) == (["1", "2"], 2)  # one sample per (type, description): 1 for 1+2, 3 alone
        assert [s.scan_id for s in skipped] == ["3"] and "DERIVED" in skipped[0].reason
        scans, skipped, dumps = picked("every_scan", tmp_path / "every")
        assert (scans, dumps) == (["1"], 3)
        assert {s.scan_id for s in skipped} == {"2", "3"}
        assert picked("every_scan", tmp_path / "every")[1:] == (skipped, 0)  # rerun: from the cache
        assert session.session_id in (tmp_path / "every" / paths.DICOM_TSV).read_text()


def test_unknown_dicom_keyword_is_a_config_error():
    from xnat_prep import config
    from xnat_prep.errors import UserError

    settings = {"xnat": {"host": "https://x.example.org"}, "subjects": {"csv": "-"}}
    with pytest.raises(UserError, match=r"scans\.dicom\.ImageTyp: not a DICOM keyword"):
        config.validate({**settings, "scans": {"dicom": {"ImageTyp": "*ORIGINAL*"}}})
    with pytest.raises(UserError, match=r"scans\.dicom_sampling"):
        config.validate({**settings, "scans": {"dicom_sampling": "some"}})
