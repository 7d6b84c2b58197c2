"""receipts.write is atomic (no partial file on failure), readable, read back unchanged; read names bad
files; a killed writer's temporary file is cleaned by the next run of the step."""

from __future__ import annotations

import json

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


FILES = [{"path": f"a/{i}.dcm", "size": i, "md5": "0" * 32} for i in range(receipts.LONG_LIST + 1)]


@pytest.mark.parametrize(
    "data",
    [
        {},
        {
            "step": "x",
            "n": 1,
            "ok": True,
            "none": None,
            "ratio": 0.5,
            "empty": [],
            "nested": {"a": [1, {"b": 2}]},
        },
        {"name": 'Zoë "quoted" \\ back\nslash', "files": FILES},
        {"scans": [{"scan_id": "1", "files": FILES[:3]}], "text": "}, {"},
    ],
)
def test_reads_back_as_written(tmp_path, data) -> None:
    path = receipts.write(tmp_path / "r.json", data)
    assert receipts.read(path) == data
    assert json.loads(receipts.dumps(data)) == data


def test_a_line_per_key_and_per_item_of_a_short_list_a_long_list_on_one() -> None:
    text = receipts.dumps({"step": "download", "scans": [{"id": 1}, {"id": 2}], "files": FILES})
    lines = text.splitlines()
    assert lines[:6] == [
        "{",
        '  "step": "download",',
        '  "scans": [',
        '    {"id": 1},',
        '    {"id": 2}',
        "  ],",
    ]
    assert lines[6].startswith('  "files": [{"path": "a/0.dcm"') and lines[6].endswith("}]")
    assert lines[7:] == ["}"]


@pytest.mark.parametrize(
    "argv",
    [
        ["set-variables", "--session-id", "X", "--derived", "not json"],
        ["bids-validate", "no-such-dataset"],
    ],
)
def test_a_step_deletes_the_temporary_file_of_a_receipt_its_killed_run_left(tmp_path, argv) -> None:
    """A job killed inside receipts.write leaves ``.<receipt>.<random>.part`` beside the rule's
    output; the step's next run deletes it first, whatever happens then (here: it fails)."""
    from xnat_prep import cli
    from xnat_prep.fsutil import atomic_write

    receipt = tmp_path / "step.json"
    stale = tmp_path / ".step.json.k1ll3d.part"
    stale.write_text('{"half": ')
    neighbour = atomic_write(tmp_path / "other.json", "{}")  # another receipt's file stays
    assert cli.main([*argv, "--receipt", str(receipt)]) != 0
    assert not stale.exists()
    assert neighbour.exists() and not receipt.exists()


def test_a_key_that_is_not_a_string_is_refused_not_written_as_invalid_json(tmp_path) -> None:
    with pytest.raises(TypeError, match="strings"):
        receipts.write(tmp_path / "r.json", {1: "x"})
    assert list(tmp_path.iterdir()) == []
