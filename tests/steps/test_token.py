"""xnat-prep token issue/invalidate against the real server; the secret goes only where asked."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import requests

from xnat_prep import credentials
from xnat_prep.errors import UserError
from xnat_prep.server.testing import running_server
from xnat_prep.xnat_api import Client, Connection


def cli(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "xnat_prep.cli", "token", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


@pytest.fixture
def env(tmp_path):
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XNAT_USER": "admin", "XNAT_PASS": "admin"}


def test_issue_to_private_file_then_invalidate(tmp_path, env):
    out = tmp_path / "token.sh"
    with running_server(tmp_path / "xnat") as server:
        issued = cli("issue", "--host", server.url, "--output", str(out), env=env)
        assert issued.returncode == 0, issued.stderr
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        token = credentials.read_exports(out)
        assert token.user != "admin" and token.password not in issued.stdout + issued.stderr
        # The token works as credentials, through the same environment variables.
        assert requests.get(f"{server.url}/data/projects", auth=(token.user, token.password), timeout=30).ok

        gone = cli("invalidate", "--host", server.url, "--from", str(out), env=env)
        assert gone.returncode == 0, gone.stderr
        answer = requests.get(f"{server.url}/data/projects", auth=(token.user, token.password), timeout=30)
        assert answer.status_code == 401
        assert all(token.password not in line for line in (server.data_dir / "requests.jsonl").open())


def test_issue_to_a_file_descriptor(tmp_path, env):
    read, write = os.pipe()
    with running_server(tmp_path / "xnat") as server:
        issued = subprocess.run(
            [
                sys.executable,
                "-m",
                "xnat_prep.cli",
                "token",
                "issue",
                "--host",
                server.url,
                "--fd",
                str(write),
            ],
            capture_output=True,
            text=True,
            env=env,
            pass_fds=(write,),
            check=False,
        )
        os.close(write)
        with os.fdopen(read) as pipe:
            text = pipe.read()
    assert issued.returncode == 0, issued.stderr
    assert text.startswith("export XNAT_USER=") and "export XNAT_PASS=" in text
    assert "XNAT_PASS" not in issued.stdout


def test_issue_needs_an_explicit_destination(tmp_path, env):
    result = cli("issue", "--host", "http://127.0.0.1:9", env=env)
    assert result.returncode == 2 and "--output" in result.stderr and "--stdout" in result.stderr


def test_mint_token_with_wrong_password_names_the_source(tmp_path):
    with running_server(tmp_path / "xnat") as server:
        bad = credentials.Credentials("admin", "nope", "the test's source")
        with pytest.raises(UserError, match="refused the credentials from the test's source"):
            Client(Connection(server.url), bad).mint_token()
