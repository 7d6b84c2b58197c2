"""receipts.write is atomic (no partial file on failure) and read names bad files."""

from __future__ import annotations

import pytest

from xnat_prep import receipts
from xnat_prep.errors import UserError


def test_round_trip_creates_parents(tmp_path):
    path = tmp_path / "a" / "b" / "r.json"
    receipts.write(path, {"x": 1, "files": [{"path": "a.dcm"}]})
    assert receipts.read(path) == {"x": 1, "files": [{"path": "a.dcm"}]}


def test_failed_write_keeps_old_receipt_and_leaves_no_temp(tmp_path):
    path = tmp_path / "r.json"
    receipts.write(path, {"old": True})
    with pytest.raises(TypeError):
        receipts.write(path, {"bad": object()})
    assert receipts.read(path) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match=r"missing\.json"):
        receipts.read(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match=r"bad\.json"):
        receipts.read(bad)
