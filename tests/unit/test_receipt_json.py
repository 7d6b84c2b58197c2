"""receipts: JSON people can read, written by json's C encoder, and read back unchanged."""

from __future__ import annotations

import json

import pytest

from xnat_prep import receipts

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
