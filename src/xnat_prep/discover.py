"""``discover``: what the subjects in the CSV have on XNAT, written as the manifest.

Requests are listings only, a fixed number per level whatever the number of files:
per project one subject listing; per subject one experiment listing; per session one scan
listing and one listing of all its scans' files (``scans/ALL/files``, with md5 digests). Sessions
are listed in a few threads (each its own xnatpy connection) when there are many.

A subject that is missing, a project without access, a session that is not there: each becomes a
row of ``errors.tsv`` and discovery goes on with the other subjects. Only problems that stop
everything (no server, credentials refused) raise.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from xnat_prep import manifest, paths, slots
from xnat_prep.credentials import Credentials
from xnat_prep.credentials import resolve as resolve_credentials
from xnat_prep.manifest import (
    DicomRow,
    ErrorRow,
    FileRow,
    ScanRow,
    SessionIdentity,
    SessionRow,
    SkippedRow,
    natural_key,
)
from xnat_prep.subjects import Subject
from xnat_prep.xnat_api import Client, Connection, CredentialsRefused, RetryPolicy, Unreachable, XnatError

log = logging.getLogger(__name__)

RESOURCE = "DICOM"
SESSIONS_PER_CONNECTION = 20  # one more parallel connection per this many sessions
_FILE_URI = re.compile(r"/scans/([^/]+)/resources/[^/]+/files/(.+)$")


@dataclass(frozen=True)
class Selection:
    """Which scans to take: globs on the type (case-insensitive), a regex on the description."""

    include_types: tuple[str, ...] = ("*",)
    exclude_types: tuple[str, ...] = ()
    series_description: str | None = None
    dicom: tuple[tuple[str, str], ...] = ()  # (keyword, pattern): see dicom_mismatch
    dicom_sampling: str = "series"  # or "every_scan"

    @classmethod
    def from_config(cls, scans: Mapping[str, Any]) -> Selection:
        """From the config's ``scans`` section (keys left out take the schema's defaults)."""
        return cls(
            tuple(scans.get("include_types", ("*",))),
            tuple(scans.get("exclude_types", ())),
            scans.get("series_description"),
            tuple(sorted((scans.get("dicom") or {}).items())),
            scans.get("dicom_sampling", "series"),
        )

    def matches(self, scan_type: str, series_description: str) -> bool:
        """Whether a scan is selected; an empty type is matched by ``*`` and by ``""``."""
        return self.why_not(scan_type, series_description) == ""

    def why_not(self, scan_type: str, series_description: str) -> str:
        """Why a scan is not selected ("" when it is)."""
        scan_type = scan_type.strip().lower()

        def hit(globs: Iterable[str]) -> bool:
            return any(fnmatch.fnmatchcase(scan_type, g.strip().lower()) for g in globs)

        if not hit(self.include_types):
            return "type not in scans.include_types"
        if hit(self.exclude_types):
            return "type in scans.exclude_types"
        if self.series_description is not None and not re.search(self.series_description, series_description):
            return "series description does not match scans.series_description"
        return ""

    def dicom_mismatch(self, values: Mapping[str, str]) -> str:
        """Why header ``values`` (keyword -> value) fail ``dicom`` ("" when they meet every criterion).

        A pattern is a case-insensitive glob on the whole value, or ``re:`` and a regex searched in it.
        """
        for keyword, pattern in self.dicom:
            value = values.get(keyword, "")
            if pattern.startswith("re:"):
                ok = re.search(pattern[3:], value) is not None
            else:
                ok = fnmatch.fnmatchcase(value.lower(), pattern.lower())
            if not ok:
                return f"DICOM {keyword} {value!r} does not match {pattern!r}"
        return ""


@dataclass
class Discovery:
    """Everything discovery found: the manifest's rows."""

    scans: list[ScanRow] = field(default_factory=list)
    sessions: list[SessionRow] = field(default_factory=list)
    errors: list[ErrorRow] = field(default_factory=list)
    skipped: list[SkippedRow] = field(default_factory=list)
    files: dict[tuple[str, str, str], list[FileRow]] = field(default_factory=dict)


def _listing(call: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """A listing whose failure concerns one project/subject/session: recorded, discovery goes on.

    What stops everything is raised as is: no server, refused credentials.
    """
    try:
        return call()
    except (Unreachable, CredentialsRefused):
        raise
    except XnatError as exc:
        raise _ListingError(str(exc)) from None


class _ListingError(Exception):
    """A listing that failed for one project/subject/session (recorded, not fatal)."""


def _subject_sessions(
    xs: Client, subject: Subject, subject_id: str
) -> list[tuple[SessionIdentity, str]] | ErrorRow:
    """The image sessions of one subject, as selected by the CSV row, each with its date."""
    try:
        rows = _listing(lambda: xs.experiments(subject.project, subject_id))
    except _ListingError as exc:
        return ErrorRow(subject.project, subject.subject, "", f"cannot list sessions: {exc}")
    # Only image sessions (mr/ct/petSessionData, ...) have scans; other experiments are skipped.
    found = {
        r["label"]: (
            SessionIdentity(subject.project, subject.subject, subject_id, r["label"], r["ID"], r["xsiType"]),
            str(r.get("date") or ""),
        )
        for r in rows
        if str(r.get("xsiType", "")).endswith("SessionData")
    }
    if not found:
        return ErrorRow(subject.project, subject.subject, "", "subject has no imaging sessions on XNAT")
    if not subject.sessions:
        return sorted(found.values(), key=lambda s: natural_key(s[0].session))
    missing = [s for s in subject.sessions if s not in found]
    if missing:
        return ErrorRow(
            subject.project, subject.subject, missing[0], f"session {missing[0]} not found for this subject"
        )
    return [found[s] for s in subject.sessions]


@dataclass
class _Listed:
    """One session's scans after the type and description selection, before its files are listed."""

    session: SessionIdentity
    date: str = ""
    picked: list[dict[str, Any]] = field(default_factory=list)
    out: Discovery = field(default_factory=lambda: Discovery())


def _session_listing(xs: Client, session: SessionIdentity, date: str, selection: Selection) -> _Listed:
    """The scans of one session that the type and description selection picks."""
    listed = _Listed(session, date)
    try:
        scans = _listing(lambda: xs.scans(session.session_id))
    except _ListingError as exc:
        message = f"cannot list scans: {exc}"
        listed.out.errors.append(ErrorRow(session.project, session.subject, session.session, message))
        return listed
    for scan in sorted(scans, key=lambda s: natural_key(str(s["ID"]))):
        scan_type, description = scan.get("type") or "", scan.get("series_description") or ""
        reason = selection.why_not(scan_type, description)
        if reason:
            listed.out.skipped.append(
                SkippedRow(*astuple(session), str(scan["ID"]), scan_type, description, reason)
            )
        else:
            listed.picked.append(scan)
    return listed


def _by_dicom(
    xs: Client, listed: Sequence[_Listed], selection: Selection, cache: dict[tuple[str, str], dict[str, str]]
) -> None:
    """Drop the picked scans whose DICOM header fails ``selection.dicom`` (moved to skipped).

    One dump request per sampled scan: the first scan of each distinct (project, type, series
    description) with ``dicom_sampling: series``, every scan otherwise; ``cache`` ((session ID,
    scan ID) -> keyword -> value) spares the requests a rerun would repeat, and gets the new answers.
    """
    from pydicom.datadict import keyword_for_tag  # only with criteria: ~0.3 s to import

    keywords = [k for k, _ in selection.dicom]
    groups: dict[tuple[str, ...], list[tuple[_Listed, dict[str, Any]]]] = {}
    for item in listed:
        for scan in item.picked:
            key = (item.session.project, scan.get("type") or "", scan.get("series_description") or "")
            if selection.dicom_sampling == "every_scan":
                key += (item.session.session_id, str(scan["ID"]))
            groups.setdefault(key, []).append((item, scan))
    rejected: set[tuple[str, str]] = set()
    for members in groups.values():
        sample_item, sample = members[0]
        where = (sample_item.session.session_id, str(sample["ID"]))
        reason = ""
        if not all(k in cache.get(where, {}) for k in keywords):
            try:
                by_tag = xs.dicom_values(sample_item.session.project, *where, keywords)
            except (Unreachable, CredentialsRefused):
                raise
            except XnatError as exc:
                reason = f"DICOM header not readable ({exc})"
            else:
                values = {
                    keyword_for_tag(int(t.strip("()").replace(",", ""), 16)): v for t, v in by_tag.items()
                }
                cache[where] = {k: values.get(k, "") for k in keywords}
        reason = reason or selection.dicom_mismatch(cache[where])
        if not reason:
            continue
        sampled = "" if len(members) == 1 else f" (sampled scan {where[1]} of {sample_item.session.session})"
        for item, scan in members:
            rejected.add((item.session.session_id, str(scan["ID"])))
            scan_type, description = scan.get("type") or "", scan.get("series_description") or ""
            row = SkippedRow(
                *astuple(item.session), str(scan["ID"]), scan_type, description, reason + sampled
            )
            item.out.skipped.append(row)
    for item in listed:
        item.picked = [s for s in item.picked if (item.session.session_id, str(s["ID"])) not in rejected]


def _session_scans(xs: Client, listed: _Listed) -> Discovery:
    """The picked scans of one session with their DICOM files."""
    session, picked, out = listed.session, listed.picked, listed.out
    try:
        file_rows = _listing(lambda: xs.session_files(session.session_id)) if picked else []
    except _ListingError as exc:
        out.errors.append(
            ErrorRow(session.project, session.subject, session.session, f"cannot list scans: {exc}")
        )
        return out
    by_scan: dict[str, list[FileRow]] = {}
    bad_size: dict[str, str] = {}  # scan ID -> why its file list cannot be trusted
    for row in file_rows:
        match = _FILE_URI.search(row.get("URI", ""))
        if match and row.get("collection") == RESOURCE:
            scan_id, path = match.group(1), unquote(match.group(2))
            size = _file_size(row.get("Size"))
            if size is None:
                bad_size.setdefault(scan_id, f"file {path!r}: size {row.get('Size')!r} is not a file size")
                size = 0
            by_scan.setdefault(scan_id, []).append(
                FileRow(scan_id, RESOURCE, path, size, row.get("digest", ""), row["URI"])
            )
    seen: dict[str, str] = {}
    for scan in picked:  # in scan order (sorted above)
        scan_id, scan_type = str(scan["ID"]), scan.get("type") or ""
        files = by_scan.get(scan_id, [])
        description = scan.get("series_description") or ""
        unsafe = _unsafe_path(files) or bad_size.get(scan_id, "")
        if unsafe:  # refused here, before any download job could write anything
            message = f"scan {scan_id}: {unsafe}; scan skipped"
            out.errors.append(ErrorRow(session.project, session.subject, session.session, message))
            continue
        if not files:
            log.info(
                "%s scan %s (%r): no %s files; not selected", session.session, scan_id, scan_type, RESOURCE
            )
            reason = f"no {RESOURCE} files"
            out.skipped.append(SkippedRow(*astuple(session), scan_id, scan_type, description, reason))
            continue
        wildcard = paths.scan_dir(scan_id, scan_type)
        if wildcard in seen:
            message = (
                f"scans {seen[wildcard]} and {scan_id} map to the same folder {wildcard}; {scan_id} skipped"
            )
            out.errors.append(ErrorRow(session.project, session.subject, session.session, message))
            reason = f"folder {wildcard} taken by scan {seen[wildcard]}"
            out.skipped.append(SkippedRow(*astuple(session), scan_id, scan_type, description, reason))
            continue
        seen[wildcard] = scan_id
        out.scans.append(
            ScanRow(
                *astuple(session),
                scan_id,
                scan_type,
                scan.get("series_description") or "",
                wildcard,
                RESOURCE,
                len(files),
                sum(f.size for f in files),
            )
        )
        out.files.setdefault((session.project, session.subject, session.session), []).extend(files)
    if out.scans:
        out.sessions.append(
            SessionRow(
                *astuple(session),
                len(out.scans),
                sum(s.bytes for s in out.scans),
                listed.date,
            )
        )
    else:
        log.info("%s: no scan matches the selection", session.session)
    return out


def _file_size(value: Any) -> int | None:
    """A listing's ``Size`` as a number of bytes (empty: 0), or None when it is not one."""
    text = str(value if value is not None else "").strip()
    if not text:
        return 0
    return int(text) if text.isdigit() else None


def _unsafe_path(files: Iterable[FileRow]) -> str:
    """Why a scan's file list cannot be written safely (absolute path, ``..``, NUL), else ""."""
    for row in files:
        try:
            paths.safe_relpath(row.path)
        except ValueError as exc:
            return str(exc)
    return ""


def discover(
    connect: Callable[[], Client],
    subjects: Sequence[Subject],
    selection: Selection,
    max_connections: int = 4,
    dicom_cache: dict[tuple[str, str], dict[str, str]] | None = None,
) -> Discovery:
    """List ``subjects`` on XNAT. ``connect()`` opens a client (a context manager).

    Threads are used only when there are many sessions; each thread has its own connection.
    """
    result = Discovery()
    local = threading.local()
    with ExitStack() as stack:
        main = stack.enter_context(connect())
        lock = threading.Lock()

        def connection() -> Client:
            if threading.current_thread() is threading.main_thread():
                return main
            if not hasattr(local, "xs"):
                with lock:
                    local.xs = stack.enter_context(connect())
            return local.xs

        todo: list[tuple[Subject, str]] = []
        for project in dict.fromkeys(s.project for s in subjects):
            wanted = [s for s in subjects if s.project == project]
            try:
                rows = _listing(lambda project=project: main.subjects(project))
            except _ListingError as exc:
                # the access layer's message names the project when it knows it ("no read permission
                # on project P"); said once, not twice
                message = str(exc) if f"project {project}" in str(exc) else f"project {project}: {exc}"
                result.errors += [ErrorRow(project, s.subject, "", message) for s in wanted]
                continue
            ids = {r["label"]: r["ID"] for r in rows}
            for s in wanted:
                if s.subject in ids:
                    todo.append((s, ids[s.subject]))
                else:
                    result.errors.append(
                        ErrorRow(project, s.subject, "", f"subject not found in project {project}")
                    )

        workers = max(1, min(max_connections, 1 + len(todo) // SESSIONS_PER_CONNECTION))

        def run(fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
            if workers == 1:
                return [fn(*item) for item in items]
            with ThreadPoolExecutor(workers, thread_name_prefix="discover") as pool:
                return list(pool.map(lambda item: fn(*item), items))

        sessions: list[tuple[SessionIdentity, str]] = []
        for found in run(lambda s, sid: _subject_sessions(connection(), s, sid), todo):
            if isinstance(found, ErrorRow):
                result.errors.append(found)
            else:
                sessions += found
        listed = run(lambda s, date: _session_listing(connection(), s, date, selection), sessions)
        if selection.dicom:
            _by_dicom(main, listed, selection, {} if dicom_cache is None else dicom_cache)
        for part in run(lambda item: _session_scans(connection(), item), [(item,) for item in listed]):
            result.scans += part.scans
            result.sessions += part.sessions
            result.errors += part.errors
            result.skipped += part.skipped
            result.files.update(part.files)
    return result


def write(root: str | Path, result: Discovery) -> None:
    """Write the manifest under ``root``; files whose content is unchanged keep their mtime.

    ``scans.tsv`` goes last: it is what the workflow reads to build its jobs. File lists of
    sessions that are no longer selected are removed.
    """
    root = Path(root)
    keep = set()
    for (project, subject, session), rows in result.files.items():
        path = paths.session_files(root, project, subject, session)
        manifest.write_tsv(path, rows, FileRow)
        keep.add(path)
    for stale in (root / paths.FILES_DIR).rglob("*.tsv"):
        if stale not in keep:
            stale.unlink()
    manifest.write_tsv(root / paths.SESSIONS_TSV, result.sessions, SessionRow)
    manifest.write_tsv(root / paths.ERRORS_TSV, result.errors, ErrorRow)
    manifest.write_tsv(root / paths.SKIPPED_TSV, result.skipped, SkippedRow)
    manifest.write_tsv(root / paths.SCANS_TSV, result.scans, ScanRow)


def run_discovery(
    connection: Connection,
    subjects: Sequence[Subject],
    selection: Selection,
    output_root: str | Path,
    max_connections: int = 4,
    credentials: Credentials | None = None,
    retry: RetryPolicy | None = None,
) -> Discovery:
    """Discover ``subjects`` on the server of ``connection``, write the manifest under ``output_root``."""
    creds = credentials or resolve_credentials(connection.host)  # once, for every thread's connection

    def connect() -> Client:
        return Client(connection, creds, retry=retry)

    slots.need(max_connections)  # a workflow job takes them all at its first request (it runs alone)
    cache_tsv = Path(output_root) / paths.DICOM_TSV
    cache: dict[tuple[str, str], dict[str, str]] = {}
    for row in manifest.read_dicom(cache_tsv):
        cache.setdefault((row.session_id, row.scan_id), {})[row.keyword] = row.value
    result = discover(connect, subjects, selection, max_connections, cache)
    slots.release()  # the requests are over: writing a large manifest needs no connection
    write(output_root, result)
    if selection.dicom:
        rows = [
            DicomRow(*where, k, v)
            for where, values in sorted(cache.items())
            for k, v in sorted(values.items())
        ]
        manifest.write_tsv(cache_tsv, rows, DicomRow)
    log.info(
        "%d scan(s) in %d session(s) selected, %d file(s), %d problem(s)",
        len(result.scans),
        len(result.sessions),
        sum(len(f) for f in result.files.values()),
        len(result.errors),
    )
    for error in result.errors:
        log.warning(
            "%s/%s%s: %s",
            error.project,
            error.subject,
            f"/{error.session}" if error.session else "",
            error.message,
        )
    return result
