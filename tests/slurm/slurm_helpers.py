"""Helpers of the Slurm tests: the profiles, `snakemake` as a subprocess, and the local cluster."""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from xnat_prep.server.testing import ServerHandle, running_server

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "profiles"


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def explain(result: Result, workdir: Path) -> str:
    """The end of a run's output and of the Slurm logs it kept (those of failed jobs), for asserts."""
    logs = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    return "\n".join([result.output[-3000:], *(f"--- {log}\n{log.read_text()[-2000:]}" for log in logs[-3:])])


@dataclass
class Demo:
    server: ServerHandle
    csv: Path

    def config(self, **sections: Any) -> dict[str, Any]:
        """The run config for the demo study, ``sections`` on top."""
        return {
            "xnat": {"host": self.server.url, "max_connections": 2, "alias_token": True},
            "subjects": {"csv": str(self.csv)},
            **sections,
        }

    def credentials(self) -> dict[str, str]:
        """The account the runs use, for the environment (never the command line)."""
        user, password = self.server.admin
        return {"XNAT_USER": user, "XNAT_PASS": password}


def write_config(workdir: Path, config: dict[str, Any]) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    """`snakemake` on the repository's workflow, run in ``workdir`` with its config.yaml."""
    return [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(workdir / "config.yaml"), *args,
    ]  # fmt: skip


def profile_args(*names: str, workflow: str | None = None) -> list[str]:
    """``--profile`` for each name in ``names`` and ``--workflow-profile`` for ``workflow``.

    A name may be a profile directory under profiles/ or a YAML file path relative to it.
    """
    args = [a for name in names for a in ("--profile", str(PROFILES / name))]
    return args + (["--workflow-profile", str(PROFILES / workflow)] if workflow else [])


def run(cmd: list[str], env: dict[str, str], timeout: float) -> Result:
    """Run ``cmd`` in its own session; on timeout kill the whole session, then fail."""
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{' '.join(cmd[:6])}... ran longer than {timeout} s:\n{stderr[-3000:]}")
    return Result(proc.returncode, stdout, stderr)


def base_env(home: Path) -> dict[str, str]:
    """This process's environment without XNAT credentials, with HOME in ``home`` (no ~/.netrc)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XNAT", "NETRC", "SNAKEMAKE_PROFILE"))}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    return env


# ---------------------------------------------------------------------------------------------
# The cluster


def _answers(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


@functools.cache
def cluster_problem() -> str | None:
    """Why no Slurm cluster can run the tests here, or None when one can."""
    if shutil.which("sinfo") is None:
        return "the Slurm client tools (sinfo) are not installed"
    # A controller that is down makes Slurm clients retry for MessageTimeout (~10 s): bound it.
    sinfo = _answers(["sinfo", "-h", "-o", "%a %t"], timeout=15)
    if sinfo is None or sinfo.returncode != 0:
        return "Slurm is installed but its controller does not answer (sinfo failed)"
    if not re.search(r"^up (idle|mix|alloc)", sinfo.stdout, re.M):
        return f"no Slurm node takes jobs (sinfo: {sinfo.stdout.strip()!r})"
    sacct = _answers(["sacct", "-n", "-X", "-S", "now-1minutes"], timeout=15)
    if sacct is None or sacct.returncode != 0:
        return "Slurm runs without accounting: sacct fails (the tests count jobs with it)"
    return None


@functools.cache
def slurm_installed_but_down() -> bool:
    """True when `scontrol` exists but the controller does not answer within 3 s."""
    if shutil.which("scontrol") is None:
        return False
    ping = _answers(["scontrol", "ping"], timeout=3)
    return ping is None or "is UP" not in ping.stdout


def dry_run_env(tmp: Path) -> dict[str, str]:
    """The environment for a dry run; with Slurm installed but down, a `scontrol` that fails at once.

    The Slurm executor plugin runs `scontrol show config` when it is imported, in every Snakemake
    process; with an unreachable controller that call takes ~9 s before it fails (it is only used
    to recommend a status command). A dry run needs nothing from Slurm, so a stand-in that fails
    at once gives the plugin the same answer without the wait.
    """
    env = base_env(tmp / "home")
    if slurm_installed_but_down():
        stub = tmp / "bin" / "scontrol"
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\necho 'scontrol: controller down (test stand-in)' >&2\nexit 1\n")
        stub.chmod(0o755)
        env["PATH"] = f"{stub.parent}{os.pathsep}{env['PATH']}"
    return env


@dataclass(frozen=True)
class ClusterJob:
    job_id: str
    state: str
    submitted: str
    workdir: str


def cluster_jobs(workdir: Path, since: str) -> list[ClusterJob]:
    """The cluster jobs (not steps) submitted in ``workdir`` since ``since``, as accounting has them.

    ``since`` is a local time as sacct writes it (``2026-01-31T12:00:00``).
    """
    proc = subprocess.run(
        ["sacct", "-n", "-X", "--parsable2", "-S", since, "--format=JobID,State,Submit,WorkDir"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    jobs = [ClusterJob(*line.split("|", 3)) for line in proc.stdout.splitlines() if line.count("|") >= 3]
    # -S also selects jobs submitted before ``since`` that were still running after it
    return [job for job in jobs if Path(job.workdir) == workdir and job.submitted >= since]


def queued_jobs(workdir: Path) -> dict[str, str]:
    """Job ID -> state of the jobs of ``workdir`` that Slurm still holds (pending or running)."""
    proc = subprocess.run(["squeue", "-h", "-o", "%i|%T|%Z"], capture_output=True, text=True, timeout=60)
    rows = [line.split("|", 2) for line in proc.stdout.splitlines() if line.count("|") == 2]
    return {job_id: state for job_id, state, where in rows if Path(where) == workdir}


def cancel_jobs(workdir: Path) -> None:
    """scancel whatever Slurm still holds for ``workdir`` (cleanup after a failed test)."""
    ids = list(queued_jobs(workdir))
    if ids:
        subprocess.run(["scancel", *ids], timeout=60, check=False)


def seeded_demo(factory: pytest.TempPathFactory, name: str, subjects: int, sessions: int) -> Iterator[Demo]:
    """A bundled server holding DEMO: ``subjects`` x ``sessions`` tiny sessions (4 scans each)."""
    from xnat_prep.demodata import seed_server

    base = factory.mktemp(name)
    with running_server(base / "xnat-data") as server:
        csv = base / "subjects.csv"
        seed_server(server.url, *server.admin, "DEMO", subjects, sessions, "tiny", csv=csv)
        yield Demo(server, csv)
