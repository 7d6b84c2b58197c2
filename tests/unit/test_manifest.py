"""manifest: TSV round trip, change-only writes."""

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xnat_prep import manifest
from xnat_prep.manifest import ErrorRow, FileRow, ScanRow


def scan(**kw):
    base = dict(
        project="P",
        subject="001",
        subject_id="XNAT_S1",
        session="001_MR1",
        session_id="XNAT_E1",
        xsi_type="xnat:mrSessionData",
        scan_id="1",
        scan_type="",
        series_description="a\tb\nc",
        scan="1-unknown",
        resource="DICOM",
        n_files=3,
        bytes=1024,
    )
    base.update(kw)
    return ScanRow(**base)


def test_round_trip_keeps_strings_and_ints(tmp_path):
    rows = [scan(), scan(scan_id="001", scan="001-T1w", scan_type="T1w")]
    path = tmp_path / "m" / "scans.tsv"
    assert manifest.write_tsv(path, rows) is True
    back = manifest.read_scans(path)
    assert back == rows
    assert back[1].scan_id == "001"


def test_write_only_on_change(tmp_path):
    path = tmp_path / "errors.tsv"
    rows = [ErrorRow("P", "S", "", "subject not found")]
    assert manifest.write_tsv(path, rows)
    os.utime(path, (1, 1))
    assert manifest.write_tsv(path, rows) is False
    assert path.stat().st_mtime == 1
    assert manifest.write_tsv(path, [], ErrorRow) is True
    assert manifest.read_errors(path) == []
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_session_files_grouped(tmp_path):
    rows = [FileRow("2", "DICOM", f"f{i}.dcm", i, "0" * 32, f"/data/x/{i}") for i in range(3)]
    rows.insert(1, FileRow("10", "DICOM", "a.dcm", 5, "1" * 32, "/data/y"))
    path = tmp_path / "s.tsv"
    manifest.write_tsv(path, rows)
    grouped = manifest.read_session_files(path)
    assert list(grouped) == ["2", "10"]
    assert [r.path for r in grouped["2"]] == ["f0.dcm", "f1.dcm", "f2.dcm"]
    assert grouped["10"][0].size == 5


def test_wrong_header_is_refused(tmp_path):
    path = tmp_path / "scans.tsv"
    path.write_text("project\tsubject\nP\tS\n")
    with pytest.raises(ValueError, match="columns"):
        manifest.read_scans(path)


@given(st.text(), st.text())
def test_any_text_round_trips(tmp_path_factory, desc, typ):
    path = tmp_path_factory.mktemp("h") / "scans.tsv"
    rows = [scan(series_description=desc, scan_type=typ)]
    manifest.write_tsv(path, rows)
    [back] = manifest.read_scans(path)
    assert back.series_description == desc.replace("\r\n", "\n").replace("\r", "\n")
    assert back.scan_type == typ.replace("\r\n", "\n").replace("\r", "\n")
