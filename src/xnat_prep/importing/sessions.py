"""``import``: DICOM sessions from a CSV into XNAT, safe to rerun (see ``decide`` for the rules).

1. Local preflight of every row (``local``): nothing is sent if any row is bad.
2. A cheap look at XNAT and one decision per row, written to ``import_plan.tsv``; a conflict,
   partial session or missing write access stops the run here, before any modifying request
   (``--dry-run`` always stops here).
3. Per row to write: one ``POST /data/services/import`` with the zip streamed from the source
   (only the missing series for an append), then, for the prearchive, the archive request when
   asked; then XNAT is read until the session holds every series with its file count (backoff,
   time limit) and the digests are compared unless the server rewrites DICOM. A receipt per row.

The import request is not repeated blindly: when it fails in a way XNAT may have acted on (a
reset, a 5xx, a cut answer), XNAT is looked at again and the row decided anew (its own partial
import is appended to, a complete one verified), so a fault never makes a duplicate session.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xnat_prep import __version__, paths, receipts
from xnat_prep import credentials as creds_mod
from xnat_prep.errors import UserError, where
from xnat_prep.fsutil import atomic_write
from xnat_prep.importing import decide as dec
from xnat_prep.importing.local import LocalSession, Source, check_across_rows, read_session
from xnat_prep.importing.sheet import ImportRow, read_imports
from xnat_prep.importing.zipbody import ZipBody
from xnat_prep.xnat_api import Client, Connection, RetryPolicy, Unreachable, XnatError

log = logging.getLogger(__name__)

PLAN_COLUMNS = [
    *("row", "project", "subject", "session", "source", "dest", "on_conflict", "study_uid"),
    *("series", "files", "bytes", "xnat", "decision", "reason"),
]
ATTEMPTS = 4  # looks-and-sends of one row after ambiguous failures


@dataclass(frozen=True)
class Settings:
    """How imports are sent and checked (the config's ``import`` section)."""

    trigger_pipelines: bool = True
    direct_archive: bool = False  # XNAT >= 1.8.3: skip the prearchive on the way to the archive
    server_rewrites: bool = False  # an anonymization script rewrites headers: digests not compared
    wait_seconds: float = 900.0  # for the session to reach the archive
    archive_pending: bool = False


@dataclass
class Row:
    local: LocalSession
    remote: dec.Remote
    decision: dec.Decision
    previous: dict[str, Any] | None


class RowFailed(UserError):
    pass


def import_csv(
    connection: Connection,
    csv_path: str | Path,
    *,
    output_root: str | Path,
    columns: Mapping[str, str] | None = None,
    only: str | None = None,
    dry_run: bool = False,
    settings: Settings = Settings(),
    push: bool = False,
    rows: Sequence[ImportRow] | None = None,
    credentials: creds_mod.Credentials | None = None,
    retry: RetryPolicy | None = None,
) -> dict[str, Any]:
    """Import the CSV's sessions (or ``only`` the one ``project/subject/session``); returns a
    summary. ``rows`` replaces reading the CSV (the push stage makes its rows itself); ``push``
    writes receipts under ``receipts/push``."""
    all_rows = list(rows) if rows is not None else read_imports(csv_path, columns)
    chosen = [r for r in all_rows if only is None or r.key == only]
    if not chosen:
        raise UserError(f"{csv_path}: no row for session {only}")
    locals_ = _preflight(chosen, csv_path)
    if only is None:
        check_across_rows(locals_, csv_path)
    plan_path = Path(output_root) / (paths.PUSH_PLAN if push else paths.IMPORT_PLAN)
    started = time.monotonic()
    with Client(connection, credentials, retry=retry) as client:
        remotes = dec.look(client, locals_)
        planned = []
        for local in locals_:
            receipt = paths.import_receipt(output_root, *local.row.key.split("/"), push=push)
            previous = receipts.read(receipt) if receipt.exists() else None
            remote = remotes[local.row.key]
            decision = dec.decide(
                local,
                remote,
                previous=previous,
                server_rewrites=settings.server_rewrites,
                archive_pending=settings.archive_pending,
            )
            planned.append(Row(local, remote, decision, previous))
        if only is None:
            write_plan(plan_path, planned)
        for row in planned:
            log.info(
                "row %d %s: %s (%s)",
                row.local.row.row,
                row.local.row.key,
                row.decision.action,
                row.decision.reason,
            )
        problems = [r for r in planned if r.decision.action in dec.PROBLEMS]
        if problems:
            first = problems[0]
            more = f" (and {len(problems) - 1} more: see {plan_path})" if len(problems) > 1 else ""
            raise UserError(
                f"{where(csv_path, first.local.row.row)} ({first.local.row.key}): "
                f"{first.decision.action}: {first.decision.reason}{more}"
            )
        if dry_run:
            return _summary(planned, [], started, client.requests)
        failed: list[str] = []
        for row in planned:
            receipt = paths.import_receipt(output_root, *row.local.row.key.split("/"), push=push)
            try:
                data = _carry_out(client, row, settings)
            except UserError as exc:
                if isinstance(exc, Unreachable):
                    raise
                failed.append(f"{where(csv_path, row.local.row.row)} ({row.local.row.key}): {exc}")
                log.error("%s", failed[-1])
                continue
            if data is not None:
                receipts.write(receipt, data)
        if failed:
            more = f" (and {len(failed) - 1} more, see the log)" if len(failed) > 1 else ""
            raise UserError(failed[0] + more)
        return _summary(planned, failed, started, client.requests)


def _preflight(rows: Sequence[ImportRow], csv_path: str | Path) -> list[LocalSession]:
    """Every row read; all problems logged, the first raised (one line)."""
    found, problems = [], []
    for row in rows:
        try:
            found.append(read_session(row, csv_path))
        except UserError as exc:
            problems.append(str(exc))
    for problem in problems[1:]:  # the first is raised
        log.error("%s", problem)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s), see the log)" if len(problems) > 1 else ""
        raise UserError(problems[0] + more)
    return found


def write_plan(path: Path, planned: Sequence[Row]) -> None:
    """``import_plan.tsv``: one line per row with its decision and why."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(PLAN_COLUMNS)
    for r in planned:
        row, local = r.local.row, r.local
        writer.writerow(
            [
                row.row,
                row.project,
                row.subject,
                row.session,
                row.source,
                row.dest,
                row.on_conflict,
                local.study_uid,
                len(local.series),
                local.n_files,
                local.bytes,
                r.remote.summary(),
                r.decision.action,
                r.decision.reason,
            ]
        )
    atomic_write(path, buf.getvalue())


def _summary(planned: Sequence[Row], failed: Sequence[str], started: float, requests: int) -> dict[str, Any]:
    actions: dict[str, int] = {}
    for r in planned:
        actions[r.decision.action] = actions.get(r.decision.action, 0) + 1
    return {
        "rows": len(planned),
        "actions": actions,
        "failed": list(failed),
        "http_requests": requests,
        "duration_s": round(time.monotonic() - started, 3),
    }


# -- one row --------------------------------------------------------------------------------------


def _carry_out(client: Client, row: Row, settings: Settings) -> dict[str, Any] | None:
    """Do what the row's decision says; the receipt to write (None: keep the one there)."""
    local, decision = row.local, row.decision
    started, requests_before = time.monotonic(), client.requests
    if decision.action == "skip":
        return None if row.previous else _receipt(client, row, decision, None, [], started=started)
    if decision.action == "pending":
        return _receipt(client, row, decision, None, [], started=started)
    replaced = _state(row.remote) if decision.action == "replace" else None
    sent_series: list[str] = []
    uri = ""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            if decision.action in ("import", "append", "replace"):
                uri = _send(client, local, decision, settings)
                sent_series += decision.series
            if uri.startswith("/data/prearchive/") and settings.archive_pending:
                decision = dec.Decision("archive", "archive what was just imported", prearchive_src=uri)
            if decision.action == "archive":
                uri = _archive(client, local, decision.prearchive_src)
            break
        except XnatError as exc:
            if not _ambiguous(exc) or attempt == ATTEMPTS:
                raise RowFailed(str(exc)) from None
            log.warning("%s: %s; looking at XNAT before trying again", local.row.key, exc)
            time.sleep(client.retry.wait(attempt, None))
            decision = _again(client, row, settings)
            if decision.action in dec.PROBLEMS:
                raise RowFailed(f"after a failed request: {decision.action}: {decision.reason}") from None
            if decision.action in ("skip", "pending"):
                break  # it had worked: what XNAT holds now is what we sent
    if uri.startswith("/data/prearchive/") or decision.action == "pending":
        pending = dec.Decision("pending", f"in the prearchive at {uri or decision.prearchive_src}")
        data = _receipt(client, row, pending, None, sent_series, started=started, uri=uri)
    else:
        scans = _wait_for_archive(client, local, settings)
        verified = _verify(local, scans, settings)
        data = _receipt(
            client, row, row.decision, verified, sent_series, started=started, uri=uri, replaced=replaced
        )
    data["http_requests"] = client.requests - requests_before
    return data


def _ambiguous(exc: XnatError) -> bool:
    """Whether XNAT may have acted on a request that failed this way: look before sending again."""
    if isinstance(exc, Unreachable):
        return False
    return exc.status is None or exc.status >= 500 or exc.status == 409


def _again(client: Client, row: Row, settings: Settings) -> dec.Decision:
    state = dec.project_state(client, row.local.row.project)
    remote = dec.remote_of(client, row.local, state, None)
    return dec.decide(
        row.local,
        remote,
        previous=row.previous,
        server_rewrites=settings.server_rewrites,
        archive_pending=settings.archive_pending,
        own=True,
    )


def _send(client: Client, local: LocalSession, decision: dec.Decision, settings: Settings) -> str:
    row = local.row
    wanted = set(decision.series)
    members = [(f.name, f.size) for f in local.files if f.series_uid in wanted]
    dest = (
        f"/prearchive/projects/{row.project}"
        if row.dest == "prearchive"
        else f"/archive/projects/{row.project}/subjects/{row.subject}/experiments/{row.session}"
    )
    params = {
        "project": row.project,
        "subject": row.subject,
        "session": row.session,
        "overwrite": decision.overwrite,
        "dest": dest,
        "triggerPipelines": str(settings.trigger_pipelines).lower(),
    }
    if settings.direct_archive and row.dest == "archive":
        params["Direct-Archive"] = "true"
    with Source(row.source, row.key) as source:
        body = ZipBody(source, members)
        log.info("%s: sending %d files (%s)", row.key, len(members), decision.action)
        uri = client.import_session(params, body)
    log.info("%s: XNAT answered %s", row.key, uri)
    return uri


def _archive(client: Client, local: LocalSession, src: str) -> str:
    row = local.row
    src = src.removeprefix("/data")
    params = {"project": row.project, "subject": row.subject, "session": row.session, "overwrite": "none"}
    return client.archive_prearchived(src, params)


def _wait_for_archive(client: Client, local: LocalSession, settings: Settings) -> dict[str, dec.RemoteScan]:
    """Read XNAT until the session has every series with all its files, or time runs out."""
    deadline = time.monotonic() + settings.wait_seconds
    wait = 1.0
    while True:
        state = dec.project_state(client, local.row.project)
        remote = dec.remote_of(client, local, state, None)
        short = [
            s.number
            for uid, s in local.series.items()
            if uid not in remote.scans or remote.scans[uid].n_files < len(s.files)
        ]
        if remote.session_id and not short:
            return remote.scans
        if time.monotonic() + wait > deadline:
            what = f"series {', '.join(short)} incomplete" if remote.session_id else "no session"
            raise RowFailed(f"not in XNAT's archive after {settings.wait_seconds:.0f} s ({what})")
        log.info("%s: waiting for the archive (%s)", local.row.key, remote.summary())
        time.sleep(wait)
        wait = min(wait * 2, 30.0)


def _verify(local: LocalSession, scans: Mapping[str, dec.RemoteScan], settings: Settings) -> dict[str, Any]:
    """Counts must match; digests too unless the server rewrites DICOM on import."""
    wrong = []
    for uid, series in local.series.items():
        there = scans[uid]
        if there.n_files != len(series.files):
            wrong.append(f"series {series.number}: {there.n_files} files in XNAT, {len(series.files)} sent")
        elif not settings.server_rewrites and sorted(there.digests) != series.md5s:
            wrong.append(f"series {series.number}: XNAT's digests differ from the files sent")
    if wrong:
        raise RowFailed("after import: " + "; ".join(wrong))
    rewritten = "not compared (the server rewrites DICOM on import)"
    return {"counts": "verified", "digests": rewritten if settings.server_rewrites else "verified"}


def _state(remote: dec.Remote) -> dict[str, Any]:
    """What a replace replaced, for its receipt."""
    return {
        "session_id": remote.session_id,
        "study_uid": remote.study_uid,
        "scans": [{**asdict(s), "n_files": s.n_files} for s in remote.scans.values()],
    }


def _receipt(
    client: Client,
    row: Row,
    decision: dec.Decision,
    verified: dict[str, Any] | None,
    sent_series: Sequence[str],
    *,
    started: float,
    uri: str = "",
    replaced: dict[str, Any] | None = None,
) -> dict[str, Any]:
    local, r = row.local, row.local.row
    sent = set(sent_series)
    return {
        "step": "import",
        "host": client.host,
        "row": r.row,
        "project": r.project,
        "subject": r.subject,
        "session": r.session,
        "source": str(r.source),
        "dest": r.dest,
        "on_conflict": r.on_conflict,
        "decision": decision.action,
        "reason": decision.reason,
        "xnat_before": row.remote.summary(),
        "uri": uri,
        "study_uid": local.study_uid,
        "n_files": local.n_files,
        "bytes": local.bytes,
        "bytes_sent": sum(f.size for f in local.files if f.series_uid in sent),
        "verified": verified,
        "replaced": replaced,
        "series": [
            {
                "uid": s.uid,
                "number": s.number,
                "description": s.description,
                "n_files": len(s.files),
                "sent": s.uid in sent,
                "md5": s.md5s,
            }
            for s in local.series.values()
        ],
        "files": [
            {"name": f.name, "size": f.size, "md5": f.md5, "series_uid": f.series_uid} for f in local.files
        ],
        "http_requests": 0,
        "duration_s": round(time.monotonic() - started, 3),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "xnat_prep_version": __version__,
    }
