"""``report``: what a run did, from the manifest and the receipts (no XNAT request).

``summary.tsv`` has one row per selected scan (state, file counts and bytes, each step's outcome)
plus one per discovery error and one per session whose writes XNAT refused (state ``denied``:
a read-only user); ``data_amount.tsv`` sums DICOM and NIfTI per project; the plot
shows both per project. :func:`problems` turns the summary into one line per problem.
:func:`manifest_summary` gives ``xnat-prep summary``'s per-project and scan type x series
description tables from the manifest (no request): ``projects.tsv``, ``scan_types.tsv``.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from xnat_prep import manifest, paths, receipts
from xnat_prep.errors import UserError
from xnat_prep.fsutil import atomic_write

log = logging.getLogger(__name__)

PROBLEM_STATES = ("error", "failed", "missing", "denied")
DENIED = "denied"  # a session's state when XNAT refused its upload or variables (HTTP 403)


@dataclass
class ScanSummary:
    """One row of ``summary.tsv``."""

    project: str
    subject: str
    session: str
    scan_id: str
    scan_type: str
    scan: str
    state: str  # ok | skipped | failed | missing | error | denied (a session row)
    dicom_files: int = 0
    dicom_bytes: int = 0
    nifti_files: int = 0
    nifti_bytes: int = 0
    convert: str = ""
    upload: str = ""
    variables: str = ""
    message: str = ""
    quarantined: int = 0  # DICOM files pseudonymisation held back (burned-in text risk)


AMOUNT_COLUMNS = (
    "project",
    "subjects",
    "sessions",
    "scans",
    "ok",
    "skipped",
    "problems",
    "dicom_files",
    "dicom_bytes",
    "nifti_files",
    "nifti_bytes",
)


def _read(path: Path) -> dict[str, Any] | None:
    """A receipt, or None when it is not there (a step that did not run or failed)."""
    try:
        return receipts.read(path)
    except UserError:
        return None


def summarize(root: str | Path, *, upload: bool = True, variables: bool = True) -> list[ScanSummary]:
    """The summary rows of the run under ``root``."""
    root = Path(root)
    rows = [
        ScanSummary(e.project, e.subject, e.session, "", "", "", "error", message=e.message)
        for e in manifest.read_errors(root / paths.ERRORS_TSV)
    ]
    session_receipts: dict[tuple[str, str, str], tuple[Any, Any]] = {}
    for scan in manifest.read_scans(root / paths.SCANS_TSV):
        where = (scan.project, scan.subject, scan.session)
        row = ScanSummary(*where, scan.scan_id, scan.scan_type, scan.scan, "missing")
        downloaded = _read(paths.download_receipt(root, *where, scan.scan))
        if downloaded:
            row.dicom_files, row.dicom_bytes = downloaded["n_files"], downloaded["bytes"]
        converted = _read(paths.convert_receipt(root, *where, scan.scan))
        pseudonymised = _read(paths.pseudo_receipt(root, *where, scan.scan)) or {}
        held = pseudonymised.get("quarantined", [])
        row.quarantined = len(held)
        if held:
            reasons = "; ".join(sorted({q["reason"] for q in held}))
            row.message = f"{len(held)} file(s) quarantined: {reasons}"
        if where not in session_receipts:
            session_receipts[where] = (
                _read(paths.upload_receipt(root, *where)) if upload else None,
                _read(paths.variables_receipt(root, *where)) if variables else None,
            )
        uploaded, variables_set = session_receipts[where]
        if converted is None:
            row.message = "not downloaded" if downloaded is None else "not converted"
            rows.append(row)
            continue
        outputs = converted.get("outputs", [])
        row.nifti_files = len(outputs)
        row.nifti_bytes = sum(int(o.get("size", 0)) for o in outputs)
        row.convert = converted["status"]
        row.message = "; ".join(filter(None, (converted.get("reason", ""), row.message)))
        row.state = {"converted": "ok", "skipped": "skipped"}.get(converted["status"], "failed")
        if upload:
            entry = (uploaded or {}).get("scans", {}).get(scan.scan_id)
            row.upload = "missing" if entry is None else "uploaded" if entry["status"] == "converted" else "-"
            row.upload = _denied(uploaded) or row.upload
            if row.upload == "missing" and row.state == "ok":
                row.state, row.message = "missing", "not uploaded"
        if variables:
            row.variables = _denied(variables_set) or ("set" if variables_set else "missing")
            if not variables_set and row.state == "ok":
                row.state, row.message = "missing", "session variables not set"
        rows.append(row)
    for (project, subject, session), written in session_receipts.items():
        refused = [r for r in written if _denied(r)]
        if refused:
            steps = ", ".join(r["step"] for r in refused)
            message = f"{refused[0]['reason']} ({steps})"
            rows.append(ScanSummary(project, subject, session, "", "", "", DENIED, message=message))
    return rows


def _denied(receipt: Mapping[str, Any] | None) -> str:
    """``denied`` for the receipt of a write XNAT refused, else ""."""
    return DENIED if receipt and receipt.get("status") == DENIED else ""


def amounts(rows: Sequence[ScanSummary]) -> list[dict[str, Any]]:
    """Per-project totals of the summary rows (pandas: imported here, never at the workflow's parse)."""
    import pandas as pd

    if not rows:
        return []
    table = pd.DataFrame([asdict(r) for r in rows])
    table["scans"] = table["scan"] != ""
    table["ok"] = table["state"] == "ok"
    table["skipped"] = table["state"] == "skipped"
    table["problems"] = table["state"].isin(PROBLEM_STATES)
    table["session_key"] = table["subject"] + "/" + table["session"]
    by_project = table.groupby("project", sort=True)
    sums = ["scans", "ok", "skipped", "problems", "dicom_files", "dicom_bytes", "nifti_files", "nifti_bytes"]
    totals = by_project[sums].sum()
    totals["subjects"] = by_project["subject"].nunique()
    totals["sessions"] = table[table["session"] != ""].groupby("project")["session_key"].nunique()
    totals = totals.fillna(0).reset_index()
    return [
        {k: (v if k == "project" else int(v)) for k, v in record.items()}
        for record in totals[list(AMOUNT_COLUMNS)].to_dict("records")
    ]


def _write_tsv(path: Path, columns: Sequence[str], records: Sequence[Mapping[str, Any]]) -> None:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(list(records), columns=list(columns)).to_csv(
        path, sep="\t", index=False, lineterminator="\n"
    )


def plot(totals: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """Bar charts per project: data amount (DICOM vs NIfTI, MB) and scans by outcome."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    projects = [t["project"] for t in totals] or ["(none)"]
    x = range(len(projects))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    width = 0.4
    for offset, key, label in ((-width / 2, "dicom_bytes", "DICOM"), (width / 2, "nifti_bytes", "NIfTI")):
        left.bar([i + offset for i in x], [t[key] / 1e6 for t in totals] or [0], width, label=label)
    left.set(title="Data amount per project", ylabel="MB", xticks=list(x), xticklabels=projects)
    left.legend()
    bottom = [0] * len(projects)
    for key, colour in (("ok", "tab:green"), ("skipped", "tab:gray"), ("problems", "tab:red")):
        values = [t[key] for t in totals] or [0]
        right.bar(list(x), values, bottom=bottom, label=key, color=colour)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    right.set(title="Scans per project by outcome", ylabel="scans", xticks=list(x), xticklabels=projects)
    right.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def manifest_summary(root: str | Path) -> dict[str, Any]:
    """``xnat-prep summary``'s tables (``projects``, ``scan_types``: pandas frames) for what discovery
    listed under ``root``: the manifest's selected and skipped scans, and the selected scans' file
    lists (files, bytes, share with a server md5; a skipped scan's files are not listed, so 0).
    ``scan_types`` adds ``selected`` (scans the run took). Dates come from ``sessions.tsv``: a
    session with no selected scan has none there, and a manifest written before it had dates none."""
    from xnat_prep.summary import ProjectData, tables

    root = Path(root)
    selected = manifest.read_scans(root / paths.SCANS_TSV)
    listed = [*selected, *manifest.read_skipped(root / paths.SKIPPED_TSV)]
    try:
        dates = {s.session_id: s.date for s in manifest.read_sessions(root / paths.SESSIONS_TSV)}
    except (FileNotFoundError, ValueError):  # not there, or an older manifest's columns
        dates = {}
    projects: dict[str, ProjectData] = {}
    subjects: dict[str, set[str]] = {}
    sessions: set[str] = set()
    for row in listed:
        data = projects.setdefault(row.project, ProjectData(row.project, files=[]))
        subjects.setdefault(row.project, set()).add(row.subject)
        if row.session_id not in sessions:
            sessions.add(row.session_id)
            data.sessions.append(
                {"ID": row.session_id, "label": row.session, "subject_label": row.subject,
                 "xsiType": row.xsi_type, "date": dates.get(row.session_id, "")}
            )  # fmt: skip
        data.scans.append(
            {"session_id": row.session_id, "scan_id": row.scan_id, "scan_type": row.scan_type,
             "series_description": row.series_description}
        )  # fmt: skip
    for error in manifest.read_errors(root / paths.ERRORS_TSV):
        projects.setdefault(error.project, ProjectData(error.project, files=[]))
        subjects.setdefault(error.project, set()).add(error.subject)
    by_session: dict[tuple[str, str, str], tuple[str, set[str]]] = {}
    for row in selected:
        by_session.setdefault((row.project, row.subject, row.session), (row.session_id, set()))[1].add(
            row.scan_id
        )
    for (project, subject, session), (session_id, scan_ids) in by_session.items():
        try:
            files = manifest.read_session_files(paths.session_files(root, project, subject, session))
        except FileNotFoundError:  # the run's report still comes: without this session's files
            files = {}
        for scan_id in scan_ids:
            projects[project].files.extend(  # type: ignore[union-attr]
                {"session_id": session_id, "scan_id": scan_id, "size": f.size, "md5": f.md5}
                for f in files.get(scan_id, [])
            )
    for name, data in projects.items():
        data.subjects = [{"label": s} for s in sorted(subjects[name] - {""})]
    found = tables([projects[p] for p in sorted(projects)])
    types = found["scan_types"]
    keys = ["project", "scan_type", "series_description"]
    taken = [asdict(r) for r in selected]
    if len(types):
        import pandas as pd

        counts = pd.DataFrame(taken, columns=[*keys, "scan_id"]).groupby(keys).size().rename("selected")
        types = types.join(counts, on=keys)
        types["selected"] = types["selected"].fillna(0).astype(int)
    else:
        types["selected"] = []
    return {"projects": found["projects"], "scan_types": types}


def write_report(
    root: str | Path,
    *,
    upload: bool,
    variables: bool,
    summary: str | Path,
    amounts_tsv: str | Path,
    plot_png: str | Path,
    projects_tsv: str | Path | None = None,
    scan_types_tsv: str | Path | None = None,
) -> list[ScanSummary]:
    """Write the summary TSV, the per-project amounts TSV and the plot (and, when given, the
    manifest's project and scan-type tables); return the summary rows."""
    rows = summarize(root, upload=upload, variables=variables)
    _write_tsv(Path(summary), [f.name for f in fields(ScanSummary)], [asdict(r) for r in rows])
    totals = amounts(rows)
    _write_tsv(Path(amounts_tsv), AMOUNT_COLUMNS, totals)
    plot(totals, plot_png)
    if projects_tsv is not None or scan_types_tsv is not None:
        found = manifest_summary(root)
        for table, path in (("projects", projects_tsv), ("scan_types", scan_types_tsv)):
            if path is not None:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, found[table].to_csv(sep="\t", index=False, lineterminator="\n"))
    problems_found = sum(r.state in PROBLEM_STATES for r in rows)
    log.info("%d scan(s) summarised, %d problem(s)", sum(bool(r.scan) for r in rows), problems_found)
    return rows


def problems(summary: str | Path) -> list[str]:
    """One line per problem in a written ``summary.tsv`` (none if there is no summary yet)."""
    try:
        with open(summary, encoding="utf-8", newline="") as fh:
            records = list(csv.DictReader(fh, delimiter="\t"))
    except FileNotFoundError:
        return []
    lines = []
    for r in records:
        if r["state"] not in PROBLEM_STATES:
            continue
        where = "/".join(filter(None, (r["project"], r["subject"], r["session"])))
        scan = f" scan {r['scan_id']} ({r['scan_type'] or 'no type'})" if r["scan_id"] else ""
        lines.append(f"{where}{scan}: {r['state']}: {r['message']}")
    return lines


def covers_manifest(summary: str | Path, root: str | Path) -> bool:
    """Whether ``summary.tsv`` has a row for each scan and each discovery error of the manifest
    under ``root``, and no other: a summary written before the last discovery may not."""
    try:
        with open(summary, encoding="utf-8", newline="") as fh:
            rows = {
                (r["project"], r["subject"], r["session"], r["scan_id"])
                for r in csv.DictReader(fh, delimiter="\t")
                if r["state"] != DENIED  # a session row of the report's own
            }
    except FileNotFoundError:
        return False
    root = Path(root)
    listed = {(e.project, e.subject, e.session, "") for e in manifest.read_errors(root / paths.ERRORS_TSV)}
    listed |= {
        (s.project, s.subject, s.session, s.scan_id) for s in manifest.read_scans(root / paths.SCANS_TSV)
    }
    return rows == listed
