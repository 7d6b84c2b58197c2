"""The XNAT connection cap on a real Slurm cluster, with the download jobs on the compute node
(cluster.network_on_submit_host: false) or on the head (true: the slot pool), and k = 2 scans at
once per session: the server's own count of requests in flight never exceeds the cap, also when
`--resources xnat_api=N` lowers it below k on the command line (which only the main Snakemake
process sees)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from slurm_helpers import (
    Demo,
    base_env,
    cancel_jobs,
    explain,
    profile_args,
    run,
    seeded_demo,
    snakemake_cmd,
    write_config,
)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

ZIP_PATH = "/resources/DICOM/files"


@pytest.fixture(scope="module")
def two_sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """Two subjects with one tiny session (4 scans) each."""
    yield from seeded_demo(tmp_path_factory, "slurm-cap", 2, 1)


def admin(demo: Demo, method: str, path: str, **kwargs) -> dict:
    resp = requests.request(method, demo.server.url + path, auth=demo.server.admin, timeout=30, **kwargs)
    resp.raise_for_status()
    return resp.json()


@pytest.mark.parametrize(
    ("extra", "cap", "k_seen", "on_head"),
    [
        ((), 3, 2, False),
        # the network jobs on the head (network_on_submit_host): their connections hold the cap
        # through the slot pool, and Snakemake's limit is twice the cap. No core limit holds them
        # back: Snakemake 9 does not limit local jobs' cores under a cluster executor, and parses
        # --local-cores without using it (if that changes, the second job would start only after
        # the first and wait for no slot: network jobs would need threads 0 on the head)
        (("--local-cores", "1"), 3, 2, True),
        # the override reaching cluster jobs: ~2 min more of real Slurm, so with --full only (CI <= 30 min)
        pytest.param(("--resources", "xnat_api=1"), 1, 1, False, marks=pytest.mark.full_only),
    ],
)
def test_cap_holds_for_parallel_scans_in_cluster_jobs(
    two_sessions: Demo, tmp_path: Path, extra: tuple[str, ...], cap: int, k_seen: int, on_head: bool
) -> None:
    """Each zip answered after 2 s, so a job's scans overlap when it runs them side by side."""
    demo = two_sessions
    workdir = tmp_path / "run"
    config = demo.config(
        xnat={"host": demo.server.url, "max_connections": 3, "scans_in_parallel": 2, "alias_token": True},
        upload={"enabled": False},
        custom_variables={"enabled": False},
        cluster={"network_on_submit_host": on_head},
    )
    write_config(workdir, config)
    admin(demo, "PUT", "/xapi/xnatprep/faults", json={"spec": f"latency_ms=2000,path={ZIP_PATH}$"})
    # the server counts a connection until its thread reads the client's close: let the one above
    # end before the maxima are reset (on a loaded machine that can take a while)
    time.sleep(2)
    admin(demo, "DELETE", "/xapi/xnatprep/stats")
    env = {**base_env(workdir / "home"), **demo.credentials()}
    try:
        cmd = snakemake_cmd(workdir, *profile_args("slurm", workflow="ci"), "--jobs", "3", *extra)
        result = run(cmd, env, timeout=600)
    finally:
        admin(demo, "DELETE", "/xapi/xnatprep/faults")
        cancel_jobs(workdir)
    assert result.rc == 0, explain(result, workdir)
    stats = admin(demo, "GET", "/xapi/xnatprep/stats")
    assert stats["max_in_flight"] <= cap, stats
    assert stats["max_connections"] <= cap, stats
    assert f"--parallel {k_seen}" in result.output
    log = demo.server.requests()
    zips = [r for r in log if r["path"].endswith(ZIP_PATH) and "format=zip" in r["query"]]
    assert len(zips) >= 8
    if k_seen > 1:
        assert stats["max_in_flight"] >= 2  # a job's scans went side by side
    waited = [
        p.name
        for p in (workdir / "logs" / "download_session").rglob("*.log")
        if "XNAT connection slot(s)" in p.read_text()
    ]
    # on the head the second session's job (2 units, 1 slot left of 3) started beside the first
    # and waited for its slots; on the nodes Snakemake's cap alone holds it back: no pool
    assert bool(waited) == on_head, waited
