"""``xnat-prep download-session``: a session's scans' DICOM, verified against the manifest, resumable."""

from __future__ import annotations

import argparse

from xnat_prep import download, manifest, paths
from xnat_prep.commands import options
from xnat_prep.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", required=True, help="the session's manifest file list (TSV)")
    parser.add_argument("--session-id", required=True, help="the session's XNAT accession ID")
    parser.add_argument(
        "--scans",
        required=True,
        help='the scans to fetch, as JSON: [{"scan_id": "1", "resource": "DICOM", "scan": "1-T1w"}, ...] '
        "(scan: the folder and receipt name beside the session receipt)",
    )
    parser.add_argument(
        "--receipt",
        required=True,
        help="session receipt JSON to write when done; the scans' folders go beside it",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="K",
        help="fetch up to K scans at once, each on its own connection (default 1: one after another); "
        "the workflow passes the xnat_api units the job holds",
    )
    parser.add_argument(
        "--store",
        choices=["files", "zip"],
        default="files",
        help="files: a folder of DICOM files per scan (default); zip: one verified zip per scan "
        "(<scan>.zip beside its receipt; dicom.store)",
    )
    options.add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        by_scan = manifest.read_session_files(args.files)
    except (OSError, ValueError) as exc:
        raise UserError(f"{args.files}: {exc}") from None
    if args.parallel < 1:
        raise UserError(f"--parallel: must be 1 or more, not {args.parallel}")
    tasks = options.json_argument(args.scans, "--scans", list)
    try:
        scans = [
            download.ScanTask(str(s["scan_id"]), str(s["resource"]), paths.safe_component(str(s["scan"])))
            for s in tasks
        ]
    except (TypeError, KeyError, ValueError) as exc:
        raise UserError(f"--scans: not a JSON list of {{scan_id, resource, scan}} objects ({exc})") from None
    download.download_session(
        options.connection(args),
        session_id=args.session_id,
        scans=scans,
        files=by_scan,
        receipt=args.receipt,
        parallel=args.parallel,
        store=args.store,
    )
    return 0
