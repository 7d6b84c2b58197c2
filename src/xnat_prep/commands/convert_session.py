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
    parser.add_argument("--extra", default="", help="extra dcm2niix options, one string (shell-quoted)")
    parser.add_argument(
        "--compress", choices=["y", "n"], default="y", help="y: .nii.gz (default), n: .nii (as dcm2niix -z)"
    )
    parser.add_argument(
        "--gz-level",
        type=int,
        choices=range(1, 10),
        default=convert.GZ_LEVEL,
        metavar="1-9",
        help=f"gzip level of .nii.gz, as dcm2niix -1..-9 (default {convert.GZ_LEVEL}; dcm2niix's own is 6)",
    )
    parser.add_argument(
        "--scrub-sidecars",
        action="store_true",
        help="remove the identifying keys dcm2niix copies into its JSON (for pseudonymised DICOM)",
    )


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
        extra=args.extra,
        compress=args.compress == "y",
        gz_level=args.gz_level,
        scrub_sidecars=args.scrub_sidecars,
        store=args.store,
    )
    return 0
