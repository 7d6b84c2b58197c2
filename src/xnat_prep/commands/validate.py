"""``xnat-prep validate``: the workflow's parse-time checks, offline, without Snakemake."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from xnat_prep import config as config_mod


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configfile", action="append", required=True, help="workflow config; repeatable")
    parser.add_argument(
        "--directory", type=Path, default=Path("."), help="the working directory paths are relative to"
    )


def run(args: argparse.Namespace) -> int:
    files = [Path(f).resolve() for f in args.configfile]
    config: dict = {}
    for path in files:
        config_mod.merge(config, config_mod.read_yaml(path))
    os.chdir(args.directory)
    found = config_mod.offline_check(config, ", ".join(map(str, args.configfile)))
    config_mod.pseudonymisation(config)  # the key file, options and mapping, as the workflow checks them
    if not config["subjects"]["csv"]:
        print(
            f"OK: no subject CSV (an import-only config: the import targets only); "
            f"XNAT {config_mod.xnat_host(config)}; results in {config['output_root']}"
        )
        return 0
    projects = sorted({s.project for s in found})
    chosen = sum(bool(s.sessions) for s in found)
    print(
        f"OK: {len(found)} subject(s) in project(s) {', '.join(projects)}"
        + (f", {chosen} with chosen sessions" if chosen else "")
        + f"; XNAT {config_mod.xnat_host(config)}; results in {config['output_root']}"
    )
    return 0
