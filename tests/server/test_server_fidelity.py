"""Issue 15: the server answers what real XNAT answers to the clients people use.

Each test sends the requests a named client sends (pyxnat 1.6.4 and xnatutils run for real; Brown's
xnat-tools, not installable here, is replayed from the request sequence in its source and run logs)
and checks the shape of the answer, not only the status.
"""

from __future__ import annotations

from collections.abc import Iterator

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
