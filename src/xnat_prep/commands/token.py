"""``xnat-prep token``: mint or invalidate an XNAT alias token for one run.

A token is a revocable stand-in for the password: a run (or a cluster job array) gets
``XNAT_USER``/``XNAT_PASS`` = alias/secret, and ``token invalidate`` ends it afterwards.
``issue`` writes ``export`` lines only where the user points it: a new 0600 file
(``--output``), an open file descriptor (``--fd``, e.g. a pipe), or the terminal with an
explicit ``--stdout``. A secret printed by default would end up in scrollback and job logs.

    xnat-prep token issue --host URL --output ~/.xnat-run-token && . ~/.xnat-run-token
    xnat-prep token invalidate --host URL --from ~/.xnat-run-token
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from xnat_prep import credentials
from xnat_prep.commands import options
from xnat_prep.fsutil import atomic_write
from xnat_prep.xnat_api import Client


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    issue = sub.add_parser("issue", help="mint a token with the resolved credentials")
    where = issue.add_mutually_exclusive_group(required=True)
    where.add_argument("--output", help="write the export lines to this file (created 0600, replaced)")
    where.add_argument("--fd", type=int, help="write the export lines to this open file descriptor")
    where.add_argument("--stdout", action="store_true", help="print the export lines (the secret) to stdout")
    options.add_connection_arguments(issue)
    invalidate = sub.add_parser("invalidate", help="invalidate a token")
    invalidate.add_argument(
        "--from", dest="source", help="file written by 'token issue' (default: the resolved credentials)"
    )
    options.add_connection_arguments(invalidate)


def run(args: argparse.Namespace) -> int:
    connection = options.connection(args)
    if args.action == "issue":
        with Client(connection) as client:
            token = client.mint_token()
        text = credentials.export_lines(token)
        if args.output:
            atomic_write(Path(args.output), text, mode=0o600)
        elif args.fd is not None:
            with os.fdopen(args.fd, "w", closefd=False) as out:
                out.write(text)
        else:
            sys.stdout.write(text)
        print(f"token {token.user} issued by {connection.host}", file=sys.stderr)
    else:
        token = (
            credentials.read_exports(Path(args.source))
            if args.source
            else credentials.resolve(connection.host)
        )
        with Client(connection, token) as client:
            client.invalidate_token(token)
        print(f"token {token.user} invalidated", file=sys.stderr)
    return 0
