"""``xnat-prep summary``: what projects hold on XNAT (subjects, sessions, scans by type, files, bytes)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from xnat_prep import config as config_mod
from xnat_prep import summary
from xnat_prep.commands import options
from xnat_prep.errors import UserError
from xnat_prep.xnat_api import AccessDenied, Client, NotFound


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", action="append", required=True, help="project ID; repeatable")
    parser.add_argument(
        "--counts-only",
        action="store_true",
        help="counts without files and bytes: 2 requests per project, whatever its size "
        "(the full summary lists each session's files: 2 + 1 per session)",
    )
    parser.add_argument("--out", type=Path, default=Path("summary"), help="folder for the TSVs and plots")
    parser.add_argument(
        "--max-connections",
        type=int,
        default=int(os.environ.get(config_mod.MAX_CONNECTIONS_ENV) or 4),
        help="sessions whose files are listed at once, each on its own connection "
        f"(default: ${config_mod.MAX_CONNECTIONS_ENV} or 4)",
    )
    options.add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    connection = options.connection(args)
    with Client(connection) as client:
        projects = []
        for project in dict.fromkeys(args.project):
            try:
                projects.append(
                    summary.collect(
                        client,
                        project,
                        counts_only=args.counts_only,
                        connect=lambda: Client(connection, client.credentials),
                        max_connections=max(1, args.max_connections),
                    )
                )
            except (NotFound, AccessDenied) as exc:
                raise UserError(f"project {project}: not found, or no access for this user ({exc})") from None
    for data in projects:
        if not data.subjects and not data.sessions:  # a real answer, but rarely the one meant
            print(
                f"xnat-prep summary: project {data.project} is empty: no subjects, no sessions",
                file=sys.stderr,
            )
    found = summary.tables(projects)
    written = summary.write(found, args.out)
    print(found["projects"].to_string(index=False))
    print(f"summary: {len(written)} files in {args.out} ({sum(p.requests for p in projects)} requests)")
    return 0
