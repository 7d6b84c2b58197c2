"""``summary``: what a project holds on XNAT, before any download, at a fixed request cost.

Counts (2 requests per project, whatever its size): the subject listing (it also counts subjects
that have no session yet) and one project-wide scan search, as DAX lists a project
(``GET /data/experiments?project=P&xsiType=xnat:imageSessionData&columns=...``), whose rows carry
each scan's type and series description and its session's ID, label, type, subject and date. That
search is a left join from the session: a session without scans is one row with empty scan
columns, so it is counted too. The full summary adds one ``scans/ALL/files`` listing per session
that has scans (every file with its size and md5): files, bytes and the share of files with a
server checksum — at most 2 + 1 per session, the issue's budget. (Sessions without scans are not
listed: nothing to find, and the bundled server, like XNAT's scan selection, answers 404 there.)

Fallback: should an XNAT answer the scan search without the session columns (``SESSION_COLUMNS``),
the sessions come from the project's experiment listing instead, one request more (logged). A
subject label the search leaves empty is taken from the subject listing by the subject's ID.

The tables are built with pandas: per project, subject, session, and scan type x series
description; two plots (bytes by scan type, sessions over time).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xnat_prep.fsutil import atomic_write
from xnat_prep.xnat_api import Client

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

_SCAN_IN_URI = re.compile(r"/scans/([^/]+)/resources/")
TABLES = ("projects", "subjects", "sessions", "scan_types")
# Session columns the project-wide scan search must answer (``a|b``: either name) for the summary
# to do without the experiment listing.
SESSION_COLUMNS = ("ID", "label", "xsiType", "xnat:imagesessiondata/date|date")


@dataclass
class ProjectData:
    """The rows XNAT answered for one project (``files`` empty in counts-only mode)."""

    project: str
    subjects: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    scans: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] | None = None  # one row per file: session_id, scan_id, size, md5
    requests: int = 0


def _get(row: dict[str, Any], key: str) -> str:
    """A column of a listing row; XNAT lower-cases xpath column names in some versions."""
    if key in row:
        return str(row[key] or "")
    lowered = {k.lower(): v for k, v in row.items()}
    return str(lowered.get(key.lower()) or "")


def collect(
    client: Client,
    project: str,
    *,
    counts_only: bool = False,
    connect: Callable[[], Client] | None = None,
    max_connections: int = 1,
) -> ProjectData:
    """List one project: 2 requests, plus one per image session with scans unless ``counts_only``
    (those listed ``max_connections`` at once when ``connect`` opens more connections)."""
    before = client.requests
    data = ProjectData(project)
    data.subjects = client.subjects(project)
    rows = client.project_scans(project)
    if rows and not all(_has(row, SESSION_COLUMNS) for row in rows):
        # an XNAT that does not answer the session columns on the scan search: list the sessions
        log.warning(
            "project %s: the scan search has no session columns (%s); listing the sessions apart "
            "(one more request)",
            project,
            ", ".join(SESSION_COLUMNS),
        )
        experiments = client.project_experiments(project)
        data.sessions = [s for s in experiments if str(s.get("xsiType", "")).endswith("SessionData")]
    else:
        data.sessions = _sessions(rows, {str(s["ID"]): str(s["label"]) for s in data.subjects})
    known = {s["ID"] for s in data.sessions}
    scans: dict[tuple[str, str], dict[str, Any]] = {}  # one per scan, even from rows per scan x resource
    for row in rows:
        key = (_get(row, "ID"), _get(row, "xnat:imagescandata/id"))
        if key[1] and key[0] in known and key not in scans:
            scans[key] = {
                "session_id": key[0],
                "scan_id": key[1],
                "scan_type": _get(row, "xnat:imagescandata/type"),
                "series_description": _get(row, "xnat:imagescandata/series_description"),
            }
    data.scans = list(scans.values())
    extra = 0  # requests on the other connections
    if not counts_only:
        # a session without scans has no files to list (and XNAT may answer its scans/ALL with 404)
        scanned = {session_id for session_id, _ in scans}
        listed = [str(s["ID"]) for s in data.sessions if s["ID"] in scanned]
        parts, extra = _list_files(client, listed, connect, max_connections)
        data.files = [row for part in parts for row in part]
    data.requests = client.requests - before + extra
    return data


def _session_files(client: Client, session_id: str) -> list[dict[str, Any]]:
    """One row per file of a session's scans: session_id, scan_id, size, md5 (one request)."""
    found = []
    for row in client.session_files(session_id):
        match = _SCAN_IN_URI.search(str(row.get("URI", "")))
        if match:
            found.append(
                {
                    "session_id": session_id,
                    "scan_id": match.group(1),
                    "size": int(row.get("Size") or 0),
                    "md5": str(row.get("digest") or ""),
                }
            )
    return found


def _list_files(
    client: Client, sessions: Sequence[str], connect: Callable[[], Client] | None, max_connections: int
) -> tuple[list[list[dict[str, Any]]], int]:
    """Each session's file rows, in the order of ``sessions``, and the requests made on connections
    other than ``client``: up to ``max_connections`` sessions listed at once, each worker thread on
    a connection of its own from ``connect()`` (one after another on ``client`` without it)."""
    workers = min(max_connections, len(sessions)) if connect is not None else 1
    if workers <= 1:
        return [_session_files(client, sid) for sid in sessions], 0
    assert connect is not None
    local = threading.local()
    opened: list[Client] = []
    lock = threading.Lock()

    def mine() -> Client:
        if not hasattr(local, "xs"):
            local.xs = connect()
            with lock:
                opened.append(local.xs)
        return local.xs

    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="summary") as pool:
            parts = list(pool.map(lambda sid: _session_files(mine(), sid), sessions))
    finally:
        for xs in opened:
            xs.close()
    return parts, sum(xs.requests for xs in opened)


def _has(row: dict[str, Any], columns: Sequence[str]) -> bool:
    """Whether a row has all ``columns`` (an empty value counts: a session without a date)."""
    keys = {k.lower() for k in row}
    return all(any(alt.lower() in keys for alt in c.split("|")) for c in columns)


def _sessions(rows: Iterable[dict[str, Any]], subject_labels: dict[str, str]) -> list[dict[str, Any]]:
    """The image sessions in the scan search's rows (one per session, in the order listed), with
    the keys of the experiment listing; a subject label the search left empty comes from the
    subject listing by the subject's ID."""
    sessions: dict[str, dict[str, Any]] = {}
    for row in rows:
        sid = _get(row, "ID")
        if not sid or sid in sessions or not _get(row, "xsiType").endswith("SessionData"):
            continue
        subject_id = _get(row, "xnat:imagesessiondata/subject_id") or _get(row, "subject_ID")
        sessions[sid] = {
            "ID": sid,
            "label": _get(row, "label"),
            "xsiType": _get(row, "xsiType"),
            "subject_ID": subject_id,
            "subject_label": _get(row, "subject_label") or subject_labels.get(subject_id, ""),
            "date": _get(row, "xnat:imagesessiondata/date") or _get(row, "date"),
        }
    return list(sessions.values())


def tables(projects: Sequence[ProjectData]) -> dict[str, pd.DataFrame]:
    """The summary tables: per project, subject, session, and scan type x series description."""
    import pandas as pd

    full = all(p.files is not None for p in projects)
    sessions = pd.DataFrame(
        [
            {
                "project": p.project,
                "subject": str(s.get("subject_label") or s.get("subject_ID") or ""),
                "session": str(s.get("label", "")),
                "session_id": str(s["ID"]),
                "xsi_type": str(s.get("xsiType", "")),
                "date": str(s.get("date") or ""),
            }
            for p in projects
            for s in p.sessions
        ],
        columns=["project", "subject", "session", "session_id", "xsi_type", "date"],
    )
    scans = pd.DataFrame(
        [{"project": p.project, **row} for p in projects for row in p.scans],
        columns=["project", "session_id", "scan_id", "scan_type", "series_description"],
    )
    scans = scans.merge(sessions[["session_id", "subject", "session"]], on="session_id", how="inner")
    files = pd.DataFrame(
        [row for p in projects for row in p.files or []], columns=["session_id", "scan_id", "size", "md5"]
    )
    per_scan = files.groupby(["session_id", "scan_id"]).agg(
        files=("size", "size"), bytes=("size", "sum"), with_md5=("md5", lambda m: int((m != "").sum()))
    )
    scans = scans.join(per_scan, on=["session_id", "scan_id"])
    for column in ("files", "bytes", "with_md5"):
        scans[column] = scans[column].fillna(0).astype(int)

    by_session = scans.groupby("session_id").agg(
        scans=("scan_id", "size"),
        files=("files", "sum"),
        bytes=("bytes", "sum"),
        with_md5=("with_md5", "sum"),
    )
    session_table = sessions.join(by_session, on="session_id")
    for column in ("scans", "files", "bytes", "with_md5"):
        session_table[column] = session_table[column].fillna(0).astype(int)
    subject_table = (
        session_table.groupby(["project", "subject"])
        .agg(
            sessions=("session_id", "size"),
            scans=("scans", "sum"),
            files=("files", "sum"),
            bytes=("bytes", "sum"),
        )
        .reset_index()
    )
    type_table = (
        scans.groupby(["project", "scan_type", "series_description"])
        .agg(
            sessions=("session_id", "nunique"),
            scans=("scan_id", "size"),
            files=("files", "sum"),
            bytes=("bytes", "sum"),
        )
        .reset_index()
        .sort_values(["project", "bytes", "scans"], ascending=[True, False, False])
    )
    project_rows = []
    for p in projects:
        mine = session_table[session_table["project"] == p.project]
        dates = sorted(d for d in mine["date"] if d)
        by_type = mine.groupby("xsi_type").size()
        n_files = int(mine["files"].sum())
        project_rows.append(
            {
                "project": p.project,
                "subjects": len(p.subjects),
                "sessions": len(mine),
                "sessions_by_type": ", ".join(f"{t}={n}" for t, n in sorted(by_type.items())),
                "scans": int(mine["scans"].sum()),
                "files": n_files if full else "",
                "bytes": int(mine["bytes"].sum()) if full else "",
                "md5_share": (round(int(mine["with_md5"].sum()) / n_files, 4) if n_files else "")
                if full
                else "",
                "first_date": dates[0] if dates else "",
                "last_date": dates[-1] if dates else "",
                "requests": p.requests,
            }
        )
    found = {
        "projects": pd.DataFrame(project_rows),
        "subjects": subject_table,
        "sessions": session_table.drop(columns=["with_md5"]),
        "scan_types": type_table,
    }
    if not full:  # no file listings: no file or byte columns rather than zeros
        found = {
            k: t.drop(columns=["files", "bytes"], errors="ignore") if k != "projects" else t
            for k, t in found.items()
        }
    return found


def write(found: dict[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    """The tables as ``{name}.tsv`` and the plots as PNG under ``out_dir``; returns the files."""
    out = Path(out_dir)
    written = [
        atomic_write(out / f"{name}.tsv", found[name].to_csv(sep="\t", index=False, lineterminator="\n"))
        for name in TABLES
    ]
    return written + plot(found, out)


def plot(found: dict[str, pd.DataFrame], out: Path) -> list[Path]:
    """``bytes_by_scan_type.png`` (or scans, in counts-only mode) and ``sessions_over_time.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    types = found["scan_types"]
    measure = "bytes" if "bytes" in types else "scans"
    top = types.groupby("scan_type")[measure].sum().sort_values().tail(25)
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(top) + 1.5), layout="constrained")
    values = top / 1e6 if measure == "bytes" else top
    ax.barh([t or "(no type)" for t in top.index], values)
    ax.set(xlabel="MB" if measure == "bytes" else "scans", title=f"{measure.capitalize()} by scan type")
    by_type = out / "bytes_by_scan_type.png"
    fig.savefig(by_type, dpi=100)
    plt.close(fig)

    sessions = found["sessions"]
    months = sessions["date"].str.slice(0, 7)
    counts = months[months != ""].value_counts().sort_index()
    fig, ax = plt.subplots(figsize=(8, 3), layout="constrained")
    ax.bar(list(counts.index) or ["(no dates)"], list(counts.values) or [0])
    ax.set(ylabel="sessions", title="Sessions per month (XNAT session date)")
    ax.tick_params(axis="x", labelrotation=90)
    over_time = out / "sessions_over_time.png"
    fig.savefig(over_time, dpi=100)
    plt.close(fig)
    return [by_type, over_time]


def summarise(
    client: Client,
    projects: Iterable[str],
    *,
    counts_only: bool = False,
    connect: Callable[[], Client] | None = None,
    max_connections: int = 1,
) -> dict[str, pd.DataFrame]:
    """Collect and tabulate several projects."""
    return tables(
        [
            collect(client, p, counts_only=counts_only, connect=connect, max_connections=max_connections)
            for p in dict.fromkeys(projects)
        ]
    )
