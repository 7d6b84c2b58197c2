"""``xnat-prep convert-session``: a session's scans' DICOM to NIfTI with dcm2niix, one after another."""

from __future__ import annotations

import argparse

from xnat_prep import convert, paths
from xnat_prep.commands import options
from xnat_prep.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        required=True,
        help="the session's DICOM folder: each scan's files in <scan>/, its receipt in <scan>.json",
    )
    parser.add_argument(
        "--store",
        choices=["files", "zip"],
        default="files",
        help="files: each scan's DICOM in <scan>/ (default); zip: in <scan>.zip, unpacked into node-local "
        "temp space (dicom.store, dicom.local_tmp)",
    )
    parser.add_argument(
        "--scans",
        required=True,
        help='the scans to convert, as JSON: [{"scan": "1-T1w", "scan_id": "1", "scan_type": "T1w"}, ...]',
    )
    parser.add_argument(
        "--receipt",
        required=True,
        help="session receipt JSON to write when done; each scan's receipt and NIfTI folder go beside it",
    )
    parser.add_argument("--name-prefix", default="", help="dcm2niix -f file names: <prefix><scan>")
    options.add_dcm2niix_arguments(parser)


def run(args: argparse.Namespace) -> int:
    tasks = options.json_argument(args.scans, "--scans", list)
    try:
        scans = [
            convert.SessionScan(paths.safe_component(str(t["scan"])), str(t["scan_id"]), str(t["scan_type"]))
            for t in tasks
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"--scans: not a JSON list of {{scan, scan_id, scan_type}} objects ({exc})") from None
    convert.convert_session(
        source_dir=args.source,
        receipt=args.receipt,
        scans=scans,
        name_prefix=args.name_prefix,
        **options.dcm2niix_settings(args),
        store=args.store,
    )
    return 0
