"""upload_session and set_variables against the real server: idempotent, verified on the server."""

from __future__ import annotations

import hashlib

import pytest
import requests
from step_helpers import ADMIN, FAST_RETRY, import_session

from xnat_prep import convert, receipts, upload, variables
from xnat_prep.errors import UserError
from xnat_prep.server.testing import running_server
from xnat_prep.xnat_api import Connection


def modifying(server, since):
    return [r for r in server.requests()[since:] if r["method"] in ("PUT", "POST", "DELETE")]


@pytest.fixture
def converted(tmp_path):
    """A server with one session of two image scans and a non-image one, converted locally."""
    with running_server(tmp_path / "xnat") as server:
        series = [
            {"n_slices": 4, "description": "T1w"},
            {"n_slices": 3, "description": "rest_bold"},
            {
                "n_slices": 1,
                "description": "report",
                "sop_class": "1.2.840.10008.5.1.4.1.1.88.11",
                "pixels": False,
            },
        ]
        session = import_session(server.url, tmp_path / "dicom", "E1", series)
        scans = []
        for scan_id in session.files:
            receipt = tmp_path / "nifti" / f"{scan_id}.json"
            convert.convert_scan(
                dicom_dir=tmp_path / "dicom" / "E1" / scan_id,
                receipt=receipt,
                name=f"scan{scan_id}",
                scan_id=scan_id,
                scan_type=series[int(scan_id) - 1]["description"],
            )
            scans.append((scan_id, receipt))
        yield server, session, scans


def server_digests(server, session_id, scan_id):
    answer = requests.get(
        f"{server.url}/data/experiments/{session_id}/scans/{scan_id}/resources/NIFTI/files",
        params={"format": "json"},
        auth=server.admin,
        timeout=30,
    )
    if answer.status_code == 404:  # no NIFTI resource
        return {}
    rows = answer.json()["ResultSet"]["Result"]
    return {r["Name"]: r["digest"] for r in rows}


def test_upload_then_reupload_sends_nothing(tmp_path, converted):
    server, session, scans = converted
    kwargs = {
        "session_id": session.session_id,
        "convert_receipts": [r for _, r in scans],
        "credentials": ADMIN,
    }
    first = upload.upload_session(Connection(server.url), receipt=tmp_path / "up1.json", **kwargs)
    assert first["scans"]["3"]["status"] == "skipped"
    for scan_id in ("1", "2"):
        entry = first["scans"][scan_id]
        local = {f["name"]: f["md5"] for f in entry["files"]}
        assert sorted(entry["sent"]) == sorted(local) and local
        assert server_digests(server, session.session_id, scan_id) == local
        for name, digest in local.items():
            assert hashlib.md5((tmp_path / "nifti" / scan_id / name).read_bytes()).hexdigest() == digest
    assert first["versions"]["dcm2niix"] and first["versions"]["xnat_prep"]
    assert server_digests(server, session.session_id, "3") == {}

    mark = len(server.requests())
    second = upload.upload_session(Connection(server.url), receipt=tmp_path / "up2.json", **kwargs)
    assert modifying(server, mark) == []
    assert second["sent"] == 0 and second["scans"]["1"]["unchanged"] == sorted(first["scans"]["1"]["sent"])

    # A changed output (reconverted) is sent again, alone.
    nifti = tmp_path / "nifti" / "1" / "scan1.json"
    nifti.write_text(nifti.read_text().replace("{", '{"Note": "edited",', 1))
    data = receipts.read(scans[0][1])
    for output in data["outputs"]:
        if output["name"] == "scan1.json":
            output["md5"] = hashlib.md5(nifti.read_bytes()).hexdigest()
    receipts.write(scans[0][1], data)
    mark = len(server.requests())
    third = upload.upload_session(Connection(server.url), receipt=tmp_path / "up3.json", **kwargs)
    assert third["scans"]["1"]["sent"] == ["scan1.json"] and third["sent"] == 1
    assert [r["method"] for r in modifying(server, mark)] == ["PUT"]


def test_upload_refuses_outputs_changed_since_conversion(tmp_path, converted):
    server, session, scans = converted
    (tmp_path / "nifti" / "1" / "scan1.json").write_text("{}")
    with pytest.raises(UserError, match="changed since conversion"):
        upload.upload_session(
            Connection(server.url),
            session_id=session.session_id,
            convert_receipts=[r for _, r in scans],
            receipt=tmp_path / "u.json",
            credentials=ADMIN,
        )


def test_set_variables_twice_second_time_no_writes(tmp_path, converted):
    server, session, scans = converted
    derived = [{"name": "bold_volumes", "scan_types": ["*bold*"], "measure": "n_volumes"}]
    values = variables.derive([r for _, r in scans], "xp_", derived) | {"group": "control"}
    assert values["xp_status"] == "complete" and values["bold_volumes"] == "1"
    kwargs = {"session_id": session.session_id, "values": values, "credentials": ADMIN}

    mark = len(server.requests())
    first = variables.set_variables(Connection(server.url), receipt=tmp_path / "v1.json", **kwargs)
    assert [r["method"] for r in modifying(server, mark)] == ["PUT"]  # all variables in one request
    assert first["written"] == sorted(values) and first["after"] == dict(sorted(values.items()))
    assert all(v is None for v in first["before"].values())
    document = requests.get(
        f"{server.url}/data/experiments/{session.session_id}",
        params={"format": "json"},
        auth=server.admin,
        timeout=30,
    ).json()
    fields = next(c for c in document["items"][0]["children"] if c["field"] == "fields/field")["items"]
    assert {f["data_fields"]["name"]: f["data_fields"]["field"] for f in fields} == values

    mark = len(server.requests())
    second = variables.set_variables(Connection(server.url), receipt=tmp_path / "v2.json", **kwargs)
    assert modifying(server, mark) == [] and second["written"] == []

    changed = variables.set_variables(
        Connection(server.url), receipt=tmp_path / "v3.json", **(kwargs | {"values": {"group": "patient"}})
    )
    assert changed["written"] == ["group"] and changed["before"] == {"group": "control"}


def test_writes_complete_through_a_flaky_xnat_and_a_rerun_changes_nothing(tmp_path, converted):
    """25% of every request to the session (PUTs included) answered 500/503/429 or reset: upload
    and variables still complete, verified; a rerun on a healthy server sends no modifying request."""
    server, session, scans = converted
    faults = server.url + "/xapi/xnatprep/faults"
    spec = "seed=5,error=0.2,reset=0.05,statuses=500:503:429,path=^/data/experiments/"
    requests.put(faults, json={"spec": spec}, auth=server.admin, timeout=10).raise_for_status()
    receipts_ = [r for _, r in scans]
    values = variables.derive(receipts_, "xp_", []) | {"group": "control"}
    connection = Connection(server.url)
    mark = len(server.requests())
    try:
        for attempt in ("faults", "rerun"):
            if attempt == "rerun":
                requests.delete(faults, auth=server.admin, timeout=10).raise_for_status()
                mark = len(server.requests())
            uploaded = upload.upload_session(
                connection,
                session_id=session.session_id,
                convert_receipts=receipts_,
                receipt=tmp_path / f"up-{attempt}.json",
                credentials=ADMIN,
                retry=FAST_RETRY,
            )
            variables.set_variables(
                connection,
                session_id=session.session_id,
                values=values,
                receipt=tmp_path / f"v-{attempt}.json",
                credentials=ADMIN,
                retry=FAST_RETRY,
            )
            if attempt == "faults":
                failed_writes = [r for r in modifying(server, mark) if r["status"] in (500, 503, 429)]
                assert failed_writes, "the faults reached no PUT: the test proves nothing"
                assert uploaded["sent"] == 4
            else:
                assert modifying(server, mark) == [] and uploaded["sent"] == 0
    finally:
        requests.delete(faults, auth=server.admin, timeout=10)
    for scan_id in ("1", "2"):
        entry = uploaded["scans"][scan_id]
        assert server_digests(server, session.session_id, scan_id) == {
            f["name"]: f["md5"] for f in entry["files"]
        }
