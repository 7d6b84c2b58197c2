"""Fixtures of the Slurm tests: the cluster check, and the bundled server with a tiny demo study.

The tests marked ``slurm`` need a responding Slurm cluster with accounting (``sacct``), such as
the single-node one of ``scripts/slurm-local.sh``; without one they skip and say how to start it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slurm_helpers import Demo, cluster_problem

from xnat_prep.server.testing import running_server


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    problem = cluster_problem()
    if problem:
        pytest.skip(f"no usable Slurm cluster: {problem} (start one: sudo bash scripts/slurm-local.sh start)")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One subject with two tiny sessions (4 scans each): Slurm jobs cost seconds each on 2 cores."""
    from xnat_prep.demodata import seed_server

    base = tmp_path_factory.mktemp("slurm-demo")
    with running_server(base / "xnat-data") as server:
        csv = base / "subjects.csv"
        seed_server(server.url, *server.admin, "DEMO", 1, 2, "tiny", csv=csv)
        yield Demo(server, csv)
