"""``xnat-prep upload-resources --csv resources.csv``: files into scan or session resources.

Columns project,subject,session,scan,resource,path[,scan_type,series_description,on_conflict]
(``config/README.md``, "Uploading files into resources"). ``--dry-run`` writes the per-file plan
(``resources_plan.tsv``) and sends nothing but reads.
"""

from __future__ import annotations

import argparse

from xnat_prep import paths, receipts
from xnat_prep.commands import options
from xnat_prep.commands.import_ import add_csv_options, add_output_options, column_map
from xnat_prep.importing import resources


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_csv_options(
        parser, "project,subject,session,scan,resource,path[,scan_type,series_description,on_conflict]"
    )
    add_output_options(parser)
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
