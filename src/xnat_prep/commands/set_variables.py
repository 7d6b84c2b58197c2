"""``xnat-prep set-variables``: custom variables on a session, derived and from the user's CSV."""

from __future__ import annotations

import argparse

from xnat_prep import convert, variables
from xnat_prep.commands import options
from xnat_prep.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session-id", required=True, help="the session's XNAT accession ID")
    parser.add_argument("--project", default="", help="the session's project (named when a write is refused)")
    parser.add_argument(
        "--session", default="", help="the session's label (to pick its rows of --values-csv)"
    )
    parser.add_argument(
        "--convert-receipts",
        nargs="*",
        default=[],
        metavar="JSON",
        help="the convert receipts of its scans (a session's receipt stands for its scans')",
    )
    parser.add_argument("--prefix", default="xnatprep_", help="prefix of the workflow's own variables")
    parser.add_argument(
        "--derived",
        default="[]",
        help='derived variables as JSON, as in the config: [{"name": "bold_volumes", "measure": '
        f'"n_volumes", "scan_types": ["*bold*"]}}] (measures: {", ".join(variables.MEASURES)})',
    )
    parser.add_argument(
        "--values-csv", nargs="*", default=[], metavar="CSV", help="user values, columns session,field,value"
    )
    parser.add_argument("--receipt", required=True, help="receipt JSON to write")
    options.add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    derived = variables.check_derived(options.json_argument(args.derived, "--derived", list), "--derived")
    if len(args.values_csv) > 1:
        raise UserError("--values-csv: give one CSV file")
    values_csv = args.values_csv[0] if args.values_csv else None
    values = variables.session_values(
        convert.scan_receipts(args.convert_receipts),
        args.prefix,
        derived,
        values_csv,
        (args.session, args.session_id),
    )
    if not values:
        raise UserError("nothing to set: give --convert-receipts and/or --values-csv")
    variables.set_variables(
        options.connection(args),
        session_id=args.session_id,
        values=values,
        receipt=args.receipt,
        project=args.project,
    )
    return 0
