"""``download-session``: a session's scans' DICOM, verified against the manifest, resumable.

One job per session (the ``download_session`` rule), so the job's fixed cost (a Python start,
imports, a login) is paid once per session, not once per scan. It fetches up to k scans at once
(``xnat.scans_in_parallel``), each on its own connection, and holds k units of the workflow's
XNAT connection cap (``xnat_api``): one big session can use the connections the user allows, and
the cap still holds across all jobs. On a real network (latency, a per-connection rate) that is
what makes one session fast; with k = 1 the scans go one after another on one connection.

Per scan: a scan whose receipt was written for the manifest's listing of its files
(``listing_md5``), all present with their sizes, is done and costs no request. Otherwise the scan
is (re)built in a work folder next to its final folder (``.{scan}.part``): files already there
with the manifest's size and md5 are kept (a resumed download), a few missing files are fetched
one by one, otherwise the resource comes as one zip whose entries are written to their files as
they arrive (``zipread``: one pass over the bytes, and the connection never waits for unpacking;
a zip that cannot be read that way goes to a temporary file first). Every file is checked against
the manifest's size and md5 as it is written; only when all are right is the work folder renamed
to the final name and the scan's receipt written. So nothing incomplete ever has a final name,
with one rename per scan instead of one per file (on this project's test machine creating a file
costs ~0.2 ms of kernel time, and the study has hundreds of thousands).

With ``dicom.store: zip`` (``store="zip"``) a scan is one zip beside its receipt instead of a folder
(``{scan}.zip``: 2 files per scan on a shared filesystem instead of one per DICOM instance): the
zip is streamed to ``.{scan}.zip.part``, every entry's size and md5 is checked against the manifest
on the way (nothing extracted, nothing read back; the central directory must then list exactly the
entries checked), and only then is it renamed to its final name and the
receipt written, with the zip's size and mtime. A rerun trusts a zip whose size and mtime
match its receipt (no request, no hashing); a zip changed since (damaged, replaced, touched) is
checked against the manifest again, kept if every entry is still right, else fetched again.

A scan that fails does not stop the others; the job fails at the end naming them, and a rerun
fetches only what is still missing. The session receipt (the rule's output) is written last.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import queue
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from xnat_prep import __version__, dicomzip, paths, receipts, slots, zipread
from xnat_prep import credentials as creds_mod
from xnat_prep.errors import UserError
from xnat_prep.fsutil import remove_stale_parts
from xnat_prep.xnat_api import (
    CHUNK,
    Connection,
    Corrupt,
    NotFound,
    Response,
    RetryPolicy,
    Session,
    XnatError,
    check_length,
    copy_hashing,
    refuse_html,
    stream_to,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# One request per file beats a zip only when very little is missing (a resumed download).
FEW_FILES = 2
FEW_BYTES_FRACTION = 0.1
FEW_FILES_MAX = 16
ROUNDS = 3  # zip → whatever failed → whatever still failed


class FileSpec(Protocol):
    """What a manifest ``FileRow`` provides."""

    path: str
    size: int
    md5: str
    uri: str


@dataclass(frozen=True)
class ScanTask:
    """One scan of a session job: its XNAT ID, the resource to fetch, and its folder name."""

    scan_id: str
    resource: str
    scan: str  # the {scan} wildcard value: the scan's folder and receipt name in the session folder


@dataclass
class _Target:
    spec: FileSpec
    rel: str  # where the file goes, relative to the scan's folder ("a/b.dcm": no path object per file)

    @property
    def size(self) -> int:
        return int(self.spec.size)


def work_dir(dest: Path) -> Path:
    """The folder a scan is built in before it is renamed to ``dest``."""
    return dest.with_name(f".{dest.name}.part")


def download_session(
    connection: Connection,
    *,
    session_id: str,
    scans: Sequence[ScanTask],
    files: Mapping[str, Sequence[FileSpec]],
    receipt: str | Path,
    credentials: creds_mod.Credentials | None = None,
    retry: RetryPolicy | None = None,
    parallel: int = 1,
    store: str = "files",
) -> dict[str, Any]:
    """Download every scan of ``scans`` into the receipt's folder, one folder ``<scan>`` each
    (``store="zip"``: one verified zip ``<scan>.zip`` each; ``files``: the manifest's, by scan ID),
    then write the session receipt; raises XnatError naming the scans that failed.

    Up to ``parallel`` scans at once, each on a connection of its own (one ``Session`` per
    worker, taken from a pool of ``parallel``), so the job never has more than ``parallel``
    requests in flight: the workflow gives it that many units of the ``xnat_api`` cap. Each scan
    is one unit of work (``_download_scan``): fetched, verified, renamed and given its receipt on
    its own; the session receipt lists the scans in the order given, whatever order they end in.
    """
    started = time.monotonic()
    dest = paths.outputs_of(receipt)
    connections = max(1, min(parallel, len(scans)))
    slots.need(connections)  # a workflow job takes its connection slots at its first request
    pool = _Connections([Session(connection, credentials, retry=retry) for _ in range(connections)])
    workers = connections  # a zip streams into its files on its connection: nothing left to overlap
    results: list[dict[str, Any] | str | None] = [None] * len(scans)

    def work(index: int, task: ScanTask) -> None:
        try:
            results[index] = _download_scan(pool, session_id, task, files, dest, store)
        except UserError as exc:  # XnatError too; a wrong password fails every scan alike
            # each failure names its scan (a request's own message names only its URL)
            message = str(exc)
            if not message.startswith(f"scan {task.scan_id}"):
                message = f"scan {task.scan_id}: {message}"
            log.error("%s", message)
            results[index] = message

    # Largest scans first: the session ends when its longest chain of transfers does.
    order = sorted(range(len(scans)), key=lambda i: -_scan_bytes(files, scans[i]))
    log.info("session %s: %d scans, %d at a time", session_id, len(scans), connections)
    try:
        if workers == 1:
            for index in order:
                work(index, scans[index])
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="xnat-get") as threads:
                for future in [threads.submit(work, i, scans[i]) for i in order]:
                    future.result()  # re-raises anything but a scan's own failure
    finally:
        pool.close()
        slots.release()  # a waiting job starts now, not after this one's receipts and exit
    requests_made = pool.requests
    done = [r for r in results if isinstance(r, dict)]
    failed = [r for r in results if isinstance(r, str)]
    if failed:
        more = f" (and {len(failed) - 1} more, see the log)" if len(failed) > 1 else ""
        raise XnatError(
            f"session {session_id}: {len(failed)} of {len(scans)} scan(s) failed: {failed[0]}{more}"
        )
    data = {
        "step": "download_session",
        "host": connection.host,
        "session_id": session_id,
        "n_scans": len(done),
        "n_files": sum(s["n_files"] for s in done),
        "bytes": sum(s["bytes"] for s in done),
        "http_requests": requests_made,
        "duration_s": round(time.monotonic() - started, 3),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "xnat_prep_version": __version__,
        "scans": done,
    }
    receipts.write(receipt, data)
    log.info(
        "session %s: %d scans, %d files, %d HTTP requests, %d scan(s) at a time",
        session_id,
        len(done),
        data["n_files"],
        requests_made,
        connections,
    )
    return data


class _Connections:
    """The job's ``k`` connections (one ``Session`` each), lent to its threads one request at a
    time, so the job never has more than ``k`` requests in flight whatever its thread count."""

    def __init__(self, sessions: list[Session]) -> None:
        self._sessions = sessions
        self._idle: queue.SimpleQueue[Session] = queue.SimpleQueue()
        for transfer in sessions:
            self._idle.put(transfer)

    @property
    def host(self) -> str:
        return self._sessions[0].host

    @property
    def requests(self) -> int:
        return sum(t.requests for t in self._sessions)

    def call(self, fn: Callable[..., T], *args: Any) -> tuple[T, int]:
        """``fn(session, *args)`` on an idle connection, and the number of requests it sent."""
        transfer = self._idle.get()
        try:
            before = transfer.requests
            return fn(transfer, *args), transfer.requests - before
        finally:
            self._idle.put(transfer)

    def close(self) -> None:
        for transfer in self._sessions:
            transfer.close()


def _scan_bytes(files: Mapping[str, Sequence[FileSpec]], task: ScanTask) -> int:
    return sum(int(f.size) for f in files.get(task.scan_id, []) if f.resource == task.resource)


def _download_scan(
    pool: _Connections,
    session_id: str,
    task: ScanTask,
    files: Mapping[str, Sequence[FileSpec]],
    dest: Path,
    store: str = "files",
) -> dict[str, Any]:
    """One scan, start to end: plan from the local disk, fetch what is missing (on a connection
    of ``pool`` per request), verify, rename, write the scan's receipt; its session-receipt entry.
    UserError (XnatError) when the scan fails."""
    scan_files = [f for f in files.get(task.scan_id, []) if f.resource == task.resource]
    if not scan_files:
        raise UserError(f"scan {task.scan_id}: no {task.resource} files in the manifest; rerun discovery")
    plan = _plan(
        session_id,
        task.scan_id,
        task.resource,
        scan_files,
        dest / task.scan,
        paths.receipt_of(dest / task.scan),
        store,
    )
    _check_space(plan)
    data = _finish(plan, pool.host, pool.call)
    return {k: data[k] for k in _SESSION_RECEIPT_KEYS}


_SESSION_RECEIPT_KEYS = ("scan_id", "n_files", "bytes", "fetched", "reused", "method", "http_requests")


@dataclass
class _Plan:
    """One scan's download, decided from the local disk alone."""

    session_id: str
    scan_id: str
    resource: str
    dest: Path  # the scan's final folder
    receipt: Path
    targets: list[_Target]
    listing: str  # the receipt's "listing_md5" (_listing_md5)
    started: float
    store: str = "files"  # dicom.store: "files" (a folder) or "zip" (one verified zip, dest + ".zip")
    stream: bool = True  # unpack/check a zip as it arrives (False: from the file, zipread.NotStreamable)
    missing: list[_Target] = field(default_factory=list)
    done: dict[str, Any] | None = None  # the receipt, when the scan is complete already

    @property
    def work(self) -> Path:
        return work_dir(self.dest)

    @property
    def zip_part(self) -> Path:
        return self.dest.with_name(f".{self.dest.name}.zip.part")

    @property
    def zip_final(self) -> Path:
        """The scan's kept zip in zip mode (``paths.zip_of``)."""
        return paths.zip_of(self.dest)

    @property
    def expected(self) -> dict[str, tuple[int, str]]:
        """Manifest path -> (size, md5): what the zip must hold."""
        return {t.spec.path: (t.size, t.spec.md5) for t in self.targets}

    @property
    def zip_uri(self) -> str:
        return f"/data/experiments/{self.session_id}/scans/{self.scan_id}/resources/{self.resource}/files"

    @property
    def wants_zip(self) -> bool:
        return bool(self.missing) and (self.store == "zip" or not _few(self.missing, self.targets))


def _plan(
    session_id: str,
    scan_id: str,
    resource: str,
    files: Sequence[FileSpec],
    dest: Path,
    receipt: Path,
    store: str = "files",
) -> _Plan:
    """What the scan still needs: nothing if its receipt is complete, else the files missing
    from its work folder (an earlier complete folder is moved there first); in zip mode all of
    them unless the zip beside the receipt is still the verified one."""
    targets = _targets(files)
    listing = _listing_md5(targets)
    plan = _Plan(session_id, scan_id, resource, dest, receipt, targets, listing, time.monotonic(), store)
    plan.zip_part.unlink(missing_ok=True)  # a crashed run's
    remove_stale_parts(receipt)  # the scan receipt's temporary file, if a run was killed writing it
    # (the session receipt's, --receipt, the CLI deletes for every step)
    if store == "zip":
        plan.done = _done_zip(plan)
        if plan.done is None:
            plan.missing = list(targets)
            dest.parent.mkdir(parents=True, exist_ok=True)
        return plan
    plan.done = _done_receipt(receipt, dest, targets, listing)
    if plan.done is not None:
        return plan
    work = plan.work
    if dest.exists():  # earlier files, but not matching the manifest any more: rebuilt in the work folder
        if work.exists():
            shutil.rmtree(work)
        os.replace(dest, work)
    if work.exists():
        _remove_strays(work, {t.rel for t in targets})
        plan.missing = [t for t in targets if not _is_complete(work, t)]
    else:
        plan.missing = list(targets)
    for folder in {(work / t.rel).parent for t in plan.missing}:  # once per folder, not per file
        folder.mkdir(parents=True, exist_ok=True)
    return plan


def _check_space(plan: _Plan) -> None:
    """Refuse a scan whose missing files do not fit on the disk (a listing's absurd size too)
    before any request: UserError naming the scan, the need and what is free."""
    need = sum(t.size for t in plan.missing)
    if not need:
        return
    free = shutil.disk_usage(plan.dest.parent).free
    if need > free:
        raise UserError(
            f"scan {plan.scan_id} of {plan.session_id}: needs {_human(need)}, only {_human(free)} free "
            f"on {plan.work.parent}; scan skipped (XNAT lists its files at that size)"
        )


def _human(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _listing_md5(targets: list[_Target]) -> str:
    """The receipt's ``listing_md5``: the md5 of the manifest's listing the scan was verified
    against, one ``path<TAB>size<TAB>md5`` line per file in manifest order.

    A digest, not the list: the manifest holds the list, and only "is it still the same listing"
    is ever asked. Receipts that listed every file were 2.2 MB for a realistic session (fMRI scans
    of 5,400 files), written by every download and read again by every plan and report.
    """
    lines = "".join(f"{t.spec.path}\t{t.size}\t{t.spec.md5}\n" for t in targets)
    return hashlib.md5(lines.encode("utf-8")).hexdigest()


def _for_listing(data: Mapping[str, Any], targets: list[_Target], listing: str) -> bool:
    """Whether receipt ``data`` was written for this listing (``listing``: its
    :func:`_listing_md5`). A receipt written before the digest lists the files themselves: it
    still counts, so an upgrade does not fetch every scan again."""
    if "listing_md5" in data:
        return data["listing_md5"] == listing
    old = data.get("files")
    return isinstance(old, list) and old == [
        {"path": t.spec.path, "size": t.size, "md5": t.spec.md5} for t in targets
    ]


def verified_locally(receipt: Path, files: Sequence[FileSpec], store: str = "files") -> bool:
    """Whether a scan is downloaded already: its receipt is for exactly ``files`` and each is in the
    folder beside it with its size, or (zip mode) its zip has the size and mtime the receipt
    recorded (what a download job checks before sending any request)."""
    targets = _targets(files)
    done = _done_zip_receipt if store == "zip" else _done_receipt
    return done(receipt, paths.outputs_of(receipt), targets, _listing_md5(targets)) is not None


def _read_receipt(receipt: Path) -> dict[str, Any] | None:
    try:
        with open(receipt, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _zip_unchanged(zip_path: Path, data: Mapping[str, Any]) -> bool:
    """The zip has the size and mtime its receipt recorded when it was verified."""
    kept = data.get("zip")
    try:
        st = os.stat(zip_path)
    except OSError:
        return False
    return (
        isinstance(kept, dict) and kept.get("size") == st.st_size and kept.get("mtime_ns") == st.st_mtime_ns
    )


def _done_zip_receipt(
    receipt: Path, dest: Path, targets: list[_Target], listing: str
) -> dict[str, Any] | None:
    """Zip mode, :func:`_done_receipt`'s twin: the scan's receipt if it is for exactly these files
    (``listing``) and the zip beside it (``dest`` + ``.zip``) has the size and mtime it recorded
    (no hashing); None otherwise."""
    data = _read_receipt(receipt)
    if (
        data is None
        or not _for_listing(data, targets, listing)
        or not _zip_unchanged(paths.zip_of(dest), data)
    ):
        return None
    return data


def _done_zip(plan: _Plan) -> dict[str, Any] | None:
    """Zip mode: the receipt if the scan's zip is still the one verified (size and mtime as
    recorded: no hashing), or, when it differs or the receipt is gone, if a fresh check of every
    entry against the manifest passes (the receipt is then rewritten); None if it must be fetched."""
    data = _done_zip_receipt(plan.receipt, plan.dest, plan.targets, plan.listing)
    if data is not None:
        return data
    if not plan.zip_final.exists():
        return None
    problems = dicomzip.check_entries(plan.zip_final, plan.expected)
    if problems:
        log.warning(
            "%s: changed since it was verified (%s%s); fetching it again",
            plan.zip_final,
            problems[0],
            f" and {len(problems) - 1} more" if len(problems) > 1 else "",
        )
        plan.zip_final.unlink()
        return None
    log.info("%s: checked again against the manifest, kept (no request)", plan.zip_final)
    return _zip_receipt(plan, method="none", reused=len(plan.targets), requests_made=0)


def _zip_receipt(
    plan: _Plan, *, method: str, reused: int, requests_made: int, host: str = ""
) -> dict[str, Any]:
    """Write the zip-mode receipt of ``plan`` (the zip in place, its entries checked against the
    manifest) and return it. The zip's size and mtime let a rerun trust it without reading it."""
    st = plan.zip_final.stat()
    old = _read_receipt(plan.receipt) or {}
    data = {
        "step": "download_session",
        "host": host or old.get("host", ""),
        "session_id": plan.session_id,
        "scan_id": plan.scan_id,
        "resource": plan.resource,
        "store": "zip",
        "n_files": len(plan.targets),
        "bytes": sum(t.size for t in plan.targets),
        "fetched": len(plan.targets) - reused,
        "reused": reused,
        "method": method,
        "http_requests": requests_made,
        "duration_s": round(time.monotonic() - plan.started, 3),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "xnat_prep_version": __version__,
        "zip": {"name": plan.zip_final.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns},
        "listing_md5": plan.listing,
    }
    receipts.write(plan.receipt, data)
    return data


def _finish(plan: _Plan, host: str, call: Callable[..., tuple[Any, int]]) -> dict[str, Any]:
    """Fetch what the plan misses (``call(fn, *args)`` runs ``fn(session, *args)`` on a connection
    and returns its result and the requests it sent), verify, rename, write the receipt."""
    data: dict[str, Any] = {
        "step": "download_session",  # the per-scan receipt of the session step
        "host": host,
        "session_id": plan.session_id,
        "scan_id": plan.scan_id,
        "resource": plan.resource,
        "n_files": len(plan.targets),
        "bytes": sum(t.size for t in plan.targets),
    }
    if plan.done is not None:
        log.info("scan %s: done already (%s)", plan.scan_id, plan.receipt)
        return {**plan.done, "fetched": 0, "reused": len(plan.targets), "method": "none", "http_requests": 0}
    if plan.store == "zip":
        return _finish_zip(plan, host, call)
    missing = plan.missing
    reused = len(plan.targets) - len(missing)
    methods: list[str] = []
    requests_made = 0
    try:
        for _attempt in range(ROUNDS if missing else 0):
            if _few(missing, plan.targets):
                methods.append("files")
                missing, sent = call(_fetch_files, missing, plan.work)
            else:
                methods.append("zip")
                missing, sent = call(_stream_unpack if plan.stream else _fetch_unpack, plan, missing)
            requests_made += sent
            if not missing:
                break
    finally:
        plan.zip_part.unlink(missing_ok=True)
    if missing:
        names = ", ".join(t.spec.path for t in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise XnatError(
            f"scan {plan.scan_id} of {plan.session_id}: {len(missing)} file(s) still bad: {names}"
        )
    plan.work.mkdir(parents=True, exist_ok=True)  # a scan whose files are all in sub-folders still gets one
    os.replace(plan.work, plan.dest)
    plan.zip_final.unlink(missing_ok=True)  # from an earlier run in zip mode
    data.update(
        fetched=len(plan.targets) - reused,
        reused=reused,
        method="+".join(methods) or "none",
        http_requests=requests_made,
        duration_s=round(time.monotonic() - plan.started, 3),
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        xnat_prep_version=__version__,
        listing_md5=plan.listing,
    )
    receipts.write(plan.receipt, data)
    log.info(
        "scan %s: %d files, %d fetched, %d reused, %d HTTP requests",
        plan.scan_id,
        data["n_files"],
        data["fetched"],
        reused,
        requests_made,
    )
    return data


def _finish_zip(plan: _Plan, host: str, call: Callable[..., tuple[Any, int]]) -> dict[str, Any]:
    """Zip mode: check the streamed zip's entries against the manifest (up to ROUNDS fetches),
    rename it to its final name, drop a files-mode folder of the scan, write the receipt."""
    requests_made = 0
    problems: list[str] = []
    try:
        for _attempt in range(ROUNDS):
            (size, problems), sent = call(_get_zip_kept, plan)
            requests_made += sent
            if not problems:
                break
            for problem in problems[:5]:
                log.warning("%s: %s; will retry", plan.zip_uri, problem)
            if any("not in the manifest" in p for p in problems):
                raise XnatError(
                    f"scan {plan.scan_id} of {plan.session_id}: the zip holds files the manifest does "
                    f"not list: {problems[0]} (is the manifest stale? rerun discovery)"
                )
        else:
            raise XnatError(
                f"scan {plan.scan_id} of {plan.session_id}: zip still bad after {ROUNDS} fetches: "
                f"{problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
            )
        os.replace(plan.zip_part, plan.zip_final)
    finally:
        plan.zip_part.unlink(missing_ok=True)
    for leftover in (plan.work, plan.dest):  # a files-mode folder of this scan: the zip replaces it
        if leftover.is_dir():
            shutil.rmtree(leftover)
    data = _zip_receipt(plan, method="zip", reused=0, requests_made=requests_made, host=host)
    log.info(
        "scan %s: %d files kept in %s (%d bytes), %d HTTP requests",
        plan.scan_id,
        data["n_files"],
        plan.zip_final.name,
        size,
        requests_made,
    )
    return data


def _targets(files: Sequence[FileSpec]) -> list[_Target]:
    """Each manifest file with its path in the scan's folder; unsafe or colliding paths are refused."""
    targets: dict[str, _Target] = {}
    for spec in files:
        try:
            rel = "/".join(paths.safe_relparts(spec.path))
        except ValueError as exc:
            raise UserError(f"manifest file list: {exc}") from None
        if rel in targets:
            raise UserError(
                f"manifest file list: {spec.path!r} and {targets[rel].spec.path!r} map to one file"
            )
        targets[rel] = _Target(spec, rel)
    return list(targets.values())


def _done_receipt(receipt: Path, dest: Path, targets: list[_Target], listing: str) -> dict[str, Any] | None:
    """The scan's receipt if it is for exactly these files (``listing``) and each is in ``dest``
    with its size (no hashing: the files were verified when they were written, as Snakemake trusts
    an existing output); None if the scan needs work."""
    data = _read_receipt(receipt)
    if data is None or not _for_listing(data, targets, listing):
        return None
    try:
        complete = all(os.stat(dest / t.rel).st_size == t.size for t in targets)
    except OSError:
        return None
    return data if complete else None


def _remove_strays(work: Path, keep: set[str]) -> None:
    """Delete files not in the manifest (a crashed run's ``.part`` files, files since removed).

    The folder mirrors the manifest: dcm2niix converts whatever is in it.
    """
    for path in sorted(work.rglob("*")):
        if path.is_file() and path.relative_to(work).as_posix() not in keep:
            if not path.name.endswith(".part"):
                log.info("removing %s: not in the manifest", path)
            path.unlink()


def _is_complete(work: Path, target: _Target) -> bool:
    """Present with the manifest's size and md5 (local disk work only)."""
    path = work / target.rel
    try:
        if path.stat().st_size != target.size:
            return False
    except FileNotFoundError:
        return False
    with open(path, "rb") as fh:
        good = hashlib.file_digest(fh, "md5").hexdigest() == target.spec.md5
    if not good:
        log.info("refetching %s: md5 differs from the manifest", path)
    return good


def _few(missing: list[_Target], targets: list[_Target]) -> bool:
    if len(missing) <= FEW_FILES:
        return True
    total = sum(t.size for t in targets) or 1
    return len(missing) <= FEW_FILES_MAX and sum(t.size for t in missing) <= FEW_BYTES_FRACTION * total


def _write_checked(path: Path, target: _Target, copy: Callable[[IO[bytes]], tuple[int, str]]) -> bool:
    """Write ``path`` with ``copy`` (returns size, md5); keep it only if both match the manifest.

    ``path`` is in the scan's work folder, which gets its final name only once every file is right;
    its folder exists already (made once per folder by ``_plan``).
    """
    try:
        with open(path, "wb") as out:
            size, md5 = copy(out)
        if size != target.size or md5 != target.spec.md5:
            log.warning(
                "%s: got %d bytes md5 %s, manifest says %d bytes md5 %s",
                target.spec.path,
                size,
                md5,
                target.size,
                target.spec.md5,
            )
            path.unlink()
            return False
        return True
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _fetch_files(transfer: Session, missing: list[_Target], work: Path) -> list[_Target]:
    """GET each missing file by its URI; a wrong body is retried by the transfer client."""
    for target in missing:
        save = functools.partial(_save_response, work / target.rel, target)
        _stale_hint(transfer.get, target.spec.uri, save)
    return []


def _stale_hint(get: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``get(...)``; a 404 for something the manifest lists means the manifest is out of date."""
    try:
        return get(*args, **kwargs)
    except NotFound as exc:
        raise XnatError(f"{exc} (is the manifest stale? rerun discovery)", exc.status) from None


def _save_response(path: Path, target: _Target, response: Response) -> None:
    if not _write_checked(path, target, functools.partial(stream_to, response)):
        raise Corrupt(f"{target.spec.path}: size or md5 differs from the manifest")


def _get_zip(transfer: Session, plan: _Plan) -> zipfile.ZipFile:
    """GET the scan's resource as one zip into ``plan.zip_part``; the opened archive."""
    return _stale_hint(transfer.get, plan.zip_uri, functools.partial(_save_zip, plan.zip_part), params=_ZIP)


_ZIP = {"format": "zip"}


def _fetch_unpack(transfer: Session, plan: _Plan, missing: list[_Target]) -> list[_Target]:
    """The zip to a file, then its missing entries unpacked from it (a zip ``zipread`` cannot
    stream); returns the targets still missing or bad."""
    return _unpack(_get_zip(transfer, plan), plan, missing)


def _stream_unpack(transfer: Session, plan: _Plan, missing: list[_Target]) -> list[_Target]:
    """GET the scan's zip and write each missing entry into the work folder as it arrives, each
    checked against the manifest (one pass, nothing on disk but the files); returns the targets
    still missing or bad. A cut-off zip is fetched again by the transfer client, which then skips
    the entries already written."""
    wanted = {t.spec.path: t for t in missing}
    known = {t.spec.path for t in plan.targets}

    def save(response: Response) -> None:
        refuse_html(response, "a zip")
        archive = zipread.StreamedZip(response.iter_content(CHUNK))
        try:
            for entry, data in archive.entries():
                if entry.is_dir:
                    continue
                key = _manifest_key(entry.name, plan.zip_uri)
                target = wanted.get(key)
                if target is not None:
                    if _write_checked(plan.work / target.rel, target, functools.partial(copy_hashing, data)):
                        del wanted[key]
                elif key not in known:
                    log.info("ignoring zip entry %s: not in the manifest", entry.name)
            archive.drain()
        except zipread.StreamError as exc:
            raise Corrupt(f"not a complete zip: {exc}") from None

    try:
        _stale_hint(transfer.get, plan.zip_uri, save, params=_ZIP)
    except zipread.NotStreamable as exc:  # read from a file instead, this scan on (one more request)
        log.info("%s: %s; unpacking it from a file", plan.zip_uri, exc)
        plan.stream = False
        return _fetch_unpack(transfer, plan, list(wanted.values()))
    for path in wanted:
        log.warning("%s: missing or bad in the zip; will retry", path)
    return list(wanted.values())


def _unpack(archive: zipfile.ZipFile, plan: _Plan, missing: list[_Target]) -> list[_Target]:
    """Write the zip's entries that are missing into the work folder, each checked; returns the
    targets still missing or bad afterwards (retried by the caller)."""
    wanted = {t.spec.path: t for t in missing}
    known = {t.spec.path for t in plan.targets}
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            key = _manifest_key(info.filename, plan.zip_uri)
            if key in wanted:
                target = wanted[key]
                try:
                    with archive.open(info) as source:
                        chunks = iter(functools.partial(source.read, CHUNK), b"")
                        if _write_checked(
                            plan.work / target.rel, target, functools.partial(copy_hashing, chunks)
                        ):
                            del wanted[key]
                except zipfile.BadZipFile as exc:  # CRC mismatch inside the archive
                    log.warning("%s: %s", key, exc)
            elif key not in known:
                log.info("ignoring zip entry %s: not in the manifest", info.filename)
    plan.zip_part.unlink(missing_ok=True)
    for path in wanted:
        log.warning("%s: missing or bad in the zip; will retry", path)
    return list(wanted.values())


def _save_zip(tmp: Path, response: Response) -> zipfile.ZipFile:
    """Stream the zip to ``tmp`` and open it; an unreadable archive is retried, an HTML page is not."""
    refuse_html(response, "a zip")
    with open(tmp, "wb") as out:  # no digest of the whole zip: each entry is checked as it is unpacked
        stream_to(response, out, md5=False)
    try:
        return zipfile.ZipFile(tmp)
    except zipfile.BadZipFile as exc:
        raise Corrupt(f"not a complete zip: {exc}") from None


def _get_zip_kept(transfer: Session, plan: _Plan) -> tuple[int, list[str]]:
    """Zip mode: GET the scan's zip into ``plan.zip_part``, checking every entry against the
    manifest as the bytes pass on their way to the file (one pass, no reading back); its size and
    the problems found ([] when it holds exactly the manifest's files). A cut-off archive is
    retried by the transfer client."""

    def save(response: Response) -> tuple[int, list[str]]:
        refuse_html(response, "a zip")
        size = 0
        with open(plan.zip_part, "wb") as out:

            def tee() -> Iterator[bytes]:
                nonlocal size
                for chunk in response.iter_content(CHUNK):
                    out.write(chunk)
                    size += len(chunk)
                    yield chunk

            chunks = tee()
            checked = None
            if plan.stream:
                try:
                    checked = dicomzip.check_stream(chunks, plan.expected)
                except zipread.NotStreamable as exc:  # the rest to the file, checked from there
                    log.info("%s: %s; checking it from the file", plan.zip_uri, exc)
                    plan.stream = False
                except zipread.StreamError as exc:
                    raise Corrupt(f"not a complete zip: {exc}") from None
            for _ in chunks:  # the central directory (all of it, without the streamed check)
                pass
        check_length(response, size)
        if checked is None:
            return size, dicomzip.check_entries(plan.zip_part, plan.expected)
        moved = checked.problems or [p for p in [dicomzip.directory_problem(plan.zip_part, checked)] if p]
        return size, moved

    return _stale_hint(transfer.get, plan.zip_uri, save, params=_ZIP)


def _manifest_key(name: str, uri: str) -> str:
    """The manifest path of a zip entry: the text after ``resources/<label>/files/``.

    Entry names are checked like manifest paths (no absolute path, no ``..``) even though
    nothing is ever written under an entry's own name: such an archive is not trustworthy.
    """
    try:
        return dicomzip.entry_key(name)
    except ValueError as exc:
        raise XnatError(f"zip from {uri}: refusing entry {name!r}: {exc}") from None
