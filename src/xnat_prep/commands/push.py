"""``xnat-prep push (--pseudonymised | --source-dir DIR) --project B --host TARGET``:
pseudonymised session copies into a target project, through the import path (plan, decisions,
verification, receipts).

``--pseudonymised`` takes the pseudonymise step's output under ``--output-root`` (the workflow's
``push`` target), labels from the pseudonyms; ``--source-dir`` a tree already laid out as
``{subject}/{session}/`` with the labels to use.

The target is never taken from ``XNAT_HOST`` (that is the source): ``--host`` or
``XNAT_PUSH_HOST``; its credentials from ``XNAT_PUSH_USER``/``XNAT_PUSH_PASS`` or its own netrc or
``~/.xnat`` entry (the source's only when both are the same server).
"""

from __future__ import annotations

import argparse
import os

from xnat_prep import config as config_mod
from xnat_prep import paths, variables
from xnat_prep.commands import options
from xnat_prep.commands.import_ import add_import_options, report, settings
from xnat_prep.errors import UserError
from xnat_prep.importing import push
from xnat_prep.xnat_api import Connection

HOST_ENV, CA_BUNDLE_ENV, INSECURE_ENV = "XNAT_PUSH_HOST", "XNAT_PUSH_CA_BUNDLE", "XNAT_PUSH_INSECURE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--pseudonymised",
        action="store_true",
        help="push every selected session of the --output-root's manifest as the pseudonymise step "
        "left it (under <output root>/pseudo/), labelled with the pseudonyms",
    )
    source.add_argument(
        "--source-dir", help="pseudonymised DICOM, one {subject}/{session}/ folder per session (its labels)"
    )
    parser.add_argument("--project", required=True, help="the target project")
    parser.add_argument(
        "--on-conflict",
        default="skip",
        choices=["skip", "append", "replace"],
        help="as the import CSV's column",
    )
    add_import_options(parser)
    copy = parser.add_argument_group("after the DICOM, onto the copies (--pseudonymised only)")
    copy.add_argument(
        "--nifti-resource",
        metavar="LABEL",
        help="upload each converted scan's NIfTI results into this scan resource of the copy",
    )
    copy.add_argument(
        "--variables", action="store_true", help="set the custom variables on the copy (as set-variables)"
    )
    copy.add_argument("--prefix", default="xnatprep_", help="prefix of the workflow's own variables")
    copy.add_argument(
        "--derived", default="[]", help="derived variables as JSON, as set-variables takes them"
    )
    copy.add_argument("--values-csv", metavar="CSV", help="user values, columns session,field,value")
    target = parser.add_argument_group("the target server (never the source's settings)")
    target.add_argument("--host", default=os.environ.get(HOST_ENV) or None, help=f"default: ${HOST_ENV}")
    target.add_argument(
        "--ca-bundle", default=os.environ.get(CA_BUNDLE_ENV) or None, help=f"default: ${CA_BUNDLE_ENV}"
    )
    target.add_argument(
        "--insecure",
        action="store_true",
        default=os.environ.get(INSECURE_ENV) == "1",
        help=f"skip TLS verification of the target (default: on if ${INSECURE_ENV} is 1)",
    )


def run(args: argparse.Namespace) -> int:
    if not args.host:
        raise UserError(f"push: no target server: pass --host or set {HOST_ENV}")
    host = config_mod.check_host(args.host, "--host")
    target = Connection.from_settings(host, verify_tls=not args.insecure, ca_bundle=args.ca_bundle)
    common = {
        "project": args.project,
        "source_host": os.environ.get(config_mod.HOST_ENV),
        "on_conflict": args.on_conflict,
        "dry_run": args.dry_run,
        "settings": settings(args),
    }
    if args.pseudonymised:
        derived = None
        if args.nifti_resource or args.variables:
            definitions = variables.check_derived(
                options.json_argument(args.derived, "--derived", list), "--derived"
            )
            derived = push.Derived(
                args.nifti_resource, args.variables, args.prefix, tuple(definitions), args.values_csv
            )
        summary = push.push_pseudonymised(target, args.output_root, derived=derived, **common)
    elif args.nifti_resource or args.variables:
        raise UserError("push: --nifti-resource and --variables go with --pseudonymised")
    else:
        summary = push.push(target, args.source_dir, output_root=args.output_root, **common)
    report(summary, f"{args.output_root}/{paths.PUSH_PLAN}", args.dry_run, args.summary)
    return 0
