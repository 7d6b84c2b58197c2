"""``xnat-prep bids-init``: draft a bids.yaml from the plan's inventory (one commented rule per series)."""

from __future__ import annotations

import argparse
from pathlib import Path

from xnat_prep import paths
from xnat_prep.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--inventory", type=Path, help="an inventory.tsv written by `xnat-prep plan`")
    source.add_argument("--output-root", type=Path, help="a run's output_root (its plan/inventory.tsv)")
    parser.add_argument("--out", type=Path, required=True, help="the bids.yaml to write")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")


def run(args: argparse.Namespace) -> int:
    from xnat_prep.bids import draft
    from xnat_prep.fsutil import atomic_write

    inventory = args.inventory or args.output_root / paths.INVENTORY_TSV
    if args.out.exists() and not args.force:
        raise UserError(f"{args.out}: exists (a mapping someone may have edited); --force replaces it")
    series = draft.read_inventory(inventory)
    if not series:
        raise UserError(f"{inventory}: no selected series to map")
    atomic_write(args.out, draft.draft(series, str(inventory)), mode=0o644)
    print(
        f"{args.out}: {len(series)} rule(s) drafted from {inventory}; "
        "edit the TODOs, then run `xnat-prep plan`"
    )
    return 0
