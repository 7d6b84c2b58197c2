"""``xnat-prep discover``: list the subjects' sessions, scans and files on XNAT into a manifest."""

from __future__ import annotations

import argparse
import os

from xnat_prep import config as config_mod
from xnat_prep import discover, subjects
from xnat_prep.commands import options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subjects", required=True, help="the subject CSV (XNAT's 'Download CSV')")
    parser.add_argument("--project", help="project of CSV rows without a Project column")
    parser.add_argument(
        "--selection",
        default="{}",
        help='which scans, as JSON: {"include_types": [...], "exclude_types": [...], '
        '"series_description": REGEX} (the config\'s scans section; default: all)',
    )
    parser.add_argument("--output-root", required=True, help="the workflow's output_root")
    parser.add_argument(
        "--max-connections",
        type=int,
        default=int(os.environ.get(config_mod.MAX_CONNECTIONS_ENV) or 4),
        help=f"connections to list sessions over (default: ${config_mod.MAX_CONNECTIONS_ENV} or 4)",
    )
    options.add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    selection = options.json_argument(args.selection, "--selection", dict)
    discover.run_discovery(
        options.connection(args),
        subjects.read(args.subjects, args.project or None),
        discover.Selection.from_config(selection),
        args.output_root,
        max(1, args.max_connections),
    )
    return 0  # problems with single subjects are in errors.tsv; the run's report lists them
