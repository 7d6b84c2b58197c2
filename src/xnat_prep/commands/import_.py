"""``xnat-prep import --csv import.csv``: DICOM sessions into XNAT, planned first, safe to rerun.

The CSV's columns and the decision rules are in ``config/README.md`` ("Importing DICOM").
``--dry-run`` prints the plan (``import_plan.tsv``) and sends nothing but reads.
"""

from __future__ import annotations

import argparse
import sys

from xnat_prep import paths
from xnat_prep.commands import options
from xnat_prep.errors import UserError
from xnat_prep.importing import sessions


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """Where the plan and receipts go, and whether to stop at the plan (every upload command)."""
    parser.add_argument(
        "--output-root", default="results", help="where the plan and receipts go (default: results)"
    )
    parser.add_argument("--dry-run", action="store_true", help="write the plan, send nothing")
    parser.add_argument("--summary", metavar="JSON", help="also write the run's summary here")


def add_csv_options(parser: argparse.ArgumentParser, columns: str) -> None:
    """``--csv`` and its column map (``columns``: the CSV's keys, for the help)."""
    parser.add_argument("--csv", required=True, help=f"the CSV: {columns}")
    parser.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="KEY=HEADER",
        help="read KEY from column HEADER when your header differs; repeatable",
    )


def add_import_options(parser: argparse.ArgumentParser) -> None:
    """The options ``import`` and ``push`` share: output, plan and how imports are sent."""
    add_output_options(parser)
    parser.add_argument(
        "--archive-pending",
        action="store_true",
        help="archive the rows' READY prearchive sessions (also those this run puts there)",
    )
    parser.add_argument(
        "--no-trigger-pipelines",
        dest="trigger_pipelines",
        action="store_false",
        help="ask XNAT not to run its pipelines on the imported sessions (bulk loads)",
    )
    parser.add_argument(
        "--direct-archive", action="store_true", help="send Direct-Archive=true (XNAT 1.8.3 and later)"
    )
    parser.add_argument(
        "--server-rewrites-dicom",
        action="store_true",
        help="the server's anonymization script rewrites headers: compare UIDs and counts, not digests",
    )
    parser.add_argument(
        "--wait-seconds",
        type=float,
        default=900.0,
        help="how long to wait for a session to reach the archive (default: 900)",
    )


def settings(args: argparse.Namespace) -> sessions.Settings:
    return sessions.Settings(
        trigger_pipelines=args.trigger_pipelines,
        direct_archive=args.direct_archive,
        server_rewrites=args.server_rewrites_dicom,
        wait_seconds=args.wait_seconds,
        archive_pending=args.archive_pending,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_csv_options(parser, "project,subject,session,source[,dest,on_conflict,ignore_unparsable]")
    parser.add_argument(
        "--only", metavar="PROJECT/SUBJECT/SESSION", help="import only this row (the workflow's per-row jobs)"
    )
    add_import_options(parser)
    options.add_connection_arguments(parser)


def column_map(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, header = pair.partition("=")
        if not sep or not key.strip() or not header.strip():
            raise UserError(f"--column {pair!r}: expected KEY=HEADER")
        out[key.strip().lower()] = header.strip()
    return out


def report(summary: dict, plan: str, dry_run: bool, out_json: str | None) -> None:
    from xnat_prep import receipts

    if dry_run:
        with open(plan, encoding="utf-8") as fh:
            sys.stdout.write(fh.read())
    actions = ", ".join(f"{n} {a}" for a, n in sorted(summary["actions"].items()))
    print(f"{summary['rows']} row(s): {actions}; plan in {plan}; {summary['http_requests']} request(s)")
    if out_json:
        receipts.write(out_json, summary)


def run(args: argparse.Namespace) -> int:
    summary = sessions.import_csv(
        options.connection(args),
        args.csv,
        output_root=args.output_root,
        columns=column_map(args.column),
        only=args.only,
        dry_run=args.dry_run,
        settings=settings(args),
    )
    plan = f"{args.output_root}/{paths.IMPORT_PLAN}"
    report(summary, plan, args.dry_run and not args.only, args.summary)
    return 0
