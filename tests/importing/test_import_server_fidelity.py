"""The import path against the bundled server behaving as XNAT does: a site anonymization script
on and off (the downloaded result equals the source except what the script changed), a second
upload of a study merged into its prearchive entry, CONFLICT for a label the archive holds, and
``overwrite=append`` never replacing a file."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pydicom
import pytest
import requests
from import_helpers import client, make_project, run_import, session_id, synthetic, write_csv, writes

from xnat_prep.errors import UserError
from xnat_prep.importing import sessions
from xnat_prep.server.testing import running_server

AUTH = ("admin", "admin")
SCRIPT_SETS = {"StudyDescription", "PatientName", "PatientID"}  # XNAT's default site script


def downloaded(url: str, project: str, label: str) -> dict[str, pydicom.Dataset]:
    """Every archived DICOM file of the session, by SOPInstanceUID."""
    sid = session_id(url, project, label)
    assert sid is not None
    out = {}
    with client(url) as c:
        for row in c.session_files(sid):
            ds = c.get(row["URI"], lambda r: pydicom.dcmread(io.BytesIO(r.content)))
            out[str(ds.SOPInstanceUID)] = ds
    return out


def elements(ds: pydicom.Dataset) -> dict[str, object]:
    return {elem.keyword or str(elem.tag): elem.value for elem in ds.iterall() if elem.tag != 0x7FE00010}


@pytest.mark.parametrize("script", ["off", "on"])
def test_downloaded_equals_the_source_but_for_what_the_script_changed(tmp_path: Path, script: str) -> None:
    folder = synthetic(tmp_path / "dicom", "S1", "S1_MR1", project="SRC")
    csv = write_csv(tmp_path / "import.csv", [["ANON", "SUBJ_A", "SESS_A", str(folder)]])
    settings = sessions.Settings(server_rewrites=script == "on")
    args = ["--anonymize"] if script == "on" else []
    with running_server(tmp_path / "xnat", extra_args=args) as server:
        make_project(server.url, "ANON")

        first = run_import(server.url, csv, tmp_path / "out", settings=settings)

        assert first["actions"] == {"import": 1}
        got = downloaded(server.url, "ANON", "SESS_A")
        sent = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, sorted(folder.rglob("*.dcm")))}
        assert got.keys() == sent.keys()
        changed = set()
        for uid, ds in got.items():
            before, after = elements(sent[uid]), elements(ds)
            assert ds.PixelData == sent[uid].PixelData
            changed |= {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
            if script == "on":
                assert (ds.StudyDescription, str(ds.PatientName), ds.PatientID) == (
                    "ANON",
                    "SUBJ_A",
                    "SESS_A",
                )
        assert changed == (SCRIPT_SETS if script == "on" else set())
        before = len(server.requests())

        again = run_import(server.url, csv, tmp_path / "out", settings=settings)

        assert again["actions"] == {"skip": 1}
        assert writes(server, before) == []


def _zip(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(folder.rglob("*.dcm")):
            zf.write(p, p.relative_to(folder).as_posix())
    return buf.getvalue()


def test_prearchive_merges_a_study_and_marks_a_conflict(xnat_server, tmp_path: Path) -> None:
    url = xnat_server.url
    make_project(url, "P")
    folder = synthetic(tmp_path / "dicom", "S1", "S1_MR1")
    series = sorted(p for p in folder.iterdir() if p.is_dir())
    half = tmp_path / "half"
    for s in series[:2]:
        (half / s.name).mkdir(parents=True)
        for f in s.iterdir():
            (half / s.name / f.name).write_bytes(f.read_bytes())

    def to_prearchive(body: bytes, label: str) -> str:
        params = {"project": "P", "subject": "S1", "session": label, "dest": "/prearchive/projects/P"}
        r = requests.post(f"{url}/data/services/import", params=params, data=body, auth=AUTH, timeout=60)
        r.raise_for_status()
        return r.text.strip()

    def entries() -> list[dict]:
        r = requests.get(
            f"{url}/data/prearchive/projects/P", params={"format": "json"}, auth=AUTH, timeout=30
        )
        return r.json()["ResultSet"]["Result"]

    first = to_prearchive(_zip(half), "S1_MR1")
    second = to_prearchive(_zip(folder), "S1_MR1")  # the whole study: merged into the entry

    assert second == first
    [entry] = entries()
    assert entry["status"] == "READY"
    with client(url) as c:
        files = c.rows(f"{first}/scans")
    assert len(files) == len(series)

    # the same label in the archive: a new prearchive entry of another study is CONFLICT
    requests.post(
        f"{url}/data/services/archive", params={"src": first}, auth=AUTH, timeout=60
    ).raise_for_status()
    other = synthetic(tmp_path / "other", "S1", "S1_MR1", seed=7)
    uri = to_prearchive(_zip(other), "S1_MR1")
    [entry] = entries()
    assert entry["status"] == "CONFLICT"
    refused = requests.post(f"{url}/data/services/archive", params={"src": uri}, auth=AUTH, timeout=60)
    assert refused.status_code == 409

    # and the import path reports it as a conflict naming the row, writing nothing
    csv = write_csv(tmp_path / "i.csv", [["P", "S1", "S1_MR1", str(other), "prearchive"]])
    before = len(xnat_server.requests())
    with pytest.raises(UserError, match=r"i\.csv, row 2 .*conflict"):
        run_import(url, csv, tmp_path / "out")
    assert writes(xnat_server, before) == []


def test_overwrite_append_never_replaces_a_file(xnat_server, tmp_path: Path) -> None:
    url = xnat_server.url
    make_project(url, "P")
    folder = synthetic(tmp_path / "dicom", "S1", "S1_MR1")
    params = {"project": "P", "subject": "S1", "session": "S1_MR1"}
    post = f"{url}/data/services/import"
    requests.post(post, params=params, data=_zip(folder), auth=AUTH, timeout=60).raise_for_status()
    sid = session_id(url, "P", "S1_MR1")
    with client(url) as c:
        before = {r["URI"]: r["digest"] for r in c.session_files(sid)}
    changed = sorted(folder.rglob("*.dcm"))[0]
    ds = pydicom.dcmread(changed)
    ds.SeriesDescription = "changed"  # same name on the server (named from UIDs and numbers)
    ds.save_as(changed)

    r = requests.post(
        post, params={**params, "overwrite": "append"}, data=_zip(folder), auth=AUTH, timeout=60
    )

    assert r.status_code == 200
    with client(url) as c:
        assert {r["URI"]: r["digest"] for r in c.session_files(sid)} == before
