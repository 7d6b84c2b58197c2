"""Reliability: a flaky XNAT, kill -9 anywhere, a server that stops, access roles, no secret leaks.

Every case is seeded and runs `snakemake` itself. CI runs one case of each kind; `--full` runs
all of them (``reliability_full``); the figures of the last full run are in
``tests/workflow/RELIABILITY.md``. Each case uploads into a resource and sets variables under a
prefix of its own, so its writes are real writes (not "already there") and can be counted.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_interrupt_and_cap import check_nothing_partial_looks_complete
from workflow_helpers import (
    ADMIN,
    PASSWORD,
    ROLES,
    Result,
    Run,
    Study,
    all_files,
    clean_env,
    file_md5s,
    read_json,
    users_file,
)

from xnat_prep import manifest, paths
from xnat_prep.server.testing import running_server

pytestmark = pytest.mark.workflow

SCANS = {"include_types": ["localizer", "T1w*", "fMRI*"]}  # image series dcm2niix converts
FULL = pytest.mark.reliability_full
SEEN: list[tuple[Path, Result]] = []  # every run of this module, for the secrets check


def case_config(study: Study, workdir: Path, tag: str) -> dict[str, Any]:
    """The demo config on the convertible series, writing into a resource and prefix of ``tag``."""
    return study.config(
        workdir,
        scans=SCANS,
        upload={"resource": f"NIFTI_{tag}"},
        custom_variables={"prefix": f"{tag.lower()}_"},
    )


def snakemake(study: Study, workdir: Path, config: dict[str, Any] | None, *args: str, **kw: Any) -> Result:
    kw.setdefault("timeout", 900)  # a whole run on a shared, loaded machine can take minutes
    result = study.snakemake(workdir, config, *args, **kw)
    assert isinstance(result, Result)
    SEEN.append((workdir, result))
    return result


def check_complete_and_identical(study: Study, workdir: Path, config: dict[str, Any], clean: Run) -> None:
    """Every selected scan: DICOM as XNAT lists it (md5), NIfTI identical to the clean run, the
    case's resource on XNAT holding exactly the NIfTI files once, its variables set."""
    root = workdir / "results"
    resource = config["upload"]["resource"]
    rows = manifest.read_scans(root / paths.SCANS_TSV)
    assert {(s.subject, s.scan_type) for s in rows} == {
        (subject, kind) for subject in ("001", "SUB002") for kind in ("localizer", "T1w_MPRAGE", "fMRI_rest")
    }
    for scan in rows:
        where = (root, scan.project, scan.subject, scan.session, scan.scan)
        on_xnat = study.files_on_server(scan, "DICOM")
        assert file_md5s(paths.dicom_dir(*where)) == on_xnat, scan.scan
        nifti = file_md5s(paths.nifti_dir(*where))
        assert nifti == file_md5s(paths.nifti_dir(*clean.where(scan))), scan.scan
        assert study.files_on_server(scan, resource) == nifti, scan.scan  # each file once, right md5
        labels = study.admin_get(f"/data/experiments/{scan.session_id}/scans/{scan.scan_id}/resources")
        assert [r["label"] for r in labels["ResultSet"]["Result"]].count(resource) == 1
    for session in {(s.project, s.subject, s.session) for s in rows}:
        assert read_json(paths.variables_receipt(root, *session))["after"]


def faulted(requests: list[dict[str, Any]]) -> int:
    return sum(1 for r in requests if r.get("faults"))


# -- a flaky XNAT ---------------------------------------------------------------------------------

FAULT_SEEDS = [pytest.param(1, id="seed1"), *(pytest.param(s, id=f"seed{s}", marks=FULL) for s in (2, 3, 4))]
FAULTS = (
    "seed={seed},error=0.1,statuses=500:502:503:504:429,reset=0.03,truncate=0.03,"
    "latency=0.05,latency_ms=200,expire=0.1"
)


@pytest.mark.parametrize("seed", FAULT_SEEDS)
def test_fault_matrix_run_completes_identically(
    study: Study, main_run: Run, tmp_path: Path, seed: int
) -> None:
    """>= 10% of all requests fail (every retryable status, resets, cut-off bodies, latency) and
    10% of the logged-in requests find their session expired, on every path: the run completes
    as a clean run would, and a rerun is "Nothing to be done"."""
    config = case_config(study, tmp_path, f"F{seed}")
    study.faults(FAULTS.format(seed=seed))
    started = time.monotonic()
    try:
        result = snakemake(study, tmp_path, config, timeout=600)
    finally:
        study.faults(None)
    took = time.monotonic() - started
    hit = faulted(result.requests)
    expired = sum(1 for r in result.requests if "expire" in r.get("faults", []))
    print(
        f"\nfault matrix seed {seed}: {len(result.requests)} requests, {hit} with faults "
        f"({100 * hit / max(1, len(result.requests)):.0f}%), {expired} expiries, {took:.0f} s"
    )
    assert result.rc == 0, result.output[-3000:]
    assert hit >= 0.1 * len(result.requests) and expired > 0
    assert "Traceback" not in result.output
    check_complete_and_identical(study, tmp_path, config, main_run)
    again = snakemake(study, tmp_path, config)
    assert again.rc == 0 and "Nothing to be done" in again.output and again.requests == []


# -- kill -9 anywhere ---------------------------------------------------------------------------

# what is killed: a word of its command line (None: snakemake itself, with all its jobs)
KINDS = [
    None,
    "discover",
    "download-session",
    "convert-session",
    "dcm2niix",
    "upload-session",
    "set-variables",
]
KINDS += ["report"]
CI_KILLS = {(None, 0)}  # dcm2niix killed: tests/steps/test_convert.py in CI, the real one under --full
KILLS = [
    pytest.param(
        kind, seed, id=f"{kind or 'snakemake'}-{seed}", marks=() if (kind, seed) in CI_KILLS else FULL
    )
    for seed in range(3)
    for kind in KINDS
]


def processes(session: int, word: str) -> list[int]:
    """PIDs in process session ``session`` whose command line holds ``word``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if os.getsid(int(proc.name)) == session and word.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize(("kind", "seed"), KILLS)
def test_kill_9_then_unlock_and_rerun_completes_identically(
    study: Study, main_run: Run, tmp_path: Path, kind: str | None, seed: int
) -> None:
    rng = random.Random(f"{kind}-{seed}")
    tag = f"K{KINDS.index(kind)}{seed}"
    config = case_config(study, tmp_path, tag)
    study.faults("latency_ms=150")  # every request a little slow: the jobs last long enough to hit
    try:
        run = study.snakemake(tmp_path, config, background=True)
        assert isinstance(run, subprocess.Popen)
        deadline = time.monotonic() + 240
        if kind is None:
            time.sleep(rng.uniform(2, 12))
            os.killpg(run.pid, signal.SIGKILL)
        else:
            while not (victims := processes(run.pid, kind)):
                assert run.poll() is None and time.monotonic() < deadline, f"no {kind} process seen"
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.1))
            os.kill(victims[0], signal.SIGKILL)
        out, err = run.communicate(timeout=900)
    finally:
        study.faults(None)
    SEEN.append((tmp_path, Result(run.returncode, out, err, [])))
    assert run.returncode != 0  # a killed job fails the run (or snakemake itself was killed)
    root = tmp_path / "results"
    if (root / paths.SCANS_TSV).exists():
        check_nothing_partial_looks_complete(root, main_run)

    assert snakemake(study, tmp_path, config, "--unlock").rc == 0
    resumed = snakemake(study, tmp_path, config)
    assert resumed.rc == 0, resumed.output[-3000:]
    check_complete_and_identical(study, tmp_path, config, main_run)
    hidden = [p for p in all_files(root) if any(part.startswith(".") for part in p.relative_to(root).parts)]
    assert hidden == []


# -- the server stops mid-run -------------------------------------------------------------------


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[tuple[Study, Path]]:
    """A server of this test's own (it is stopped): DEMO with two one-session subjects."""
    from xnat_prep.demodata import seed_server

    data, users = tmp_path / "xnat", users_file(tmp_path / "users.yaml")
    with running_server(data, users_file=users) as server:
        csv = tmp_path / "subjects.csv"
        seed_server(server.url, *ADMIN, "DEMO", 2, 1, "tiny", subject_labels=["001", "SUB002"], csv=csv)
        yield Study(server, csv, tmp_path), users


def test_server_stopped_mid_run_ends_soon_then_rerun_completes(
    own_server: tuple[Study, Path], tmp_path: Path
) -> None:
    study, users = own_server
    config = study.config(tmp_path / "work", scans=SCANS)
    config["xnat"]["scans_in_parallel"] = 1  # both sessions' download jobs at once under the cap
    study.faults("latency_ms=1500,path=/resources/DICOM/files$")  # slow zips: the stop comes mid-download
    run = study.snakemake(tmp_path / "work", config, background=True)
    assert isinstance(run, subprocess.Popen)
    deadline = time.monotonic() + 120
    while len(processes(run.pid, "download-session")) < 2:
        assert run.poll() is None and time.monotonic() < deadline, "no download seen"
        time.sleep(0.05)
    time.sleep(0.5)
    study.server.process.kill()
    stopped = time.monotonic()
    out, err = run.communicate(timeout=120)
    took = time.monotonic() - stopped
    SEEN.append((tmp_path / "work", Result(run.returncode, out, err, [])))
    print(f"\nserver stopped: the run ended {took:.1f} s later")
    assert run.returncode == 1 and took <= 30, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("xnat-prep download-session: error: ")]
    sessions = {s.session_id for s in manifest.read_sessions(tmp_path / "work/results" / paths.SESSIONS_TSV)}
    assert len(lines) == len(sessions) == 2, lines  # one line per session, each naming it
    assert all("cannot reach XNAT" in ln and any(s in ln for s in sessions) for ln in lines), lines
    assert "Traceback" not in out + err

    port = study.url.rsplit(":", 1)[1]
    with running_server(study.server.data_dir, users_file=users, extra_args=["--port", port]) as again:
        assert again.url == study.url
        resumed = snakemake(Study(again, study.csv, tmp_path), tmp_path / "work", config)
    assert resumed.rc == 0, resumed.output[-3000:]
    for scan in manifest.read_scans(tmp_path / "work/results" / paths.SCANS_TSV):
        assert read_json(paths.convert_receipt(tmp_path / "work/results", *astuple_where(scan)))[
            "status"
        ] == ("converted")


def astuple_where(scan: manifest.ScanRow) -> tuple[str, str, str, str]:
    return scan.project, scan.subject, scan.session, scan.scan


# -- access roles -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user", [pytest.param(u, marks=FULL if r in ("owner", "member") else ()) for u, r in ROLES.items()]
)
def test_access_roles(study: Study, tmp_path: Path, user: str) -> None:
    """owner, member (also the main run's user): everything; collaborator (read-only): downloads
    and conversion, then one 'no write permission' line per session, exit 1; no role: one line
    per subject, nothing fetched."""
    role = ROLES[user]
    config = case_config(study, tmp_path, f"R{role[:3].upper()}")
    config["scans"] = {"include_types": ["localizer"]}
    result = snakemake(study, tmp_path, config, user=user)
    assert "Traceback" not in result.output
    problems = result.lines("xnat-prep: problem: ")
    written = [r for r in result.data_writes() if r["status"] < 400]
    root = tmp_path / "results"
    converted = [read_json(p)["status"] for p in root.glob("nifti/*/*/*/*-*.json")]  # the scans' receipts
    if role in ("owner", "member"):
        assert result.rc == 0 and problems == [] and written, result.output[-3000:]
    elif role == "collaborator":
        assert result.rc == 1 and converted == ["converted"] * 2, result.output[-3000:]
        assert sorted(problems) == [
            f"DEMO/{s}/{s}_MR1: denied: no write permission on project DEMO (upload_session, set_variables)"
            for s in ("001", "SUB002")
        ]
        assert result.lines("xnat-prep: to write to XNAT once you have write permission, add: ") == [
            "-R upload_session set_variables"
        ]
        assert written == []
    else:
        assert result.rc == 1 and converted == [] and written == []
        assert len(problems) == 2 and all("no read permission on project DEMO" in p for p in problems)


# -- secrets ------------------------------------------------------------------------------------


class EnvironWatch:
    """Samples the environment of every process of one run (its process session) for the alias
    token the run hands its jobs, and every command line seen."""

    def __init__(self, session: int):
        self.session = session
        self.tokens: set[str] = set()
        self.cmdlines: set[bytes] = set()

    def sample(self) -> None:
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if os.getsid(int(proc.name)) != self.session:
                    continue
                self.cmdlines.add((proc / "cmdline").read_bytes())
                env = dict(
                    v.split(b"=", 1) for v in (proc / "environ").read_bytes().split(b"\0") if b"=" in v
                )
            except OSError:
                continue
            secret = env.get(b"XNAT_PASS", b"").decode()
            if secret and secret != PASSWORD:
                self.tokens.add(secret)


def test_no_secret_anywhere(study: Study, main_run: Run, tmp_path: Path) -> None:
    """The password and the run's alias token: in no file of any run of this module (work dir,
    .snakemake/, logs, receipts, reports), nor the server's request log, nor any command line,
    nor any console output; error paths included (kills, faults, a stopped server, refusals)."""
    config = case_config(study, tmp_path, "TOK")
    config["xnat"]["alias_token"] = True
    run = study.snakemake(tmp_path, config, background=True)
    assert isinstance(run, subprocess.Popen)
    watch = EnvironWatch(run.pid)
    while run.poll() is None:
        watch.sample()
        time.sleep(0.01)
    out, err = run.communicate()
    assert run.returncode == 0, err[-3000:]
    assert len(watch.tokens) == 1, "the jobs got no alias token"
    secrets = [PASSWORD.encode(), *(t.encode() for t in watch.tokens)]
    runs = [*SEEN, (tmp_path, Result(run.returncode, out, err, [])), (main_run.workdir, main_run.result)]
    files = {
        p for workdir, _ in runs for p in all_files(workdir) if "home" not in p.relative_to(workdir).parts
    }
    files.add(study.server.data_dir / "requests.jsonl")
    leaks = [str(p) for p in files if any(s in p.read_bytes() for s in secrets)]
    assert leaks == []
    assert not [r for _, r in runs if any(s.decode() in r.output for s in secrets)]
    assert not [c for c in watch.cmdlines if any(s in c for s in secrets)]
    assert main_run.watch.hits == [] and main_run.watch.samples > 10


def test_clean_env_has_no_credentials(tmp_path: Path) -> None:
    """The runs above get credentials only from what each test passes (a guard for the secrets test)."""
    assert not [k for k in clean_env(tmp_path) if k.startswith("XNAT")]
