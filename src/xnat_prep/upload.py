"""``upload-session``: a session's NIfTI results into each scan's ``NIFTI`` resource.

Idempotent: the resource's file listing (with md5 digests) is compared with the local files
first and only missing or different files are sent; afterwards the listing is read again and
every digest must equal the local md5. A second run sends no modifying request. Files on XNAT
that the conversion no longer produces are listed in the receipt, never deleted. Scans that
were skipped or failed are not uploaded.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xnat_prep import __version__, receipts
from xnat_prep import credentials as creds_mod
from xnat_prep.errors import UserError
from xnat_prep.transfer import public_url

log = logging.getLogger(__name__)


def upload_session(
    *,
    host: str,
    session_id: str,
    scans: Sequence[tuple[str, str | Path]],
    resource: str = "NIFTI",
    receipt: str | Path,
    verify_tls: bool = True,
    ca_bundle: str | None = None,
    credentials: creds_mod.Credentials | None = None,
) -> dict[str, Any]:
    """Upload each converted scan's outputs (``scans``: scan ID, convert receipt path)."""
    import xnat

    from xnat_prep import client

    results: dict[str, dict[str, Any]] = {}
    dcm2niix_versions: set[str] = set()
    with client.connect(host, verify_tls=verify_tls, ca_bundle=ca_bundle, credentials=credentials) as xs:
        experiment = xs.create_object(f"/data/experiments/{session_id}")
        for scan_id, convert_receipt in scans:
            converted = receipts.read(convert_receipt)
            if converted["status"] != "converted":
                results[scan_id] = {"status": converted["status"], "reason": converted.get("reason", "")}
                continue
            if converted.get("dcm2niix_version"):
                dcm2niix_versions.add(converted["dcm2niix_version"])
            # Layout: {scan}.json is the receipt of the outputs in {scan}/.
            local = _local_files(Path(convert_receipt).with_suffix(""), converted["outputs"])
            try:
                scan = experiment.scans[scan_id]
            except KeyError:
                raise UserError(f"session {session_id} has no scan {scan_id} on {host}") from None
            results[scan_id] = _sync(scan, resource, local)
    data = {
        "step": "upload_session",
        "host": public_url(host),
        "session_id": session_id,
        "resource": resource,
        "scans": results,
        "sent": sum(len(r.get("sent", [])) for r in results.values()),
        "versions": {
            "xnat_prep": __version__,
            "xnatpy": xnat.__version__,
            "dcm2niix": sorted(dcm2niix_versions),
        },
    }
    receipts.write(receipt, data)
    log.info("session %s: %d file(s) sent", session_id, data["sent"])
    return data


def _local_files(out_dir: Path, outputs: list[dict[str, Any]]) -> dict[str, tuple[Path, str]]:
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


def _sync(scan: Any, label: str, local: dict[str, tuple[Path, str]]) -> dict[str, Any]:
    """Make the scan's ``label`` resource hold ``local`` (by md5); returns the scan's receipt entry."""
    res = scan.resources.get(label)
    if res is None:
        res = scan.create_resource(label, format="NIFTI")
    remote = _digests(res)
    sent = sorted(name for name, (_, md5) in local.items() if remote.get(name) != md5)
    for name in sent:
        # verbose=False: otherwise xnatpy draws a progress bar into the rule's log.
        res.upload(local[name][0], name, overwrite=True, verbose=False)
    if sent:
        res.clearcache()
        remote = _digests(res)
    wrong = sorted(name for name, (_, md5) in local.items() if remote.get(name) != md5)
    if wrong:
        raise UserError(
            f"{res.uri}: digest on XNAT differs from the local file after upload: {', '.join(wrong)}"
        )
    return {
        "status": "converted",
        "resource_uri": res.uri,
        "files": [{"name": name, "md5": md5} for name, (_, md5) in sorted(local.items())],
        "sent": sent,
        "unchanged": sorted(set(local) - set(sent)),
        "remote_only": sorted(set(remote) - set(local)),
    }


def _digests(res: Any) -> dict[str, str]:
    """File path in the resource -> md5 digest, as XNAT reports it."""
    return {name: f.digest for name, f in res.files.items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session-id", required=True, help="the session's XNAT accession ID")
    parser.add_argument(
        "--scan",
        nargs=2,
        action="append",
        required=True,
        metavar=("SCAN_ID", "CONVERT_RECEIPT"),
        help="a scan and its convert receipt (repeat per scan)",
    )
    parser.add_argument(
        "--resource", default="NIFTI", help="scan resource label to upload to (default: NIFTI)"
    )
    parser.add_argument("--receipt", required=True, help="receipt JSON to write")
    creds_mod.add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    upload_session(
        host=creds_mod.host_from(args),
        session_id=args.session_id,
        scans=[tuple(s) for s in args.scan],
        resource=args.resource,
        receipt=args.receipt,
        verify_tls=not args.insecure,
        ca_bundle=args.ca_bundle,
    )
    return 0
