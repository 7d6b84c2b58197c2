"""client.connect and the transfer client against the real server: errors, TLS with a private CA."""

from __future__ import annotations

import pytest
import trustme

from xnat_prep import client
from xnat_prep.credentials import Credentials
from xnat_prep.errors import UserError
from xnat_prep.server.testing import running_server
from xnat_prep.transfer import Transfer, TransferError


def test_connect_lists_and_disconnects(xnat_server):
    with client.connect(xnat_server.url, credentials=Credentials("admin", "admin", "t")) as xs:
        assert xs.logged_in_user == "admin"
    assert xnat_server.requests()[-1]["method"] == "DELETE"  # the session was closed


def test_refused_credentials_name_their_source(xnat_server):
    with (
        pytest.raises(UserError, match="refused the credentials from my netrc"),
        client.connect(xnat_server.url, credentials=Credentials("admin", "bad", "my netrc")),
    ):
        pass


def test_unreachable_server_is_one_line():
    with (
        pytest.raises(UserError, match=r"cannot reach XNAT at http://127\.0\.0\.1:9") as info,
        client.connect("http://127.0.0.1:9", credentials=Credentials("a", "b", "t")),
    ):
        pass
    assert "\n" not in str(info.value)


def test_tls_private_ca_bundle_is_honoured_and_required(tmp_path, monkeypatch):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    admin = Credentials("admin", "admin", "t")
    with running_server(tmp_path / "xnat", tls=(tmp_path / "server.pem", tmp_path / "server.pem")) as server:
        assert server.url.startswith("https://")
        with client.connect(server.url, ca_bundle=str(tmp_path / "ca.pem"), credentials=admin) as xs:
            assert xs.logged_in_user == "admin"
        with Transfer(server.url, admin, verify=str(tmp_path / "ca.pem")) as transfer:
            assert transfer.get("/data/projects", lambda r: r.json())["ResultSet"] is not None
        # --insecure works even when REQUESTS_CA_BUNDLE is set (requests would let it win).
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "server.pem"))
        with client.connect(server.url, verify_tls=False, credentials=admin) as xs:
            assert xs.logged_in_user == "admin"
        with Transfer(server.url, admin, verify=False) as transfer:
            assert transfer.get("/data/projects", lambda r: r.ok)
        monkeypatch.delenv("REQUESTS_CA_BUNDLE")
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        # Verification is on by default: the private CA is not trusted without the bundle.
        with (
            pytest.raises(UserError, match="cannot reach XNAT"),
            client.connect(server.url, credentials=admin),
        ):
            pass
        with Transfer(server.url, admin) as transfer, pytest.raises(TransferError, match="cannot reach XNAT"):
            transfer.get("/data/projects", lambda r: r.json())
