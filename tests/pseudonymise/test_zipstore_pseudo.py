"""dicom.store zip, pseudonymisation: a scan's zip in, one zip out (STORED entries, written under a
temporary name and renamed), the same pseudonymised bytes as folder in, folder out."""

from __future__ import annotations

import zipfile
from pathlib import Path

from xnat_prep.pseudonymise import pseudonymise_tree
from xnat_prep.pseudonymise.keys import Key


def zipped(folder: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, "E/scans/2/resources/DICOM/files/" + path.relative_to(folder).as_posix())
    return dest


def test_zip_in_zip_out_matches_folder_in_folder_out(study: Path, key: Key, tmp_path: Path) -> None:
    scan = next(p for p in sorted(study.glob("*/*/*")) if p.is_dir() and any(p.iterdir()))
    (tmp_path / "dicom").mkdir()
    source = zipped(scan, tmp_path / "dicom" / "2-T1w.zip")
    folder_out = tmp_path / "a" / "2-T1w"
    zip_out = tmp_path / "b" / "2-T1w.zip"
    plain = pseudonymise_tree(scan, folder_out, key=key, subject_id="XNAT_S00001", layout="flat")
    from_zip = pseudonymise_tree(source, zip_out, key=key, subject_id="XNAT_S00001", layout="flat")
    assert from_zip["n_written"] == plain["n_written"] > 0
    assert from_zip["quarantined"] == plain["quarantined"]
    with zipfile.ZipFile(zip_out) as archive:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in archive.infolist())
        in_zip = {i.filename: archive.read(i) for i in archive.infolist()}
    assert in_zip == {p.name: p.read_bytes() for p in folder_out.iterdir()}
    assert sorted(p.name for p in zip_out.parent.iterdir()) == ["2-T1w.zip"]  # no temporary file left
