"""``xnat-prep validate``: the workflow's parse-time checks, offline, without Snakemake.

The Snakefile runs :func:`offline_check` on every parse; this command runs the same on a config
before a long run (or in CI): the config against its schema, the server URL, the files the config
names, the subject CSV and the custom-variable values CSV. No XNAT request, no file written.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from xnat_prep import config as config_mod
from xnat_prep import subjects as subjects_mod
from xnat_prep.errors import UserError


def offline_check(config: dict, source: str) -> list[subjects_mod.Subject]:
    """Validate ``config`` in place (defaults filled in) and the files it names; return the subjects.

    Relative paths are relative to the working directory, as in Snakemake.
    """
    from xnat_prep import variables

    if not config:
        raise UserError(
            "no config: pass --configfile FILE (start from config/config.yaml; keys in config/README.md)"
        )
    config_mod.validate(config, source)
    config_mod.xnat_host(config)
    config_mod.check_files(config)
    found = subjects_mod.read(config["subjects"]["csv"], config["subjects"]["project"])
    values_csv = config["custom_variables"]["values_csv"]
    if config["custom_variables"]["enabled"] and values_csv:
        variables.read_values_csv(values_csv)
    return found


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
    found = offline_check(config, ", ".join(map(str, args.configfile)))
    projects = sorted({s.project for s in found})
    chosen = sum(bool(s.sessions) for s in found)
    print(
        f"OK: {len(found)} subject(s) in project(s) {', '.join(projects)}"
        + (f", {chosen} with chosen sessions" if chosen else "")
        + f"; XNAT {config_mod.xnat_host(config)}; results in {config['output_root']}"
    )
    return 0
