"""Seeding the bundled server (a real subprocess, over HTTP) through its import service."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import xnat

from xnat_prep import subjects
from xnat_prep.demodata import seed_server
from xnat_prep.demodata.protocols import session_protocol
from xnat_prep.errors import UserError


def imports(server) -> int:
    return sum(1 for r in server.requests() if r["method"] == "POST" and r["path"] == "/data/services/import")


def archive(server, project: str) -> dict[tuple[str, str], dict[str, tuple[str, int]]]:
    """{(subject, session): {scan id: (type, DICOM file count)}} as the server lists them."""
    out = {}
    with xnat.connect(server.url, user=server.admin[0], password=server.admin[1]) as xs:
        for subject in xs.projects[project].subjects.values():
            for experiment in subject.experiments.values():
                out[(subject.label, experiment.label)] = {
                    scan.id: (scan.type or "", len(scan.resources["DICOM"].files))
                    for scan in experiment.scans.values()
                }
    return out


def test_seed_creates_the_study_and_a_rerun_adds_nothing(xnat_server, tmp_path):
    csv = tmp_path / "subjects.csv"
    url, admin = xnat_server.url, xnat_server.admin
    sessions = seed_server(url, *admin, "DEMO", 2, 2, "tiny", edge_cases=True, csv=csv)
    expected_sessions = [
        ("SUB001", "SUB001_MR1"),
        ("SUB001", "SUB001_MR2"),
        ("SUB002", "SUB002_MR1"),
        ("SUB002", "SUB002_MR2"),
    ]
    assert sessions == expected_sessions
    expected_scans = {str(s.number): (s.description, s.n_files) for s in session_protocol("tiny", True)}
    held = archive(xnat_server, "DEMO")
    assert sorted(held) == expected_sessions
    for key, scans in held.items():
        assert scans == expected_scans, key
    assert imports(xnat_server) == 4
    assert [(s.project, s.subject) for s in subjects.read(csv)] == [("DEMO", "SUB001"), ("DEMO", "SUB002")]

    assert seed_server(url, *admin, "DEMO", 2, 2, "tiny", edge_cases=True) == sessions
    assert imports(xnat_server) == 4  # nothing imported again
    assert archive(xnat_server, "DEMO") == held


def test_numeric_labels_stay_strings_and_new_subjects_are_added(xnat_server):
    assert seed_server(xnat_server.url, *xnat_server.admin, "NUM", 1, 1, "tiny", style="numeric") == [
        ("001", "00101")
    ]
    assert seed_server(xnat_server.url, *xnat_server.admin, "NUM", 2, 1, "tiny", style="numeric") == [
        ("001", "00101"),
        ("002", "00201"),
    ]
    assert imports(xnat_server) == 2  # the second call only imported subject 002
    assert sorted(archive(xnat_server, "NUM")) == [("001", "00101"), ("002", "00201")]


def test_wrong_password_is_a_user_error(xnat_server):
    with pytest.raises(UserError, match="refused the credentials"):
        seed_server(xnat_server.url, "admin", "not-the-password", "DEMO", 1, 1, "tiny")
    assert imports(xnat_server) == 0


def test_cli_takes_credentials_from_the_environment_only(xnat_server, tmp_path):
    csv = tmp_path / "out.csv"
    argv = [
        sys.executable,
        "-m",
        "xnat_prep.cli",
        "demo-data",
        "--server",
        xnat_server.url,
        "--project",
        "CLI",
        "--labels",
        "numeric",
        "--csv",
        str(csv),
    ]
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("XNAT_", "XNATPY_")) and k != "NETRC"
    } | {"HOME": str(tmp_path)}
    refused = subprocess.run(argv, env=clean, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "no XNAT credentials" in refused.stderr
    user, password = xnat_server.admin
    done = subprocess.run(
        argv,
        env=clean | {"XNAT_USER": user, "XNAT_PASS": password},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "holds 1 demo session(s)" in done.stdout
    assert sorted(archive(xnat_server, "CLI")) == [("001", "00101")]
    assert csv.read_text(encoding="utf-8-sig").splitlines()[1].startswith('"CLI","001"')
