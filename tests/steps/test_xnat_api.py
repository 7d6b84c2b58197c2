"""The XNAT access layer against the real server: errors in one line, TLS, re-login, retries of
writes, and xnatpy's object model on the same policy."""

from __future__ import annotations

import logging
import time

import pytest
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
    Unreachable,
    XnatError,
)
from xnat_prep.xnat_api.objects import xnatpy_session


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
