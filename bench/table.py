"""The results table: one row per measurement, medians, ratios and PASS/FAIL per target."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.measure import median

# Every row key the full and the quick benchmark print, in table order (the smoke test checks it).
ROW_KEYS = (
    "download.baseline",
    "download.xnat_get",
    "download.limit_zip",
    "download.limit_files",
    "download.limit_unzip",
    "download.floor",
    "download.workflow",
    "download.vs_baseline",
    "download.vs_limit",
    "download.vs_limit_unzip",
    "download.vs_floor",
    "download.best_vs_baseline",
    "pipeline.workflow",
    "convert.dcm2niix",
    "convert.workflow",
    "convert.vs_dcm2niix",
    "requests.transfer_per_scan",
    "requests.noop_rerun",
    "scale.dag_build",
    "scale.dag_listed",
    "scale.dag_rss",
    "scale.dryrun_done",
    "scale.noop_rerun",
    "scale.noop_vs_dryrun",
    "scale.dag_cpu",
    "scale.dag_listed_cpu",
    "scale.dryrun_done_cpu",
    "scale.noop_cpu",
    "scale.noop_vs_dryrun_cpu",
    "scale.slurm_jobs_per_25",
    "scale.slurm_nodes_jobs_per_25",
    "transfer.job_rss",
    "latency.baseline",
    "latency.workflow",
    "latency.vs_baseline",
    "pseudo.floor",
    "pseudo.workflow",
    "pseudo.vs_floor",
    "zip.limit_zip",
    "zip.download",
    "zip.download_vs_limit",
    "zip.noop",
    "zip.limit_zip_cpu",
    "zip.download_cpu",
    "zip.noop_cpu",
    "zip.download_cpu_per_session",
    "zip.download_ceiling",
    "zip.limit_zip_md5",
    "zip.download_ceiling_verified",
    "zip.jobs_chained",
    "zip.jobs_batched",
    "zip.jobs_chained_cpu",
    "zip.jobs_batched_cpu",
    "zip.bound_per_session",
    "zip.bound_batched",
    "zip.md5",
    "zip.files_per_scan",
    "zip.dcm2niix",
    "zip.unpack",
    "zip.unpack_disk",
    "zip.unpack_syscalls",
    "zip.nifti_md5",
    "zip.convert_noop",
    "zip.convert_floor",
    "zip.convert_bound",
    "zip.convert",
    "zip.dcm2niix_cpu",
    "zip.convert_cpu",
    "zip.convert_cpu_vs_dcm2niix",
    "zip.convert_vs_dcm2niix",
)

# Rows computed from other rows (a ratio, no samples of their own).
DERIVED = frozenset(
    {
        "download.vs_baseline",
        "download.vs_limit",
        "download.vs_limit_unzip",
        "download.vs_floor",
        "download.best_vs_baseline",
        "convert.vs_dcm2niix",
        "scale.noop_vs_dryrun",
        "scale.noop_vs_dryrun_cpu",
        "latency.vs_baseline",
        "pseudo.vs_floor",
        "zip.download_vs_limit",
        "zip.download_ceiling",
        "zip.download_ceiling_verified",
        "zip.bound_per_session",
        "zip.bound_batched",
        "zip.convert_floor",
        "zip.convert_bound",
        "zip.convert_cpu_vs_dcm2niix",
        "zip.convert_vs_dcm2niix",
    }
)


@dataclass
class Row:
    """One table row. ``samples`` are the repetitions; the shown value is their median.

    ``ratio`` and ``target`` are set on rows that carry a target; ``ok(ratio)`` decides PASS.
    """

    key: str
    what: str
    unit: str
    samples: list[float] = field(default_factory=list)
    ratio: float | None = None
    target: str = ""
    ok: Callable[[float], bool] | None = None
    note: str = ""
    problem: str = ""  # a reason to fail that the number alone does not show

    @property
    def value(self) -> float:
        return median(self.samples) if self.samples else math.nan

    @property
    def verdict(self) -> str:
        if self.ok is None:
            return ""
        if self.ratio is None or math.isnan(self.ratio):
            return "FAIL (not measured)"
        if self.problem:
            return f"FAIL ({self.problem})"
        return "PASS" if self.ok(self.ratio) else "FAIL"


def _num(x: float | None, unit: str = "") -> str:
    if x is None:
        return ""
    if math.isnan(x):
        return "n/a"
    text = f"{x:.0f}" if abs(x) >= 100 else f"{x:.2f}" if abs(x) >= 1 or x == 0 else f"{x:.3f}"
    return f"{text} {unit}".strip()


def render(rows: Sequence[Row]) -> str:
    """The markdown table (also what ``python -m bench`` prints)."""
    lines = [
        "| key | measurement | median | reps | ratio | target | result | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        value = _num(r.value, r.unit) if r.samples or r.ratio is None else ""
        lines.append(
            f"| {r.key} | {r.what} | {value} | {len(r.samples) or ''} | {_num(r.ratio)} | {r.target} "
            f"| {r.verdict} | {r.note} |"
        )
    return "\n".join(lines)


def parse(markdown: str) -> dict[str, dict[str, str]]:
    """Row key → column → cell, read back from ``render()``'s output (for the smoke test)."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] = []
    for line in markdown.splitlines():
        if not line.startswith("| "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "key":
            header = cells
        elif header and not set(cells[0]) <= {"-"}:
            rows[cells[0]] = dict(zip(header, cells, strict=False))
    return rows
