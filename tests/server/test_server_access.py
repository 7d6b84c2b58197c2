"""Users, roles, credentials and session expiry, through HTTP to a server with a users file."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import xnat
from server_helpers import api
from xnat.exceptions import XNATLoginFailedError

from xnat_prep.server.testing import ServerHandle, running_server

PASSWORDS = {"root": "r00t-pw", "alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
ROOT = ("root", PASSWORDS["root"])


def users_cmd(users_file: Path, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xnat_prep.cli", "users", "--file", str(users_file), *args],
        input=password,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("users") / "users.yaml"
    for login, password in PASSWORDS.items():
        extra = ["--admin"] if login == "root" else []
        assert users_cmd(path, "add", login, *extra, password=password + "\n").returncode == 0
    for login, project, role in (
        ("alice", "PA", "owner"),
        ("bob", "PA", "collaborator"),
        ("bob", "PB", "owner"),
    ):
        result = users_cmd(path, "role", login, project, role)
        assert result.returncode == 0, result.stderr
    return path


@pytest.fixture(scope="module")
def server(users_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    with running_server(tmp_path_factory.mktemp("access") / "data", users_file=users_file) as srv:
        for project in ("PA", "PB"):
            assert api(srv, "PUT", f"/data/projects/{project}", auth=ROOT).status_code == 201
            assert api(srv, "PUT", f"/data/projects/{project}/subjects/S1", auth=ROOT).status_code == 201
        yield srv


def as_user(login: str) -> tuple[str, str]:
    return login, PASSWORDS[login]


def test_users_file_holds_only_salted_hashes(users_file: Path) -> None:
    text = users_file.read_text()
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    assert not any(password in text for password in PASSWORDS.values())
    assert text.count("scrypt$") == len(PASSWORDS)
    listing = users_cmd(users_file, "list").stdout
    assert "root\tadmin" in listing and "bob\t-\tPA=collaborator, PB=owner" in listing
    assert users_cmd(users_file, "add", "alice", password="x\n").returncode == 2  # exists


def test_users_file_replaces_default_admin(server: ServerHandle) -> None:
    assert api(server, "GET", "/data/projects", auth=("admin", "admin")).status_code == 401
    assert api(server, "GET", "/data/projects", auth=("alice", "wrong")).status_code == 401
    assert api(server, "GET", "/data/projects", auth=None).status_code == 401
    with pytest.raises(XNATLoginFailedError):
        xnat.connect(server.url, user="alice", password="wrong", loglevel="CRITICAL")


def project_ids(server: ServerHandle, login: str) -> list[str]:
    rows = api(server, "GET", "/data/projects", auth=as_user(login), params={"format": "json"}).json()
    return sorted(row["ID"] for row in rows["ResultSet"]["Result"])


def test_listings_show_only_own_projects(server: ServerHandle) -> None:
    assert project_ids(server, "root") == ["PA", "PB"]
    assert project_ids(server, "alice") == ["PA"]
    assert project_ids(server, "bob") == ["PA", "PB"]
    assert project_ids(server, "carol") == []
    subjects = api(server, "GET", "/data/subjects", auth=as_user("alice"), params={"format": "json"}).json()
    assert {row["project"] for row in subjects["ResultSet"]["Result"]} == {"PA"}
    access = api(server, "GET", "/xapi/access/projects", auth=as_user("bob")).json()
    assert {row["ID"]: row["role"] for row in access} == {"PA": "collaborator", "PB": "owner"}


def test_xnatpy_sees_only_own_projects(server: ServerHandle) -> None:
    with xnat.connect(server.url, user="alice", password=PASSWORDS["alice"], loglevel="ERROR") as session:
        assert list(session.projects.keys()) == ["PA"]
        assert [s.label for s in session.projects["PA"].subjects.values()] == ["S1"]


def test_collaborator_reads_but_cannot_write(server: ServerHandle) -> None:
    bob = as_user("bob")
    assert (
        api(server, "GET", "/data/projects/PA/subjects/S1", auth=bob, params={"format": "json"}).status_code
        == 200
    )
    assert api(server, "PUT", "/data/projects/PA/subjects/S2", auth=bob).status_code == 403
    upload = api(server, "PUT", "/data/projects/PA/resources/R/files/a.txt", auth=bob, data=b"x")
    assert upload.status_code == 403
    field = api(
        server,
        "PUT",
        "/data/projects/PA/subjects/S1",
        auth=bob,
        params={"xsiType": "xnat:subjectData", "xnat:subjectData/fields/field[name=x]/field": "1"},
    )
    assert field.status_code == 403
    assert api(server, "DELETE", "/data/projects/PA/subjects/S1", auth=bob).status_code == 403
    assert api(server, "PUT", "/data/projects/PB/subjects/S2", auth=bob).status_code == 201  # owner there


def test_unknown_is_404_and_foreign_is_403(server: ServerHandle) -> None:
    alice = as_user("alice")
    assert api(server, "GET", "/data/projects/NOPE", auth=alice, params={"format": "json"}).status_code == 404
    assert api(server, "GET", "/data/projects/PA/subjects/NOPE", auth=alice).status_code == 404
    assert api(server, "GET", "/data/experiments/XNAT_E99999", auth=alice).status_code == 404
    assert api(server, "GET", "/data/projects/PB", auth=alice, params={"format": "json"}).status_code == 403
    assert api(server, "GET", "/data/projects/PB/subjects/S1", auth=alice).status_code == 403
    assert (
        api(server, "PUT", "/data/projects/PNEW", auth=alice).status_code == 403
    )  # only admins create projects


def test_owner_grants_roles_through_the_rest_api(server: ServerHandle) -> None:
    carol = as_user("carol")
    assert api(server, "PUT", "/data/projects/PA/subjects/C1", auth=carol).status_code == 403
    assert api(server, "PUT", "/data/projects/PA/users/Members/carol", auth=as_user("bob")).status_code == 403
    assert (
        api(server, "PUT", "/data/projects/PA/users/Members/carol", auth=as_user("alice")).status_code == 200
    )
    assert api(server, "PUT", "/data/projects/PA/subjects/C1", auth=carol).status_code == 201
    members = api(server, "GET", "/data/projects/PA/users", auth=carol, params={"format": "json"}).json()
    assert {r["login"]: r["role"] for r in members["ResultSet"]["Result"]} == {
        "alice": "owner",
        "bob": "collaborator",
        "carol": "member",
        "root": "owner",  # creating a project makes you its owner
    }
    assert (
        api(server, "DELETE", "/data/projects/PA/users/Members/carol", auth=as_user("alice")).status_code
        == 200
    )
    assert api(server, "GET", "/data/projects/PA", auth=carol, params={"format": "json"}).status_code == 403


def test_fault_injection_endpoint_is_admin_only(server: ServerHandle) -> None:
    plan = {"error": 0.5}
    assert api(server, "PUT", "/xapi/xnatprep/faults", auth=as_user("alice"), json=plan).status_code == 403
    assert api(server, "GET", "/xapi/xnatprep/faults", auth=ROOT).json()["enabled"] is False


def test_tokens_for_other_users_need_admin(server: ServerHandle) -> None:
    assert (
        api(server, "GET", "/data/services/tokens/issue/user/bob", auth=as_user("alice")).status_code == 403
    )
    token = api(server, "GET", "/data/services/tokens/issue/user/bob", auth=ROOT).json()
    assert token["estimatedExpirationTime"] > (time.time() + 47 * 3600) * 1000
    assert project_ids_for(server, (token["alias"], token["secret"])) == ["PA", "PB"]


def project_ids_for(server: ServerHandle, auth: tuple[str, str]) -> list[str]:
    rows = api(server, "GET", "/data/projects", auth=auth, params={"format": "json"}).json()["ResultSet"][
        "Result"
    ]
    return sorted(row["ID"] for row in rows)


def test_session_expires_after_inactivity(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", session_timeout=1.0) as srv:
        login = api(
            srv, "PUT", "/data/services/auth", auth=None, data={"username": "admin", "password": "admin"}
        )
        cookies = {"JSESSIONID": login.text}
        for _ in range(3):  # activity keeps it alive
            time.sleep(0.5)
            assert api(srv, "GET", "/data/JSESSION", auth=None, cookies=cookies).status_code == 200
        time.sleep(1.3)
        assert api(srv, "GET", "/data/projects", auth=None, cookies=cookies).status_code == 401
        # Basic credentials next to the dead cookie log in again and set a new cookie
        again = api(srv, "GET", "/data/JSESSION", cookies=cookies)
        assert again.status_code == 200 and again.cookies["JSESSIONID"] not in ("", login.text)


def test_default_admin_warning_and_clean_shutdown(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "xnat_prep.cli", "server", "--data-dir", str(tmp_path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:")
    process.send_signal(signal.SIGTERM if os.name == "posix" else signal.SIGINT)
    _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0
    assert "admin/admin" in stderr and "local demo only" in stderr


def test_users_cli_passwd_remove_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "u.yaml"
    assert users_cmd(path, "add", "dave", password="first\n").returncode == 0
    before = path.read_text()
    assert users_cmd(path, "passwd", "dave", password="second\n").returncode == 0
    assert path.read_text() != before
    assert users_cmd(path, "role", "dave", "P", "member").returncode == 0
    assert users_cmd(path, "role", "dave", "P", "none").returncode == 0
    assert "roles" not in path.read_text()
    assert users_cmd(path, "add", "empty", password="\n").returncode == 2
    missing = users_cmd(path, "remove", "nobody")
    assert missing.returncode == 2 and "no user 'nobody'" in missing.stderr
    assert users_cmd(path, "remove", "dave").returncode == 0
    assert users_cmd(path, "list").stdout == ""
    bad = tmp_path / "bad.yaml"
    bad.write_text("users:\n  eve: {admin: true}\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "xnat_prep.cli",
            "server",
            "--data-dir",
            str(tmp_path / "d"),
            "--users",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "user 'eve': needs a 'password' hash" in result.stderr


def test_sharing_and_accessibility_grant_what_xnat_grants(server: ServerHandle) -> None:
    """A shared subject is readable through the project it is shared into, changed only with rights in
    its own; a public project is readable by every user, a private one by its members only."""
    assert api(server, "PUT", "/data/projects/PA/subjects/SHR", auth=ROOT).status_code == 201
    share_uri = "/data/projects/PA/subjects/SHR/projects/PB"
    assert api(server, "PUT", share_uri, auth=as_user("alice")).status_code == 403  # no rights in PB
    assert api(server, "PUT", share_uri, auth=as_user("bob"), params={"label": "SHR_B"}).status_code == 200
    through_b = "/data/projects/PB/subjects/SHR_B"
    doc = api(server, "GET", through_b, auth=as_user("bob"), params={"format": "json"})
    assert doc.status_code == 200 and doc.json()["items"][0]["data_fields"]["project"] == "PA"
    labels = [
        r["label"]
        for r in api(server, "GET", "/data/projects/PB/subjects", auth=as_user("bob")).json()["ResultSet"][
            "Result"
        ]
    ]
    assert "SHR_B" in labels
    field = {"xsiType": "xnat:subjectData", "xnat:subjectData/fields/field[name=x]/field": "1"}
    assert (
        api(server, "PUT", through_b, auth=as_user("bob"), params=field).status_code == 403
    )  # PA: collaborator
    assert (
        api(server, "PUT", through_b, auth=as_user("alice"), params=field).status_code == 403
    )  # no PB access
    assert (
        api(server, "PUT", "/data/projects/PA/subjects/SHR", auth=as_user("alice"), params=field).status_code
        == 200
    )
    assert api(server, "GET", through_b, auth=as_user("carol")).status_code == 403

    assert api(server, "PUT", "/data/projects/PC", auth=ROOT).status_code == 201
    assert api(server, "GET", "/data/projects/PC/subjects", auth=as_user("carol")).status_code == 403
    assert (
        api(server, "PUT", "/data/projects/PC/accessibility/public", auth=as_user("carol")).status_code == 403
    )
    assert api(server, "PUT", "/data/projects/PC/accessibility/public", auth=ROOT).status_code == 200
    assert api(server, "GET", "/data/projects/PC/accessibility", auth=as_user("carol")).text == "public"
    assert api(server, "GET", "/data/projects/PC/subjects", auth=as_user("carol")).status_code == 200
    assert api(server, "PUT", "/data/projects/PC/subjects/NEW", auth=as_user("carol")).status_code == 403
    assert api(server, "PUT", "/data/projects/PC/accessibility/protected", auth=ROOT).status_code == 200
    listed = [
        r["ID"]
        for r in api(server, "GET", "/data/projects", auth=as_user("carol")).json()["ResultSet"]["Result"]
    ]
    assert "PC" in listed  # protected: listed to everyone
    assert api(server, "GET", "/data/projects/PC/subjects", auth=as_user("carol")).status_code == 403
