"""``xnat-prep bids-validate``: the official BIDS validator (bids-validator-deno) on a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="the BIDS dataset folder")
    parser.add_argument("--receipt", type=Path, help="receipt JSON to write (issues, counts, versions)")
    parser.add_argument("--config", help="a bids-validator JSON config (issue codes to ignore or demote)")


def run(args: argparse.Namespace) -> int:
    from xnat_prep.bids import validate

    if args.receipt:
        result = validate.validate_to(args.dataset, args.receipt, args.config)
    else:
        result = validate.run(args.dataset, args.config)
    for line in validate.summary_lines(result):
        print(line)
    print(f"{args.dataset}: {result['errors']} error(s), {result['warnings']} warning(s)")
    return 1 if result["errors"] else 0
