"""``pseudonymise``: a folder or zip of one subject's DICOM -> a pseudonymised folder (+ receipt).

The key is read from a file (``--key-file`` or ``$XNAT_PREP_PSEUDO_KEY_FILE``) that only its
owner can read; it is never an argument. The output folder is replaced atomically; files at
risk of burned-in text are quarantined (not written) and listed in the receipt.
"""

from __future__ import annotations

import argparse

from xnat_prep import receipts
from xnat_prep.errors import UserError
from xnat_prep.pseudonymise import (
    DEFAULT_OPTIONS,
    KEY_FILE_ENV,
    Profile,
    load_key,
    option_names,
    pseudonym_for,
    pseudonymise_tree,
    read_mapping,
    validate_options,
    validate_overrides,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="IN", help="folder or zip of the subject's DICOM files")
    parser.add_argument("out", metavar="OUT", help="output folder (replaced as a whole)")
    parser.add_argument(
        "--subject-id",
        required=True,
        help="stable XNAT subject ID (e.g. XNAT_S00001): date offset and default pseudonym derive from it",
    )
    parser.add_argument(
        "--key-file", help=f"key file, mode 600 (default: ${KEY_FILE_ENV}); never the key itself"
    )
    parser.add_argument(
        "--mapping", metavar="CSV", help="subject_id,pseudonym CSV (default: a keyed pseudonym)"
    )
    parser.add_argument(
        "--profile-option",
        action="append",
        metavar="NAME",
        help="a PS3.15 option, repeatable; replaces the defaults "
        f"({', '.join(DEFAULT_OPTIONS)}); 'basic' for none. Choices: {', '.join(option_names())}",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="TAG=ACTION",
        help="per-attribute action, repeatable: PatientAge=X, (0018,1030)=K (actions D Z X K C U)",
    )
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="TEXT",
        help="an XNAT label of the data (project, subject, session), repeatable: cleaned out of the "
        "text the profile keeps (descriptions, comments) like a patient name",
    )
    parser.add_argument("--namespace", default="", help="label mixed into every keyed value (e.g. a project)")
    parser.add_argument("--receipt", metavar="JSON", help="write the receipt here")
    parser.add_argument(
        "--reid-table",
        metavar="CSV",
        help="also write the re-identification table here (mode 600); off by default",
    )
    parser.add_argument(
        "--layout",
        choices=["series", "flat"],
        default="series",
        help="OUT/<series UID>/<SOP UID>.dcm (default) or OUT/<SOP UID>.dcm",
    )


def _overrides(pairs: list[str]) -> dict[int, str]:
    mapping: dict[str, str] = {}
    for pair in pairs:
        key, sep, action = pair.partition("=")
        if not sep:
            raise UserError(f"--override {pair!r}: expected TAG=ACTION")
        mapping[key.strip()] = action.strip()
    return validate_overrides(mapping, "--override")


def _options(given: list[str] | None) -> tuple[str, ...]:
    if not given:
        return DEFAULT_OPTIONS
    names = [n for n in given if n != "basic"]
    return validate_options(names, "--profile-option")


def run(args: argparse.Namespace) -> int:
    profile = Profile(_options(args.profile_option), _overrides(args.override))
    pseudonym = None
    if args.mapping:
        pseudonym = pseudonym_for(read_mapping(args.mapping), args.subject_id, args.mapping)
    key = load_key(args.key_file, args.namespace)
    data = pseudonymise_tree(
        args.source,
        args.out,
        key=key,
        subject_id=args.subject_id,
        pseudonym=pseudonym,
        profile=profile,
        reid_table=args.reid_table,
        layout=args.layout,
        labels=tuple(args.label),
    )
    if args.receipt:
        receipts.write(args.receipt, data)
    return 0
