"""``xnat-prep report``: what a run did, from the manifest and the receipts (no XNAT request)."""

from __future__ import annotations

import argparse
from pathlib import Path

from xnat_prep import paths, report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-root", required=True, type=Path, help="the workflow's output_root")
    parser.add_argument(
        "--no-upload",
        dest="upload",
        action="store_false",
        help="the run does not upload (no upload receipts)",
    )
    parser.add_argument(
        "--no-variables", dest="variables", action="store_false", help="the run sets no custom variables"
    )


def run(args: argparse.Namespace) -> int:
    root = args.output_root
    summary = root / paths.SUMMARY_TSV
    report.write_report(
        root,
        upload=args.upload,
        variables=args.variables,
        summary=summary,
        amounts_tsv=root / paths.DATA_AMOUNT_TSV,
        plot_png=root / paths.DATA_AMOUNT_PNG,
        projects_tsv=root / paths.REPORT_PROJECTS_TSV,
        scan_types_tsv=root / paths.REPORT_SCAN_TYPES_TSV,
    )
    found = report.problems(summary)
    print(f"report: {summary} ({len(found)} problem(s))")
    return 0  # problems are listed by the run's end (xnat_prep.run), which sets its exit status
