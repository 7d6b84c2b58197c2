"""``token``: mint or invalidate an XNAT alias token for one run.

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
import shlex
import sys
import tempfile
from pathlib import Path

from xnat_prep import credentials
from xnat_prep.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    issue = sub.add_parser("issue", help="mint a token with the resolved credentials")
    where = issue.add_mutually_exclusive_group(required=True)
    where.add_argument("--output", help="write the export lines to this file (created 0600, replaced)")
    where.add_argument("--fd", type=int, help="write the export lines to this open file descriptor")
    where.add_argument("--stdout", action="store_true", help="print the export lines (the secret) to stdout")
    credentials.add_connection_arguments(issue)
    invalidate = sub.add_parser("invalidate", help="invalidate a token")
    invalidate.add_argument(
        "--from", dest="source", help="file written by 'token issue' (default: the resolved credentials)"
    )
    credentials.add_connection_arguments(invalidate)


def run(args: argparse.Namespace) -> int:
    host = credentials.host_from(args)
    verify: bool | str = args.ca_bundle or not args.insecure
    if args.action == "issue":
        token = credentials.mint_token(host, credentials.resolve(host), verify)
        text = export_lines(token)
        if args.output:
            write_private(Path(args.output), text)
        elif args.fd is not None:
            with os.fdopen(args.fd, "w", closefd=False) as out:
                out.write(text)
        else:
            sys.stdout.write(text)
        print(f"token {token.user} issued by {host}", file=sys.stderr)
    else:
        token = read_exports(Path(args.source)) if args.source else credentials.resolve(host)
        credentials.invalidate_token(host, token, verify)
        print(f"token {token.user} invalidated", file=sys.stderr)
    return 0


def export_lines(token: credentials.Credentials) -> str:
    """Shell lines that put the token where ``credentials.resolve`` looks first."""
    return f"export XNAT_USER={shlex.quote(token.user)}\nexport XNAT_PASS={shlex.quote(token.password)}\n"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (the temp file is 0600 from birth)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_exports(path: Path) -> credentials.Credentials:
    """The token from a file written by ``token issue``."""
    found: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None
    for line in lines:
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, _, value = words[1].partition("=")
            found[key] = value
    if not found.get("XNAT_USER") or not found.get("XNAT_PASS"):
        raise UserError(f"{path}: no 'export XNAT_USER=...' and 'export XNAT_PASS=...' lines")
    return credentials.Credentials(found["XNAT_USER"], found["XNAT_PASS"], f"token file {path}")
