"""Running the project's Snakemake workflow the way a user does (repo Snakefile, its default
workflow profile, a config file, credentials in the environment)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench import measure
from bench.study import PASSWORD, USER

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
STAGES = Path(__file__).resolve().parent / "stages.smk"  # the workflow + one target rule per stage


def env(shim: Path) -> dict[str, str]:
    """The environment of every measured process: credentials, and the scontrol shim first on PATH."""
    return dict(
        os.environ, XNAT_USER=USER, XNAT_PASS=PASSWORD, PATH=f"{shim}{os.pathsep}{os.environ['PATH']}"
    )


@dataclass(frozen=True)
class Workflow:
    """One workflow working directory (config, logs, .snakemake, results under ``results/``)."""

    workdir: Path
    host: str
    subjects_csv: Path
    cores: int
    max_connections: int
    shim: Path

    @property
    def results(self) -> Path:
        return self.workdir / "results"

    @property
    def configfile(self) -> Path:
        return self.workdir / "config.yaml"

    def write_config(self, **overrides: object) -> None:
        config: dict[str, object] = {
            "xnat": {"host": self.host, "max_connections": self.max_connections},
            "subjects": {"csv": str(self.subjects_csv)},
            "output_root": str(self.results),
            **overrides,
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.configfile.write_text(yaml.safe_dump(config, sort_keys=False))

    def command(
        self, *args: str, snakefile: Path = SNAKEFILE, cores: bool = True, overlays: Sequence[Path] = ()
    ) -> list[str]:
        """The snakemake command line; ``overlays`` are config files merged over the config."""
        return [
            *(
                sys.executable,
                "-m",
                "snakemake",
                "--snakefile",
                str(snakefile),
                "--directory",
                str(self.workdir),
            ),
            *("--configfile", str(self.configfile), *map(str, overlays)),
            *(("--cores", str(self.cores)) if cores else ()),
            *args,
        ]

    def run(
        self,
        args: Sequence[str],
        log_name: str,
        check: bool = True,
        timeout: float | None = None,
        **command: Any,
    ) -> measure.Run:
        """Run snakemake with ``args``; its output goes to ``<workdir>/bench-<log_name>.log``."""
        if not self.configfile.exists():
            self.write_config()
        log = self.workdir / f"bench-{log_name}.log"
        return measure.run(
            self.command(*args, **command), env=env(self.shim), log=log, check=check, timeout=timeout
        )

    def stage(self, target: str, log_name: str, *options: str) -> measure.Run:
        """One stage (``download_stage`` / ``convert_stage`` of bench/stages.smk) with the default
        workflow profile, which Snakemake only finds by itself next to the repository's Snakefile;
        ``options`` for snakemake (``-n -p``: what it would run)."""
        profile = REPO / "profiles" / "default"
        cmd = self.command("--workflow-profile", str(profile), *options, target, snakefile=STAGES)
        return measure.run(cmd, env=env(self.shim), log=self.workdir / f"bench-{log_name}.log")
