"""``xnat-prep demo-data``: write demo sessions to a folder (``--out``) or seed a server (``--server``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from xnat_prep import credentials
from xnat_prep.commands import options
from xnat_prep.demodata.protocols import PROTOCOL_NAMES, SIZES
from xnat_prep.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("destination (one of)")
    where.add_argument(
        "--out", type=Path, help="write DIR/{subject}/{session}/{series}-{desc}/NNNN.dcm and DIR/subjects.csv"
    )
    options.add_connection_arguments(where)
    where.add_argument(
        "--server",
        dest="host",
        help="same as --host: the XNAT to seed through its import "
        "service (user/password from XNAT_USER/XNAT_PASS, "
        "~/.netrc or ~/.xnat, never from the command line)",
    )
    what = parser.add_argument_group("what to make")
    what.add_argument(
        "--size",
        choices=SIZES,
        default="tiny",
        help="tiny (< 2 MB/session, for tests), small (a few MB), realistic (~200 MB)",
    )
    what.add_argument("--subjects", type=int, default=1)
    what.add_argument("--sessions", type=int, default=1, help="sessions per subject")
    what.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    what.add_argument(
        "--edge-cases",
        action="store_true",
        help="add a duplicate scan type, an untyped scan, non-image series (Secondary "
        "Capture, SR report) and a series dcm2niix cannot convert",
    )
    what.add_argument(
        "--protocol",
        choices=PROTOCOL_NAMES,
        default="default",
        help="the series of a session: default, or a BIDS-typical session (multi-run task BOLD with "
        "SBRef, spin-echo and GRE fieldmaps, multi-echo, DWI) named as a scanner names them (bids) "
        "or with ReproIn names (reproin)",
    )
    what.add_argument("--project", default="DEMO", help="project ID (default: DEMO)")
    what.add_argument(
        "--labels",
        choices=("prefixed", "numeric"),
        default="prefixed",
        help="SUB001/SUB001_MR1 (default) or numeric-looking 001/00101",
    )
    parser.add_argument("--csv", type=Path, help="when seeding: write the subject CSV here")
    parser.add_argument("--workers", type=int, default=2, help="when seeding: sessions in flight at once")


def run(args: argparse.Namespace) -> int:
    if (args.out is None) == (args.host is None):
        raise UserError("give exactly one of --out DIR or --server URL")
    start = time.monotonic()
    if args.out is not None:
        if args.csv is not None:
            raise UserError("--csv is for --server; with --out the subject CSV is DIR/subjects.csv")
        from xnat_prep.demodata.generate import generate

        plans = generate(
            args.out,
            args.size,
            args.subjects,
            args.sessions,
            args.seed,
            args.edge_cases,
            args.project,
            args.labels,
            args.protocol,
        )
        print(
            f"wrote {len(plans)} session(s) to {args.out} and {args.out / 'subjects.csv'} "
            f"in {time.monotonic() - start:.1f} s"
        )
        return 0
    from xnat_prep.demodata.seed import seed_server

    connection = options.connection(args)
    host = connection.host
    creds = credentials.resolve(host)
    sessions = seed_server(
        host,
        creds.user,
        creds.password,
        args.project,
        args.subjects,
        args.sessions,
        args.size,
        args.seed,
        args.edge_cases,
        args.workers,
        style=args.labels,
        csv=args.csv,
        verify_tls=not args.insecure,
        ca_bundle=args.ca_bundle,
        protocol=args.protocol,
    )
    print(
        f"project {args.project} on {host} holds {len(sessions)} demo session(s) "
        f"({time.monotonic() - start:.1f} s)"
    )
    return 0
