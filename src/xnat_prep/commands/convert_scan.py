"""``xnat-prep convert-scan``: one scan's DICOM to NIfTI with dcm2niix."""

from __future__ import annotations

import argparse

from xnat_prep import convert
from xnat_prep.commands import options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dicom",
        required=True,
        help="directory of the scan's DICOM files, or its zip (dicom.store: zip; unpacked into --local-tmp)",
    )
    parser.add_argument(
        "--local-tmp",
        default=None,
        help="node-local folder to unpack a zip in (default: $XNAT_PREP_LOCAL_TMP, else $TMPDIR, else /tmp)",
    )
    parser.add_argument(
        "--ram-tmp-mb",
        type=int,
        default=None,
        help="unpack a zip of at most this many MB in RAM (/dev/shm) instead; 0 = never "
        "(default: $XNAT_PREP_RAM_TMP_MB, else 1024)",
    )
    parser.add_argument(
        "--receipt", required=True, help="receipt JSON to write; the outputs go in the folder of its name"
    )
    parser.add_argument("--name", required=True, help="dcm2niix -f file name pattern")
    parser.add_argument("--scan-id", default="", help="scan ID, recorded in the receipt")
    parser.add_argument("--scan-type", default="", help="scan type, recorded in the receipt")
    options.add_dcm2niix_arguments(parser)


def run(args: argparse.Namespace) -> int:
    convert.convert_scan(
        dicom_dir=args.dicom,
        receipt=args.receipt,
        name=args.name,
        scan_id=args.scan_id,
        scan_type=args.scan_type,
        **options.dcm2niix_settings(args),
        local_tmp=args.local_tmp,
        ram_tmp_mb=args.ram_tmp_mb,
    )
    return 0
