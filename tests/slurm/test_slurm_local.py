"""scripts/slurm-local.sh against the running test cluster: status tells, start is idempotent."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from slurm_helpers import REPO

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.usefixtures("slurm_cluster"),
    pytest.mark.skipif(os.geteuid() != 0, reason="scripts/slurm-local.sh manages daemons: root only"),
]
SCRIPT = REPO / "scripts" / "slurm-local.sh"


def script(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True, timeout=120)


def test_status_reports_a_usable_cluster() -> None:
    status = script("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "idle" in status.stdout or "mix" in status.stdout or "alloc" in status.stdout


def test_start_again_changes_nothing() -> None:
    pids = [line for line in script("status").stdout.splitlines() if "running (pid" in line]
    if not pids:
        pytest.skip("the running cluster was not started by scripts/slurm-local.sh")
    started = time.monotonic()
    again = script("start")
    assert again.returncode == 0, again.stderr
    assert time.monotonic() - started < 30  # no install, no daemon (re)start
    assert "started" not in again.stderr
    assert all(line in script("status").stdout for line in pids)  # the same daemons
