"""``xnat-prep upload-session``: a session's NIfTI results into each scan's resource on XNAT."""

from __future__ import annotations

import argparse

from xnat_prep import convert, upload
from xnat_prep.commands import options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session-id", required=True, help="the session's XNAT accession ID")
    parser.add_argument("--project", default="", help="the session's project (named when a write is refused)")
    parser.add_argument(
        "--convert-receipts",
        nargs="+",
        required=True,
        metavar="JSON",
        help="the convert receipts of its scans (a session's receipt stands for its scans')",
    )
    parser.add_argument(
        "--resource", default="NIFTI", help="scan resource label to upload to (default: NIFTI)"
    )
    parser.add_argument("--receipt", required=True, help="receipt JSON to write")
    options.add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    upload.upload_session(
        options.connection(args),
        session_id=args.session_id,
        convert_receipts=convert.scan_receipts(args.convert_receipts),
        resource=args.resource,
        receipt=args.receipt,
        project=args.project,
    )
    return 0
