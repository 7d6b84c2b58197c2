"""Issue 15: the server answers what real XNAT answers to the clients people use.

Each test sends the requests a named client sends (pyxnat 1.6.4 and xnatutils run for real; Brown's
xnat-tools, not installable here, is replayed from the request sequence in its source and run logs)
and checks the shape of the answer, not only the status.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from server_helpers import PROJECT, api

from xnat_prep.server.testing import ServerHandle

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
