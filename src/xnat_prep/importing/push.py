"""``push``: pseudonymised copies of sessions into a target project, on this XNAT or another.

The input is a folder of already pseudonymised DICOM, one folder per session under its subject:
``{source_dir}/{subject}/{session}/...`` (the labels are the pseudonymised ones; files that are not
DICOM, such as the steps' receipts, are left out and listed in the receipt). Each session
becomes an import row for the target project and goes through ``sessions.import_csv``: the same
preflight, decisions (a rerun sends no write), streamed import, verification and receipts
(``receipts/push/...``). The target has its own host, TLS settings and credentials
(``credentials.resolve_target``); the source XNAT is not contacted at all.

Hook for the pseudonymisation step (``xnat_prep.pseudonymise``, its own branch): its output folder
per subject, arranged as above, is ``push.source_dir``; nothing else is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xnat_prep import credentials as creds_mod
from xnat_prep.errors import UserError
from xnat_prep.importing import sessions
from xnat_prep.importing.sheet import IMPORT_CONFLICT, ImportRow
from xnat_prep.subjects import LABEL
from xnat_prep.xnat_api import Connection, RetryPolicy


def rows_from_tree(source_dir: Path, project: str, on_conflict: str = "skip") -> list[ImportRow]:
    """One import row per ``{subject}/{session}/`` folder, in name order."""
    if not source_dir.is_dir():
        raise UserError(f"push: {source_dir}: no such folder")
    if on_conflict not in IMPORT_CONFLICT:
        raise UserError(f"push: on_conflict {on_conflict!r} is not one of {', '.join(IMPORT_CONFLICT)}")
    rows = []
    for subject in sorted(p for p in source_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for session in sorted(p for p in subject.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for label in (subject.name, session.name):
                if not LABEL.match(label):
                    raise UserError(
                        f"push: {session}: {label!r} is not an XNAT label (letters, digits, _ and -)"
                    )
            rows.append(
                ImportRow(
                    len(rows) + 1, project, subject.name, session.name, session, "archive", on_conflict, True
                )
            )
    if not rows:
        raise UserError(f"push: {source_dir} holds no {{subject}}/{{session}}/ folders")
    return rows


def push(
    target: Connection,
    source_dir: str | Path,
    *,
    project: str,
    output_root: str | Path,
    source_host: str | None = None,
    on_conflict: str = "skip",
    dry_run: bool = False,
    settings: sessions.Settings | None = None,
    credentials: creds_mod.Credentials | None = None,
    retry: RetryPolicy | None = None,
) -> dict[str, Any]:
    """Import every session folder under ``source_dir`` into ``project`` on ``target``."""
    rows = rows_from_tree(Path(source_dir), project, on_conflict)
    if credentials is None:
        credentials = creds_mod.resolve_target(target.host, source_host)
    return sessions.import_csv(
        target,
        source_dir,
        output_root=output_root,
        rows=rows,
        push=True,
        dry_run=dry_run,
        settings=settings or sessions.Settings(),
        credentials=credentials,
        retry=retry,
    )
