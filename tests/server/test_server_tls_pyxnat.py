"""TLS with a trustme CA, and the pyxnat client doing listing, download and a field write."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests
import trustme
import xnat
from server_helpers import PROJECT, api, archived

from xnat_prep.server.testing import ServerHandle, running_server


def test_https_with_xnatpy_verifying_the_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    with running_server(tmp_path / "data", tls=(cert_file, key_file)) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        # xnatpy 0.8.1 does not apply a CA path given as verify= to its requests session;
        # requests itself reads REQUESTS_CA_BUNDLE
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
        with xnat.connect(srv.url, user="admin", password="admin", loglevel="ERROR") as session:
            assert session.logged_in_user == "admin"
            assert list(session.projects.keys()) == []
        assert api(srv, "GET", "/data/auth", verify=str(ca_file)).status_code == 200
        monkeypatch.delenv("REQUESTS_CA_BUNDLE")
        with pytest.raises(requests.exceptions.SSLError):
            api(srv, "GET", "/data/auth", verify=True)  # not signed by a system CA


def test_pyxnat_lists_downloads_and_writes_a_field(
    populated: ServerHandle, dicom_zip: Path, tmp_path: Path
) -> None:
    from pyxnat import Interface

    interface = Interface(server=populated.url, user="admin", password="admin")
    try:
        assert PROJECT in interface.select.projects().get()
        project = interface.select.project(PROJECT)
        subject = project.subject("SUBJ01")
        assert subject.exists() and subject.id() in project.subjects().get()
        experiment = subject.experiment("SUBJ01_MR1")
        assert experiment.datatype() == "xnat:mrSessionData"
        assert sorted(experiment.scans().get()) == ["1", "2", "5"]
        dicom = experiment.scan("1").resource("DICOM")
        names = sorted(archived(dicom_zip, 1))
        assert sorted(dicom.files().get()) == names
        target = tmp_path / "first.dcm"
        dicom.file(names[0]).get(str(target))
        listing = api(
            populated,
            "GET",
            f"/data/projects/{PROJECT}/subjects/SUBJ01/experiments/SUBJ01_MR1/scans/1/resources/DICOM/files",
            params={"format": "json"},
        ).json()
        digest = next(r["digest"] for r in listing["ResultSet"]["Result"] if r["Name"] == names[0])
        assert hashlib.md5(target.read_bytes()).hexdigest() == digest
        source = tmp_path / "upload.txt"
        source.write_text("from pyxnat")
        experiment.resource("PYX").file("sub/upload.txt").put(str(source))  # POST ...?inbody=true
        assert experiment.resource("PYX").file("sub/upload.txt").exists()
        experiment.attrs.set("xnat:mrSessionData/fields/field[name=PyxnatField]/field", "from pyxnat")
        assert (
            experiment.attrs.get("xnat:mrSessionData/fields/field[name=pyxnatfield]/field") == "from pyxnat"
        )
        assert experiment.attrs.get("xnat:mrSessionData/date") == "2024-01-31"
    finally:
        interface.disconnect()
    doc = api(
        populated,
        "GET",
        f"/data/projects/{PROJECT}/subjects/SUBJ01/experiments/SUBJ01_MR1",
        params={"format": "json"},
    ).json()
    fields = {
        i["data_fields"]["name"]: i["data_fields"]["field"] for i in doc["items"][0]["children"][0]["items"]
    }
    assert fields["pyxnatfield"] == "from pyxnat"
