"""The XNAT access layer against the real server: errors in one line, TLS, re-login, retries of
writes, and xnatpy's object model on the same policy."""

from __future__ import annotations

import contextlib
import http.server
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import requests
import trustme
from step_helpers import ADMIN, FAST_RETRY, import_session

from xnat_prep.credentials import Credentials
from xnat_prep.server.testing import running_server
from xnat_prep.xnat_api import (
    AccessDenied,
    Client,
    Connection,
    CredentialsRefused,
    NotFound,
    RetryPolicy,
    Unreachable,
    XnatError,
)
from xnat_prep.xnat_api import http as policy
from xnat_prep.xnat_api.objects import xnatpy_session


def requests_put(url: str, auth: tuple[str, str]) -> None:
    requests.put(url, auth=auth, timeout=30).raise_for_status()


@contextlib.contextmanager
def fake_server(status: int, content_type: str, body: bytes) -> Iterator[str]:
    """A server that answers every request alike (a login page, a proxy's error page)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_listings_reuse_the_session_cookie(xnat_server):
    with Client(Connection(xnat_server.url), ADMIN) as client:
        client.rows("/data/projects")
        client.rows("/data/projects")
        assert client.requests == 2
    sent = xnat_server.requests()[-2:]
    assert [r["user"] for r in sent] == ["admin", "admin"]
    assert not any(r["path"] in ("/data/JSESSION", "/data/services/auth") for r in sent)  # no extra login


def test_refused_credentials_name_their_source(xnat_server):
    with (
        Client(Connection(xnat_server.url), Credentials("admin", "bad", "my netrc")) as client,
        pytest.raises(CredentialsRefused, match="refused the credentials from my netrc"),
    ):
        client.rows("/data/projects")


def test_final_answers_are_typed_one_line_errors(xnat_server):
    with Client(Connection(xnat_server.url), ADMIN) as client:
        with pytest.raises(NotFound, match=r"GET /data/experiments/NOPE/scans: not found \(HTTP 404\)"):
            client.scans("NOPE")
        with pytest.raises(XnatError, match="not a ResultSet listing"):
            client.rows("/data/services/tokens/issue")
    assert issubclass(AccessDenied, XnatError)


def test_unreachable_server_is_one_line_after_the_retries():
    with (
        Client(Connection("http://127.0.0.1:9"), Credentials("a", "b", "t"), retry=FAST_RETRY) as client,
        pytest.raises(Unreachable, match=r"127\.0\.0\.1:9: \[Errno 111\] Connection refused \(GET ") as info,
    ):
        client.rows("/data/projects")
    assert "\n" not in str(info.value)


def test_expired_session_logs_in_again_on_every_method(tmp_path):
    """expire=1 on every request: each answer to the cookie is 401, and the policy logs in again."""
    with running_server(tmp_path / "xnat", extra_args=["--faults", "expire=1"]) as server:
        session = import_session(server.url, tmp_path / "dicom", "E1", [{"n_slices": 1}])
        with Client(Connection(server.url), ADMIN, retry=FAST_RETRY) as client:
            xsi_type, _ = client.experiment(session.session_id)
            client.set_fields(session.session_id, xsi_type, {"site": "a"})
            assert client.experiment(session.session_id)[1]["site"] == "a"


def test_a_post_that_xnat_may_have_acted_on_is_not_repeated(tmp_path):
    with running_server(tmp_path / "xnat", faults="error=1,statuses=500,path=^/data/projects/P9$") as server:
        with Client(Connection(server.url), ADMIN, retry=FAST_RETRY) as client:
            with pytest.raises(
                XnatError, match=r"POST .*/P9: XNAT answered HTTP 500 \(a server error\); not repeated"
            ):
                client.post("/data/projects/P9")
            with pytest.raises(XnatError, match="failed after 8 attempts"):
                client.put("/data/projects/P9")  # idempotent: retried until the budget is spent
        posts = [r for r in server.requests() if r["method"] == "POST"]
        assert len(posts) == 1


def test_tls_private_ca_bundle_is_honoured_and_required(tmp_path, monkeypatch, caplog, capsys):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    with running_server(tmp_path / "xnat", tls=(tmp_path / "server.pem", tmp_path / "server.pem")) as server:
        assert server.url.startswith("https://")
        trusted = Connection.from_settings(server.url, ca_bundle=str(tmp_path / "ca.pem"))
        with Client(trusted, ADMIN) as client:
            assert client.rows("/data/projects") == []
        # Verification off works even when REQUESTS_CA_BUNDLE is set (requests would let it win),
        # and says so loudly, once.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "server.pem"))
        with caplog.at_level(logging.WARNING), Client(Connection(server.url, False), ADMIN) as client:
            assert client.rows("/data/projects") == []
        assert "TLS certificate verification is OFF" in capsys.readouterr().err
        monkeypatch.delenv("REQUESTS_CA_BUNDLE")
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        # Verification is on by default: the private CA is not trusted without the bundle.
        with (
            Client(Connection(server.url), ADMIN) as client,
            pytest.raises(Unreachable, match=r"cannot reach XNAT at https://127\.0\.0\.1.*TLS"),
        ):
            client.rows("/data/projects")


def test_xnatpy_model_runs_on_the_policy(tmp_path):
    """xnatpy's object model, every request through the policy (re-login included)."""
    with running_server(tmp_path / "xnat", session_timeout=0.5) as server:
        source = import_session(server.url, tmp_path / "dicom", "E1", [{"n_slices": 2}])
        with Client(Connection(server.url), ADMIN, retry=FAST_RETRY) as client, xnatpy_session(client) as xs:
            experiment = xs.experiments[source.session_id]
            assert experiment.label == "E1" and list(experiment.scans.keys()) == ["1"]
            time.sleep(1.0)  # the server's session expires
            xs.clearcache()
            assert list(xs.projects.keys()) == ["P1"]
            sent = client.requests
        assert sent > 0  # counted by the policy, not by a session of xnatpy's own
        statuses = [r["status"] for r in server.requests() if r["path"] == "/data/projects"]
        assert statuses[-2:] == [401, 200]  # the expired cookie, then Basic again
        assert not any(r["path"] == "/data/services/auth" for r in server.requests())  # xnatpy's login unused


@pytest.fixture
def fresh_breakers(monkeypatch):
    """Each test starts with no host known to be down (the breakers are per process)."""
    monkeypatch.setattr(policy, "_breakers", {})


def test_circuit_breaker_gives_up_on_a_dead_server_and_tells_later_jobs(
    tmp_path, monkeypatch, fresh_breakers
):
    marker = tmp_path / "down"
    monkeypatch.setenv("XNAT_DOWN_FILE", str(marker))
    dead = Connection("http://127.0.0.1:9")
    retry = RetryPolicy(attempts=50, total_seconds=600, backoff=0.2, max_backoff=0.5, down_seconds=1.5)
    started = time.monotonic()
    with Client(dead, ADMIN, retry=retry) as client:
        with pytest.raises(
            Unreachable, match=r"cannot reach XNAT at http://127\.0\.0\.1:9: .*stopped trying"
        ):
            client.rows("/data/projects")
        assert time.monotonic() - started < 4  # not 50 attempts
        with pytest.raises(Unreachable, match="stopped trying"):
            client.rows("/data/projects/P")  # the breaker is open: no request at all
        sent = client.requests
    with Client(dead, ADMIN, retry=retry) as other, pytest.raises(Unreachable):
        other.rows("/data/projects")  # another connection of the process: also at once
    assert other.requests == 0 and sent > 1
    assert marker.read_text().strip() == "http://127.0.0.1:9"
    # A later job (a fresh process) that finds the marker gives up at its first failed connection ...
    monkeypatch.setattr(policy, "_breakers", {})
    with Client(dead, ADMIN, retry=retry) as later, pytest.raises(Unreachable, match="stopped trying"):
        later.rows("/data/projects")
    assert later.requests == 1
    # ... and the first connection that works removes it.
    with running_server(tmp_path / "xnat") as server:
        marker.write_text(server.url)
        monkeypatch.setattr(policy, "_breakers", {})
        with Client(Connection(server.url), ADMIN, retry=retry) as client:
            client.rows("/data/projects")
    assert not marker.exists()


def test_server_errors_are_not_refused_credentials(tmp_path, fresh_breakers):
    """A 503 to the login request is the server's problem, said as such after the retries."""
    expected = r"failed after 8 attempts: XNAT answered HTTP 503 \(a server error\)"
    with (
        running_server(tmp_path / "xnat", faults="error=1,statuses=503") as server,
        Client(Connection(server.url), ADMIN, retry=FAST_RETRY) as client,
        pytest.raises(XnatError, match=expected),
    ):
        client.rows("/data/projects")


def test_no_write_permission_names_project_and_action(tmp_path, fresh_breakers):
    users = tmp_path / "users.yaml"
    for args, password in ((["admin", "--admin"], "admin"), (["reader"], "r")):
        subprocess.run(
            [sys.executable, "-m", "xnat_prep.cli", "users", "--file", str(users), "add", *args],
            input=password + "\n",
            text=True,
            check=True,
            capture_output=True,
        )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "xnat_prep.cli",
            "users",
            "--file",
            str(users),
            "role",
            "reader",
            "P1",
            "collaborator",
        ],
        check=True,
        capture_output=True,
    )
    with running_server(tmp_path / "xnat", users_file=users) as server:
        requests_put(server.url + "/data/projects/P1", auth=("admin", "admin"))
        reader = Credentials("reader", "r", "test")
        with Client(Connection(server.url), reader, retry=FAST_RETRY) as client:
            assert client.rows("/data/projects/P1/subjects") == []
            with pytest.raises(
                AccessDenied, match="no write permission on project P1 for XNAT user reader"
            ) as e:
                client.put("/data/projects/P1/subjects/S1")
    assert (e.value.action, e.value.project) == ("write", "P1") and "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/html", b"<html>Login</html>"), ("application/json", b"  <!DOCTYPE html><html>SSO</html>")],
)
def test_an_html_page_instead_of_json_is_said_at_once(content_type, body, fresh_breakers):
    with fake_server(200, content_type, body) as url:
        with (
            Client(Connection(url), ADMIN, retry=FAST_RETRY) as client,
            pytest.raises(XnatError, match=r"answered an HTML page, not JSON \(a login page or a proxy\?\)"),
        ):
            client.rows("/data/projects")
        assert client.requests == 1  # not retried: a login page answers every retry the same


def test_untrusted_certificate_says_what_to_set(tmp_path, fresh_breakers):
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    with (
        running_server(tmp_path / "xnat", tls=(tmp_path / "server.pem", tmp_path / "server.pem")) as server,
        Client(Connection(server.url), ADMIN) as client,
        pytest.raises(Unreachable) as info,
    ):
        client.rows("/data/projects")
    message = str(info.value)
    assert "TLS certificate not trusted" in message and "xnat.ca_bundle" in message and "\n" not in message
