"""Options that several commands share: where XNAT is and how to trust it (never a password)."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any

from xnat_prep import config as config_mod
from xnat_prep.errors import UserError

if TYPE_CHECKING:  # imported where a connection is made: requests costs every other job ~0.1 s
    from xnat_prep.xnat_api import Connection


def add_connection_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--host``, ``--ca-bundle``, ``--insecure``, each with an environment default.

    The workflow hands its config's connection settings to its jobs that way (see
    ``config.export_for_jobs``): not ``params:``, so no rerun trigger.
    """
    parser.add_argument("--host", help=f"XNAT server URL (default: ${config_mod.HOST_ENV})")
    parser.add_argument(
        "--ca-bundle",
        default=os.environ.get(config_mod.CA_BUNDLE_ENV) or None,
        help="PEM file of CAs to trust for the server's TLS certificate "
        f"(default: ${config_mod.CA_BUNDLE_ENV})",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=os.environ.get(config_mod.INSECURE_ENV) == "1",
        help="skip TLS certificate verification (test servers only; "
        f"default: on if ${config_mod.INSECURE_ENV} is 1)",
    )


def connection(args: argparse.Namespace) -> Connection:
    """The server and its TLS settings from the options (``--host`` or ``XNAT_HOST``)."""
    from xnat_prep.xnat_api import Connection

    host = config_mod.check_host(args.host, "--host") if args.host else config_mod.host_from_env()
    return Connection.from_settings(host, verify_tls=not args.insecure, ca_bundle=args.ca_bundle)


def json_argument(text: str, option: str, expected: type) -> Any:
    """An option given as JSON (the workflow passes lists and mappings this way); one-line errors."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{option}: not valid JSON ({exc})") from None
    if not isinstance(value, expected):
        raise UserError(f"{option}: expected a JSON {expected.__name__}")
    return value


def add_dcm2niix_arguments(parser: argparse.ArgumentParser) -> None:
    """The conversion settings ``convert-scan`` and ``convert-session`` share (dcm2niix.* in the config)."""
    from xnat_prep.convert import GZ_LEVEL  # here: the download commands import this module too

    parser.add_argument("--extra", default="", help="extra dcm2niix options, one string (shell-quoted)")
    parser.add_argument(
        "--compress", choices=["y", "n"], default="y", help="y: .nii.gz (default), n: .nii (as dcm2niix -z)"
    )
    parser.add_argument(
        "--gz-level",
        type=int,
        choices=range(1, 10),
        default=GZ_LEVEL,
        metavar="1-9",
        help=f"gzip level of .nii.gz, as dcm2niix -1..-9 (default {GZ_LEVEL}; dcm2niix's own is 6)",
    )
    parser.add_argument(
        "--scrub-sidecars",
        action="store_true",
        help="remove the identifying keys dcm2niix copies into its JSON (for pseudonymised DICOM)",
    )


def dcm2niix_settings(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`add_dcm2niix_arguments`'s values as ``convert``'s keyword arguments."""
    return {
        "extra": args.extra,
        "compress": args.compress == "y",
        "gz_level": args.gz_level,
        "scrub_sidecars": args.scrub_sidecars,
    }
