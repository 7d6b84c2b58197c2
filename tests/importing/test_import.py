"""`import`: DICOM sessions from a CSV into the bundled server, to the archive and via the
prearchive, and the reruns and conflicts that must send nothing."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pydicom
import pytest
from import_helpers import (
    client,
    downloaded_md5s,
    local_md5s,
    make_project,
    run_import,
    scans,
    session_id,
    synthetic,
    write_csv,
    writes,
)

from xnat_prep import receipts
from xnat_prep.demodata import siemens_samples
from xnat_prep.errors import UserError
from xnat_prep.importing import sessions


def test_archive_import_equals_the_source_and_a_rerun_sends_nothing(xnat_server, tmp_path: Path) -> None:
    make_project(xnat_server.url, "P")
    a = synthetic(tmp_path / "dicom", "S1", "S1_MR1")
    b = synthetic(tmp_path / "dicom", "S2", "S2_MR1")
    csv = write_csv(
        tmp_path / "import.csv", [["P", "S1", "S1_MR1", str(a)], ["P", "S2", "S2_MR1", str(b), "", ""]]
    )
    out = tmp_path / "out"

    first = run_import(xnat_server.url, csv, out)

    assert first["actions"] == {"import": 2}
    for label, folder in (("S1_MR1", a), ("S2_MR1", b)):
        assert downloaded_md5s(xnat_server.url, "P", label) == local_md5s(folder)
    receipt = receipts.read(out / "receipts/import/P/S1/S1_MR1.json")
    assert receipt["decision"] == "import"
    assert receipt["verified"] == {"counts": "verified", "digests": "verified"}
    assert receipt["n_files"] == len(receipt["files"]) == 131
    before = len(xnat_server.requests())

    again = run_import(xnat_server.url, csv, out)

    assert again["actions"] == {"skip": 2}
    assert writes(xnat_server, before) == []
    plan = (out / "import/import_plan.tsv").read_text().splitlines()
    assert [line.split("\t")[12] for line in plan[1:]] == ["skip", "skip"]


def test_real_siemens_zip_via_the_prearchive_then_archived(xnat_server, tmp_path: Path) -> None:
    make_project(xnat_server.url, "P")
    files = siemens_samples(tmp_path / "siemens")
    source = tmp_path / "siemens.zip"
    with zipfile.ZipFile(source, "w") as zf:
        for f in files:
            zf.write(f, f"{f.parent.name}/{f.name}")
    csv = write_csv(tmp_path / "import.csv", [["P", "CBU", "CBU_MR1", str(source), "prearchive", "skip"]])
    out = tmp_path / "out"

    run_import(xnat_server.url, csv, out)

    assert session_id(xnat_server.url, "P", "CBU_MR1") is None
    assert receipts.read(out / "receipts/import/P/CBU/CBU_MR1.json")["decision"] == "pending"
    before = len(xnat_server.requests())
    assert run_import(xnat_server.url, csv, out)["actions"] == {"pending": 1}
    assert writes(xnat_server, before) == []

    archived = run_import(xnat_server.url, csv, out, settings=sessions.Settings(archive_pending=True))

    assert archived["actions"] == {"archive": 1}
    assert downloaded_md5s(xnat_server.url, "P", "CBU_MR1") == local_md5s(tmp_path / "siemens")
    receipt = receipts.read(out / "receipts/import/P/CBU/CBU_MR1.json")
    assert receipt["decision"] == "archive" and receipt["verified"]["digests"] == "verified"
    before = len(xnat_server.requests())
    assert run_import(xnat_server.url, csv, out)["actions"] == {"skip": 1}
    assert writes(xnat_server, before) == []


def test_a_tar_to_the_prearchive_is_archived_in_the_same_run(xnat_server, tmp_path: Path) -> None:
    make_project(xnat_server.url, "P")
    folder = synthetic(tmp_path / "dicom", "S1", "S1_MR1")
    tar = shutil.make_archive(str(tmp_path / "s1"), "gztar", folder)
    csv = write_csv(tmp_path / "import.csv", [["P", "S1", "S1_MR1", tar, "prearchive", "skip"]])

    run_import(xnat_server.url, csv, tmp_path / "out", settings=sessions.Settings(archive_pending=True))

    assert downloaded_md5s(xnat_server.url, "P", "S1_MR1") == local_md5s(folder)
    with client(xnat_server.url) as c:
        assert c.prearchive_sessions("P") == []


def test_conflicts_name_the_row_and_write_nothing_unless_replace(xnat_server, tmp_path: Path) -> None:
    make_project(xnat_server.url, "P")
    original = synthetic(tmp_path / "a", "S1", "E1")
    out = tmp_path / "out"
    run_import(xnat_server.url, write_csv(tmp_path / "a.csv", [["P", "S1", "E1", str(original)]]), out)
    other_study = synthetic(tmp_path / "b", "S1", "E1", seed=1)
    before = len(xnat_server.requests())

    with pytest.raises(
        UserError, match=r"b\.csv, row 2 \(P/S1/E1\): conflict: session E1 holds another study"
    ):
        run_import(xnat_server.url, write_csv(tmp_path / "b.csv", [["P", "S1", "E1", str(other_study)]]), out)
    assert writes(xnat_server, before) == []

    changed = next(original.rglob("*.dcm"))
    ds = pydicom.dcmread(changed)
    ds.PatientComments = "edited after the import"
    ds.save_as(changed)
    with pytest.raises(UserError, match=r"row 2 \(P/S1/E1\): conflict: series \d+: files differ"):
        run_import(xnat_server.url, tmp_path / "a.csv", out)
    assert writes(xnat_server, before) == []

    replace = write_csv(tmp_path / "c.csv", [["P", "S1", "E1", str(other_study), "archive", "replace"]])
    assert run_import(xnat_server.url, replace, out)["actions"] == {"replace": 1}
    assert downloaded_md5s(xnat_server.url, "P", "E1") == local_md5s(other_study)
    receipt = receipts.read(out / "receipts/import/P/S1/E1.json")
    assert receipt["replaced"]["study_uid"] != receipt["study_uid"]
    assert sum(s["n_files"] for s in receipt["replaced"]["scans"]) == 131


def test_missing_series_are_partial_unless_the_row_asks_to_append(xnat_server, tmp_path: Path) -> None:
    make_project(xnat_server.url, "P")
    full = synthetic(tmp_path / "full", "S1", "E1")
    part = tmp_path / "part"
    shutil.copytree(full, part)
    dropped = sorted(part.iterdir())[-1]
    shutil.rmtree(dropped)
    out = tmp_path / "out"
    run_import(xnat_server.url, write_csv(tmp_path / "part.csv", [["P", "S1", "E1", str(part)]]), out)
    before = len(xnat_server.requests())

    with pytest.raises(
        UserError, match=r"partial: 1 of 4 series not \(all\) in XNAT; set on_conflict to append"
    ):
        run_import(xnat_server.url, write_csv(tmp_path / "full.csv", [["P", "S1", "E1", str(full)]]), out)
    assert writes(xnat_server, before) == []

    append = write_csv(tmp_path / "append.csv", [["P", "S1", "E1", str(full), "archive", "append"]])
    assert run_import(xnat_server.url, append, out)["actions"] == {"append": 1}

    assert downloaded_md5s(xnat_server.url, "P", "E1") == local_md5s(full)
    receipt = receipts.read(out / "receipts/import/P/S1/E1.json")
    assert [s["sent"] for s in receipt["series"]] == [False, False, False, True]
    assert receipt["bytes_sent"] == sum(p.stat().st_size for p in (full / dropped.name).iterdir())
    assert len(scans(xnat_server.url, "P", "E1")) == 4
