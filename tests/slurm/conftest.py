"""Fixtures of the Slurm tests: the cluster check, and the bundled server with a tiny demo study.

The tests marked ``slurm`` need a responding Slurm cluster with accounting (``sacct``), such as
the single-node one of ``scripts/slurm-local.sh``; without one they skip and say how to start it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slurm_helpers import Demo, cluster_problem, seeded_demo


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    problem = cluster_problem()
    if problem:
        pytest.skip(f"no usable Slurm cluster: {problem} (start one: sudo bash scripts/slurm-local.sh start)")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One subject with two tiny sessions (4 scans each): Slurm jobs cost seconds each on 2 cores."""
    yield from seeded_demo(tmp_path_factory, "slurm-demo", 1, 2)
