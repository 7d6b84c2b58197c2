"""The workflow on a real Slurm cluster with the project's profiles (profiles/slurm + profiles/ci).

The layout is the one for compute nodes without network (cluster.network_on_submit_host: true):
discover, download, upload and variables run on the submitting host, conversion runs in grouped
cluster jobs. Checked with the cluster's own accounting (sacct): jobs ran under Slurm in the
expected number of groups; results equal a local run's; a no-op rerun submits nothing; a job
killed with scancel is redone by the next run; jobs see an alias token, never the password.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from slurm_helpers import (
    Demo,
    Result,
    base_env,
    cancel_jobs,
    cluster_jobs,
    explain,
    profile_args,
    queued_jobs,
    run,
    snakemake_cmd,
    write_config,
)

from xnat_prep import manifest, paths

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

# Sessions per convert group in these runs (production: 3, profiles/slurm): the demo's 2 sessions
# make 1 cluster job, so the count shows that grouping works.
GROUP = 2
# Receipt fields that differ between two runs of the same conversion.
VOLATILE = {"duration_s", "date", "finished"}


@dataclass
class Run:
    workdir: Path
    result: Result
    since: str  # sacct -S value from just before the run

    @property
    def root(self) -> Path:
        return self.workdir / "results"

    def scans(self) -> list[manifest.ScanRow]:
        return manifest.read_scans(self.root / paths.SCANS_TSV)


def sacct_now() -> str:
    return (datetime.now() - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S")


def slurm_cmd(workdir: Path, *args: str) -> list[str]:
    return snakemake_cmd(
        workdir, *profile_args("slurm", workflow="ci"), "--group-components", f"convert={GROUP}", *args
    )


def run_slurm(demo: Demo, workdir: Path, *args: str) -> Run:
    since = sacct_now()
    env = {**base_env(workdir / "home"), **demo.credentials()}
    return Run(workdir, run(slurm_cmd(workdir, *args), env, timeout=420), since)


@pytest.fixture(scope="module")
def local_run(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The reference: the same study with the local executor (no upload/variables: the Slurm run
    writes those, and a second upload of the same files would only find them there)."""
    workdir = tmp_path_factory.mktemp("local")
    write_config(workdir, demo.config(upload={"enabled": False}, custom_variables={"enabled": False}))
    since = sacct_now()
    env = {**base_env(workdir / "home"), **demo.credentials()}
    result = run(snakemake_cmd(workdir, "--cores", "2"), env, timeout=300)
    assert result.rc == 0, result.output[-3000:]
    return Run(workdir, result, since)


@pytest.fixture(scope="module")
def slurm_workdir(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    workdir = tmp_path_factory.mktemp("slurm")
    write_config(workdir, demo.config(cluster={"network_on_submit_host": True}))
    yield workdir
    cancel_jobs(workdir)  # nothing may outlive a failed test


@pytest.fixture(scope="module")
def slurm_run(demo: Demo, slurm_workdir: Path) -> Run:
    return run_slurm(demo, slurm_workdir)


def md5s(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def stable(receipt: Path) -> dict[str, Any]:
    return {k: v for k, v in json.loads(receipt.read_text()).items() if k not in VOLATILE}


def assert_same_results(run: Run, reference: Run) -> None:
    """Same scans, byte-identical DICOM and NIfTI, equal receipts but for times."""
    scans = run.scans()
    assert scans == reference.scans()
    for scan in scans:
        where = (scan.project, scan.subject, scan.session, scan.scan)
        steps = ((paths.dicom_dir, paths.download_receipt), (paths.nifti_dir, paths.convert_receipt))
        for files, receipt in steps:
            assert md5s(files(run.root, *where)) == md5s(files(reference.root, *where)), scan.scan
            assert stable(receipt(run.root, *where)) == stable(receipt(reference.root, *where)), scan.scan


def test_conversion_ran_as_grouped_cluster_jobs(slurm_run: Run) -> None:
    assert slurm_run.result.rc == 0, explain(slurm_run.result, slurm_run.workdir)
    n_sessions = len({(s.project, s.subject, s.session) for s in slurm_run.scans()})
    assert n_sessions >= GROUP
    jobs = cluster_jobs(slurm_run.workdir, slurm_run.since)
    # only the convert groups went to Slurm: the network rules stayed on this host
    assert len(jobs) == math.ceil(n_sessions / GROUP), jobs
    assert {job.state for job in jobs} == {"COMPLETED"}, jobs


def test_progress_view_as_plain_lines(slurm_run: Run) -> None:
    """profiles/slurm turns the progress plugin on in plain mode (issue 11): the final view ends the
    output, every job counted, and nothing is redrawn in place (no cursor movement)."""
    assert slurm_run.result.rc == 0, explain(slurm_run.result, slurm_run.workdir)
    output = slurm_run.result.output
    done = re.findall(r"^\[xnat-prep done\] (\d+)/(\d+) jobs, .* 0 problem\(s\)$", output, re.M)
    assert len(done) == 1 and done[0][0] == done[0][1], output[-3000:]
    assert re.search(r"^convert_session +\d+/\d+ .*finished", output, re.M), output[-3000:]
    assert "\x1b[" not in output


def test_results_equal_a_local_run(slurm_run: Run, local_run: Run) -> None:
    assert_same_results(slurm_run, local_run)
    # and what went up to XNAT is what the local run made
    for scan in slurm_run.scans():
        receipt = paths.upload_receipt(slurm_run.root, scan.project, scan.subject, scan.session)
        upload = json.loads(receipt.read_text())
        sent = {f["name"]: f["md5"] for f in upload["scans"][scan.scan_id]["files"]}
        local = md5s(paths.nifti_dir(local_run.root, scan.project, scan.subject, scan.session, scan.scan))
        assert sent == local, scan.scan


def test_noop_rerun_submits_no_job(demo: Demo, slurm_run: Run) -> None:
    rerun = run_slurm(demo, slurm_run.workdir)
    assert rerun.result.rc == 0, explain(rerun.result, rerun.workdir)
    assert "Nothing to be done" in rerun.result.output
    assert cluster_jobs(rerun.workdir, rerun.since) == []


def test_scancel_mid_run_then_rerun_completes(demo: Demo, slurm_run: Run, local_run: Run) -> None:
    """docs/slurm.md's procedure: a job is scancel'ed, Ctrl-C the head, run the same command again.

    (The executor plugin 2.8.0 misses a cancelled job: sacct says "CANCELLED by <uid>", which it
    does not count as a failure, so the head would wait for that job forever.)

    The head starts with SIGINT at its default, as from a terminal: a shell without job control
    (a script, CI, ``pytest … &``) makes its background commands ignore SIGINT, the children
    inherit that, and a head that ignores SIGINT never hears the Ctrl-C (the 2026-12-02 "hang").
    """
    workdir = slurm_run.workdir
    for done in ("nifti", "receipts", "report"):  # every conversion (and what follows) to do again
        shutil.rmtree(slurm_run.root / done)
    since = sacct_now()
    env = {**base_env(workdir / "home"), **demo.credentials()}
    log = workdir / "cancelled-run.log"
    with log.open("w") as out:
        head = subprocess.Popen(
            slurm_cmd(workdir),
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=sigint_at_default,
        )  # fmt: skip
        try:
            assert not ignores_sigint(head.pid), "the head ignores SIGINT: Ctrl-C could not reach it"
            victim = wait_for_running_job(workdir, head, log)
            assert_job_holds_no_password(victim, demo)
            time.sleep(1)  # mid-group: its 2 conversions take several seconds each
            subprocess.run(["scancel", victim], check=True, timeout=60)
            wait_for(lambda: any(j.state.startswith("CANCELLED") for j in cluster_jobs(workdir, since)), 60)
            head.send_signal(signal.SIGINT)  # Ctrl-C: the executor cancels the other jobs
            interrupted = time.monotonic()
            head.wait(timeout=120)
            print(f"head stopped {time.monotonic() - interrupted:.1f} s after Ctrl-C")
        finally:
            if head.poll() is None:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait()
    assert head.returncode != 0, log.read_text()[-3000:]
    assert queued_jobs(workdir) == {}  # nothing left behind on the cluster

    rerun = run_slurm(demo, workdir)
    assert rerun.result.rc == 0, explain(rerun.result, rerun.workdir)
    redone = cluster_jobs(workdir, rerun.since)
    n_sessions = len({(s.project, s.subject, s.session) for s in rerun.scans()})
    assert 1 <= len(redone) <= math.ceil(n_sessions / GROUP), redone
    assert {job.state for job in redone} == {"COMPLETED"}, redone
    assert_same_results(rerun, local_run)


def sigint_at_default() -> None:
    """In the child before exec: SIGINT as a terminal's foreground process has it (not inherited
    ignored), so Python turns it into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ignores_sigint(pid: int) -> bool:
    """Whether process ``pid`` ignores SIGINT (Linux: the SigIgn mask in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGINT - 1) & 1)
    return False


def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout} s in vain for {condition}")
        time.sleep(1)


def wait_for_running_job(workdir: Path, head: subprocess.Popen, log: Path, timeout: float = 180) -> str:
    """The ID of the first of ``workdir``'s cluster jobs that Slurm reports running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [job for job, state in queued_jobs(workdir).items() if state == "RUNNING"]
        if running:
            return running[0]
        if head.poll() is not None:
            pytest.fail(f"snakemake ended before a job ran:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"no cluster job of {workdir} ran within {timeout} s")


def job_environments(job_id: str) -> list[dict[str, str]]:
    """The environments of the processes of a running cluster job (this node is its compute node)."""
    marker = f"SLURM_JOB_ID={job_id}".encode()
    envs = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            data = environ.read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in data:
            envs.append(dict(v.decode(errors="replace").split("=", 1) for v in data if b"=" in v))
    return envs


def assert_job_holds_no_password(job_id: str, demo: Demo) -> None:
    """The processes of a running cluster job got the run's alias token, not the password.

    (sbatch --export=ALL passes the submitting Snakemake's environment, where the workflow put
    the token at the start of the run.)
    """
    wait_for(lambda: bool(job_environments(job_id)), 30)  # RUNNING comes a moment before the processes
    user, password = demo.server.admin
    for env in job_environments(job_id):
        assert env.get("XNAT_PASS") != password
        assert env.get("XNAT_USER") not in (None, user)  # the token's alias
