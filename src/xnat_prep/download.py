"""``download-scan``: one scan's DICOM files, verified against the manifest, resumable.

Files already on disk with the manifest's size and md5 are kept; if none is missing no request
is sent. A few missing files are fetched one by one from their URI, otherwise the resource
comes as one zip, streamed to a temporary file. Every file is written as ``.name.part`` while
its md5 is computed and renamed only when size and md5 match, so nothing incomplete ever looks
complete. The receipt (the rule's declared output) is written last.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import os
import re
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
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


@dataclass
class _Target:
    spec: FileSpec
    dest: Path

    @property
    def size(self) -> int:
        return int(self.spec.size)


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
    """Make ``dest_dir`` hold exactly the scan's manifest files (verified), then write the receipt."""
    started = time.monotonic()
    dest = Path(dest_dir)
    targets = _targets(files, dest)
    dest.mkdir(parents=True, exist_ok=True)
    _remove_strays(dest, {t.dest for t in targets})
    missing = [t for t in targets if not _is_complete(t)]
    reused = len(targets) - len(missing)
    for folder in {t.dest.parent for t in missing}:  # once per folder: per file it cost ~3% of a job
        folder.mkdir(parents=True, exist_ok=True)
    methods: list[str] = []
    requests_made = 0
    if missing:
        with Transfer(host, credentials, verify=ca_bundle or verify_tls, retry=retry) as transfer:
            for _ in range(ROUNDS):
                if _few(missing, targets):
                    methods.append("files")
                    missing = _fetch_files(transfer, missing)
                else:
                    methods.append("zip")
                    zip_path = f"/data/experiments/{session_id}/scans/{scan_id}/resources/{resource}/files"
                    missing = _fetch_zip(transfer, zip_path, missing, targets, dest)
                if not missing:
                    break
            requests_made = transfer.requests
        if missing:
            names = ", ".join(t.spec.path for t in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise TransferError(f"scan {scan_id} of {session_id}: {len(missing)} file(s) still bad: {names}")
    data = {
        "step": "download_scan",
        "host": public_url(host),
        "session_id": session_id,
        "scan_id": scan_id,
        "resource": resource,
        "n_files": len(targets),
        "bytes": sum(t.size for t in targets),
        "fetched": len(targets) - reused,
        "reused": reused,
        "method": "+".join(methods) or "none",
        "http_requests": requests_made,
        "duration_s": round(time.monotonic() - started, 3),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "xnat_prep_version": __version__,
        "files": [{"path": t.spec.path, "size": t.size, "md5": t.spec.md5} for t in targets],
    }
    receipts.write(receipt, data)
    log.info(
        "scan %s: %d files, %d fetched, %d reused, %d HTTP requests",
        scan_id,
        data["n_files"],
        data["fetched"],
        reused,
        requests_made,
    )
    return data


def _targets(files: Sequence[FileSpec], dest: Path) -> list[_Target]:
    """Each manifest file with its local path; unsafe or colliding paths are refused."""
    targets: dict[Path, _Target] = {}
    for spec in files:
        try:
            path = dest / paths.safe_relpath(spec.path)
        except ValueError as exc:
            raise UserError(f"manifest file list: {exc}") from None
        if path in targets:
            raise UserError(
                f"manifest file list: {spec.path!r} and {targets[path].spec.path!r} map to one file"
            )
        targets[path] = _Target(spec, path)
    return list(targets.values())


def _remove_strays(dest: Path, keep: set[Path]) -> None:
    """Delete leftovers (``.part`` files of a crashed run, files no longer in the manifest).

    The directory mirrors the manifest: dcm2niix converts whatever is in it.
    """
    for path in dest.parent.glob(f".{dest.name}.*.zip.part"):
        path.unlink()
    for path in sorted(dest.rglob("*")):
        if path.is_file() and path not in keep:
            if not path.name.endswith(".part"):
                log.info("removing %s: not in the manifest", path)
            path.unlink()


def _is_complete(target: _Target) -> bool:
    """Present with the manifest's size and md5 (local disk work only)."""
    try:
        if target.dest.stat().st_size != target.size:
            return False
    except FileNotFoundError:
        return False
    with open(target.dest, "rb") as fh:
        good = hashlib.file_digest(fh, "md5").hexdigest() == target.spec.md5
    if not good:
        log.info("refetching %s: md5 differs from the manifest", target.dest)
    return good


def _few(missing: list[_Target], targets: list[_Target]) -> bool:
    if len(missing) <= FEW_FILES:
        return True
    total = sum(t.size for t in targets) or 1
    return len(missing) <= FEW_FILES_MAX and sum(t.size for t in missing) <= FEW_BYTES_FRACTION * total


def _write_verified(target: _Target, copy: Callable[[IO[bytes]], tuple[int, str]]) -> bool:
    """Write to ``.name.part`` with ``copy`` (returns size, md5); rename only if both match.

    The target's folder exists already (made once per scan by ``download_scan``).
    """
    part = target.dest.with_name(f".{target.dest.name}.part")
    try:
        with open(part, "wb") as out:
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
            part.unlink()
            return False
        os.replace(part, target.dest)
        return True
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _fetch_files(transfer: Transfer, missing: list[_Target]) -> list[_Target]:
    """GET each missing file by its URI; a wrong body is retried by the transfer client."""
    for target in missing:
        transfer.get(target.spec.uri, functools.partial(_save_response, target))
    return []


def _save_response(target: _Target, response: requests.Response) -> None:
    if not _write_verified(target, functools.partial(stream_to, response)):
        raise Corrupt(f"{target.spec.path}: size or md5 differs from the manifest")


def _fetch_zip(
    transfer: Transfer, uri: str, missing: list[_Target], targets: list[_Target], dest: Path
) -> list[_Target]:
    """GET the resource as one zip into a temp file next to ``dest``; extract what is missing.

    Returns the targets still missing or bad afterwards (retried by the caller).
    """
    wanted = {t.spec.path: t for t in missing}
    known = {t.spec.path for t in targets}
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".zip.part")
    os.close(fd)
    try:
        with transfer.get(uri, functools.partial(_save_zip, tmp), params={"format": "zip"}) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                key = _manifest_key(info.filename, uri)
                if key in wanted:
                    target = wanted[key]
                    try:
                        with archive.open(info) as source:
                            chunks = iter(functools.partial(source.read, CHUNK), b"")
                            if _write_verified(target, functools.partial(copy_hashing, chunks)):
                                del wanted[key]
                    except zipfile.BadZipFile as exc:  # CRC mismatch inside the archive
                        log.warning("%s: %s", key, exc)
                elif key not in known:
                    log.info("ignoring zip entry %s: not in the manifest", info.filename)
    finally:
        Path(tmp).unlink(missing_ok=True)
    for path in wanted:
        log.warning("%s: missing or bad in the zip; will retry", path)
    return list(wanted.values())


def _save_zip(tmp: str, response: requests.Response) -> zipfile.ZipFile:
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
    parser.add_argument("--scan-id", required=True, help="the scan ID")
    parser.add_argument("--resource", default="DICOM", help="the scan resource to fetch (default: DICOM)")
    parser.add_argument("--dest", required=True, help="directory for the scan's files")
    parser.add_argument("--receipt", required=True, help="receipt JSON to write when done")
    creds_mod.add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from xnat_prep import manifest

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        by_scan = manifest.read_session_files(args.files)
    except (OSError, ValueError) as exc:
        raise UserError(f"{args.files}: {exc}") from None
    files = [f for f in by_scan.get(args.scan_id, []) if f.resource == args.resource]
    if not files:
        raise UserError(f"{args.files}: no files for scan {args.scan_id} in resource {args.resource}")
    download_scan(
        host=creds_mod.host_from(args),
        session_id=args.session_id,
        scan_id=args.scan_id,
        resource=args.resource,
        files=files,
        dest_dir=args.dest,
        receipt=args.receipt,
        verify_tls=not args.insecure,
        ca_bundle=args.ca_bundle,
    )
    return 0
