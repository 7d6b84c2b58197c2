"""``download-session`` / ``download-scan``: a session's scans' DICOM, verified against the manifest.

One job per session (the ``download_session`` rule): its scans one after another over one
connection, so the job's fixed cost (a Python start, imports, a login) is paid once per session,
not once per scan, and the job holds one slot of the workflow's XNAT connection cap.

Per scan: a scan whose receipt lists exactly the manifest's files, all present with their sizes,
is done and costs no request. Otherwise the scan is (re)built in a work folder next to its final
folder (``.{scan}.part``): files already there with the manifest's size and md5 are kept (a resumed
download), a few missing files are fetched one by one, otherwise the resource comes as one zip
streamed to a temporary file and unpacked. Every file is checked against the manifest's size and
md5 as it is written; only when all are right is the work folder renamed to the final name and the
scan's receipt written. So nothing incomplete ever has a final name, with one rename per scan
instead of one per file (on this project's test machine creating a file costs ~0.2 ms of kernel
time, and the study has hundreds of thousands).

A scan that fails does not stop the others; the job fails at the end naming them, and a rerun
fetches only what is still missing. The session receipt (the rule's output) is written last.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, Protocol

from xnat_prep import __version__, paths, receipts
from xnat_prep import credentials as creds_mod
from xnat_prep.errors import UserError
from xnat_prep.transfer import (
    CHUNK,
    Corrupt,
    RetryPolicy,
    Transfer,
    TransferError,
    copy_hashing,
    public_url,
    stream_to,
)

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

# One request per file beats a zip only when very little is missing (a resumed download).
FEW_FILES = 2
FEW_BYTES_FRACTION = 0.1
FEW_FILES_MAX = 16
ROUNDS = 3  # zip → whatever failed → whatever still failed
_AFTER_FILES = re.compile(r"(?:^|/)resources/[^/]+/files/(.+)$")


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
    rel: PurePosixPath  # where the file goes, relative to the scan's folder

    @property
    def size(self) -> int:
        return int(self.spec.size)


def work_dir(dest: Path) -> Path:
    """The folder a scan is built in before it is renamed to ``dest``."""
    return dest.with_name(f".{dest.name}.part")


def download_session(
    *,
    host: str,
    session_id: str,
    scans: Sequence[ScanTask],
    files: Mapping[str, Sequence[FileSpec]],
    dest_dir: str | Path,
    receipt: str | Path,
    verify_tls: bool = True,
    ca_bundle: str | None = None,
    credentials: creds_mod.Credentials | None = None,
    retry: RetryPolicy | None = None,
) -> dict[str, Any]:
    """Download every scan of ``scans`` into ``dest_dir/<scan>`` (``files``: the manifest's, by
    scan ID), then write the session receipt; raises TransferError naming the scans that failed."""
    started = time.monotonic()
    dest = Path(dest_dir)
    done: list[dict[str, Any]] = []
    failed: list[str] = []
    with Transfer(host, credentials, verify=ca_bundle or verify_tls, retry=retry) as transfer:
        for task in scans:
            scan_files = [f for f in files.get(task.scan_id, []) if f.resource == task.resource]
            try:
                if not scan_files:
                    raise UserError(
                        f"scan {task.scan_id}: no {task.resource} files in the manifest; rerun discovery"
                    )
                data = fetch_scan(
                    transfer,
                    session_id=session_id,
                    scan_id=task.scan_id,
                    resource=task.resource,
                    files=scan_files,
                    dest_dir=dest / task.scan,
                    receipt=dest / f"{task.scan}.json",
                )
            except UserError as exc:  # TransferError too; a wrong password fails every scan alike
                log.error("%s", exc)
                failed.append(str(exc))
                continue
            done.append(
                {
                    k: data[k]
                    for k in ("scan_id", "n_files", "bytes", "fetched", "reused", "method", "http_requests")
                }
            )
        requests_made = transfer.requests
    if failed:
        more = f" (and {len(failed) - 1} more, see the log)" if len(failed) > 1 else ""
        raise TransferError(
            f"session {session_id}: {len(failed)} of {len(scans)} scan(s) failed: {failed[0]}{more}"
        )
    data = {
        "step": "download_session",
        "host": public_url(host),
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
        "session %s: %d scans, %d files, %d HTTP requests",
        session_id,
        len(done),
        data["n_files"],
        requests_made,
    )
    return data


def download_scan(
    *,
    host: str,
    session_id: str,
    scan_id: str,
    resource: str,
    files: Sequence[FileSpec],
    dest_dir: str | Path,
    receipt: str | Path,
    verify_tls: bool = True,
    ca_bundle: str | None = None,
    credentials: creds_mod.Credentials | None = None,
    retry: RetryPolicy | None = None,
) -> dict[str, Any]:
    """One scan on a connection of its own (``xnat-prep download-scan``); see ``fetch_scan``."""
    with Transfer(host, credentials, verify=ca_bundle or verify_tls, retry=retry) as transfer:
        return fetch_scan(
            transfer,
            session_id=session_id,
            scan_id=scan_id,
            resource=resource,
            files=files,
            dest_dir=dest_dir,
            receipt=receipt,
        )


def fetch_scan(
    transfer: Transfer,
    *,
    session_id: str,
    scan_id: str,
    resource: str,
    files: Sequence[FileSpec],
    dest_dir: str | Path,
    receipt: str | Path,
) -> dict[str, Any]:
    """Make ``dest_dir`` hold exactly the scan's manifest files (verified), then write the receipt.

    Sends no request if the receipt already lists the manifest's files and they are all there.
    """
    started = time.monotonic()
    dest = Path(dest_dir)
    targets = _targets(files)
    listed = [{"path": t.spec.path, "size": t.size, "md5": t.spec.md5} for t in targets]
    data: dict[str, Any] = {
        "step": "download_scan",
        "host": transfer.host,
        "session_id": session_id,
        "scan_id": scan_id,
        "resource": resource,
        "n_files": len(targets),
        "bytes": sum(t.size for t in targets),
    }
    if _is_done(receipt, dest, targets, listed):
        log.info("scan %s: done already (%s)", scan_id, receipt)
        return {
            **receipts.read(receipt),
            "fetched": 0,
            "reused": len(targets),
            "method": "none",
            "http_requests": 0,
        }
    work = work_dir(dest)
    zip_part = dest.with_name(f".{dest.name}.zip.part")
    zip_part.unlink(missing_ok=True)  # a crashed run's
    if dest.exists():  # earlier files, but not matching the manifest any more: rebuilt in the work folder
        if work.exists():
            shutil.rmtree(work)
        os.replace(dest, work)
    if work.exists():
        _remove_strays(work, {t.rel for t in targets})
        missing = [t for t in targets if not _is_complete(work, t)]
    else:
        missing = list(targets)
    reused = len(targets) - len(missing)
    for folder in {(work / t.rel).parent for t in missing}:  # once per folder, not per file
        folder.mkdir(parents=True, exist_ok=True)
    methods: list[str] = []
    before = transfer.requests
    for _ in range(ROUNDS if missing else 0):
        if _few(missing, targets):
            methods.append("files")
            missing = _fetch_files(transfer, missing, work)
        else:
            methods.append("zip")
            uri = f"/data/experiments/{session_id}/scans/{scan_id}/resources/{resource}/files"
            missing = _fetch_zip(transfer, uri, missing, targets, work, zip_part)
        if not missing:
            break
    if missing:
        names = ", ".join(t.spec.path for t in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise TransferError(f"scan {scan_id} of {session_id}: {len(missing)} file(s) still bad: {names}")
    work.mkdir(parents=True, exist_ok=True)  # a scan whose files are all in sub-folders still gets one
    os.replace(work, dest)
    data.update(
        fetched=len(targets) - reused,
        reused=reused,
        method="+".join(methods) or "none",
        http_requests=transfer.requests - before,
        duration_s=round(time.monotonic() - started, 3),
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        xnat_prep_version=__version__,
        files=listed,
    )
    receipts.write(receipt, data)
    log.info(
        "scan %s: %d files, %d fetched, %d reused, %d HTTP requests",
        scan_id,
        data["n_files"],
        data["fetched"],
        reused,
        data["http_requests"],
    )
    return data


def _targets(files: Sequence[FileSpec]) -> list[_Target]:
    """Each manifest file with its path in the scan's folder; unsafe or colliding paths are refused."""
    targets: dict[PurePosixPath, _Target] = {}
    for spec in files:
        try:
            rel = paths.safe_relpath(spec.path)
        except ValueError as exc:
            raise UserError(f"manifest file list: {exc}") from None
        if rel in targets:
            raise UserError(
                f"manifest file list: {spec.path!r} and {targets[rel].spec.path!r} map to one file"
            )
        targets[rel] = _Target(spec, rel)
    return list(targets.values())


def _is_done(receipt: str | Path, dest: Path, targets: list[_Target], listed: list[dict[str, Any]]) -> bool:
    """The receipt lists exactly these files and each is in ``dest`` with its size (no hashing:
    the files were verified when they were written, as Snakemake trusts an existing output)."""
    try:
        with open(receipt, encoding="utf-8") as fh:
            if json.load(fh).get("files") != listed:
                return False
    except (OSError, ValueError, AttributeError):
        return False
    try:
        return all(os.stat(dest / t.rel).st_size == t.size for t in targets)
    except OSError:
        return False


def _remove_strays(work: Path, keep: set[PurePosixPath]) -> None:
    """Delete files not in the manifest (a crashed run's ``.part`` files, files since removed).

    The folder mirrors the manifest: dcm2niix converts whatever is in it.
    """
    for path in sorted(work.rglob("*")):
        if path.is_file() and PurePosixPath(path.relative_to(work).as_posix()) not in keep:
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
    its folder exists already (made once per scan by ``fetch_scan``).
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


def _fetch_files(transfer: Transfer, missing: list[_Target], work: Path) -> list[_Target]:
    """GET each missing file by its URI; a wrong body is retried by the transfer client."""
    for target in missing:
        transfer.get(target.spec.uri, functools.partial(_save_response, work / target.rel, target))
    return []


def _save_response(path: Path, target: _Target, response: requests.Response) -> None:
    if not _write_checked(path, target, functools.partial(stream_to, response)):
        raise Corrupt(f"{target.spec.path}: size or md5 differs from the manifest")


def _fetch_zip(
    transfer: Transfer, uri: str, missing: list[_Target], targets: list[_Target], work: Path, zip_part: Path
) -> list[_Target]:
    """GET the resource as one zip into ``zip_part``; unpack what is missing into ``work``.

    Returns the targets still missing or bad afterwards (retried by the caller).
    """
    wanted = {t.spec.path: t for t in missing}
    known = {t.spec.path for t in targets}
    try:
        with transfer.get(uri, functools.partial(_save_zip, zip_part), params={"format": "zip"}) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                key = _manifest_key(info.filename, uri)
                if key in wanted:
                    target = wanted[key]
                    try:
                        with archive.open(info) as source:
                            chunks = iter(functools.partial(source.read, CHUNK), b"")
                            if _write_checked(
                                work / target.rel, target, functools.partial(copy_hashing, chunks)
                            ):
                                del wanted[key]
                    except zipfile.BadZipFile as exc:  # CRC mismatch inside the archive
                        log.warning("%s: %s", key, exc)
                elif key not in known:
                    log.info("ignoring zip entry %s: not in the manifest", info.filename)
    finally:
        zip_part.unlink(missing_ok=True)
    for path in wanted:
        log.warning("%s: missing or bad in the zip; will retry", path)
    return list(wanted.values())


def _save_zip(tmp: Path, response: requests.Response) -> zipfile.ZipFile:
    """Stream the zip to ``tmp`` and open it; an unreadable archive is retried."""
    with open(tmp, "wb") as out:
        stream_to(response, out)
    try:
        return zipfile.ZipFile(tmp)
    except zipfile.BadZipFile as exc:
        raise Corrupt(f"not a complete zip: {exc}") from None


def _manifest_key(name: str, uri: str) -> str:
    """The manifest path of a zip entry: the text after ``resources/<label>/files/``.

    Entry names are checked like manifest paths (no absolute path, no ``..``) even though
    nothing is ever written under an entry's own name: such an archive is not trustworthy.
    """
    try:
        paths.safe_relpath(name)
    except ValueError as exc:
        raise TransferError(f"zip from {uri}: refusing entry {name!r}: {exc}") from None
    match = _AFTER_FILES.search(name)
    return match.group(1) if match else name.partition("/files/")[2] or name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", required=True, help="the session's manifest file list (TSV)")
    parser.add_argument("--session-id", required=True, help="the session's XNAT accession ID")
    parser.add_argument(
        "--scans",
        required=True,
        help='the scans to fetch, as JSON: [{"scan_id": "1", "resource": "DICOM", "scan": "1-T1w"}, ...] '
        "(scan: the folder and receipt name under --dest)",
    )
    parser.add_argument("--dest", required=True, help="the session's DICOM folder (one folder per scan)")
    parser.add_argument("--receipt", required=True, help="session receipt JSON to write when done")
    creds_mod.add_connection_arguments(parser)


def parse_scans(text: str) -> list[ScanTask]:
    """The ``--scans`` JSON as ScanTasks; a malformed list is a UserError."""
    try:
        return [
            ScanTask(str(s["scan_id"]), str(s["resource"]), paths.safe_component(str(s["scan"])))
            for s in json.loads(text)
        ]
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"--scans: not a JSON list of {{scan_id, resource, scan}} objects ({exc})") from None


def run(args: argparse.Namespace) -> int:
    from xnat_prep import manifest

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        by_scan = manifest.read_session_files(args.files)
    except (OSError, ValueError) as exc:
        raise UserError(f"{args.files}: {exc}") from None
    download_session(
        host=creds_mod.host_from(args),
        session_id=args.session_id,
        scans=parse_scans(args.scans),
        files=by_scan,
        dest_dir=args.dest,
        receipt=args.receipt,
        verify_tls=not args.insecure,
        ca_bundle=args.ca_bundle,
    )
    return 0
