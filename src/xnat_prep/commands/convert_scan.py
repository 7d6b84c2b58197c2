"""``xnat-prep convert-scan``: one scan's DICOM to NIfTI with dcm2niix."""

from __future__ import annotations

import argparse

from xnat_prep import convert


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
    parser.add_argument("--scan-id", default="", help="scan ID, recorded in the receipt")
    parser.add_argument("--scan-type", default="", help="scan type, recorded in the receipt")
    parser.add_argument(
        "--scrub-sidecars",
        action="store_true",
        help="remove the identifying keys dcm2niix copies into its JSON (for pseudonymised DICOM)",
    )


def run(args: argparse.Namespace) -> int:
    convert.convert_scan(
        dicom_dir=args.dicom,
        receipt=args.receipt,
        name=args.name,
        extra=args.extra,
        compress=args.compress == "y",
        gz_level=args.gz_level,
        scan_id=args.scan_id,
        scan_type=args.scan_type,
        scrub_sidecars=args.scrub_sidecars,
        local_tmp=args.local_tmp,
        ram_tmp_mb=args.ram_tmp_mb,
    )
    return 0
