"""``push``: pseudonymised copies of sessions into a target project, on this XNAT or another.

The input is a folder of already pseudonymised DICOM, one folder per session under its subject:
``{source_dir}/{subject}/{session}/...`` (the labels are the pseudonymised ones; files that are not
DICOM, such as the steps' receipts, are left out and listed in the receipt). Each session
becomes an import row for the target project and goes through ``sessions.import_csv``: the same
preflight, decisions (a rerun sends no write), streamed import, verification and receipts
(``receipts/push/...``). The target has its own host, TLS settings and credentials
(``credentials.resolve_target``); the source XNAT is not contacted at all.

Fed by the pseudonymise step (``push_pseudonymised``, the workflow's ``push`` target): the
selected scans of ``manifest/scans.tsv`` and their ``pseudonymise_scan`` receipts and folders under
``<results>/pseudo/`` (whose paths carry the *source* labels). Nothing of those paths is sent: each
session is staged as ``<results>/push/staging/{subject pseudonym}/{session pseudonym}/{SOP UID}.dcm``
(symlinks to the pseudonymised files, whose names are pseudonymised UIDs), and the staged tree goes
through ``push`` as above. The labels on the target:

- subject: the pseudonym the pseudonymise step wrote into PatientID/PatientName (its receipt's
  ``pseudonym``: the mapping CSV's, else the keyed one);
- session: ``{subject pseudonym}_{10 hex digits of SHA-256 of the pseudonymised StudyInstanceUID}``:
  keyed (the UID is), stable across reruns and jobs, different per study, and no function of any
  source label, date or UID that someone without the key can compute.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xnat_prep import credentials as creds_mod
from xnat_prep import manifest, paths, receipts
from xnat_prep.errors import UserError
from xnat_prep.fsutil import replace_dir
from xnat_prep.importing import sessions
from xnat_prep.importing.sheet import IMPORT_CONFLICT, ImportRow
from xnat_prep.subjects import LABEL
from xnat_prep.xnat_api import Connection, RetryPolicy

log = logging.getLogger(__name__)
STAGING = paths.PUSH_STAGING


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


# -- fed by the pseudonymise step ------------------------------------------------------------------


@dataclass
class PseudoSession:
    """One source session's pseudonymised files and the labels it gets on the target.

    ``source`` and ``scans`` stay local (they carry the source's labels): the convert receipt of
    each scan and its pseudonymised SeriesInstanceUID, to find the scan on the target."""

    subject: str  # the subject's pseudonym
    study_uid: str  # pseudonymised
    files: list[Path] = field(default_factory=list)
    source: tuple[str, str, str, str] = ("", "", "", "")  # project, subject, session, session ID
    scans: list[tuple[Path, str]] = field(default_factory=list)  # (convert receipt, series UID)

    @property
    def session(self) -> str:
        return session_pseudonym(self.subject, self.study_uid)


def session_pseudonym(subject_pseudonym: str, pseudo_study_uid: str) -> str:
    """The session label on the target (see the module docstring)."""
    digest = hashlib.sha256(pseudo_study_uid.encode("ascii")).hexdigest()[:10].upper()
    return f"{subject_pseudonym}_{digest}"


def _uid(path: Path, keyword: str = "StudyInstanceUID") -> str:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[keyword])
    except Exception as exc:  # any unreadable file: one line naming it
        raise UserError(f"push: {path}: unreadable pseudonymised DICOM ({exc})") from None
    uid = str(ds.get(keyword, "") or "").strip()
    if not uid:
        raise UserError(f"push: {path}: no {keyword}")
    return uid


def pseudonymised_sessions(output_root: str | Path) -> list[PseudoSession]:
    """The selected sessions (``manifest/scans.tsv``) as the pseudonymise step left them.

    Every selected scan needs its ``pseudonymise_scan`` receipt (a missing one is an error naming
    it: the step has not run); scans whose files were all quarantined contribute nothing, and a
    session with no file left is not pushed (logged)."""
    root = Path(output_root)
    scans_tsv = root / paths.SCANS_TSV
    if not scans_tsv.is_file():
        raise UserError(f"push: {scans_tsv}: no manifest (run discover and pseudonymise first)")
    by_session: dict[tuple[str, str, str], list[manifest.ScanRow]] = {}
    for row in manifest.read_scans(scans_tsv):
        by_session.setdefault((row.project, row.subject, row.session), []).append(row)
    found: list[PseudoSession] = []
    labels: dict[tuple[str, str], int] = {}
    for (project, subject, session), rows in sorted(by_session.items()):
        pseudonyms: set[str] = set()
        files: list[Path] = []
        scans: list[tuple[Path, str]] = []
        for row in rows:
            receipt = paths.pseudo_receipt(root, project, subject, session, row.scan)
            if not receipt.is_file():
                raise UserError(f"push: {receipt}: not pseudonymised yet (the pseudonymise step makes it)")
            data = receipts.read(receipt)
            if data.get("step") != "pseudonymise" or not data.get("pseudonym"):
                raise UserError(f"push: {receipt}: not a pseudonymise receipt")
            pseudonyms.add(str(data["pseudonym"]))
            scan_files = sorted(paths.outputs_of(receipt).rglob("*.dcm"))
            if scan_files:
                convert = paths.convert_receipt(root, project, subject, session, row.scan)
                scans.append((convert, _uid(scan_files[0], "SeriesInstanceUID")))
            files += scan_files
        if len(pseudonyms) != 1:
            raise UserError(
                f"push: {paths.pseudo_receipt(root, project, subject, session, rows[0].scan).parent}: "
                f"the scans carry {len(pseudonyms)} different pseudonyms (pseudonymise them again)"
            )
        pseudonym = pseudonyms.pop()
        if not LABEL.match(pseudonym):
            raise UserError(
                f"push: pseudonym {pseudonym!r} is not usable as an XNAT label (letters, digits, _ and -): "
                "change it in the pseudonymise mapping CSV"
            )
        if not files:
            log.warning("a session has no pseudonymised file left (all quarantined): not pushed")
            continue
        found.append(
            PseudoSession(
                pseudonym, _uid(files[0]), files, (project, subject, session, rows[0].session_id), scans
            )
        )
        key = (found[-1].subject, found[-1].session)
        if key in labels:
            raise UserError(f"push: two selected sessions hold the same pseudonymised study ({key[1]})")
        labels[key] = len(found)
    if not found:
        raise UserError(f"push: {scans_tsv}: no pseudonymised session to push")
    return found


def stage(sessions: list[PseudoSession], staging: Path) -> Path:
    """``staging/{subject pseudonym}/{session pseudonym}/{SOP UID}.dcm``, symlinks to the
    pseudonymised files, replacing the previous staging as a whole."""
    staging.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=staging.parent, prefix=f".{staging.name}.", suffix=".tmp"))
    try:
        for s in sessions:
            folder = tmp / s.subject / s.session
            folder.mkdir(parents=True)
            for f in s.files:
                link = folder / f.name  # the pseudonymise step names files by pseudonymised SOP UID
                if link.is_symlink():
                    raise UserError(f"push: {f}: a second file with the same SOP instance UID in one session")
                os.symlink(f.resolve(), link)
        replace_dir(tmp, staging)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return staging


def push_pseudonymised(
    target: Connection,
    output_root: str | Path,
    *,
    project: str,
    source_host: str | None = None,
    on_conflict: str = "skip",
    dry_run: bool = False,
    settings: sessions.Settings | None = None,
    credentials: creds_mod.Credentials | None = None,
    retry: RetryPolicy | None = None,
    derived: Derived | None = None,
) -> dict[str, Any]:
    """Push the pseudonymise step's output of every selected session into ``project`` on
    ``target``, under the pseudonymised labels (see the module docstring)."""
    root = Path(output_root)
    found = pseudonymised_sessions(root)
    if credentials is None:
        credentials = creds_mod.resolve_target(target.host, source_host)
    staged = stage(found, root / STAGING)
    log.info("staged %d pseudonymised session(s) in %s", len(found), staged)
    summary = push(
        target,
        staged,
        project=project,
        output_root=root,
        source_host=source_host,
        on_conflict=on_conflict,
        dry_run=dry_run,
        settings=settings,
        credentials=credentials,
        retry=retry,
    )
    if derived is not None and not dry_run:
        summary["derived"] = push_derived(
            target, root, found, project=project, derived=derived, credentials=credentials, retry=retry
        )
    return summary


@dataclass(frozen=True)
class Derived:
    """What goes to the copies after their DICOM: NIfTI into ``resource`` (None: not) and the
    custom variables (``variables``: prefix, derived definitions, values CSV as set_variables takes them)."""

    resource: str | None = None
    variables: bool = False
    prefix: str = "xnatprep_"
    definitions: tuple[dict[str, Any], ...] = ()
    values_csv: str | None = None


def push_derived(
    target: Connection,
    output_root: Path,
    found: list[PseudoSession],
    *,
    project: str,
    derived: Derived,
    credentials: creds_mod.Credentials | None = None,
    retry: RetryPolicy | None = None,
) -> dict[str, int]:
    """The NIfTI results and custom variables of each pushed session, onto its copy: the same
    compare-write-verify code as ``upload_session``/``set_variables``, with the target's session
    (found by label) and scans (found by pseudonymised SeriesInstanceUID). Receipts under
    ``receipts/push-upload`` and ``receipts/push-variables``, by the pseudonymised labels."""
    from xnat_prep import upload, variables
    from xnat_prep.xnat_api import Client

    counts = {"nifti_sent": 0, "variables_written": 0}
    with Client(target, credentials, retry=retry) as client:
        ids = {str(e["label"]): str(e["ID"]) for e in client.project_experiments(project)}
        for s in found:
            session_id = ids.get(s.session)
            if session_id is None:
                raise UserError(
                    f"push: {target.host}: no session {s.session} in project {project} after the push"
                )
            converts = [c for c, _ in s.scans if c.is_file()]
            if derived.resource:
                by_uid = {uid: scan_id for scan_id, uid in client.scan_uids(session_id).items()}
                results: dict[str, Any] = {}
                for convert, series_uid in s.scans:
                    if not convert.is_file():
                        continue
                    converted = receipts.read(convert)
                    scan_id = by_uid.get(series_uid)
                    if scan_id is None:
                        raise UserError(
                            f"push: {s.session} on {target.host} has no scan of series {series_uid}"
                        )
                    if converted["status"] != "converted":
                        results[scan_id] = {"status": converted["status"]}
                        continue
                    local = upload.local_files(paths.outputs_of(convert), converted["outputs"])
                    results[scan_id] = upload.sync_resource(
                        client, session_id, scan_id, derived.resource, local
                    )
                sent = sum(len(r.get("sent", [])) for r in results.values())
                counts["nifti_sent"] += sent
                receipts.write(
                    paths.build(
                        output_root,
                        paths.PUSH_UPLOAD_RECEIPT,
                        project=project,
                        subject=s.subject,
                        session=s.session,
                    ),
                    {
                        "step": "push_upload",
                        "host": target.host,
                        "session_id": session_id,
                        "resource": derived.resource,
                        "scans": results,
                        "sent": sent,
                    },
                )
            if derived.variables:
                _, _, label, source_id = s.source
                values = variables.session_values(
                    converts, derived.prefix, derived.definitions, derived.values_csv, (label, source_id)
                )
                data = variables.set_variables(
                    target,
                    session_id=session_id,
                    values=values,
                    receipt=paths.build(
                        output_root,
                        paths.PUSH_VARIABLES_RECEIPT,
                        project=project,
                        subject=s.subject,
                        session=s.session,
                    ),
                    project=project,
                    credentials=credentials,
                    retry=retry,
                )
                counts["variables_written"] += len(data.get("written", []))
    return counts
