"""The import service's receive path: what is kept, what is skipped, atomicity and durability."""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import signal
import socket
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pydicom
import pytest
from server_helpers import ANONYMIZING, SAME_BYTES, api, dicom_slice

from xnat_prep.server import store as store_module
from xnat_prep.server.importer import IN_MEMORY, dicom_file_name, read_session
from xnat_prep.server.store import FileEntry, Store
from xnat_prep.server.testing import ServerHandle, running_server

IDS = {"patient_id": "P1", "patient_name": "SUBJ", "study_uid": "1.2.3", "series_uid": "1.2.3.4"}


def slice_bytes(series: int, instance: int, *, pixels: int = 0) -> bytes:
    """A small DICOM slice; ``pixels`` > 0 makes it that many bytes bigger (a big member)."""
    data = dicom_slice(series, f"series {series}", "MR", instance, **{**IDS, "series_uid": f"1.2.{series}"})
    if not pixels:
        return data
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Columns = 4096
    ds.Rows = pixels // (2 * ds.Columns) + 1
    ds.PixelData = bytes(ds.Rows * ds.Columns * 2)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def archive(members: dict[str, bytes], kind: str) -> bytes:
    out = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(out, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
    else:
        with tarfile.open(fileobj=out, mode="w:gz") as tf:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def blob_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]


def listing(server: ServerHandle, path: str) -> list[dict[str, str]]:
    response = api(server, "GET", path, params={"format": "json"})
    assert response.status_code == 200, response.text
    return response.json()["ResultSet"]["Result"]


@pytest.mark.skipif(ANONYMIZING, reason=SAME_BYTES)
@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_import_keeps_dicom_members_and_skips_the_rest(tmp_path: Path, kind: str) -> None:
    first = slice_bytes(2, 1)
    dicom = {
        "a/IM1.dcm": first,
        "b/IM1.dcm": slice_bytes(2, 2),  # same name in another folder: another file
        "c/IM1.dcm": first,  # the same SOP instance again: kept, as NAME-2.dcm
        "IM3": slice_bytes(10, 1),
        "big.dcm": slice_bytes(10, 2, pixels=IN_MEMORY),  # header parsed from its blob, not memory
    }
    skipped = {
        "README.txt": b"not DICOM",
        "notes.dcm": b"text with a DICOM name",
        "a/.hidden.dcm": slice_bytes(2, 3),
        "DICOMDIR": b"directory",
        "__MACOSX/a/._IM1.dcm": b"resource fork",
    }
    with running_server(tmp_path / "data") as srv:
        api(srv, "PUT", "/data/projects/IMP").raise_for_status()
        response = api(
            srv,
            "POST",
            "/data/services/import",
            params={"project": "IMP", "subject": "S", "session": "E"},
            data=archive({**dicom, **skipped}, kind),
        )
        assert response.status_code == 200, response.text
        uri = response.text.strip()
        scans = listing(srv, f"{uri}/scans")
        assert [(s["ID"], s["type"], s["frames"]) for s in scans] == [
            ("2", "series 2", "3"),
            ("10", "series 10", "2"),
        ]  # sorted by SeriesNumber as numbers, not text; frames count every file kept
        files = {(f["Name"], f["Size"], f["digest"]) for f in listing(srv, f"{uri}/scans/ALL/files")}
        # archived under XNAT's default file-name template, not the upload's names
        names = {
            k: dicom_file_name(pydicom.dcmread(io.BytesIO(v), stop_before_pixels=True))
            for k, v in dicom.items()
        }
        assert re.fullmatch(
            r"1\.2\.3-2-1-[0-9a-z]+\.dcm", names["a/IM1.dcm"]
        )  # StudyUID-Series-Instance-hash
        again = names["c/IM1.dcm"].replace(".dcm", "-2.dcm")
        sent = [(names[k], dicom[k]) for k in ("a/IM1.dcm", "b/IM1.dcm", "IM3", "big.dcm")]
        sent.append((again, dicom["c/IM1.dcm"]))
        assert files == {(name, str(len(data)), hashlib.md5(data).hexdigest()) for name, data in sent}
        assert len(blob_files(srv.data_dir)) == len(dicom)  # skipped members left no blob behind


def test_killed_import_leaves_nothing_visible(tmp_path: Path) -> None:
    """SIGKILL while an import's blobs are being written: after a restart, no session, no blob."""
    one = slice_bytes(1, 1)
    body = archive({f"s/IM{i:05d}.dcm": one for i in range(4000)}, "zip")
    data_dir = tmp_path / "data"
    with running_server(data_dir) as srv:
        api(srv, "PUT", "/data/projects/KILL").raise_for_status()
        host, port = srv.url.split("//")[1].split(":")
        sock = socket.create_connection((host, int(port)))
        sock.sendall(
            b"POST /data/services/import?project=KILL&subject=S&session=E HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Basic YWRtaW46YWRtaW4=\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        deadline = time.monotonic() + 60
        while not blob_files(data_dir) and time.monotonic() < deadline:
            time.sleep(0.005)
        srv.process.send_signal(signal.SIGKILL)
        srv.process.wait()
        assert blob_files(data_dir), "the import should have been writing blobs when killed"
        sock.close()
    with running_server(data_dir) as srv:
        assert listing(srv, "/data/projects/KILL/experiments") == []
    assert blob_files(data_dir) == []  # stray blobs are collected at start-up


def test_blobs_are_durable_before_rows_point_to_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every path that commits file rows (import, prearchive, PUT) fsyncs their blobs first."""
    store = Store(tmp_path / "data")
    synced: set[Path] = set()
    real_fsync_all = store_module._fsync_all

    def fsync_all(paths: list[Path]) -> None:
        real_fsync_all(paths)
        synced.update(paths)

    monkeypatch.setattr(store_module, "_fsync_all", fsync_all)
    expected: list[str] = []  # blob names the next commit will point to
    real_transaction = store.transaction

    def transaction() -> contextlib.AbstractContextManager[Any]:
        for name in expected:
            path = store.blob_path(name)
            assert {path, path.parent, store.blob_dir} <= synced, f"{name} not durable at commit"
        return real_transaction()

    monkeypatch.setattr(store, "transaction", transaction)
    with real_transaction() as db:
        db.execute("INSERT INTO projects(id) VALUES('P')")
    members = {f"IM{i}.dcm": slice_bytes(1, i) for i in range(1, 4)}

    doc = read_session(store, io.BytesIO(archive(members, "zip")))
    expected[:] = [f["blob"] for scan in doc["scans"] for f in scan["files"]]
    assert len(expected) == len(members)
    store.archive_session(doc, "P", "S", "E", "none", "admin")

    doc = read_session(store, io.BytesIO(archive(members, "zip")))
    expected[:] = [f["blob"] for scan in doc["scans"] for f in scan["files"]]
    store.add_prearchive("P", "20240101_000000000", "E", doc)

    resource = store.create_resource("project:P", "R")
    blob = store.receive(io.BytesIO(b"payload"))
    expected[:] = [blob.name]
    store.put_files(resource.id, [FileEntry("x.txt", blob.size, blob.md5, blob.name)], overwrite=False)
    assert store.file(resource.id, "x.txt") is not None
    store.close()
