"""summary and plan on a seeded study: figures equal what XNAT holds and what a download fetches,
within their request budgets (from the server's own request log)."""

from __future__ import annotations

from pathlib import Path

import pytest
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


def test_summary_counts_in_three_requests_and_full_in_three_plus_one_per_session(seeded, tmp_path):
    specs = session_protocol("tiny", edge_cases=True)
    with client(seeded) as xs:
        counts = summary.collect(xs, "DEMO", counts_only=True)
        full = summary.collect(xs, "DEMO")
    assert counts.requests == 3 and full.requests == 3 + N_SESSIONS
    found = summary.tables([full])
    project = found["projects"].iloc[0]
    assert (project["subjects"], project["sessions"], project["scans"]) == (
        1,
        N_SESSIONS,
        N_SESSIONS * len(specs),
    )
    truth = [f for p in [full] for f in p.files]
    assert project["files"] == len(truth) and project["bytes"] == sum(f["size"] for f in truth) > 0
    assert project["md5_share"] == 1.0
    types = found["scan_types"]
    assert types["scans"].sum() == N_SESSIONS * len(specs)
    assert set(types["sessions"]) == {N_SESSIONS}
    written = summary.write(found, tmp_path / "summary")
    assert {p.name for p in written} >= {"projects.tsv", "scan_types.tsv", "bytes_by_scan_type.png"}
    assert all(p.stat().st_size > 0 for p in written)
    counts_table = summary.tables([counts])["projects"].iloc[0]
    assert counts_table["scans"] == project["scans"] and counts_table["bytes"] == ""


def test_summary_of_an_unknown_project_is_not_found(seeded):
    with client(seeded) as xs, pytest.raises(NotFound):
        summary.collect(xs, "NOPE")


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
