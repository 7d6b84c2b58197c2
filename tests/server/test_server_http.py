"""HTTP-level behaviour: ranges, zips, uploads, atomicity, persistence, request log."""

from __future__ import annotations

import hashlib
import io
import json
import signal
import socket
import time
import zipfile
from pathlib import Path

import pytest
from server_helpers import PROJECT, api, archived, make_dicom_zip

from xnat_prep.server.testing import ServerHandle, running_server

SESSION = f"/data/projects/{PROJECT}/subjects/SUBJ01/experiments/SUBJ01_MR1"


def rows(server: ServerHandle, path: str, **params: str) -> list[dict[str, str]]:
    response = api(server, "GET", path, params={"format": "json", **params})
    assert response.status_code == 200, response.text
    return response.json()["ResultSet"]["Result"]


def zip_names(data: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        return sorted(zf.namelist())


def test_path_aliases_and_listing_shapes(populated: ServerHandle, dicom_zip: Path) -> None:
    subjects = rows(populated, f"/REST/projects/{PROJECT}/subjects")
    assert rows(populated, f"/data/archive/projects/{PROJECT}/subjects") == subjects
    subject_id = next(r["ID"] for r in subjects if r["label"] == "SUBJ01")
    assert subjects[0]["URI"] == f"/data/subjects/{subjects[0]['ID']}"
    experiment = next(r for r in rows(populated, f"/data/subjects/{subject_id}/experiments"))
    assert experiment["xsiType"] == "xnat:mrSessionData" and experiment["URI"].startswith(
        "/data/experiments/XNAT_E"
    )
    by_id = api(populated, "GET", f"/data/experiments/{experiment['ID']}", params={"format": "json"}).json()
    assert by_id == api(populated, "GET", SESSION, params={"format": "json"}).json()
    resources = rows(populated, f"{SESSION}/scans/1/resources")
    assert "ID" not in resources[0] and "URI" not in resources[0]
    assert resources[0]["label"] == "DICOM" and resources[0]["file_count"] == "3"
    files = rows(populated, f"{SESSION}/scans/1/resources/DICOM/files")
    assert "ID" not in files[0]
    rid = resources[0]["xnat_abstractresource_id"]
    first = sorted(archived(dicom_zip, 1))[0]
    assert files[0]["URI"] == f"/data/experiments/{experiment['ID']}/scans/1/resources/{rid}/files/{first}"
    body = api(populated, "GET", files[0]["URI"]).content
    assert hashlib.md5(body).hexdigest() == files[0]["digest"] and len(body) == int(files[0]["Size"])
    csv = api(populated, "GET", f"/data/projects/{PROJECT}/subjects", params={"format": "csv"}).text
    assert csv.splitlines()[0].startswith("ID,project,label")
    catalog = api(populated, "GET", f"{SESSION}/scans/1/resources/DICOM", params={"format": "json"}).text
    assert catalog.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<cat:Catalog')


def test_range_requests_and_head(populated: ServerHandle) -> None:
    uri = rows(populated, f"{SESSION}/scans/1/resources/DICOM/files")[0]["URI"]
    full = api(populated, "GET", uri).content
    part = api(populated, "GET", uri, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == full[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(full)}"
    tail = api(populated, "GET", uri, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == full[-5:]
    open_end = api(populated, "GET", uri, headers={"Range": f"bytes={len(full) - 3}-"})
    assert open_end.content == full[-3:]
    beyond = api(populated, "GET", uri, headers={"Range": f"bytes={len(full)}-"})
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{len(full)}"
    head = api(populated, "HEAD", uri)
    assert (
        head.status_code == 200 and int(head.headers["Content-Length"]) == len(full) and head.content == b""
    )


@pytest.mark.parametrize("payload", [b"", b"1", b"12"])
def test_tiny_files_round_trip(populated: ServerHandle, payload: bytes) -> None:
    path = f"/data/projects/{PROJECT}/resources/TINY/files/f{len(payload)}.bin"
    assert api(populated, "PUT", path, data=payload).status_code == 200
    got = api(populated, "GET", path)
    assert got.status_code == 200 and got.content == payload
    assert got.headers["Content-Length"] == str(len(payload))


def test_zip_selections_by_id_list_type_and_resource(populated: ServerHandle, dicom_zip: Path) -> None:
    def names(path: str) -> list[str]:
        response = api(populated, "GET", path, params={"format": "zip"})
        assert response.status_code == 200 and response.headers["Content-Type"] == "application/zip"
        return zip_names(response.content)

    everything = [n for n in names(f"{SESSION}/scans/ALL/files") if "/resources/DICOM/" in n]
    assert len(everything) == 7  # other tests may add non-DICOM resources to the shared session
    assert {n.split("/")[2] for n in everything} == {"1-T1w_MPRAGE", "2-rest_fMRI", "5-localizer"}
    assert {n.split("/")[2] for n in names(f"{SESSION}/scans/1,5/files")} == {"1-T1w_MPRAGE", "5-localizer"}
    assert {n.split("/")[2] for n in names(f"{SESSION}/scans/rest fMRI,5/files")} == {
        "2-rest_fMRI",
        "5-localizer",
    }
    assert {n.split("/")[2] for n in names(f"{SESSION}/scans/rest fMRI/files")} == {"2-rest_fMRI"}
    rid = rows(populated, f"{SESSION}/scans/5/resources")[0]["xnat_abstractresource_id"]
    by_id = names(f"{SESSION}/scans/5/resources/{rid}/files")
    assert (
        by_id
        == names(f"{SESSION}/scans/5/resources/DICOM/files")
        == [f"SUBJ01_MR1/scans/5-localizer/resources/DICOM/files/{n}" for n in sorted(archived(dicom_zip, 5))]
    )
    assert len([r for r in rows(populated, f"{SESSION}/scans/ALL/files") if r["collection"] == "DICOM"]) == 7
    assert api(populated, "GET", f"{SESSION}/scans/99/files", params={"format": "zip"}).status_code == 404


def test_upload_overwrite_refusal_and_resource_creation(populated: ServerHandle) -> None:
    base = f"{SESSION}/scans/2/resources/OVERWRITE"
    assert api(populated, "PUT", base, params={"format": "TEXT", "content": "notes"}).status_code == 200
    assert api(populated, "PUT", f"{base}/files/n.txt", data=b"one").status_code == 200
    refused = api(populated, "PUT", f"{base}/files/n.txt", data=b"two")
    assert refused.status_code == 409 and "overwrite=true" in refused.text
    assert api(populated, "GET", rows(populated, f"{base}/files")[0]["URI"]).content == b"one"
    assert (
        api(populated, "PUT", f"{base}/files/n.txt", params={"overwrite": "true"}, data=b"two").status_code
        == 200
    )
    listing = rows(populated, f"{base}/files")
    assert [(r["Name"], r["digest"]) for r in listing] == [("n.txt", hashlib.md5(b"two").hexdigest())]
    res = next(r for r in rows(populated, f"{SESSION}/scans/2/resources") if r["label"] == "OVERWRITE")
    assert (res["format"], res["content"], res["file_size"]) == ("TEXT", "notes", "3")
    assert api(populated, "PUT", f"{base}/files/../escape", data=b"x").status_code in (400, 404)
    assert api(populated, "DELETE", f"{base}/files/n.txt").status_code == 200
    assert rows(populated, f"{base}/files") == []


def test_delete_removes_objects_and_files(populated: ServerHandle, dicom_zip: Path) -> None:
    response = api(
        populated,
        "POST",
        "/data/services/import",
        params={"project": PROJECT, "subject": "SUBJ_DEL", "session": "SUBJ_DEL_MR1"},
        data=dicom_zip.read_bytes(),
    )
    uri = response.text.strip()
    blobs_before = sum(1 for _ in (populated.data_dir / "blobs").rglob("*"))
    assert api(populated, "DELETE", uri, params={"removeFiles": "true"}).status_code == 200
    assert api(populated, "GET", uri, params={"format": "json"}).status_code == 404
    blobs_after = sum(1 for _ in (populated.data_dir / "blobs").rglob("*") if _.is_file())
    assert blobs_after <= blobs_before - 7


def test_import_overwrite_delete_replaces_scans(populated: ServerHandle, tmp_path: Path) -> None:
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    make_dicom_zip(first, ((1, "A", "MR", 1), (2, "B", "MR", 1)))
    make_dicom_zip(second, ((3, "C", "CT", 2),))
    params = {"project": PROJECT, "subject": "SUBJ_OVR", "session": "SUBJ_OVR_1"}
    uri = api(populated, "POST", "/data/services/import", params=params, data=first.read_bytes()).text.strip()
    again = api(
        populated,
        "POST",
        "/data/services/import",
        params={**params, "overwrite": "delete"},
        data=second.read_bytes(),
    )
    assert again.status_code == 200 and again.text.strip() == uri
    scans = rows(populated, f"{uri}/scans")
    assert [(s["ID"], s["xsiType"]) for s in scans] == [("3", "xnat:ctScanData")]


def test_requests_log_one_line_per_request_without_secrets(tmp_path: Path) -> None:
    secret_password = "S3cret-Pa55"
    with running_server(tmp_path / "data") as srv:
        login = api(
            srv, "PUT", "/data/services/auth", auth=None, data={"username": "admin", "password": "admin"}
        )
        token = api(srv, "GET", "/data/services/tokens/issue", cookies={"JSESSIONID": login.text}).json()
        api(srv, "GET", "/data/projects", auth=(token["alias"], token["secret"]))
        api(srv, "GET", "/data/projects", auth=("admin", secret_password))
        api(
            srv,
            "GET",
            "/data/projects",
            params={"password": secret_password},
            cookies={"JSESSIONID": login.text},
        )
        api(srv, "GET", f"/data/services/tokens/invalidate/{token['alias']}/{token['secret']}")
        before = len(srv.requests())
        for _ in range(5):
            api(srv, "GET", "/data/projects", params={"format": "json"})
        records = srv.requests()
        text = (srv.data_dir / "requests.jsonl").read_text()
    assert len(records) == before + 5
    assert all(
        set(r)
        >= {"time", "user", "method", "path", "query", "status", "bytes_in", "bytes_out", "duration_ms"}
        for r in records
    )
    assert (
        records[-1]["user"] == "admin"
        and records[-1]["query"] == "format=json"
        and records[-1]["status"] == 200
    )
    assert records[0]["method"] == "PUT" and records[0]["bytes_in"] > 0
    for secret in (secret_password, token["secret"], login.text, "password=admin", "YWRtaW46YWRtaW4="):
        assert secret not in text
    assert [r["status"] for r in records if r["path"] == "/data/projects"][:3] == [200, 401, 200]


def test_restart_keeps_data_and_files(tmp_path: Path, dicom_zip: Path) -> None:
    data_dir = tmp_path / "data"
    with running_server(data_dir) as srv:
        api(srv, "PUT", "/data/projects/KEEP").raise_for_status()
        uri = api(
            srv,
            "POST",
            "/data/services/import",
            params={"project": "KEEP", "subject": "S", "session": "E"},
            data=dicom_zip.read_bytes(),
        ).text.strip()
        api(srv, "PUT", f"{uri}/resources/OUT/files/x/y.txt", data=b"payload").raise_for_status()
        api(
            srv, "PUT", uri, params={"xnat:mrSessionData/fields/field[name=kept]/field": "yes"}
        ).raise_for_status()
        before = api(srv, "GET", f"{uri}/scans/ALL/files", params={"format": "zip"}).content
    with running_server(data_dir) as srv:
        assert api(srv, "GET", f"{uri}/scans/ALL/files", params={"format": "zip"}).content == before
        assert api(srv, "GET", f"{uri}/resources/OUT/files/x/y.txt").content == b"payload"
        doc = api(srv, "GET", uri, params={"format": "json"}).json()["items"][0]
        assert doc["children"][0]["items"][0]["data_fields"] == {"name": "kept", "field": "yes"}
        new = api(srv, "PUT", "/data/projects/KEEP/subjects/S2").text
        assert new == "XNAT_S00002"  # accession counters survive too


def test_killed_upload_leaves_no_visible_or_stray_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_server(data_dir) as srv:
        api(srv, "PUT", "/data/projects/ATOM").raise_for_status()
        api(srv, "PUT", "/data/projects/ATOM/resources/R/files/done.bin", data=b"ok").raise_for_status()
        host, port = srv.url.split("//")[1].split(":")
        sock = socket.create_connection((host, int(port)))
        sock.sendall(
            b"PUT /data/projects/ATOM/resources/R/files/half.bin HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Basic YWRtaW46YWRtaW4=\r\nContent-Length: 10000000\r\n\r\n" + b"\0" * 4_000_000
        )
        time.sleep(0.5)
        parts = list((data_dir / "blobs").rglob("*.part"))
        assert parts, "the upload should be in progress as a temp file"
        assert [r["Name"] for r in rows(srv, "/data/projects/ATOM/resources/R/files")] == ["done.bin"]
        srv.process.send_signal(signal.SIGKILL)
        srv.process.wait()
        sock.close()
    with running_server(data_dir) as srv:
        assert [r["Name"] for r in rows(srv, "/data/projects/ATOM/resources/R/files")] == ["done.bin"]
    assert not list((data_dir / "blobs").rglob("*.part"))
    referenced = 1
    assert sum(1 for p in (data_dir / "blobs").rglob("*") if p.is_file()) == referenced


def test_parallel_downloads_and_uploads(populated: ServerHandle) -> None:
    from concurrent.futures import ThreadPoolExecutor

    base = f"/data/projects/{PROJECT}/resources/PARALLEL/files"
    payloads = {f"f{i}.bin": bytes([i]) * (200_000 + i) for i in range(16)}

    def upload(name: str) -> int:
        return api(populated, "PUT", f"{base}/{name}", data=payloads[name]).status_code

    def download(name: str) -> bytes:
        return api(populated, "GET", f"{base}/{name}").content

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(upload, payloads)) == {200}
        assert list(pool.map(download, payloads)) == list(payloads.values())


@pytest.mark.parametrize("path", ["/data/version", "/data/nothing/here", f"/data/projects/{PROJECT}/bogus"])
def test_unknown_paths_are_404(populated: ServerHandle, path: str) -> None:
    assert api(populated, "GET", path).status_code == 404


def test_connect_surface(populated: ServerHandle) -> None:
    assert api(populated, "GET", "/xapi/siteConfig/buildInfo").json()["version"] == "1.8.10"
    assert api(populated, "GET", "/xapi/schemas", params={"format": "json"}).json() == ["xdat", "xnat"]
    xsd = api(populated, "GET", "/xapi/schemas/xnat").text
    for xsi in ("mrSessionData", "ctScanData", "otherDicomScanData", "resourceCatalog"):
        assert f'name="{xsi}"' in xsd
    elements = rows(populated, "/data/search/elements")
    assert "xnat:mrSessionData" in [e["ELEMENT_NAME"] for e in elements]
    auth = api(populated, "GET", "/data/auth")
    assert auth.text == "User 'admin' is logged in" and "JSESSIONID" in auth.cookies
    assert json.loads(api(populated, "GET", "/xapi/siteConfig/uptime").text)["days"] == 0


def test_import_dest_paths_and_prearchive_rest(populated: ServerHandle, dicom_zip: Path) -> None:
    dest = f"/archive/projects/{PROJECT}/subjects/SUBJ_DEST/experiments/SUBJ_DEST_MR1"
    response = api(
        populated, "POST", "/data/services/import", params={"dest": dest}, data=dicom_zip.read_bytes()
    )
    assert response.status_code == 200 and "/subjects/XNAT_S" in response.text
    doc = api(populated, "GET", response.text.strip(), params={"format": "json"}).json()["items"][0]
    assert doc["data_fields"]["label"] == "SUBJ_DEST_MR1"
    pre = api(
        populated,
        "POST",
        "/data/services/import",
        params={"dest": f"/prearchive/projects/{PROJECT}"},
        data=dicom_zip.read_bytes(),
    ).text.strip()
    assert pre.startswith(f"/data/prearchive/projects/{PROJECT}/")
    assert rows(populated, pre)[0]["status"] == "READY"
    scan_zip = api(populated, "GET", f"{pre}/scans/2").content
    assert zip_names(scan_zip) == [
        f"SESS01/scans/2-rest_fMRI/resources/DICOM/files/{n}" for n in sorted(archived(dicom_zip, 2))
    ]
    assert api(populated, "DELETE", pre).status_code == 200
    assert pre.removeprefix("/data") not in [r["url"] for r in rows(populated, "/data/prearchive/projects")]
    assert api(populated, "GET", pre, params={"format": "json"}).status_code == 404
    bad = api(populated, "POST", "/data/services/import", params={"project": PROJECT}, data=b"not an archive")
    assert bad.status_code == 400 and "neither a zip nor a tar" in bad.text


def test_relabel_and_scan_delete(populated: ServerHandle) -> None:
    base = f"/data/projects/{PROJECT}/subjects/RELABEL"
    subject_id = api(populated, "PUT", base).text
    assert (
        api(populated, "PUT", f"/data/subjects/{subject_id}", params={"label": "RELABELLED"}).status_code
        == 200
    )
    relabelled = api(
        populated, "GET", f"/data/projects/{PROJECT}/subjects/RELABELLED", params={"format": "json"}
    )
    assert relabelled.json()["items"][0]["data_fields"]["ID"] == subject_id  # found by the new label
    session = f"/data/projects/{PROJECT}/subjects/RELABELLED/experiments/RELABEL_MR"
    assert api(populated, "PUT", session, params={"xsiType": "xnat:mrSessionData"}).status_code == 201
    assert (
        api(populated, "PUT", f"{session}/scans/3", params={"xsiType": "xnat:mrScanData"}).status_code == 201
    )
    assert api(populated, "PUT", f"{session}/scans/3/resources/R/files/x", data=b"x").status_code == 200
    assert api(populated, "DELETE", f"{session}/scans/3", params={"removeFiles": "true"}).status_code == 200
    assert rows(populated, f"{session}/scans") == []


def test_concurrent_creation_of_one_label_makes_one_object(populated: ServerHandle) -> None:
    from concurrent.futures import ThreadPoolExecutor

    path = f"/data/projects/{PROJECT}/subjects/RACE/experiments/RACE_MR"

    def create(_: int) -> int:
        return api(populated, "PUT", path, params={"xsiType": "xnat:mrSessionData"}).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(create, range(16)))
    assert statuses.count(201) == 1 and set(statuses) <= {200, 201, 409}
    assert [
        r["label"] for r in rows(populated, f"/data/projects/{PROJECT}/subjects") if r["label"] == "RACE"
    ] == ["RACE"]


def test_project_scan_search_is_a_left_join_with_session_columns(populated: ServerHandle) -> None:
    """``/data/experiments?project=P&xsiType=xnat:imageSessionData&columns=...,xnat:imagescandata/...``
    (DAX's project listing): one row per scan carrying the session's columns as asked, scan columns
    lower-cased; a session without scans is one row with empty scan columns (XNAT's left join)."""
    project = "SEARCH1"
    api(populated, "PUT", f"/data/projects/{project}").raise_for_status()
    mr = {"xsiType": "xnat:mrSessionData"}
    for session, date in (("E1", "2020-02-03"), ("E2", "")):
        path = f"/data/projects/{project}/subjects/S1/experiments/{session}"
        api(populated, "PUT", path, params={**mr, "date": date}).raise_for_status()
    for scan, description in (("1", "t1_mpr"), ("2", "rest_bold")):
        api(
            populated,
            "PUT",
            f"/data/projects/{project}/subjects/S1/experiments/E1/scans/{scan}",
            params={"xsiType": "xnat:mrScanData", "type": f"T{scan}", "series_description": description},
        ).raise_for_status()
    columns = (
        "ID,label,xsiType,subject_label,xnat:imagesessiondata/subject_id,xnat:imagesessiondata/date,"
        "xnat:imageScanData/ID,xnat:imagescandata/type,xnat:imagescandata/series_description"
    )
    found = rows(
        populated, "/data/experiments", project=project, xsiType="xnat:imageSessionData", columns=columns
    )
    by_label = {}
    for row in found:
        by_label.setdefault(row["label"], []).append(row)
    assert sorted(by_label) == ["E1", "E2"] and len(found) == 3
    e1 = sorted(by_label["E1"], key=lambda r: r["xnat:imagescandata/id"])
    assert [(r["xnat:imagescandata/id"], r["xnat:imagescandata/type"]) for r in e1] == [
        ("1", "T1"),
        ("2", "T2"),
    ]
    assert e1[1]["xnat:imagescandata/series_description"] == "rest_bold"
    assert {r["xnat:imagesessiondata/date"] for r in e1} == {"2020-02-03"}
    assert {(r["xsiType"], r["subject_label"]) for r in found} == {("xnat:mrSessionData", "S1")}
    subject_id = rows(populated, f"/data/projects/{project}/subjects")[0]["ID"]
    assert {r["xnat:imagesessiondata/subject_id"] for r in found} == {subject_id}
    (empty,) = by_label["E2"]
    assert empty["ID"].startswith("XNAT_E") and empty["xnat:imagesessiondata/date"] == ""
    scan_columns = [c.lower() for c in columns.split(",") if c.lower().startswith("xnat:imagescandata/")]
    assert {c: empty[c] for c in scan_columns} == dict.fromkeys(scan_columns, "")
