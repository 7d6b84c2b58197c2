"""`upload-resources`: files from a CSV into scan and session resources, compared before and
verified after writing; reruns and differing files send no write."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from import_helpers import ADMIN, FAST_RETRY, client, make_project, session_id, write_csv, writes

from xnat_prep import receipts
from xnat_prep.errors import UserError
from xnat_prep.importing import resources
from xnat_prep.xnat_api import Connection

HEADER = ["project", "subject", "session", "scan", "resource", "path", "scan_type", "on_conflict"]


def upload(url: str, csv: Path, out: Path) -> dict:
    return resources.upload_resources(
        Connection(url), csv, output_root=out, credentials=ADMIN, retry=FAST_RETRY
    )


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_files_into_new_and_existing_sessions_then_reruns_and_conflicts(xnat_server, tmp_path: Path) -> None:
    make_project(xnat_server.url, "P")
    nifti = tmp_path / "nifti"
    (nifti / "sub").mkdir(parents=True)
    (nifti / "t1.nii.gz").write_bytes(b"\x1f\x8bnifti" * 100)
    (nifti / "sub" / "t1.json").write_text('{"EchoTime": 0.003}')
    qc = tmp_path / "qc.pdf"
    qc.write_bytes(b"%PDF-1.4 qc")
    rows = [
        ["P", "S1", "E1", "1", "NIFTI", str(nifti), "T1w", ""],
        ["P", "S1", "E1", "", "QC", str(qc), "", ""],
    ]
    csv = write_csv(tmp_path / "resources.csv", rows, HEADER)
    out = tmp_path / "out"

    first = upload(xnat_server.url, csv, out)

    assert first["files"] == {"send": 3}
    sid = session_id(xnat_server.url, "P", "E1")
    assert sid is not None
    with client(xnat_server.url) as c:
        assert c.resource_digests(sid, "1", "NIFTI") == {
            "t1.nii.gz": md5(nifti / "t1.nii.gz"),
            "sub/t1.json": md5(nifti / "sub" / "t1.json"),
        }
        assert c.resource_digests(sid, "", "QC") == {"qc.pdf": md5(qc)}
    receipt = receipts.read(out / "receipts/resources/P/S1/E1.json")
    assert receipt["sent"] == 3 and receipt["session_id"] == sid
    before = len(xnat_server.requests())

    assert upload(xnat_server.url, csv, out)["files"] == {"unchanged": 3}
    assert writes(xnat_server, before) == []

    (nifti / "t1.nii.gz").write_bytes(b"\x1f\x8bnifti, converted again")
    with pytest.raises(
        UserError, match=r"resources\.csv, row 2: t1\.nii\.gz differs from the file in XNAT's E1 1/NIFTI"
    ):
        upload(xnat_server.url, csv, out)
    assert writes(xnat_server, before) == []

    rows[0][-1] = "replace"
    assert upload(xnat_server.url, write_csv(csv, rows, HEADER), out)["files"] == {
        "replace": 1,
        "unchanged": 2,
    }
    with client(xnat_server.url) as c:
        assert c.resource_digests(sid, "1", "NIFTI")["t1.nii.gz"] == md5(nifti / "t1.nii.gz")
