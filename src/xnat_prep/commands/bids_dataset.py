"""``xnat-prep bids-dataset``: the BIDS dataset under ``<output_root>/bids/`` from the converted scans."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from xnat_prep import __version__, paths, receipts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-root", type=Path, required=True, help="the run's output_root")
    parser.add_argument("--mapping", required=True, help="the bids.yaml mapping")
    parser.add_argument("--receipt", type=Path, help="receipt JSON to write (default: the workflow's)")
    add_lint_arguments(parser)


def add_lint_arguments(parser: argparse.ArgumentParser) -> None:
    """The options the mapping's lint takes (also `plan`'s)."""
    parser.add_argument("--strict", action="store_true", help="BIDS lint warnings are errors too")
    pseudo = parser.add_argument_group("pseudonymised runs (BIDS labels from the pseudonyms)")
    pseudo.add_argument("--pseudonymised", action="store_true", help="the scans were pseudonymised")
    pseudo.add_argument("--key-file", help="key file (default: $XNAT_PREP_PSEUDO_KEY_FILE)")
    pseudo.add_argument("--namespace", default="", help="the pseudonymise namespace")
    pseudo.add_argument("--mapping-csv", help="subject_id,pseudonym CSV (instead of keyed pseudonyms)")


def run(args: argparse.Namespace) -> int:
    from xnat_prep import bids
    from xnat_prep.bids import dataset
    from xnat_prep.config import HOST_ENV

    started = time.monotonic()
    root = args.output_root
    pseudo = pseudo_settings(args)
    layout, _ = bids.lint(root, args.mapping, strict=args.strict, pseudo=pseudo)
    mapping = bids.load(args.mapping)
    host = os.environ.get(HOST_ENV, "").rstrip("/")
    result = dataset.write(layout, mapping, root, host=host, pseudonymised=args.pseudonymised)
    receipt = args.receipt or root / paths.BIDS_RECEIPT
    receipts.write(
        receipt,
        {
            "step": "bids_dataset",
            "dataset": str(root / paths.BIDS_DIR),
            "mapping": str(args.mapping),
            "scans": len(layout.planned),
            "scans_left_out": len(layout.skipped),
            "files": len(result.files),
            "written": len(result.written),
            "unchanged": result.unchanged,
            "removed": result.removed,
            "copied": result.copied,
            "problems": [p.line() for p in layout.problems],
            "duration_s": round(time.monotonic() - started, 3),
            "xnat_prep_version": __version__,
        },
    )
    print(
        f"bids: {len(result.files)} files in {root / paths.BIDS_DIR} ({len(result.written)} written, "
        f"{result.unchanged} unchanged, {len(result.removed)} removed, {result.copied} copied)"
    )
    return 0


def pseudo_settings(args: argparse.Namespace) -> dict[str, str | None] | None:
    if not args.pseudonymised:
        return None
    return {"key_file": args.key_file, "namespace": args.namespace, "mapping_csv": args.mapping_csv}
