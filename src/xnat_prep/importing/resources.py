"""``upload-resources``: files (NIfTI or any) from a CSV into scan or session resources.

Per row a file, or a folder whose files keep their relative paths, goes into ``resource`` of
``scan`` (empty: of the session itself). Compare before write: a file XNAT holds with the same md5
is left alone, a missing one is sent, a different one is a conflict (nothing of the whole CSV is
written) unless the row says ``on_conflict: replace``. A missing session is created (subject too)
and a missing scan with the row's type and series description; after writing, every file's
digest on XNAT must equal the local md5. A receipt per session. A rerun sends only reads.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xnat_prep import __version__, paths, receipts
from xnat_prep import credentials as creds_mod
from xnat_prep.errors import UserError, where
from xnat_prep.fsutil import atomic_write
from xnat_prep.importing.local import skipped
from xnat_prep.importing.sheet import ResourceRow, read_resources
from xnat_prep.xnat_api import Client, Connection, NotFound, RetryPolicy

log = logging.getLogger(__name__)

SESSION_TYPE = "xnat:mrSessionData"  # what a missing session is created as
SCAN_TYPE = "xnat:mrScanData"
FORMATS = {"NIFTI": "NIFTI", "BIDS": "BIDS", "DICOM": "DICOM", "SNAPSHOTS": "GIF"}
COLUMNS = "project,subject,session,scan,resource,path[,scan_type,series_description,on_conflict]"
PLAN_COLUMNS = ["row", "project", "subject", "session", "scan", "resource", "name", "md5", "decision"]


@dataclass
class LocalFile:
    row: ResourceRow
    name: str  # path inside the resource
    path: Path
    md5: str
    decision: str = ""  # send | unchanged | replace | conflict


def _files(row: ResourceRow, csv_path: str | Path) -> list[LocalFile]:
    what = where(csv_path, row.row, "path")
    if row.path.is_file():
        found = [(row.path.name, row.path)]
    elif row.path.is_dir():
        found = [
            (p.relative_to(row.path).as_posix(), p)
            for p in sorted(row.path.rglob("*"))
            if p.is_file() and not skipped(p.relative_to(row.path).as_posix())
        ]
        if not found:
            raise UserError(f"{what}: {row.path} holds no files")
    else:
        raise UserError(f"{what}: {row.path}: no such file or folder")
    out = []
    for name, path in found:
        with open(path, "rb") as fh:
            out.append(LocalFile(row, name, path, hashlib.file_digest(fh, "md5").hexdigest()))
    return out


def upload_resources(
    connection: Connection,
    csv_path: str | Path,
    *,
    output_root: str | Path,
    columns: Mapping[str, str] | None = None,
    dry_run: bool = False,
    credentials: creds_mod.Credentials | None = None,
    retry: RetryPolicy | None = None,
) -> dict[str, Any]:
    """Upload the CSV's files; returns a summary (files per decision, requests)."""
    rows = read_resources(csv_path, columns)
    targets: dict[tuple[str, str, str, str], LocalFile] = {}
    for row in rows:
        for f in _files(row, csv_path):
            key = (row.project, row.session, f"{row.scan}/{row.resource}", f.name)
            if key in targets:
                raise UserError(
                    f"{where(csv_path, row.row)}: {f.name} goes into {row.session} {key[2]} "
                    f"from row {targets[key].row.row} too"
                )
            targets[key] = f
    by_session: dict[tuple[str, str, str], list[LocalFile]] = {}
    for f in targets.values():
        by_session.setdefault((f.row.project, f.row.subject, f.row.session), []).append(f)
    started = time.monotonic()
    with Client(connection, credentials, retry=retry) as client:
        writable = client.writable_projects()
        listings = {p: client.project_experiments(p) for p in dict.fromkeys(k[0] for k in by_session)}
        ids = {}
        for (project, subject, session), files in by_session.items():
            ids[session, project] = _decide(client, listings[project], subject, session, files, csv_path)
        every = [f for files in by_session.values() for f in files]
        _write_plan(Path(output_root) / paths.RESOURCES_PLAN, every)
        problems = [f for f in every if f.decision == "conflict"]
        if problems:
            f = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise UserError(
                f"{where(csv_path, f.row.row)}: {f.name} differs from the file in XNAT's "
                f"{f.row.session} {f.row.scan or 'session'}/{f.row.resource}{more}; nothing written "
                "(on_conflict replace would replace it)"
            )
        denied = [
            f
            for f in every
            if f.decision != "unchanged" and writable is not None and f.row.project not in writable
        ]
        if denied:
            row = denied[0].row
            raise UserError(f"{where(csv_path, row.row)}: you may not add data to project {row.project}")
        if not dry_run:
            for (project, subject, session), files in by_session.items():
                receipt = paths.resources_receipt(output_root, project, subject, session)
                data = _sync(client, ids[session, project], project, subject, session, files)
                receipts.write(receipt, data)
        counts: dict[str, int] = {}
        for f in every:
            counts[f.decision] = counts.get(f.decision, 0) + 1
        return {
            "sessions": len(by_session),
            "files": counts,
            "http_requests": client.requests,
            "duration_s": round(time.monotonic() - started, 3),
        }


def _decide(
    client: Client,
    experiments: list[dict[str, Any]],
    subject: str,
    session: str,
    files: list[LocalFile],
    csv_path: str | Path,
) -> str:
    """Set each file's decision from XNAT's digests; the session's ID ("" when it is missing)."""
    found = next((e for e in experiments if e.get("label") == session), None)
    if found is not None and found.get("subject_label") not in (None, "", subject):
        row = files[0].row
        raise UserError(
            f"{where(csv_path, row.row)}: session {session} exists under subject {found['subject_label']}"
        )
    session_id = str(found["ID"]) if found else ""
    remote: dict[tuple[str, str], dict[str, str]] = {}
    for f in files:
        key = (f.row.scan, f.row.resource)
        if key not in remote:
            try:
                remote[key] = client.resource_digests(session_id, *key) if session_id else {}
            except NotFound:
                remote[key] = {}
        there = remote[key].get(f.name)
        if there is None:
            f.decision = "send"
        elif there == f.md5:
            f.decision = "unchanged"
        else:
            f.decision = "replace" if f.row.on_conflict == "replace" else "conflict"
    return session_id


def _sync(
    client: Client, session_id: str, project: str, subject: str, session: str, files: list[LocalFile]
) -> dict[str, Any]:
    """Write what the decisions say, then read every resource back and compare digests."""
    before = client.requests
    todo = [f for f in files if f.decision in ("send", "replace")]
    if todo and not session_id:
        session_id = client.ensure_session(project, subject, session, SESSION_TYPE)
    resources: dict[tuple[str, str], list[LocalFile]] = {}
    for f in files:
        resources.setdefault((f.row.scan, f.row.resource), []).append(f)
    for (scan, label), group in resources.items():
        if not any(f in todo for f in group):
            continue
        row = group[0].row
        if scan:
            fields = {"type": row.scan_type, "series_description": row.series_description}
            client.ensure_scan(session_id, scan, SCAN_TYPE, fields)
        if label not in client.scan_resources(session_id, scan):
            client.create_resource(session_id, scan, label, format=FORMATS.get(label.upper(), ""))
        for f in group:
            if f in todo:
                client.upload_file(session_id, scan, label, f.name, f.path, overwrite=f.decision == "replace")
        digests = client.resource_digests(session_id, scan, label)
        wrong = [f.name for f in group if digests.get(f.name) != f.md5]
        if wrong:
            uri = client.scan_resource_uri(session_id, scan, label)
            raise UserError(
                f"{uri}: digest on XNAT differs from the local file after upload: {', '.join(wrong)}"
            )
    return {
        "step": "upload_resources",
        "host": client.host,
        "project": project,
        "subject": subject,
        "session": session,
        "session_id": session_id,
        "files": [
            {
                "row": f.row.row,
                "scan": f.row.scan,
                "resource": f.row.resource,
                "name": f.name,
                "source": str(f.path),
                "md5": f.md5,
                "decision": f.decision,
            }
            for f in files
        ],
        "sent": len(todo),
        "http_requests": client.requests - before,
        "xnat_prep_version": __version__,
    }


def _write_plan(path: Path, files: list[LocalFile]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(PLAN_COLUMNS)
    for f in files:
        r = f.row
        writer.writerow(
            [r.row, r.project, r.subject, r.session, r.scan, r.resource, f.name, f.md5, f.decision]
        )
    atomic_write(path, buf.getvalue())
