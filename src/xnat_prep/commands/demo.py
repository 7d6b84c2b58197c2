"""``xnat-prep demo``: the whole workflow end to end on the bundled demo server, with zero set-up."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
from pathlib import Path

from xnat_prep.demo import (
    BIDS_PROJECT,
    DEMO_USER,
    PROJECT,
    bids_mapping,
    run_workflow,
    snakemake_command,
    write_config,
)
from xnat_prep.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", type=Path, help="where the demo lives (default: ./demo, with --bids ./demo-bids)"
    )
    parser.add_argument("--size", choices=["tiny", "small", "realistic"], default="small")
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=1, help="sessions per subject")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--progress",
        choices=["auto", "live", "plain"],
        default="auto",
        help="the progress view: redrawn in place (live), as lines (plain), or live in a terminal (auto)",
    )
    parser.add_argument(
        "--bids",
        action="store_true",
        help="a BIDS-typical study (demo-data --protocol bids, project BIDSDEMO) and the BIDS output "
        "mapped by config/bids.yaml, checked by the official validator",
    )
    parser.add_argument(
        "--keep-server", action="store_true", help="leave the server running after the run (Ctrl-C to stop)"
    )


def run(args: argparse.Namespace) -> int:
    from xnat_prep.demodata import seed_server
    from xnat_prep.server.testing import running_server

    demo_dir: Path = args.dir or Path("demo-bids" if args.bids else "demo")
    project = BIDS_PROJECT if args.bids else PROJECT
    demo_dir.mkdir(parents=True, exist_ok=True)
    with running_server(demo_dir / "xnat-data") as server:
        print(f"bundled XNAT server: {server.url}  (local demo account {DEMO_USER[0]}/{DEMO_USER[1]})")
        csv = demo_dir / "subjects.csv"
        sessions = seed_server(
            server.url,
            *DEMO_USER,
            project,
            args.subjects,
            args.sessions,
            args.size,
            csv=csv,
            protocol="bids" if args.bids else "default",
        )
        print(f"demo study: project {project}, {len(sessions)} sessions, subject list {csv}")
        mapping = bids_mapping() if args.bids else None
        cmd = snakemake_command(demo_dir, write_config(demo_dir, server.url, csv, mapping), args.cores)
        if args.progress != "auto":  # the default profile turns the view on (logger xnat-prep-progress)
            cmd += ["--logger-xnat-prep-progress-mode", args.progress]
        rc = run_workflow(cmd)
        results = (demo_dir / "results").resolve()
        if rc != 0:
            raise UserError(f"the workflow failed (exit {rc}); see the log above and {results}/report")
        print(f"\nresults: {results}")
        shown = [("DICOM", "dicom"), ("NIfTI", "nifti"), ("report", "report/summary.tsv")]
        shown += [("BIDS", "bids"), ("validator", "receipts/bids/bids_validate.json")] if args.bids else []
        for what, sub in shown:
            print(f"  {what + ':':8} {results}/{sub}")
        report = (demo_dir / "report.html").resolve()
        print(f"  HTML report: {shlex.join(cmd)} --report {report}")
        if args.keep_server:
            print(f"server still running at {server.url}; Ctrl-C to stop", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                server.process.wait()
    return 0
