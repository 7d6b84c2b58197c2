"""The unmodified xnatpy 0.8.1 client against the bundled server (a real subprocess over HTTP)."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import zipfile
from pathlib import Path

import pytest
import xnat
from server_helpers import ANONYMIZING, PROJECT, SAME_BYTES, api, archived
from xnat.exceptions import XNATLoginFailedError, XNATObjectAlreadyExistsError, XNATUploadError

from xnat_prep.server.testing import ServerHandle


def zip_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {Path(name).name: zf.read(name) for name in zf.namelist()}


def test_connect_with_password_and_list_every_level(populated: ServerHandle, dicom_zip: Path) -> None:
    with xnat.connect(populated.url, user="admin", password="admin", loglevel="ERROR") as session:
        assert session.logged_in_user == "admin"
        assert PROJECT in session.projects
        subject = session.projects[PROJECT].subjects["SUBJ01"]
        assert re.fullmatch(r"XNAT_S\d{5}", subject.id)
        experiment = subject.experiments["SUBJ01_MR1"]
        assert experiment.__xsi_type__ == "xnat:mrSessionData"
        assert re.fullmatch(r"XNAT_E\d{5}", experiment.id)
        assert experiment.data["subject_ID"] == subject.id
        assert experiment.data["date"] == "2024-01-31" and experiment.data["modality"] == "MR"
        assert sorted(experiment.scans.keys()) == ["1", "2", "5"]
        scan = experiment.scans["1"]
        assert scan.__xsi_type__ == "xnat:mrScanData"
        assert (scan.type, scan.series_description, scan.frames, scan.quality) == (
            "T1w MPRAGE",
            "T1w MPRAGE",
            3,
            "usable",
        )
        resource = scan.resources["DICOM"]
        assert (resource.data["format"], resource.data["content"]) == ("DICOM", "RAW")
        assert resource.file_count == 3
        assert sorted(resource.files.keys()) == sorted(archived(dicom_zip, 1))
        assert "SUBJ01_MR1" in [e.label for e in session.experiments.values()]


def test_netrc_login(populated: ServerHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netloc = populated.url.split("://", 1)[1]
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine {netloc}\nlogin admin\npassword admin\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    with xnat.connect(populated.url, loglevel="ERROR") as session:
        assert session.logged_in_user == "admin"
        assert PROJECT in session.projects


def test_alias_token_login_and_invalidation(populated: ServerHandle, xnat_session) -> None:
    alias, secret = xnat_session.services.issue_token()
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", alias)
    with xnat.connect(populated.url, user=alias, password=secret, loglevel="ERROR") as session:
        assert session.logged_in_user == "admin"
        assert PROJECT in session.projects
    # the token also works in the form login and as HTTP Basic
    form = api(
        populated, "PUT", "/data/services/auth", auth=None, data={"username": alias, "password": secret}
    )
    assert form.status_code == 200 and form.cookies.get("JSESSIONID") == form.text
    assert api(populated, "GET", "/data/projects", auth=(alias, secret)).status_code == 200
    xnat_session.get(f"/data/services/tokens/invalidate/{alias}/{secret}")
    assert api(populated, "GET", "/data/projects", auth=(alias, secret)).status_code == 401
    with pytest.raises(XNATLoginFailedError):
        xnat.connect(populated.url, user=alias, password=secret, loglevel="CRITICAL")


@pytest.mark.skipif(ANONYMIZING, reason=SAME_BYTES)
def test_download_scan_zip_and_single_files(xnat_session, dicom_zip: Path, tmp_path: Path) -> None:
    experiment = xnat_session.projects[PROJECT].subjects["SUBJ01"].experiments["SUBJ01_MR1"]
    scan = experiment.scans["1"]
    target = tmp_path / "scan1.zip"
    scan.download(str(target), verbose=False)
    with zipfile.ZipFile(target) as zf:
        assert sorted(zf.namelist()) == [
            f"SUBJ01_MR1/scans/1-T1w_MPRAGE/resources/DICOM/files/{n}" for n in sorted(archived(dicom_zip, 1))
        ]
    original = archived(dicom_zip, 1)
    assert zip_members(target) == original
    for name, file_ in scan.resources["DICOM"].files.items():
        out = tmp_path / name
        file_.download(str(out), verbose=False)  # xnatpy checks the md5 digest of the listing
        assert out.read_bytes() == original[name]
        assert int(file_.size) == len(original[name])  # from a HEAD request
    experiment.download_dir(str(tmp_path / "all"), verbose=False)
    assert len(list((tmp_path / "all").rglob("*.dcm"))) == 7


def test_create_resources_and_upload_files_and_directories(xnat_session, tmp_path: Path) -> None:
    experiment = xnat_session.projects[PROJECT].subjects["SUBJ01"].experiments["SUBJ01_MR1"]
    resource = experiment.create_resource("UPLOADS", format="MISC")
    assert resource.label == "UPLOADS"
    source = tmp_path / "a.txt"
    source.write_bytes(b"first")
    resource.upload(str(source), "sub/a.txt")
    with pytest.raises(XNATUploadError, match="overwrite=true"):
        resource.upload(str(source), "sub/a.txt")
    source.write_bytes(b"second version")
    resource.upload(str(source), "sub/a.txt", overwrite=True)
    tree = tmp_path / "tree"
    (tree / "deep" / "er").mkdir(parents=True)
    (tree / "x.nii").write_bytes(b"x" * 1000)
    (tree / "deep" / "er" / "y.json").write_text('{"y": 1}')
    resource.upload_dir(str(tree), method="tgz_file")
    scan_resource = xnat_session.classes.ResourceCatalog(
        parent=experiment.scans["2"], label="NIFTI", format="NIFTI"
    )
    scan_resource.upload_dir(str(tree), method="per_file")
    resource.clearcache()
    files = resource.files
    assert sorted(files.keys()) == ["deep/er/y.json", "sub/a.txt", "x.nii"]
    assert files["sub/a.txt"].data["digest"] == hashlib.md5(b"second version").hexdigest()
    experiment.scans["2"].clearcache()
    assert sorted(experiment.scans["2"].resources["NIFTI"].files.keys()) == ["deep/er/y.json", "x.nii"]
    assert experiment.scans["2"].resources["NIFTI"].data["format"] == "NIFTI"


def test_custom_fields_are_lower_cased_and_deletable(xnat_session) -> None:
    subject = xnat_session.projects[PROJECT].subjects["SUBJ01"]
    experiment = subject.experiments["SUBJ01_MR1"]
    experiment.fields["Conversion_Status"] = "done"
    experiment.fields["n_nifti"] = "3"
    subject.fields["Group"] = "control"
    experiment.clearcache()
    subject.clearcache()
    assert experiment.fields["conversion_status"] == "done"
    assert experiment.fields["n_nifti"] == "3"
    assert dict(subject.fields) == {"group": "control"}
    del experiment.fields["n_nifti"]
    experiment.clearcache()
    assert "n_nifti" not in experiment.fields and experiment.fields["conversion_status"] == "done"


def test_several_fields_in_one_put(populated: ServerHandle, xnat_session) -> None:
    experiment = xnat_session.projects[PROJECT].subjects["SUBJ01"].experiments["SUBJ01_MR1"]
    xnat_session.put(
        experiment.fulluri,
        query={
            "xsiType": "xnat:mrSessionData",
            "xnat:mrSessionData/fields/field[name=Alpha]/field": "1",
            "xnat:mrSessionData/fields/field[name=beta]/field": "two words",
        },
    )
    experiment.clearcache()
    assert experiment.fields["alpha"] == "1" and experiment.fields["beta"] == "two words"


def test_create_subject_and_session(xnat_session, populated: ServerHandle) -> None:
    project = xnat_session.projects[PROJECT]
    subject = xnat_session.classes.SubjectData(parent=project, label="SUBJ_NEW")
    assert re.fullmatch(r"XNAT_S\d{5}", subject.id)
    session = xnat_session.classes.MrSessionData(parent=subject, label="SUBJ_NEW_MR1")
    assert re.fullmatch(r"XNAT_E\d{5}", session.id)
    project.clearcache()
    assert "SUBJ_NEW_MR1" in [e.label for e in project.experiments.values()]
    with pytest.raises(XNATObjectAlreadyExistsError):
        xnat_session.classes.MrSessionData(parent=subject, label="SUBJ_NEW_MR1")
    scan = xnat_session.classes.MrScanData(parent=session, id="7", type="T2w")
    assert scan.type == "T2w"
    # subject and session in one call, as XNAT allows
    url = f"/data/projects/{PROJECT}/subjects/ONECALL/experiments/ONECALL_CT"
    response = api(populated, "PUT", url, params={"xsiType": "xnat:ctSessionData"})
    assert response.status_code == 201 and response.text.startswith("XNAT_E")
    again = api(populated, "PUT", url, params={"xsiType": "xnat:ctSessionData"})
    assert again.status_code == 200 and again.text == response.text
    xnat_session.clearcache()
    created = xnat_session.projects[PROJECT].subjects["ONECALL"].experiments["ONECALL_CT"]
    assert created.__xsi_type__ == "xnat:ctSessionData"


def test_import_into_archive_with_overwrite_modes(xnat_session, dicom_zip: Path) -> None:
    experiment = xnat_session.services.import_(
        str(dicom_zip), project=PROJECT, subject="SUBJ_IMP", experiment="SUBJ_IMP_MR1"
    )
    assert experiment.label == "SUBJ_IMP_MR1" and experiment.subject.label == "SUBJ_IMP"
    assert sorted(experiment.scans.keys()) == ["1", "2", "5"]
    with pytest.raises(XNATUploadError, match="409"):
        xnat_session.services.import_(
            str(dicom_zip), project=PROJECT, subject="SUBJ_IMP", experiment="SUBJ_IMP_MR1"
        )
    appended = xnat_session.services.import_(
        str(dicom_zip), project=PROJECT, subject="SUBJ_IMP", experiment="SUBJ_IMP_MR1", overwrite="append"
    )
    assert appended.id == experiment.id
    assert appended.scans["1"].resources["DICOM"].file_count == 3  # same files replaced, not doubled


def test_import_without_labels_uses_dicom_identifiers(populated: ServerHandle, dicom_zip: Path) -> None:
    # XNAT's defaults: project from StudyDescription (TESTPROJ), subject from PatientName,
    # session from PatientID
    api(populated, "PUT", "/data/projects/TESTPROJ").raise_for_status()
    response = api(populated, "POST", "/data/services/import", data=dicom_zip.read_bytes())
    assert response.status_code == 200
    doc = api(populated, "GET", response.text.strip(), params={"format": "json"}).json()
    fields = doc["items"][0]["data_fields"]
    assert (fields["project"], fields["label"]) == ("TESTPROJ", "SESS01")


def test_import_to_prearchive_then_archive_or_delete(xnat_session, dicom_zip: Path) -> None:
    pre = xnat_session.services.import_(
        str(dicom_zip), project=PROJECT, destination=f"/prearchive/projects/{PROJECT}"
    )
    assert pre.status == "READY" and pre.project == PROJECT and pre.name == "SESS01"
    assert pre.uri in [s.uri for s in xnat_session.prearchive.sessions(PROJECT)]
    assert sorted(s.id for s in pre.scans) == ["1", "2", "5"]
    assert len(pre.scans[0].files) == 3
    archived = pre.archive(subject="SUBJ_PRE", experiment="SUBJ_PRE_MR1")
    assert archived.label == "SUBJ_PRE_MR1" and sorted(archived.scans.keys()) == ["1", "2", "5"]
    assert pre.uri not in [s.uri for s in xnat_session.prearchive.sessions(PROJECT)]
    other = xnat_session.services.import_(
        str(dicom_zip), project=PROJECT, destination=f"/prearchive/projects/{PROJECT}"
    )
    other.delete()
    assert other.uri not in [s.uri for s in xnat_session.prearchive.sessions(PROJECT)]


def test_dicom_dump(xnat_session) -> None:
    scan = xnat_session.projects[PROJECT].subjects["SUBJ01"].experiments["SUBJ01_MR1"].scans["2"]
    rows = scan.dicom_dump()
    by_desc = {row["desc"]: row for row in rows}
    assert by_desc["Modality"] == {
        "tag1": "(0008,0060)",
        "tag2": "",
        "vr": "CS",
        "value": "MR",
        "desc": "Modality",
    }
    assert by_desc["Series Description"]["value"] == "rest fMRI"
    only = scan.dicom_dump(fields=["SeriesNumber", "00080060"])
    assert sorted(row["desc"] for row in only) == ["Modality", "Series Number"]


def test_disconnect_ends_the_session(populated: ServerHandle) -> None:
    session = xnat.connect(populated.url, user="admin", password="admin", loglevel="ERROR")
    token = session.jsession
    cookies = {"JSESSIONID": token}
    assert api(populated, "GET", "/data/auth", auth=None, cookies=cookies).status_code == 200
    session.disconnect()
    assert api(populated, "GET", "/data/auth", auth=None, cookies=cookies).status_code == 401


def test_upload_of_a_tar_with_extract(populated: ServerHandle) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in (("one.txt", b"1"), ("two/three.txt", b"3")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    base = f"/data/projects/{PROJECT}/subjects/SUBJ01/experiments/SUBJ01_MR1/resources/TARRED"
    response = api(
        populated, "PUT", f"{base}/files/x.tar.gz", params={"extract": "true"}, data=buffer.getvalue()
    )
    assert response.status_code == 200
    rows = api(populated, "GET", f"{base}/files", params={"format": "json"}).json()["ResultSet"]["Result"]
    assert sorted(r["URI"].split("/files/", 1)[1] for r in rows) == ["one.txt", "two/three.txt"]
