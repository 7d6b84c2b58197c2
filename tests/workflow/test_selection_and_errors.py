"""Scan selection, and subjects that discovery cannot list: recorded, reported, retried."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import yaml
from workflow_helpers import REPO, Study, read_json

from xnat_prep import manifest, paths
from xnat_prep.demodata.protocols import session_protocol

pytestmark = pytest.mark.workflow

SPECS = {str(s.number): s for s in session_protocol("tiny", edge_cases=True)}
LOCAL_ONLY = {"upload": {"enabled": False}, "custom_variables": {"enabled": False}}


def test_selection_by_type_globs_and_description_regex(study: Study, tmp_path: Path) -> None:
    """Also: the server comes from XNAT_HOST (xnat.host: null)."""
    scans = {
        "include_types": ["t1w*", "", "fmri*", "LOCALIZER"],  # case-insensitive; "" = no type
        "exclude_types": ["FMRI*"],
        "series_description": "MPRAGE|^$",  # drops the localizer
    }
    config = study.config(tmp_path, xnat={"host": None}, scans=scans, **LOCAL_ONLY)
    result = study.snakemake(tmp_path, config, "results/manifest/scans.tsv", env={"XNAT_HOST": study.url})
    assert result.rc == 0, result.output[-3000:]
    expected = {n for n, s in SPECS.items() if s.description in ("T1w_MPRAGE", "")}
    assert len(expected) == 3  # both T1w (duplicate type) and the untyped one
    rows = manifest.read_scans(tmp_path / "results" / paths.SCANS_TSV)
    by_subject = {(r.subject, r.scan_id) for r in rows}
    assert by_subject == {(s, n) for s in ("001", "SUB002") for n in expected}
    dry = study.snakemake(tmp_path, config, "-n", env={"XNAT_HOST": study.url})
    assert dry.rc == 0 and dry.requests == []
    counts = dict(re.findall(r"^(download_session|convert_session)\s+(\d+)$", dry.stdout, re.MULTILINE))
    assert counts == {"download_session": "2", "convert_session": "2"}  # 1 session each


def test_missing_subject_no_access_and_missing_session(study: Study, tmp_path: Path) -> None:
    subjects = tmp_path / "subjects.csv"
    rows = [["DEMO", "SUB002", ""], ["DEMO", "NOPE", ""], ["SECRET", "S01", ""], ["DEMO", "001", "001_MR9"]]
    with subjects.open("w", newline="") as fh:
        csv.writer(fh).writerows([["Project", "Subject", "Session"], *rows])
    config = study.config(tmp_path, subjects={"csv": str(subjects)}, scans={"include_types": ["localizer"]})
    result = study.snakemake(tmp_path, config)
    assert result.rc == 1, result.output[-3000:]
    problems = result.lines("xnat-prep: problem: ")
    assert len(problems) == 3, problems
    assert any(p.startswith("DEMO/NOPE: error: subject not found") for p in problems)
    assert any(
        p.startswith("SECRET/S01: error: ") and "no read permission on project SECRET" in p for p in problems
    )
    assert any(p.startswith("DEMO/001/001_MR9: error: session 001_MR9 not found") for p in problems)
    # the subject that is fine went all the way
    [scan] = manifest.read_scans(tmp_path / "results" / paths.SCANS_TSV)
    assert (scan.subject, scan.scan_type) == ("SUB002", "localizer")
    where = (tmp_path / "results", scan.project, scan.subject, scan.session, scan.scan)
    assert read_json(paths.convert_receipt(*where))["status"] == "converted"
    assert paths.variables_receipt(*where[:4]).exists() and paths.upload_receipt(*where[:4]).exists()
    # the server never gave runner anything of SECRET
    secret = [r for r in result.requests if "SECRET" in r["path"]]
    assert secret and {r["status"] for r in secret} == {403}

    assert result.lines("xnat-prep: to list the subjects on XNAT again once fixed, add: ") == ["-R discover"]

    # Retrying discovery lists the subjects again (permissions may have been fixed): still failing.
    again = study.snakemake(tmp_path, config, "-R", "discover")
    assert again.rc == 1 and len(again.lines("xnat-prep: problem: ")) == 3
    assert any(r["path"] == "/data/projects/SECRET/subjects" for r in again.requests)
    assert not [r for r in again.requests if r["path"].endswith("/files") and "zip" in r["query"]]


def test_alias_token_replaces_the_password_for_the_jobs(study: Study, tmp_path: Path) -> None:
    config = study.config(tmp_path, xnat={"alias_token": True}, scans={"include_types": ["localizer"]})
    result = study.snakemake(tmp_path, config)
    assert result.rc == 0, result.output[-3000:]
    paths_seen = [r["path"] for r in result.requests]
    assert paths_seen[0] == "/data/services/tokens/issue"  # minted before the first job
    assert paths_seen[-1].startswith("/data/services/tokens/invalidate/")  # revoked after the last
    # xnatpy logs in with PUT /data/services/auth for a password; for an alias token it does not
    assert "/data/services/auth" not in paths_seen
    assert {r["status"] for r in result.requests if r["path"] != "/data/services/auth"} <= {200, 201, 404}


def test_network_rules_local_if_asked(study: Study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With cluster.network_on_submit_host the rules that talk to XNAT are local rules.

    Only a cluster run shows it ("localrule" is printed for real, non-local executions), so the
    parsed workflow is asked through Snakemake's API (``_localrules`` is its internal set).
    """
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    network = {"discover", "download_session", "upload_session", "set_variables"}
    monkeypatch.chdir(tmp_path)
    with SnakemakeApi(OutputSettings()) as api:
        for flag in (True, False):
            config = study.config(tmp_path, cluster={"network_on_submit_host": flag})
            (tmp_path / f"{flag}.yaml").write_text(yaml.safe_dump(config))
            workflow = api.workflow(
                resource_settings=ResourceSettings(),
                config_settings=ConfigSettings(configfiles=[tmp_path / f"{flag}.yaml"]),
                snakefile=REPO / "Snakefile",
                workdir=tmp_path,
            )
            local = workflow._workflow._localrules
            assert {"all", "report"} <= local and (network <= local) is flag


def test_widening_the_selection_fetches_and_converts_only_the_new_scans(study: Study, tmp_path: Path) -> None:
    """Adding a scan type reruns discovery and each session's download job, which sends requests
    only for the new scans; the scans converted before are not converted again.

    Snakemake 9.27 does not add the jobs that a rerun checkpoint finds to the running
    invocation: the first run after the change rediscovers and downloads, says so and exits 1;
    the same command again converts the new scans."""
    first = study.config(tmp_path, scans={"include_types": ["localizer"]}, **LOCAL_ONLY)
    result = study.snakemake(tmp_path, first)
    assert result.rc == 0, result.output[-3000:]
    root = tmp_path / "results"
    # one per scan ({scan} always holds a "-"; the NIfTI sidecars are a level deeper)
    receipts = "nifti/*/*/*/*-*.json"
    before = {p: p.stat().st_mtime_ns for p in root.glob(receipts)}
    assert len(before) == 2  # one localizer per session

    wider = study.config(tmp_path, scans={"include_types": ["localizer", "fMRI*"]}, **LOCAL_ONLY)
    result = study.snakemake(tmp_path, wider)
    stale = "discovery ran again and found work this run did not include; run the same command again"
    assert result.rc == 1 and result.lines("xnat-prep: ") == [f"{stale} to process it"], result.output[-3000:]
    again = study.snakemake(tmp_path, wider)
    assert again.rc == 0, again.output[-3000:]
    zips = [r["path"] for r in result.requests + again.requests if "format=zip" in r["query"]]
    fmri = {r.scan_id for r in manifest.read_scans(root / paths.SCANS_TSV) if r.scan_type.startswith("fMRI")}
    assert len(zips) == 2 and {p.split("/scans/")[1].split("/")[0] for p in zips} == fmri
    after = {p: p.stat().st_mtime_ns for p in root.glob(receipts)}
    assert len(after) == 4 and {p: after[p] for p in before} == before
    assert all(read_json(p)["status"] == "converted" for p in after)
    rows = list(csv.DictReader((root / paths.SUMMARY_TSV).open(), delimiter="\t"))
    states = sorted((r["scan_type"], r["state"]) for r in rows)
    assert states == [("fMRI_rest", "ok")] * 2 + [("localizer", "ok")] * 2
