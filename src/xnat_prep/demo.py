"""`xnat-prep demo`: the whole workflow end to end on the bundled server, with zero set-up.

Starts the bundled XNAT-compatible server on loopback with its local-demo account, seeds a demo
study through the server's import service, writes a config and a subject CSV, runs the Snakemake
workflow against it, and prints where the results are. A second run reuses the server data and the
results, so it finishes at once (the workflow has nothing left to do).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import yaml

CHECKOUT = Path(__file__).resolve().parents[2]
DEMO_USER = ("admin", "admin")  # the bundled server's first-run account, as on a fresh XNAT
PROJECT = "DEMO"
BIDS_PROJECT = "BIDSDEMO"  # the BIDS-typical protocol (`xnat-prep demo --bids`)


def write_config(demo_dir: Path, url: str, csv: Path, bids_mapping: Path | None = None) -> Path:
    """Write the demo's workflow config (commented defaults live in config/config.yaml)."""
    config: dict = {
        "xnat": {"host": url},
        "subjects": {"csv": str(csv.resolve())},
        "output_root": str((demo_dir / "results").resolve()),
    }
    if bids_mapping is not None:
        config["bids"] = {"mapping": str(bids_mapping.resolve())}
    path = demo_dir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def workflow_snakefile() -> Path:
    """The workflow's entry point: the checkout's, or the copy a wheel installs under ``share/``."""
    for root in (CHECKOUT, Path(sysconfig.get_path("data")) / "share" / "xnat-prep"):
        if (root / "Snakefile").is_file() and (root / "workflow" / "Snakefile").is_file():
            return root / "Snakefile"
    raise FileNotFoundError("the xnat-prep workflow (Snakefile) is not installed")


def bids_mapping() -> Path:
    """The demo protocol's BIDS mapping: the checkout's config/bids.yaml, or a wheel's copy."""
    path = workflow_snakefile().parent / "config" / "bids.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the demo's BIDS mapping is not installed")
    return path


def snakemake_command(demo_dir: Path, configfile: Path, cores: int) -> list[str]:
    """The command a user would type for this demo (no credentials in it)."""
    return [
        "snakemake",
        "--snakefile",
        str(workflow_snakefile()),
        "--directory",
        str(demo_dir.resolve()),
        "--configfile",
        str(configfile.resolve()),
        "--cores",
        str(cores),
    ]


def run_workflow(cmd: list[str]) -> int:
    """Run snakemake as a user would, with the demo account in the environment only."""
    env = dict(os.environ, XNAT_USER=DEMO_USER[0], XNAT_PASS=DEMO_USER[1])
    print("+ " + shlex.join(cmd), flush=True)
    return subprocess.call([sys.executable, "-m", *cmd], env=env)
