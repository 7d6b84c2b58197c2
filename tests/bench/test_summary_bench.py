"""``python -m bench.summary`` at a small size: it runs end to end and the request budgets hold
(counts-only <= 3 requests, full <= 2 + 1 per session, from the server's own request log), and the
serial and the parallel full summary write the same tables (``bench.summary.check``)."""

from __future__ import annotations

import pytest

from bench import summary


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_summary_bench_within_budget(tmp_path) -> None:
    out = tmp_path / "summary.md"
    assert summary.main(["--sessions", "6", "--out", str(out)]) == 0
    text = out.read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 2 | 3 | yes |" in rows["summary --counts-only"]
    # 6 sessions with scans and one without: 2 + 6 requests, within 2 + 7
    for full in ("summary (full, 1 connection)", "summary (full, 4 connections)"):
        assert "| 8 | 9 | yes |" in rows[full]
        assert "scans/ALL/files` 6" in rows[full] and "SUMMARY1K/experiments" not in rows[full]
    # discovery: the subject listing, 1 experiment listing per subject, 2 per session (scans, files)
    assert "| 16 |" in rows["plan (discovery + plan)"]  # 1 + 3 + 2 x 6
