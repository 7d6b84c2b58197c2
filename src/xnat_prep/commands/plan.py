"""``xnat-prep plan``: what a run will do (scans, bytes, requests, jobs, disk, time), before any download."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from xnat_prep import config as config_mod
from xnat_prep import discover, plan
from xnat_prep.commands import bids_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--configfile", action="append", help="workflow config (repeatable): run discovery, then plan"
    )
    source.add_argument(
        "--output-root", type=Path, help="plan from the manifest already there (the workflow's plan rule)"
    )
    parser.add_argument("--no-upload", dest="upload", action="store_false", help="with --output-root")
    parser.add_argument("--no-variables", dest="variables", action="store_false", help="with --output-root")
    parser.add_argument("--profile", help="Snakemake profile folder whose grouping gives the cluster jobs")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores converting at once")
    parser.add_argument(
        "--store",
        choices=["files", "zip"],
        default="files",
        help="with --output-root: dicom.store of the run (files per DICOM instance, or one zip per scan)",
    )
    parser.add_argument(
        "--download-mb-s", type=float, default=plan.DOWNLOAD_MB_S, help="expected download rate (MB/s)"
    )
    parser.add_argument(
        "--bids-mapping", help="with --output-root: lint this bids.yaml (errors: exit 1, nothing downloaded)"
    )
    bids_dataset.add_lint_arguments(parser)


def run(args: argparse.Namespace) -> int:
    root, upload, variables, store = args.output_root, args.upload, args.variables, args.store
    mapping, strict, pseudo = args.bids_mapping, args.strict, bids_dataset.pseudo_settings(args)
    if args.configfile:
        config = config_mod.load(args.configfile)
        subjects = config_mod.offline_check(config, ", ".join(args.configfile))
        config_mod.require_subjects(config)
        root = Path(config["output_root"])
        upload, variables = config["upload"]["enabled"], config["custom_variables"]["enabled"]
        store = config["dicom"]["store"]
        mapping, strict = config["bids"]["mapping"], config["bids"]["strict"]
        if config["pseudonymise"]["enabled"]:
            settings = config["pseudonymise"]
            pseudo = {k: settings[k] for k in ("key_file", "namespace", "mapping_csv")}
        if mapping:
            from xnat_prep import bids

            bids.load(mapping)  # a broken mapping stops before discovery
        discover.run_discovery(
            config_mod.connection(config),
            subjects,
            discover.Selection.from_config(config["scans"]),
            root,
            config["xnat"]["max_connections"],
        )
    found = plan.build(
        root,
        upload=upload,
        variables=variables,
        cores=args.cores,
        group_components=plan.grouping(args.profile),
        download_mb_s=args.download_mb_s,
        store=store,
    )
    plan_tsv, inventory_tsv = plan.write(found, root)
    print(found.text())
    print(f"plan: {plan_tsv}, inventory: {inventory_tsv}")
    if mapping:
        from xnat_prep import bids, paths

        _, lines = bids.lint(root, mapping, strict=strict, pseudo=pseudo)
        for line in lines:
            print(line)
        print(f"BIDS mapping {mapping}: no error; names in {root / paths.BIDS_PLAN_TSV}")
    return 0
