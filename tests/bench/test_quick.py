"""Smoke test of the benchmark: ``python -m bench --quick`` runs end to end and prints every row.

It does not judge the performance (the quick study is too small for the targets to mean much);
it checks that every measurement was taken: each row of the table is there, each measured row
has a number, and each ratio is a number.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import table

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_benchmark_prints_every_row(tmp_path: Path) -> None:
    results = tmp_path / "results"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--workdir",
            str(tmp_path / "work"),
            "--results-dir",
            str(results),
            "--cache",
            str(tmp_path / "cache"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    written = list(results.glob("*-quick.md"))
    assert len(written) == 1
    text = written[0].read_text()
    assert "## Machine" in text and "| CPU |" in text and "| snakemake |" in text
    rows = table.parse(text)
    assert list(rows) == list(table.ROW_KEYS)
    for key, cells in rows.items():
        if cells["ratio"]:
            assert not math.isnan(float(cells["ratio"])), key
        if cells["reps"]:
            assert float(cells["median"].split()[0]) >= 0, key
    # every derived ratio has a value, every measured row its samples, every target a verdict
    assert all(rows[key]["ratio"] for key in table.DERIVED)
    assert all(
        cells["reps"] for key, cells in rows.items() if key not in table.DERIVED | {"download.xnat_get"}
    )
    # xnat-get comes from PyPI: measured, or the reason it could not be installed
    assert rows["download.xnat_get"]["reps"] or rows["download.xnat_get"]["note"]
    assert all(cells["result"] for cells in rows.values() if cells["target"])
    # the table printed is the table written
    assert table.parse(proc.stdout) == rows
