"""``plan``: what a run will do, from the manifest and the local disk, before any download.

Discovery has listed the subjects (the manifest, with ``skipped.tsv`` saying why each other scan
was left out); the plan adds no request. It tells scans selected and skipped (with reasons),
files and bytes still to fetch and how much is verified locally already, the HTTP requests the
run will send, the jobs per step and the cluster jobs with a profile's grouping, the disk and
inodes needed under ``output_root``, and a time estimate from measured throughput.
``inventory.tsv``: scan type x series description -> sessions, scans, selected or not and why:
the table to write a selection from.

Request estimates (upper bounds of what the steps send): a scan to download, 1 (its zip; a few
missing files, one each, up to 16); upload, per converted scan 1 resource listing + 1 file listing
+ 1 resource creation + 1 PUT per output (2-4) + 1 listing to verify, so <= 8; custom variables, 3
per session (read, one PUT, read back). Time: ``DOWNLOAD_MB_S`` and ``CONVERT_MB_S_PER_CORE``
were measured by the benchmark on its test machine (bench/results/2026-11-21.md: 4.24 GB
downloaded in 84 s over loopback, 4.21 GB converted in 119 s on 2 cores); a real network is
usually slower, so ``--download-mb-s`` takes a site's own figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xnat_prep import download, manifest, paths

if TYPE_CHECKING:
    import pandas as pd

DOWNLOAD_MB_S = 50.0
CONVERT_MB_S_PER_CORE = 17.0
UPLOAD_REQUESTS_PER_SCAN = 8
VARIABLES_REQUESTS_PER_SESSION = 3


@dataclass
class Plan:
    """The plan's figures (one line each in ``plan.tsv``) and the inventory."""

    figures: list[tuple[str, Any, str]]  # (what, value, note)
    inventory: pd.DataFrame

    def value(self, what: str) -> Any:
        return next(v for w, v, _ in self.figures if w == what)

    def text(self) -> str:
        width = max(len(w) for w, _, _ in self.figures)
        return "\n".join(f"{w:<{width}}  {_shown(v):>12}  {note}".rstrip() for w, v, note in self.figures)


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def build(
    root: str | Path,
    *,
    upload: bool = True,
    variables: bool = True,
    cores: int = 1,
    group_components: Mapping[str, int] | None = None,
    download_mb_s: float = DOWNLOAD_MB_S,
    store: str = "files",
) -> Plan:
    """The plan of the run whose manifest is under ``root`` (``group_components``: rule -> scans
    per cluster job, from a profile's ``groups`` and ``group-components``; ``store``: the config's
    ``dicom.store``, which decides the inodes and what counts as verified locally)."""
    import pandas as pd

    root = Path(root)
    scans = manifest.read_scans(root / paths.SCANS_TSV)
    skipped = manifest.read_skipped(root / paths.SKIPPED_TSV)
    errors = manifest.read_errors(root / paths.ERRORS_TSV)
    sessions = {(s.project, s.subject, s.session) for s in scans}
    to_fetch, fetch_files, fetch_bytes, done_bytes = [], 0, 0, 0
    file_lists: dict[tuple[str, str, str], dict[str, list[manifest.FileRow]]] = {}
    for scan in scans:
        where = (scan.project, scan.subject, scan.session)
        if where not in file_lists:
            file_lists[where] = manifest.read_session_files(paths.session_files(root, *where))
        files = file_lists[where].get(scan.scan_id, [])
        if download.verified_locally(paths.download_receipt(root, *where, scan.scan), files, store):
            done_bytes += scan.bytes
        else:
            to_fetch.append(scan)
            fetch_files += scan.n_files
            fetch_bytes += scan.bytes
    to_convert = [
        s for s in scans if not paths.convert_receipt(root, s.project, s.subject, s.session, s.scan).exists()
    ]
    sessions_to_upload = {w for w in sessions if upload and not paths.upload_receipt(root, *w).exists()}
    sessions_to_set = {w for w in sessions if variables and not paths.variables_receipt(root, *w).exists()}
    fetch_sessions = {(s.project, s.subject, s.session) for s in to_fetch}
    jobs = {
        "download_session": len(fetch_sessions),
        "convert_session": len({(s.project, s.subject, s.session) for s in to_convert}),
        "upload_session": len(sessions_to_upload),
        "set_variables": len(sessions_to_set),
    }
    groups = dict(group_components or {})
    cluster_jobs = sum(math.ceil(n / groups.get(rule, 1)) for rule, n in jobs.items())
    requests = (
        len(to_fetch)
        + UPLOAD_REQUESTS_PER_SCAN
        * sum(1 for s in scans if (s.project, s.subject, s.session) in sessions_to_upload)
        + VARIABLES_REQUESTS_PER_SESSION * len(sessions_to_set)
    )
    all_bytes = sum(s.bytes for s in scans)
    convert_bytes = sum(s.bytes for s in to_convert)
    # DICOM stays; NIfTI (gzip) is at most about the DICOM's size; one folder + receipt per scan.
    disk = fetch_bytes + convert_bytes
    # files: one per DICOM instance + the scan's folder + receipt; zip: the zip + receipt
    inodes_by_store = {
        "files": fetch_files + 2 * len(to_fetch) + 4 * len(to_convert),
        "zip": 2 * len(to_fetch) + 4 * len(to_convert),
    }
    inodes = inodes_by_store[store]
    other = "zip" if store == "files" else "files"
    seconds = fetch_bytes / 1e6 / download_mb_s + convert_bytes / 1e6 / (
        CONVERT_MB_S_PER_CORE * max(1, cores)
    )
    reasons = pd.Series([s.reason.split(" (sampled")[0] for s in skipped], dtype="object").value_counts()
    dicom_reads = len({(r.session_id, r.scan_id) for r in manifest.read_dicom(root / paths.DICOM_TSV)})
    figures: list[tuple[str, Any, str]] = [
        ("sessions", len(sessions), f"{len(errors)} discovery problem(s) in {paths.ERRORS_TSV}"),
        ("scans selected", len(scans), f"{all_bytes / 1e9:.2f} GB of DICOM"),
        ("scans skipped", len(skipped), "; ".join(f"{n} {r}" for r, n in reasons.items())),
        ("DICOM headers read", dicom_reads, "scans read for scans.dicom (cached: a rerun reads none again)"),
        ("scans to download", len(to_fetch), f"{fetch_files:,} files, {fetch_bytes / 1e9:.2f} GB"),
        ("verified locally", len(scans) - len(to_fetch), f"{done_bytes / 1e9:.2f} GB kept, no request"),
        ("scans to convert", len(to_convert), ""),
        (
            "HTTP requests",
            requests,
            "at most: 1 per scan to download, <= 8 per scan uploaded, 3 per session's variables",
        ),
        (
            "jobs",
            sum(jobs.values()) + 2,
            ", ".join(f"{r} {n}" for r, n in jobs.items()) + ", discover 1, report 1",
        ),
        (
            "cluster jobs",
            cluster_jobs,
            f"with grouping {groups}" if groups else "no grouping (one job per step)",
        ),
        ("disk needed (GB)", round(disk / 1e9, 2), "under output_root: DICOM to fetch + NIfTI (<= DICOM)"),
        (
            "inodes needed",
            inodes,
            f"dicom.store {store}: files + folders + receipts "
            f"({inodes_by_store[other]:,} with dicom.store {other})",
        ),
        (
            "estimated minutes",
            round(seconds / 60, 1),
            f"at {download_mb_s:g} MB/s download, {CONVERT_MB_S_PER_CORE:g} MB/s/core x {cores} convert",
        ),
    ]
    return Plan(figures, inventory(scans, skipped))


def inventory(scans: list[manifest.ScanRow], skipped: list[manifest.SkippedRow]) -> pd.DataFrame:
    """Scan type x series description -> sessions, scans, selected (yes/no/some) and why not."""
    import pandas as pd

    rows = [(s.scan_type, s.series_description, s.session_id, "") for s in scans]
    rows += [(s.scan_type, s.series_description, s.session_id, s.reason) for s in skipped]
    table = pd.DataFrame(rows, columns=["scan_type", "series_description", "session_id", "reason"])
    if table.empty:
        return pd.DataFrame(
            columns=["scan_type", "series_description", "sessions", "scans", "selected", "why_not"]
        )
    grouped = table.groupby(["scan_type", "series_description"], sort=True)
    out = grouped.agg(
        sessions=("session_id", "nunique"),
        scans=("session_id", "size"),
        selected_scans=("reason", lambda r: int((r == "").sum())),
        why_not=("reason", lambda r: "; ".join(sorted({x for x in r if x}))),
    ).reset_index()
    out.insert(
        4,
        "selected",
        [
            "yes" if n == total else "no" if n == 0 else "some"
            for n, total in zip(out["selected_scans"], out["scans"], strict=True)
        ],
    )
    return out.drop(columns=["selected_scans"])


def write(plan: Plan, root: str | Path) -> tuple[Path, Path]:
    """``plan.tsv`` and ``inventory.tsv`` under ``root``."""
    from xnat_prep.fsutil import atomic_write

    root = Path(root)
    lines = ["what\tvalue\tnote"] + [f"{w}\t{v}\t{n}" for w, v, n in plan.figures]
    plan_tsv = atomic_write(root / paths.PLAN_TSV, "\n".join(lines) + "\n")
    inventory_tsv = atomic_write(
        root / paths.INVENTORY_TSV, plan.inventory.to_csv(sep="\t", index=False, lineterminator="\n")
    )
    return plan_tsv, inventory_tsv


def grouping(profile: str | Path | None) -> dict[str, int]:
    """rule -> jobs per cluster job, from a profile folder's ``groups`` and ``group-components``."""
    if profile is None:
        return {}
    import yaml

    from xnat_prep.errors import UserError

    path = Path(profile) / "config.yaml" if Path(profile).is_dir() else Path(profile)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: cannot read the profile ({type(exc).__name__})") from None
    components = data.get("group-components") or {}
    return {rule: int(components.get(group, 1)) for rule, group in (data.get("groups") or {}).items()}
