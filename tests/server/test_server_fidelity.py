"""Issue 15: the server answers what real XNAT answers to the clients people use.

Each test sends the requests a named client sends (pyxnat 1.6.4 and xnatutils run for real; Brown's
xnat-tools, not installable here, is replayed from the request sequence in its source and run logs)
and checks the shape of the answer, not only the status.
"""

from __future__ import annotations

import email.utils
import hashlib
import io
import re
import tarfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from lxml import etree
from server_helpers import ANONYMIZING, PROJECT, api, archived

from xnat_prep.server.importer import dicom_file_name
from xnat_prep.server.testing import ServerHandle, running_server

SESSION = f"/data/projects/{PROJECT}/subjects/SUBJ01/experiments/SUBJ01_MR1"
NS = {"xnat": "http://nrg.wustl.edu/xnat", "xsi": "http://www.w3.org/2001/XMLSchema-instance"}


@pytest.fixture(scope="module")
def pyxnat_interface(populated: ServerHandle) -> Iterator:
    from pyxnat import Interface

    interface = Interface(server=populated.url, user="admin", password="admin")
    yield interface
    interface.disconnect()


def ids(populated: ServerHandle) -> tuple[str, str]:
    """(subject ID, experiment ID) of SUBJ01/SUBJ01_MR1."""
    row = api(populated, "GET", SESSION, params={"format": "json"}).json()["items"][0]["data_fields"]
    return row["subject_ID"], row["ID"]


# ---- 1. format=xml ---------------------------------------------------------------------------------


def test_object_xml_is_the_xnat_document_pyxnat_parses(populated: ServerHandle, pyxnat_interface) -> None:
    experiment = pyxnat_interface.select.project(PROJECT).subject("SUBJ01").experiment("SUBJ01_MR1")
    root = etree.fromstring(experiment.get())  # pyxnat: GET ...?format=xml, parsed with lxml
    assert root.tag == "{http://nrg.wustl.edu/xnat}MRSession"
    assert root.get("label") == "SUBJ01_MR1" and root.get("project") == PROJECT
    assert experiment.xpath("//xnat:date/text()") == ["2024-01-31"]
    assert experiment.xpath("xnat:subject_ID/text()") == [ids(populated)[0]]
    scans = root.findall("xnat:scans/xnat:scan", NS)
    assert [(s.get("ID"), s.get(f"{{{NS['xsi']}}}type")) for s in scans] == [
        ("1", "xnat:mrScanData"),
        ("2", "xnat:mrScanData"),
        ("5", "xnat:mrScanData"),
    ]
    dicom = scans[0].find("xnat:file", NS)
    assert (dicom.get("label"), dicom.get("format"), dicom.get("file_count")) == ("DICOM", "DICOM", "3")
    # custom fields are in the document too (pyxnat's custom variables read them from here)
    experiment.attrs.set("xnat:mrSessionData/fields/field[name=xmlcheck]/field", "yes")
    field = etree.fromstring(experiment.get()).find("xnat:fields/xnat:field[@name='xmlcheck']", NS)
    assert field is not None and field.text == "yes"
    project = pyxnat_interface.select.project(PROJECT)
    assert etree.fromstring(project.get()).tag == "{http://nrg.wustl.edu/xnat}Project"
    assert project.get_custom_variables() == {}  # parses; this server defines no variable sets
    scan_xml = api(populated, "GET", f"{SESSION}/scans/1", params={"format": "xml"})
    assert scan_xml.headers["Content-Type"].startswith("text/xml")
    assert etree.fromstring(scan_xml.content).get("type") == "T1w MPRAGE"
    assert api(populated, "GET", SESSION, params={"format": "html"}).status_code == 400


# ---- 2. handler=values -------------------------------------------------------------------------------


def test_handler_values_answers_one_row_with_the_columns_xnat_tools_asks_for(populated: ServerHandle) -> None:
    subject_id, experiment_id = ids(populated)
    # xnat_tools/xnat_utils.py get_project_subject_session: the first two calls of every export
    exp = api(
        populated,
        "GET",
        f"/data/experiments/{experiment_id}",
        params={"format": "json", "handler": "values", "columns": "project,subject_ID,label"},
    ).json()
    assert exp["ResultSet"]["Result"] == [
        {"project": PROJECT, "subject_ID": subject_id, "label": "SUBJ01_MR1"}
    ]
    sub = api(
        populated,
        "GET",
        f"/data/subjects/{subject_id}",
        params={"format": "json", "handler": "values", "columns": "label"},
    ).json()
    assert sub["ResultSet"]["Result"] == [{"label": "SUBJ01"}]


# ---- 3, 4. xnat-tools' file listings -------------------------------------------------------------------


def test_xnat_tools_scan_listings_locator_and_absent_resource(populated: ServerHandle) -> None:
    """xnat_tools/bids_utils.py list_xnat_resources, as Brown's run log shows it, for scan 1."""
    _, experiment_id = ids(populated)
    scan = f"/data/experiments/{experiment_id}/scans/1"
    labels = [r["label"] for r in api(populated, "GET", f"{scan}/resources/").json()["ResultSet"]["Result"]]
    assert "DICOM" in labels
    plain = api(populated, "GET", f"{scan}/resources/DICOM/files", params={"format": "json"}).json()
    located = api(
        populated,
        "GET",
        f"{scan}/resources/DICOM/files",
        params={"format": "json", "locator": "absolutePath"},
    ).json()["ResultSet"]["Result"]
    assert [r["Name"] for r in located] == [r["Name"] for r in plain["ResultSet"]["Result"]]
    for row in located:
        path = Path(row["absolutePath"])
        assert path.is_absolute() and hashlib.md5(path.read_bytes()).hexdigest() == row["digest"]
    assert "absolutePath" not in plain["ResultSet"]["Result"][0]
    # every scan is also asked for MRS files, and raise_for_status() is called on the answer
    mrs = api(populated, "GET", f"{scan}/resources/MRS/files", params={"format": "json"})
    assert mrs.status_code == 200 and mrs.json()["ResultSet"] == {
        "Result": [],
        "totalRecords": "0",
        "title": "Results",
    }
    # a file or a zip of a resource that does not exist is still not found
    assert api(populated, "GET", f"{scan}/resources/MRS/files/x.dcm").status_code == 404
    assert api(populated, "GET", f"{scan}/resources/MRS/files", params={"format": "zip"}).status_code == 404
    assert api(populated, "GET", f"{scan}/resources/DICOM/files", params={"locator": "x"}).status_code == 400


# ---- 5, 6. modification times ------------------------------------------------------------------------------


def test_files_carry_last_modified_and_pyxnat_reads_it(pyxnat_interface, tmp_path: Path) -> None:
    """pyxnat resources_test::test_12_file_last_modified (the put creates subject and resource)."""
    source = tmp_path / "hello.txt"
    source.write_text("Hello XNAT!\n")
    before = time.time()
    f = pyxnat_interface.select.project(PROJECT).subject("FID_FILES").resource("test").file("hello.txt")
    f.put(str(source))
    stamp = f.last_modified()  # a HEAD request's Last-Modified header
    assert isinstance(stamp, str)
    assert abs(email.utils.parsedate_to_datetime(stamp).timestamp() - before) < 60


def test_subject_last_modified_column_changes_with_an_edit(pyxnat_interface, populated: ServerHandle) -> None:
    """pyxnat resources_test::test_13_last_modified (Project.last_modified: subjects?columns=...)."""
    project = pyxnat_interface.select.project(PROJECT)
    subject = project.subject("FID_MODIFIED")
    subject.create()
    t1 = project.last_modified()[subject.id()]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", t1)
    time.sleep(0.01)
    subject.attrs.set("xnat:subjectData/fields/field[name=touched]/field", "1")
    assert project.last_modified()[subject.id()] > t1


# ---- 8, 9. xpath values: stored or refused, typed as the schema says ---------------------------------------


def test_pyxnat_attributes_nested_xpaths_ids_and_float_form(pyxnat_interface) -> None:
    """pyxnat attributes_test (create with nested xpaths and IDs, attrs get/mget/set/mset)."""
    sid, eid = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    project = pyxnat_interface.select.project(PROJECT)
    project.subject(sid).experiment(eid).create(
        **{
            "experiment": "xnat:mrSessionData",
            "ID": f"TEST_{eid}",
            "xnat:mrSessionData/age": "42",
            "xnat:subjectData/investigator/lastname": "doe",
            "xnat:subjectData/investigator/firstname": "john",
            "xnat:subjectData/ID": f"TEST_{sid}",
        }
    )
    subject = project.subject(f"TEST_{sid}")
    experiment = subject.experiment(f"TEST_{eid}")
    assert subject.id() == f"TEST_{sid}" and subject.label() == sid
    assert experiment.id() == f"TEST_{eid}" and experiment.label() == eid
    assert experiment.attrs.get("xnat:mrSessionData/age") == "42.0"  # xs:float, as XNAT answers
    names = ["xnat:subjectData/investigator/firstname", "xnat:subjectData/investigator/lastname"]
    assert subject.attrs.mget(names) == ["john", "doe"]
    experiment.attrs.set("xnat:mrSessionData/age", "26")
    assert experiment.attrs.get("xnat:mrSessionData/age") == "26.0"
    subject.attrs.mset(dict(zip(names, ["george", "abidbol"], strict=True)))
    assert subject.attrs.mget(names) == ["george", "abidbol"]
    subject.attrs.set("age", "26")  # a shortcut: demographics[@xsi:type=xnat:demographicData]/age
    assert subject.attrs.get("age") == "26"  # xs:integer
    doc = etree.fromstring(subject.get())
    demographics = doc.find("xnat:demographics", NS)
    assert demographics.get(f"{{{NS['xsi']}}}type") == "xnat:demographicData"
    assert demographics.findtext("xnat:age", namespaces=NS) == "26"
    assert doc.findtext("xnat:investigator/xnat:lastname", namespaces=NS) == "abidbol"


def test_unknown_xpaths_and_bad_values_are_refused_not_dropped(populated: ServerHandle) -> None:
    subject_uri = f"/data/projects/{PROJECT}/subjects/SUBJ01"
    for key, value in [
        ("xnat:subjectData/investigator/nickname", "jo"),  # not in the schema
        ("xnat:subjectData/nonsense", "1"),
        ("xnat:mrSessionData/age", "42"),  # another type's xpath
        ("xnat:subjectData/demographics[@xsi:type=xnat:demographicData]/age", "forty"),  # xs:integer
    ]:
        answer = api(populated, "PUT", subject_uri, params={"xsiType": "xnat:subjectData", key: value})
        assert answer.status_code == 400, key
        assert key.split("/")[-1] in answer.text or "integer" in answer.text
    doc = etree.fromstring(api(populated, "GET", subject_uri, params={"format": "xml"}).content)
    assert doc.find("xnat:investigator", NS) is None and doc.find("xnat:demographics", NS) is None
    # options that are not values are left alone, as XNAT does
    ok = api(populated, "PUT", subject_uri, params={"xsiType": "xnat:subjectData", "event_reason": "x"})
    assert ok.status_code == 200
    _, experiment_id = ids(populated)
    moved = api(populated, "PUT", f"/data/experiments/{experiment_id}", params={"ID": "OTHER"})
    assert moved.status_code == 400 and "ID cannot be modified" in moved.text


def test_project_aliases_are_stored_and_listed(pyxnat_interface, populated: ServerHandle) -> None:
    """pyxnat resources_test::test_19_project_aliases: the alias set through an xpath reads back."""
    api(populated, "PUT", "/data/projects/FID_ALIASED").raise_for_status()
    project = pyxnat_interface.select.project("FID_ALIASED")
    project.attrs.set("xnat:projectData/aliases/alias[0]/alias", "fidalias")
    assert project.aliases() == ["fidalias"]
    assert (
        api(populated, "GET", "/data/projects/fidalias", params={"format": "json"}).json()["items"][0][
            "data_fields"
        ]["ID"]
        == "FID_ALIASED"
    )  # XNAT resolves a project by ID or alias
    taken = api(populated, "PUT", f"/data/projects/{PROJECT}", params={"alias": "fidalias"})
    assert taken.status_code == 409


def test_xnatpy_scan_with_an_id_other_than_its_type(xnat_session) -> None:
    """xnatpy MrScanData(parent=exp, id=..., type=...) PUTs .../scans/{type}?xnat:mrScanData/id=..."""
    subject = xnat_session.projects[PROJECT].subjects["SUBJ01"]
    experiment = xnat_session.classes.MrSessionData(parent=subject, label="FID_SCANS")
    xnat_session.classes.MrScanData(parent=experiment, id="77", type="FIDT1w")
    experiment.clearcache()
    scan = experiment.scans["77"]  # XNAT's ScanResource: the ID in the query wins over the URI's
    assert scan.type == "FIDT1w"
    assert "id" not in scan.data  # no stray data field next to ID
    assert [s.id for s in experiment.scans.values()] == ["77"]


def test_project_listing_order_is_case_insensitive(populated: ServerHandle, xnat_session) -> None:
    """xnatpy's functional test_list_projects expects dummydicomproject before TRAINING."""
    for project in ("TRAINING_FID", "dummydicomproject_fid"):
        api(populated, "PUT", f"/data/projects/{project}").raise_for_status()
    listed = [r["ID"] for r in api(populated, "GET", "/data/projects").json()["ResultSet"]["Result"]]
    assert listed == sorted(listed, key=str.lower)
    assert listed.index("dummydicomproject_fid") < listed.index("TRAINING_FID")


def test_tar_of_symlinks_is_refused_naming_them(populated: ServerHandle, tmp_path: Path) -> None:
    """xnatutils xnat-put (default tgz) tars symlinks into a temp dir; an empty resource was the result."""
    (tmp_path / "real.txt").write_text("data")
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(tmp_path / "link.txt", arcname="link.txt")  # not dereferenced, as xnatpy's upload_dir
    uri = f"{SESSION}/resources/FID_TAR/files/upload.tar.gz"
    answer = api(populated, "PUT", uri, params={"extract": "true"}, data=buf.getvalue())
    assert answer.status_code == 400 and "link.txt" in answer.text
    listing = api(populated, "GET", f"{SESSION}/resources/FID_TAR/files").json()
    assert listing["ResultSet"]["Result"] == []


# ---- 7. archived DICOM names; xnatutils -------------------------------------------------------------------


def test_xnat_get_strip_name_reads_instance_numbers_from_archived_names(
    xnat_session, dicom_zip: Path, tmp_path: Path
) -> None:
    """xnatutils xnat-get --strip_name: int(name.split("-")[-2]) is the InstanceNumber."""
    xnatutils = pytest.importorskip("xnatutils", reason="xnatutils is a test extra (pip install xnatutils)")
    names = sorted(archived(dicom_zip, 1))
    assert all(re.fullmatch(r"[\d.]+-1-[123]-[0-9a-z]+\.dcm", n) for n in names), names
    xnatutils.get(
        "SUBJ01_MR1",
        str(tmp_path),
        scans="T1w.*",
        project_id=PROJECT,
        subject_id="SUBJ01",
        strip_name=True,
        connection=xnat_session,
    )
    scan_dir = tmp_path / "SUBJ01_MR1" / "1-T1w_MPRAGE"
    assert sorted(p.name for p in scan_dir.iterdir()) == ["0001.dcm", "0002.dcm", "0003.dcm"]
    for path in scan_dir.iterdir():
        instance = pydicom.dcmread(path, stop_before_pixels=True).InstanceNumber
        assert path.name == f"{instance:04d}.dcm"


def test_xnat_put_of_a_folder_passes_its_md5_check(xnat_session, tmp_path: Path) -> None:
    """xnatutils xnat-put DIR (default method: a tgz, extracted): then every file's md5 is compared
    with the listing's digest."""
    xnatutils = pytest.importorskip("xnatutils", reason="xnatutils is a test extra (pip install xnatutils)")
    folder = tmp_path / "nifti"
    folder.mkdir()
    (folder / "t1.nii").write_bytes(b"nifti" * 100)
    (folder / "t1.json").write_text('{"EchoTime": 0.003}')
    common = {
        "project_id": PROJECT,
        "subject_id": "FID_PUT",
        "create_session": True,
        "connection": xnat_session,
    }
    xnatutils.put("FID_PUT_MR1", "t1w", str(folder), resource_name="NIFTI", **common)
    experiment = xnat_session.projects[PROJECT].subjects["FID_PUT"].experiments["FID_PUT_MR1"]
    assert sorted(experiment.scans["t1w"].resources["NIFTI"].files.keys()) == ["t1.json", "t1.nii"]
    # given files, xnat-put symlinks them into a temporary folder and tars that: a tar of links,
    # which the server refuses naming them (it used to answer 200 with an empty resource)
    from xnat.exceptions import XNATUploadError

    files = [str(folder / "t1.nii"), str(folder / "t1.json")]
    with pytest.raises(XNATUploadError, match="symbolic links"):
        xnatutils.put("FID_PUT_MR1", "t1w", *files, resource_name="LINKS", **common)


# ---- 11. assessors, reconstructions, sharing, users, accessibility ----------------------------------------


def test_pyxnat_assessors_and_reconstructions(
    pyxnat_interface, populated: ServerHandle, tmp_path: Path
) -> None:
    """pyxnat resources_test 01-06 (create, exists, datatype, multi_create) plus resources and params."""
    project = pyxnat_interface.select.project(PROJECT)
    experiment = project.subject("FID_DERIVED").experiment("FID_DERIVED_MR1")
    experiment.create()  # subject too
    assessor = experiment.assessor("FID_FS")
    recon = experiment.reconstruction("FID_RECON")
    assert not assessor.exists() and not recon.exists()
    assessor.create()  # PUT .../assessors/FID_FS?xsiType=xnat:mrAssessorData
    recon.create()  # PUT .../reconstructions/FID_RECON?xsiType=xnat:reconstructedImageData
    assert assessor.exists() and recon.exists()
    assert assessor.datatype() == "xnat:mrAssessorData"
    assert re.fullmatch(r"XNAT_E\d{5}", assessor.id())  # an experiment of its own
    source = tmp_path / "aseg.stats"
    source.write_text("# stats\n")
    assessor.out_resource("FS").file("stats/aseg.stats").put(str(source))
    assessor.in_resource("T1").file("t1.nii").put(str(source))

    def labels(path: str) -> list[str]:
        rows = api(populated, "GET", f"/data/experiments/{assessor.id()}/{path}").json()["ResultSet"][
            "Result"
        ]
        return [r["label"] for r in rows]

    assert labels("out/resources") == ["FS"] == labels("resources")  # .../resources are the outputs
    assert labels("in/resources") == ["T1"]
    assert assessor.out_resource("FS").file("stats/aseg.stats").exists()
    assessor.set_param("fs_version", "7.4.1")
    assert assessor.params() == ["fs_version"] and assessor.get_param("fs_version") == "7.4.1"
    # the session's document holds them; the subject's experiment listing does not list the assessor
    doc = etree.fromstring(experiment.get())
    node = doc.find("xnat:assessors/xnat:assessor", NS)
    assert node.get(f"{{{NS['xsi']}}}type") == "xnat:mrAssessorData" and node.get("label") == "FID_FS"
    assert node.find("xnat:out/xnat:file", NS).get("label") == "FS"
    assert doc.find("xnat:reconstructions/xnat:reconstructedImage", NS).get("ID") == "FID_RECON"
    listed = api(populated, "GET", f"/data/projects/{PROJECT}/subjects/FID_DERIVED/experiments").json()
    assert [r["label"] for r in listed["ResultSet"]["Result"]] == ["FID_DERIVED_MR1"]
    # test_06_multi_create: parents created with the types asked for
    pet = pyxnat_interface.select(
        f"/projects/{PROJECT}/subjects/FID_PET/experiments/FID_PET_1/assessors/FID_PET_QC"
    )
    pet.create(experiments="xnat:petSessionData", assessors="xnat:petAssessorData")
    assert pet.datatype() == "xnat:petAssessorData"
    assert project.subject("FID_PET").experiment("FID_PET_1").datatype() == "xnat:petSessionData"
    # deleting the session deletes what hangs below it
    assessor_uri = f"/data/experiments/{assessor.id()}"
    assert api(populated, "GET", assessor_uri, params={"format": "json"}).status_code == 200
    experiment.delete()
    assert api(populated, "GET", assessor_uri, params={"format": "json"}).status_code == 404


def test_xnatpy_lists_assessors_with_registered_types(xnat_session, populated: ServerHandle) -> None:
    subject = xnat_session.projects[PROJECT].subjects["SUBJ01"]
    session = xnat_session.classes.MrSessionData(parent=subject, label="FID_XNATPY_ASSESSED")
    uri = f"/data/experiments/{session.id}/assessors/FID_QC"
    created = api(populated, "PUT", uri, params={"xsiType": "xnat:mrAssessorData"})
    assert created.status_code == 201 and created.text.startswith("XNAT_E")
    session.clearcache()
    assessors = session.assessors
    assert [a.label for a in assessors.values()] == ["FID_QC"]
    assert assessors["FID_QC"].__xsi_type__ == "xnat:mrAssessorData"
    refused = api(populated, "PUT", f"{uri}2", params={"xsiType": "xnat:mrSessionData"})
    assert refused.status_code == 400  # not an assessor type


def test_pyxnat_shares_subjects_and_experiments(pyxnat_interface, populated: ServerHandle) -> None:
    """pyxnat resources_test::test_24_share_subject and test_25_share_experiment."""
    for project in ("FID_SHARE_A", "FID_SHARE_B"):
        api(populated, "PUT", f"/data/projects/{project}").raise_for_status()
    proj_a = pyxnat_interface.select.project("FID_SHARE_A")
    proj_b = pyxnat_interface.select.project("FID_SHARE_B")
    proj_a.subject("rs").experiment("rs_MR1").create()
    subj_a = proj_a.subject("rs")
    assert not proj_b.subject("rs").exists()
    subj_a.share("FID_SHARE_B")  # PUT .../subjects/{ID}/projects/FID_SHARE_B?label=rs
    assert proj_b.subject("rs").exists()
    assert set(subj_a.shares().get()) == {"FID_SHARE_A", "FID_SHARE_B"}
    again = api(populated, "PUT", "/data/projects/FID_SHARE_A/subjects/rs/projects/FID_SHARE_B")
    assert again.status_code == 409 and "Already assigned" in again.text
    subj_a.unshare("FID_SHARE_B")
    assert not proj_b.subject("rs").exists()

    exp_a = proj_a.experiment("rs_MR1")
    assert not proj_b.experiment("rs_MR1").exists()
    exp_a.share("FID_SHARE_B")
    assert proj_b.experiment("rs_MR1").exists()  # listed and found in B, still A's experiment
    assert set(exp_a.shares().get()) == {"FID_SHARE_A", "FID_SHARE_B"}
    shared_doc = api(
        populated, "GET", "/data/projects/FID_SHARE_B/experiments/rs_MR1", params={"format": "xml"}
    )
    share = etree.fromstring(shared_doc.content).find("xnat:sharing/xnat:share", NS)
    assert (share.get("project"), share.get("label")) == ("FID_SHARE_B", "rs_MR1")
    assert etree.fromstring(shared_doc.content).get("project") == "FID_SHARE_A"
    exp_a.unshare("FID_SHARE_B")
    assert not proj_b.experiment("rs_MR1").exists()
    owner = api(populated, "DELETE", "/data/projects/FID_SHARE_A/subjects/rs/projects/FID_SHARE_A")
    assert owner.status_code == 400  # an object cannot leave its own project by unsharing


def test_pyxnat_users_and_project_accessibility(pyxnat_interface) -> None:
    """pyxnat user_and_project_management_test: /data/users and .../accessibility."""
    users = pyxnat_interface.manage.users
    assert users() == ["admin"]
    assert users.id("admin") == "1" and users.firstname("admin") == ""
    project = pyxnat_interface.select.project(PROJECT)
    assert "admin" in project.users()
    assert project.accessibility() == b"private"
    project.set_accessibility("protected")
    assert project.accessibility() == b"protected"
    project.set_accessibility("private")
    assert project.accessibility() == b"private"


# ---- 10. anonymization on import (off by default) ----------------------------------------------------------

CUSTOM_SCRIPT = """\
version "6.1"
// a custom site script within the subset the server runs
- (0008,1010)
(0008,0060) = "MR" ? (0008,103E) := "anonymized series"
project != "Unassigned" ? (0008,1030) := project
"""


@pytest.mark.parametrize("mode", ["off", "default", "custom"])
def test_import_round_trip_with_and_without_site_anonymization(
    tmp_path: Path, dicom_zip: Path, mode: str
) -> None:
    """Downloaded equals uploaded only where the site does not anonymize (XNAT's default script:
    StudyDescription := project, PatientName := subject, PatientID := session)."""
    if mode == "off" and ANONYMIZING:
        pytest.skip("XNAT_PREP_SERVER_ARGS turns anonymization on for every server")
    script = tmp_path / "site.das"
    script.write_text(CUSTOM_SCRIPT)
    args = {"off": [], "default": ["--anonymize"], "custom": ["--anonymize-script", str(script)]}[mode]
    with running_server(tmp_path / "data", extra_args=args) as srv:
        api(srv, "PUT", "/data/projects/ANON").raise_for_status()
        labels = {"project": "ANON", "subject": "SUBJ_A", "session": "SESS_A"}
        uri = api(
            srv, "POST", "/data/services/import", params=labels, data=dicom_zip.read_bytes()
        ).text.strip()
        session = api(srv, "GET", uri, params={"format": "json"}).json()["items"][0]["data_fields"]
        answer = api(srv, "GET", f"{uri}/scans/1/files", params={"format": "zip"})
        with zipfile.ZipFile(io.BytesIO(answer.content)) as zf:
            got = {Path(n).name: zf.read(n) for n in zf.namelist()}
    sent = archived(dicom_zip, 1)
    if mode == "off":
        assert got == sent
        assert (session["dcmPatientName"], session["dcmPatientId"]) == ("SUBJ01", "SESS01")
        return
    originals = {
        pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID: pydicom.dcmread(io.BytesIO(d)) for d in sent.values()
    }
    assert len(got) == len(originals)
    for name, data in got.items():
        ds = pydicom.dcmread(io.BytesIO(data))
        before = originals[ds.SOPInstanceUID]
        assert ds.PixelData == before.PixelData and ds.StudyDescription == "ANON"
        assert name == dicom_file_name(ds)  # named after the rewrite
        if mode == "default":
            assert (str(ds.PatientName), ds.PatientID) == ("SUBJ_A", "SESS_A")
            assert ds.SeriesDescription == before.SeriesDescription and ds.StationName == "SCANNER1"
        else:
            assert (str(ds.PatientName), ds.PatientID) == ("SUBJ01", "SESS01")
            assert ds.SeriesDescription == "anonymized series" and "StationName" not in ds
    if mode == "default":
        assert (session["dcmPatientName"], session["dcmPatientId"]) == ("SUBJ_A", "SESS_A")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            "--anonymize-script",
            'version "6.1"\nremoveAllPrivateTags\n',
            r"site.das:2: not in the DicomEdit subset",
        ),
        (
            "--dicom-file-name-template",
            "${PatientsName}-${SOPInstanceUID}",
            r"PatientsName is not a DICOM keyword",
        ),
    ],
)
def test_a_script_or_template_it_cannot_honour_stops_the_server(
    tmp_path: Path, option: str, value: str, message: str
) -> None:
    script = tmp_path / "site.das"
    script.write_text(value)
    arg = str(script) if option == "--anonymize-script" else value
    with (
        pytest.raises(RuntimeError, match=message),
        running_server(tmp_path / "data", extra_args=[option, arg]),
    ):
        pass
