"""``upload-session``: a session's NIfTI results into each scan's ``NIFTI`` resource.

Idempotent: the resource's file listing (with md5 digests) is compared with the local files
first and only missing or different files are sent; afterwards the listing is read again and
every digest must equal the local md5. A second run sends no modifying request. Files on XNAT
that the conversion no longer produces are listed in the receipt, never deleted. Scans that
were skipped or failed are not uploaded. A user without write permission on the project gets a
``denied`` receipt (one problem in the report), not a failed job.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xnat_prep import __version__, paths, receipts
from xnat_prep import credentials as creds_mod
from xnat_prep.errors import UserError
from xnat_prep.xnat_api import AccessDenied, Client, Connection, NotFound, RetryPolicy

log = logging.getLogger(__name__)


def upload_session(
    connection: Connection,
    *,
    session_id: str,
    convert_receipts: Sequence[str | Path],
    resource: str = "NIFTI",
    receipt: str | Path,
    project: str = "",
    credentials: creds_mod.Credentials | None = None,
    retry: RetryPolicy | None = None,
) -> dict[str, Any]:
    """Upload each converted scan's outputs (the folder beside each convert receipt).

    ``project`` (the session's) names the project when XNAT refuses the write."""
    results: dict[str, dict[str, Any]] = {}
    dcm2niix_versions: set[str] = set()
    with Client(connection, credentials, retry=retry) as client:
        try:
            _upload_all(client, session_id, convert_receipts, resource, results, dcm2niix_versions)
        except AccessDenied as exc:
            if exc.action != "write":
                raise
            log.error("%s", exc)
            return receipts.write_denied(
                receipt, step="upload_session", host=connection.host, session_id=session_id, project=project
            )
    data = {
        "step": "upload_session",
        "host": connection.host,
        "session_id": session_id,
        "resource": resource,
        "scans": results,
        "sent": sum(len(r.get("sent", [])) for r in results.values()),
        "versions": {"xnat_prep": __version__, "dcm2niix": sorted(dcm2niix_versions)},
    }
    receipts.write(receipt, data)
    log.info("session %s: %d file(s) sent", session_id, data["sent"])
    return data


def _upload_all(
    client: Client,
    session_id: str,
    convert_receipts: Sequence[str | Path],
    resource: str,
    results: dict[str, dict[str, Any]],
    dcm2niix_versions: set[str],
) -> None:
    """Sync each converted scan, filling ``results`` (scan ID -> receipt entry) and the versions."""
    for convert_receipt in convert_receipts:
        converted = receipts.read(convert_receipt)
        scan_id = str(converted.get("scan_id", ""))
        if not scan_id:
            raise UserError(f"{convert_receipt}: the convert receipt names no scan_id; rerun the conversion")
        if converted["status"] != "converted":
            results[scan_id] = {"status": converted["status"], "reason": converted.get("reason", "")}
            continue
        if converted.get("dcm2niix_version"):
            dcm2niix_versions.add(converted["dcm2niix_version"])
        local = local_files(paths.outputs_of(convert_receipt), converted["outputs"])
        results[scan_id] = sync_resource(client, session_id, scan_id, resource, local)


def local_files(out_dir: Path, outputs: list[dict[str, Any]]) -> dict[str, tuple[Path, str]]:
    """name -> (path, md5) of the convert outputs, hashed again: they must still be what was made."""
    files = {}
    for output in outputs:
        path = out_dir / output["name"]
        try:
            with open(path, "rb") as fh:
                md5 = hashlib.file_digest(fh, "md5").hexdigest()
        except FileNotFoundError:
            raise UserError(
                f"{path}: listed in the convert receipt but missing; rerun the conversion"
            ) from None
        if md5 != output["md5"]:
            raise UserError(f"{path}: changed since conversion (md5 differs from the receipt); rerun it")
        files[output["name"]] = (path, md5)
    return files


def sync_resource(
    client: Client, session_id: str, scan_id: str, label: str, local: dict[str, tuple[Path, str]]
) -> dict[str, Any]:
    """Make the scan's ``label`` resource hold ``local`` (by md5); returns the scan's receipt entry.

    Compare, write what differs, read back: every write is a PUT that is safe to repeat, so a
    retried request, or a rerun after a crash at any point, converges on the same state.
    """
    try:
        labels = client.scan_resources(session_id, scan_id)
    except NotFound:
        raise UserError(f"session {session_id} has no scan {scan_id} on {client.host}") from None
    remote = client.resource_digests(session_id, scan_id, label) if label in labels else {}
    sent = sorted(name for name, (_, md5) in local.items() if remote.get(name) != md5)
    if sent and label not in labels:
        client.create_resource(session_id, scan_id, label, format="NIFTI")
    for name in sent:
        client.upload_file(session_id, scan_id, label, name, local[name][0])
    if sent:
        remote = client.resource_digests(session_id, scan_id, label)
    wrong = sorted(name for name, (_, md5) in local.items() if remote.get(name) != md5)
    uri = client.scan_resource_uri(session_id, scan_id, label)
    if wrong:
        raise UserError(f"{uri}: digest on XNAT differs from the local file after upload: {', '.join(wrong)}")
    return {
        "status": "converted",
        "resource_uri": uri,
        "files": [{"name": name, "md5": md5} for name, (_, md5) in sorted(local.items())],
        "sent": sent,
        "unchanged": sorted(set(local) - set(sent)),
        "remote_only": sorted(set(remote) - set(local)),
    }
