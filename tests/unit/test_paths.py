"""paths: label sanitising and path building."""

from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xnat_prep import paths


@given(st.text(min_size=1))
def test_safe_component_is_one_plain_component(label):
    try:
        safe = paths.safe_component(label)
    except ValueError:
        assert paths._UNSAFE.sub("_", label) in (".", "..")
        return
    assert "/" not in safe and safe not in (".", "..")
    assert paths._UNSAFE.search(safe) is None
    assert len(safe) == len(label)


def test_safe_component_keeps_valid_labels():
    assert paths.safe_component("001") == "001"
    assert paths.safe_component("Sub_01-a.b") == "Sub_01-a.b"
    assert paths.safe_component("T1 w/x") == "T1_w_x"
    assert paths.safe_component("é") == "_"


@pytest.mark.parametrize("label", ["", ".", ".."])
def test_safe_component_refuses(label):
    with pytest.raises(ValueError):
        paths.safe_component(label)


def test_safe_relpath():
    assert paths.safe_relpath("a/b c/x.dcm") == PurePosixPath("a/b_c/x.dcm")
    assert paths.safe_relpath("./a//b.dcm") == PurePosixPath("a/b.dcm")
    for bad in ["/etc/passwd", "a/../../x", "..", "", "\\x"]:
        with pytest.raises(ValueError):
            paths.safe_relpath(bad)


@given(st.lists(st.text(st.characters(blacklist_characters="/"), min_size=1), min_size=1, max_size=4))
def test_safe_relpath_never_escapes(parts):
    try:
        rel = paths.safe_relpath("/".join(parts))
    except ValueError:
        return
    assert not rel.is_absolute()
    assert ".." not in rel.parts


def test_scan_dir():
    assert paths.scan_dir("001", "T1w") == "001-T1w"
    assert paths.scan_dir("7", "") == "7-unknown"
    assert paths.scan_dir("7", "  ") == "7-unknown"
    assert paths.scan_dir("3", "fMRI rest/run 1") == "3-fMRI_rest_run_1"


def test_builders_match_templates(tmp_path):
    p = paths.download_receipt(tmp_path, "P", "001", "S 1", "1-T1w")
    assert p == tmp_path / "dicom/P/001/S_1/1-T1w.json"
    assert paths.session_download_receipt("r", "P", "S", "E 1").as_posix() == "r/dicom/P/S/E_1.json"
    assert paths.convert_receipt("r", "P", "S", "E", "x").as_posix() == "r/nifti/P/S/E/x.json"
    assert paths.upload_receipt("r", "P", "S", "E").as_posix() == "r/receipts/upload/P/S/E.json"
    assert paths.variables_receipt("r", "P", "S", "E").as_posix() == "r/receipts/variables/P/S/E.json"
    assert paths.session_files("r", "P", "S", "E").as_posix() == "r/manifest/files/P/S/E.tsv"
