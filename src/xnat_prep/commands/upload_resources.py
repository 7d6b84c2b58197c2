"""``xnat-prep upload-resources --csv resources.csv``: files into scan or session resources.

Columns project,subject,session,scan,resource,path[,scan_type,series_description,on_conflict]
(``config/README.md``, "Uploading files into resources"). ``--dry-run`` writes the per-file plan
(``resources_plan.tsv``) and sends nothing but reads.
"""

from __future__ import annotations

import argparse

from xnat_prep import paths, receipts
from xnat_prep.commands import options
from xnat_prep.commands.import_ import column_map
from xnat_prep.importing import resources


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--csv", required=True, help="resources CSV: project,subject,session,scan,resource,path"
    )
    parser.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="KEY=HEADER",
        help="read KEY (project, subject, session, scan, resource, path, ...) from column HEADER; repeatable",
    )
    parser.add_argument(
        "--output-root", default="results", help="where the plan and receipts go (default: results)"
    )
    parser.add_argument("--dry-run", action="store_true", help="write the plan, send nothing")
    parser.add_argument("--summary", metavar="JSON", help="also write the run's summary here")
    options.add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    summary = resources.upload_resources(
        options.connection(args),
        args.csv,
        output_root=args.output_root,
        columns=column_map(args.column),
        dry_run=args.dry_run,
    )
    files = ", ".join(f"{n} {d}" for d, n in sorted(summary["files"].items()))
    plan = f"{args.output_root}/{paths.RESOURCES_PLAN}"
    print(f"{summary['sessions']} session(s): {files}; plan in {plan}; {summary['http_requests']} request(s)")
    if args.summary:
        receipts.write(args.summary, summary)
    return 0
