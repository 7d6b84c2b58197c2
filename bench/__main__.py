"""``python -m bench``: the workflow against the usual tools and the machine's limit, in one run.

Seeds the bundled server with a study (cached between runs), measures every row of the table
on the same server, data and machine, prints the table of medians with ratios and PASS/FAIL
per target, and writes it with the machine description to ``bench/results/<date>.md``.
``--quick`` is the CI smoke version: a tiny study, one repetition, a 1,000-scan manifest.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from bench import bigscan, clients, machine, measure, scale, study, table, workflow, zipstore
from bench import pseudonymise as pseudo
from bench.table import Row
from xnat_prep import manifest, paths
from xnat_prep.server.testing import ServerHandle

GiB = 1 << 30
MiB = 1 << 20
LATENCY_MS = 50  # a real XNAT answers in tens of ms (auth, DB, catalog); the bundled server in ~1
LATENCY_SUBJECTS = 2
MAX_PER_FILE_GETS = 20_000


def per_file_sample(files: list[manifest.FileRow], limit: int) -> list[manifest.FileRow]:
    """Whole scans, spread over the study, adding up to at most ``limit`` files (all if fewer)."""
    if len(files) <= limit:
        return files
    by_scan: dict[str, list[manifest.FileRow]] = {}
    for f in files:
        by_scan.setdefault(f.uri.rsplit("/resources/", 1)[0], []).append(f)
    sample: list[manifest.FileRow] = []
    for scan_files in list(by_scan.values())[:: -(-len(files) // limit)]:
        if len(sample) + len(scan_files) <= limit:
            sample += scan_files
    return sample


@dataclass(frozen=True)
class Mode:
    name: str
    study: study.StudySpec
    reps: int
    pipeline_reps: int  # the whole pipeline writes to the server: each repetition gets a fresh copy
    scale_scans: int
    big_bytes: int
    big_files: int


FULL = Mode("full", study.StudySpec("realistic", 10, 2), 2, 1, 10_000, 2 * GiB, 8)
QUICK = Mode("quick", study.StudySpec("tiny", 2, 1), 1, 1, 250, 200 * MiB, 4)


@dataclass
class Ctx:
    mode: Mode
    work: Path
    cores: int
    max_connections: int
    shim: Path
    seeded: study.Study | None  # None when no part that needs the seeded server runs
    rows: dict[str, Row]
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return workflow.env(self.shim)

    def workflow(self, name: str, host: str, subjects_csv: Path | None = None) -> workflow.Workflow:
        wf = workflow.Workflow(
            self.work / name,
            host,
            subjects_csv or self.study.subjects_csv,
            self.cores,
            self.max_connections,
            self.shim,
        )
        shutil.rmtree(wf.workdir, ignore_errors=True)
        wf.write_config()
        return wf

    @property
    def study(self) -> study.Study:
        if self.seeded is None:
            raise RuntimeError("this part needs the seeded study")
        return self.seeded

    def add(self, key: str, value: float) -> None:
        self.rows[key].samples.append(value)


def define_rows(mode: Mode) -> dict[str, Row]:
    n = f"{mode.scale_scans:,} scans"
    # issue 13's targets at ADNI size (100,000 scans); the first ones (10,000) below that
    dag_s, rss_mb = (60, 2048) if mode.scale_scans <= 10_000 else (180, 4096)
    big = f"{mode.big_bytes / GiB:.1f} GB" if mode.big_bytes >= GiB else f"{mode.big_bytes // MiB} MB"
    rows = [
        Row("download.baseline", "download: tutorial xnatpy script (sequential download_dir)", "s"),
        Row("download.xnat_get", "download: xnatutils xnat-get (sequential, per scan)", "s"),
        Row("download.limit_zip", "download: raw limit, parallel GET of each scan's zip", "s"),
        Row("download.limit_files", "download: raw limit, parallel GET of each file", "s"),
        Row(
            "download.limit_unzip",
            "download: raw limit + unpacking, parallel GET and unzip of each scan's zip",
            "s",
        ),
        Row(
            "download.floor",
            "download floor: the study's files created by tar -x, one per core (no network)",
            "s",
        ),
        Row("download.workflow", "download: workflow download_session stage (after discovery)", "s"),
        Row(
            "download.vs_baseline",
            "download speed-up: tutorial time / workflow time",
            "x",
            target=">= 4",
            ok=lambda r: r >= 4,
        ),
        Row(
            "download.vs_limit",
            "download vs limit: best raw-GET time / workflow time",
            "x",
            target=">= 0.8",
            ok=lambda r: r >= 0.8,
        ),
        Row(
            "download.vs_limit_unzip",
            "download vs the same files written: raw GET + unzip time / workflow time",
            "x",
        ),
        Row("download.vs_floor", "download vs floor: tar -x time / workflow time", "x"),
        Row("download.best_vs_baseline", "most any client could gain here: tutorial time / floor time", "x"),
        Row(
            "pipeline.workflow", "whole workflow: discover, download, convert, upload, variables, report", "s"
        ),
        Row("convert.dcm2niix", "convert: plain dcm2niix, same folders, same parallelism", "s"),
        Row("convert.workflow", "convert: workflow convert_session stage", "s"),
        Row(
            "convert.vs_dcm2niix",
            "convert: workflow time / plain dcm2niix time",
            "x",
            target="<= 1.15",
            ok=lambda r: r <= 1.15,
        ),
        Row(
            "requests.transfer_per_scan",
            "HTTP requests per scan, download stage (server log)",
            "req",
            target="<= 3",
            ok=lambda r: r <= 3,
        ),
        Row(
            "requests.noop_rerun",
            "HTTP requests of a no-op rerun of the whole workflow",
            "req",
            target="0",
            ok=lambda r: r == 0,
        ),
        # The DAG build is `-n --quiet`: Snakemake builds the DAG and runs its dry-run scheduling
        # but lists no job. A real run does not list the jobs up front either (it prints each one
        # as it starts, over hours). The listing `-n` prints is measured beside it (dag_listed).
        Row(
            "scale.dag_build",
            f"{n}: DAG build, snakemake -n --quiet after discovery",
            "s",
            target=f"<= {dag_s} s",
            ok=lambda r: r <= dag_s,
        ),
        Row("scale.dag_listed", f"{n}: snakemake -n after discovery, listing every job", "s"),
        Row(
            "scale.dag_rss",
            f"{n}: peak RSS of snakemake -n (the larger of the two)",
            "MB",
            target=f"<= {rss_mb} MB",
            ok=lambda r: r <= rss_mb,
        ),
        Row("scale.dryrun_done", f"{n}: snakemake -n with every output present", "s"),
        Row("scale.noop_rerun", f"{n}: no-op rerun (snakemake, every output present)", "s"),
        Row(
            "scale.noop_vs_dryrun",
            f"{n}: no-op rerun / dry-run on the same DAG",
            "x",
            target="<= 1.2",
            ok=lambda r: r <= 1.2,
        ),
        # CPU time (user + system, snakemake and its children): what the wall times cost when
        # the machine is shared and the wall times carry its load
        Row("scale.dag_cpu", f"{n}: CPU time of the DAG build (snakemake -n --quiet after discovery)", "s"),
        Row("scale.dag_listed_cpu", f"{n}: CPU time of snakemake -n after discovery, listing every job", "s"),
        Row("scale.dryrun_done_cpu", f"{n}: CPU time of snakemake -n with every output present", "s"),
        Row("scale.noop_cpu", f"{n}: CPU time of the no-op rerun", "s"),
        Row("scale.noop_vs_dryrun_cpu", f"{n}: no-op rerun / dry-run, CPU time", "x"),
        Row(
            "scale.slurm_jobs_per_25",
            f"{n}: cluster jobs per 25 scans, profiles/slurm, network rules on the submit host",
            "jobs",
            target="<= 1",
            ok=lambda r: r <= 1,
        ),
        Row(
            "scale.slurm_nodes_jobs_per_25",
            f"{n}: cluster jobs per 25 scans, profiles/slurm + network-on-nodes.yaml",
            "jobs",
            target="<= 1",
            ok=lambda r: r <= 1,
        ),
        Row(
            "transfer.job_rss",
            f"peak RSS of one download_session job, {big} scan",
            "MB",
            target="<= 200 MB",
            ok=lambda r: r <= 200,
        ),
        Row(
            "latency.baseline",
            f"[{LATENCY_MS} ms/request, {LATENCY_SUBJECTS} subjects] tutorial script download",
            "s",
        ),
        Row(
            "latency.workflow",
            f"[{LATENCY_MS} ms/request, {LATENCY_SUBJECTS} subjects] workflow download stage",
            "s",
        ),
        Row(
            "latency.vs_baseline",
            f"[{LATENCY_MS} ms/request, {LATENCY_SUBJECTS} subjects] speed-up over the tutorial",
            "x",
        ),
    ]
    rows += pseudo.rows()
    rows += zipstore.rows()
    assert tuple(r.key for r in rows) == table.ROW_KEYS
    return {r.key: r for r in rows}


def discovered(wf: workflow.Workflow) -> list[manifest.ScanRow]:
    return manifest.read_scans(wf.results / paths.SCANS_TSV)


def download_stage(wf: workflow.Workflow, srv: ServerHandle, label: str) -> tuple[float, int, list]:
    """Discovery (not timed), then every download job: (seconds, requests, scans)."""
    wf.run(["--until", "discover"], f"{label}-discover")
    before = study.request_count(srv)
    run = wf.stage("download_stage", f"{label}-download")
    return run.wall_s, study.request_count(srv) - before, discovered(wf)


def transfer_and_convert(ctx: Ctx) -> None:
    """Download rows, conversion rows, requests per scan, and the latency rows: one server."""
    data = study.clone(ctx.study.data_dir, ctx.work / "server-transfer")
    with study.server(data) as srv:
        ref = ctx.workflow("reference", srv.url)
        ref.run(["--until", "discover"], "discover")
        scans = discovered(ref)
        files = [
            f
            for r in scans
            for f in manifest.read_session_files(
                paths.session_files(ref.results, r.project, r.subject, r.session)
            ).get(r.scan_id, [])
            if f.resource == r.resource
        ]
        zips = [
            f"/data/experiments/{r.session_id}/scans/{r.scan_id}/resources/{r.resource}/files?format=zip"
            for r in scans
        ]
        ctx.facts.update(
            {
                "sessions": str(len({r.session_id for r in scans})),
                "scans": str(len(scans)),
                "DICOM files": f"{len(files):,}",
                "DICOM bytes": f"{sum(f.size for f in files) / 1e9:.2f} GB",
            }
        )
        xnat_get, why = clients.install_xnatutils(Path(tempfile.gettempdir()) / "xnat-prep-bench-xnatutils")
        if xnat_get is None:
            ctx.rows["download.xnat_get"].note = why
        sessions = sorted({r.session for r in scans})
        floor = clients.floor_archives(ctx.study.data_dir / "blobs", ctx.study.data_dir.parent, ctx.cores)
        out = ctx.work / "out"
        log = ctx.work / "logs"
        log.mkdir(exist_ok=True)
        for rep in range(ctx.mode.reps):
            clients.remove(out)
            ctx.add(
                "download.baseline",
                clients.tutorial(
                    srv.url,
                    ctx.study.subject_labels(),
                    out / "tutorial",
                    ctx.env,
                    log / f"tutorial-{rep}.log",
                ).wall_s,
            )
            note_size(ctx, "download.baseline", out / "tutorial")
            if xnat_get is not None:
                ctx.add(
                    "download.xnat_get",
                    clients.xnat_get(
                        xnat_get, srv.url, sessions, out / "xnat-get", ctx.env, log / f"xnat-get-{rep}.log"
                    ).wall_s,
                )
                note_size(ctx, "download.xnat_get", out / "xnat-get")
            ctx.add(
                "download.limit_zip",
                clients.raw_get(
                    srv.url, zips, ctx.max_connections, out / "zip", ctx.env, log / f"limit-zip-{rep}.log"
                ).wall_s,
            )
            note_size(ctx, "download.limit_zip", out / "zip")
            ctx.add(
                "download.limit_unzip",
                clients.raw_get(
                    srv.url,
                    zips,
                    ctx.max_connections,
                    out / "unzip",
                    ctx.env,
                    log / f"limit-unzip-{rep}.log",
                    unzip=True,
                ).wall_s,
            )
            note_size(ctx, "download.limit_unzip", out / "unzip")
            ctx.add(
                "download.floor", clients.unpack_floor(floor, out / "floor", log / f"floor-{rep}.log").wall_s
            )
            note_size(ctx, "download.floor", out / "floor")
            # One GET per file is far slower than the zips (~250 files/s here), so on a big study
            # it runs on a sample of whole scans and is scaled by bytes; the note says so.
            sample = per_file_sample(files, MAX_PER_FILE_GETS)
            seconds = clients.raw_get(
                srv.url,
                [f.uri for f in sample],
                ctx.max_connections,
                out / "files",
                ctx.env,
                log / f"limit-files-{rep}.log",
            ).wall_s
            scale_up = sum(f.size for f in files) / sum(f.size for f in sample)
            ctx.add("download.limit_files", seconds * scale_up)
            note_size(ctx, "download.limit_files", out / "files")
            if len(sample) < len(files):
                measured = f"measured on {len(sample):,} of {len(files):,} files ({seconds:.1f} s)"
                ctx.rows["download.limit_files"].note += f"; {measured}, scaled by bytes"
            clients.remove(out)

            wf = ctx.workflow(f"workflow-{rep}", srv.url)
            seconds, n_requests, wf_scans = download_stage(wf, srv, "workflow")
            ctx.add("download.workflow", seconds)
            ctx.add("requests.transfer_per_scan", n_requests / len(wf_scans))
            note_size(ctx, "download.workflow", wf.results / "dicom", remove=False)
            ctx.add("convert.workflow", wf.stage("convert_stage", "convert").wall_s)
            folders = [
                (
                    paths.dicom_dir(wf.results, r.project, r.subject, r.session, r.scan),
                    f"{paths.safe_component(r.session)}_{r.scan}",
                )
                for r in wf_scans
            ]
            ctx.add("convert.dcm2niix", clients.plain_dcm2niix(folders, out / "dcm2niix", ctx.cores).wall_s)
            clients.remove(out, wf.workdir)

        # A few subjects are enough to show the effect of latency (and keep the run short).
        subjects = ctx.study.subject_labels()[:LATENCY_SUBJECTS]
        subset_csv = ctx.work / "latency-subjects.csv"
        lines = ctx.study.subjects_csv.read_text(encoding="utf-8-sig").splitlines()
        subset_csv.write_text("\n".join(lines[: 1 + len(subjects)]) + "\n", encoding="utf-8")
        study.set_faults(srv, f"latency_ms={LATENCY_MS}")
        ctx.add(
            "latency.baseline",
            clients.tutorial(
                srv.url, subjects, out / "tutorial", ctx.env, log / "latency-tutorial.log"
            ).wall_s,
        )
        wf = ctx.workflow("workflow-latency", srv.url, subset_csv)
        ctx.add("latency.workflow", download_stage(wf, srv, "latency")[0])
        study.set_faults(srv, None)
        clients.remove(out, wf.workdir)
    clients.remove(data)


def note_size(ctx: Ctx, key: str, root: Path, remove: bool = True) -> None:
    """Record what a client left on disk, then delete it (keeps the server's data in the page cache)."""
    n, size = measure.tree_size(root)
    ctx.rows[key].note = f"{n:,} files, {size / 1e9:.2f} GB on disk"
    if remove:
        clients.remove(root)


def pipeline(ctx: Ctx) -> None:
    """The whole workflow from nothing, then a no-op rerun (requests counted), each on a fresh
    copy of the server (the pipeline uploads results and sets variables)."""
    for rep in range(ctx.mode.pipeline_reps):
        data = study.clone(ctx.study.data_dir, ctx.work / f"server-pipeline-{rep}")
        with study.server(data) as srv:
            wf = ctx.workflow(f"pipeline-{rep}", srv.url)
            ctx.add("pipeline.workflow", wf.run([], "pipeline").wall_s)
            if rep == ctx.mode.pipeline_reps - 1:
                before = study.request_count(srv)
                noop = wf.run([], "noop")
                ctx.add("requests.noop_rerun", study.request_count(srv) - before)
                if not scale.nothing_to_do(noop.log.read_text()):
                    ctx.rows["requests.noop_rerun"].note = f"the rerun ran jobs: see {noop.log}"
        clients.remove(data, wf.workdir)


SCALE_PARTS = ("dag", "slurm", "noop")


def scale_rows(ctx: Ctx, parts: Sequence[str] = SCALE_PARTS) -> None:
    """DAG build, no-op rerun and Slurm grouping on a synthetic manifest (no server needed);
    ``parts``: which of them (at 100,000 scans each takes long: they can run side by side)."""
    shape = scale.shape_for(ctx.mode.scale_scans)
    csv = ctx.work / "scale-subjects.csv"
    scale.write_subjects(csv, shape)
    wf = ctx.workflow("scale", "http://127.0.0.1:9", csv)  # port 9 (discard): nothing may connect
    rows = scale.write_manifest(wf.results, shape)
    for rep in range(ctx.mode.reps if "dag" in parts else 0):
        # side by side: the DAG build (`-n --quiet` builds the DAG, and stops before scheduling
        # and before listing any job: Snakemake's workflow.py, "in case of dryrun and quiet") and
        # the dry-run listing every job (it also prints the job stats, checked here)
        run = wf.run(["-n", "--quiet"], f"dag-{rep}")
        listed = wf.run(["-n"], f"dag-listed-{rep}")
        counts = scale.job_counts(listed.log.read_text())
        # one convert job per session (or per scan: the layout before 2026-12-02, measurable with
        # this bench from that commit's tree)
        if (
            not counts
            or counts.get("convert_session", shape.sessions) != shape.sessions
            or counts.get("convert_scan", shape.scans) != shape.scans
        ):
            raise RuntimeError(f"unexpected jobs in the dry-run {listed.log}: {counts}")
        ctx.add("scale.dag_build", run.wall_s)
        ctx.add("scale.dag_listed", listed.wall_s)
        ctx.add("scale.dag_rss", max(run.max_rss_mb, listed.max_rss_mb))
        ctx.add("scale.dag_cpu", run.cpu_s)
        ctx.add("scale.dag_listed_cpu", listed.cpu_s)
        ctx.rows["scale.dag_build"].note = f"{counts.get('total', 0):,} jobs"
    if "slurm" in parts:
        rules = (workflow.REPO / "workflow" / "rules" / "convert.smk").read_text()
        slurm_dry_runs(ctx, wf, shape.scans, per_scan="rule convert_scan:" in rules)
    if "noop" not in parts:
        return
    scale.write_outputs(wf.results, rows)
    for rep in range(ctx.mode.reps):
        done = wf.run(["-n"], f"dryrun-done-{rep}")
        noop = wf.run([], f"noop-{rep}")
        for run in (done, noop):
            if not scale.nothing_to_do(run.log.read_text()):
                raise RuntimeError(f"synthesised outputs are not complete for Snakemake: see {run.log}")
        ctx.add("scale.dryrun_done", done.wall_s)
        ctx.add("scale.noop_rerun", noop.wall_s)
        ctx.add("scale.dryrun_done_cpu", done.cpu_s)
        ctx.add("scale.noop_cpu", noop.cpu_s)


def slurm_dry_runs(ctx: Ctx, wf: workflow.Workflow, n_scans: int, per_scan: bool = False) -> None:
    """Cluster jobs the Slurm profile would submit, counted in dry-runs (no cluster needed), for
    both documented layouts: network rules on the submit host (profiles/slurm with
    cluster.network_on_submit_host), and everything on the nodes (the network-on-nodes overlay).

    A group job bigger than the profile's group-components allow is reported as a failure even
    when the count is low: it means Snakemake merged the groups, and one cluster job would then
    convert hundreds of scans one after another.
    """
    profile = workflow.REPO / "profiles" / "slurm"
    on_host = wf.workdir / "network-on-submit-host.yaml"
    on_host.write_text("cluster:\n  network_on_submit_host: true\n")
    nodes = profile / "network-on-nodes.yaml"
    # download, convert, upload, variables: one job each per session (per_scan: one convert per scan)
    per_session = 2 * scale.SCANS_PER_SESSION + 2 if per_scan else 4
    layouts = {
        "scale.slurm_jobs_per_25": (
            ["--workflow-profile", str(profile)],
            [on_host],
            1,
            profile / "config.yaml",
        ),
        "scale.slurm_nodes_jobs_per_25": (
            ["--profile", str(profile), "--workflow-profile", str(nodes)],
            [],
            per_session,
            nodes,
        ),
    }
    for key, (args, overlays, members_per_component, group_yaml) in layouts.items():
        components = max(yaml.safe_load(group_yaml.read_text()).get("group-components", {1: 1}).values())
        local = json.loads(
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.localrules",
                    str(workflow.SNAKEFILE),
                    str(wf.workdir),
                    str(wf.configfile),
                    *map(str, overlays),
                ],
                env=dict(ctx.env, PYTHONPATH=str(workflow.REPO)),
                capture_output=True,
                text=True,
                check=True,
            ).stdout.splitlines()[-1]
        )
        # No --cores: the profile sets cores: 1 per cluster job (it says so), and --cores replaces it.
        # A looping dry-run (see cluster_jobs) is stopped after a generous time.
        run = wf.run(
            ["-n", *args], key, check=False, cores=False, overlays=overlays, timeout=60 + 0.02 * n_scans
        )
        jobs = scale.cluster_jobs(run.log.read_text(), set(local))
        row = ctx.rows[key]
        if jobs.submissions:
            ctx.add(key, jobs.submissions / n_scans * 25)
        row.note = (
            f"{jobs.submissions:,} submissions for {n_scans:,} scans ({jobs.groups} group jobs, "
            f"largest {jobs.largest_group} jobs)"
        )
        if jobs.largest_group > components * members_per_component:
            row.problem = (
                f"a group job holds {jobs.largest_group} jobs, group-components allows "
                f"{components * members_per_component}"
            )
        if jobs.relisted or run.returncode != 0:
            row.note += (
                f"; the dry-run did not end (exit {run.returncode}, stopped after {run.wall_s:.0f} s), "
                f"it listed the same group job {jobs.relisted:,} more times"
            )


def big_scan(ctx: Ctx) -> None:
    """Peak RSS of one transfer job on a big scan (a server of its own, emptied afterwards)."""
    data = ctx.work / "server-big"
    with study.server(data) as srv:
        session_id, files = bigscan.upload(srv, ctx.mode.big_bytes, ctx.mode.big_files)
        for _ in range(ctx.mode.reps):
            job = ctx.work / "big-job"
            clients.remove(job)
            job.mkdir()
            run = bigscan.download_job(srv, session_id, files, job, ctx.env)
            ctx.add("transfer.job_rss", run.max_rss_mb)
            ctx.rows[
                "transfer.job_rss"
            ].note = f"{len(files)} files of {files[0].size / MiB:.0f} MiB; job took {run.wall_s:.1f} s"
            clients.remove(job)
    clients.remove(data)


def ratios(ctx: Ctx) -> None:
    r = ctx.rows

    def val(key: str) -> float:
        return r[key].value

    r["download.vs_baseline"].ratio = val("download.baseline") / val("download.workflow")
    r["download.vs_limit"].ratio = min(val("download.limit_zip"), val("download.limit_files")) / val(
        "download.workflow"
    )
    r["download.vs_limit_unzip"].ratio = val("download.limit_unzip") / val("download.workflow")
    r["download.vs_floor"].ratio = val("download.floor") / val("download.workflow")
    r["download.best_vs_baseline"].ratio = val("download.baseline") / val("download.floor")
    r["convert.vs_dcm2niix"].ratio = val("convert.workflow") / val("convert.dcm2niix")
    r["scale.noop_vs_dryrun"].ratio = val("scale.noop_rerun") / val("scale.dryrun_done")
    r["scale.noop_vs_dryrun_cpu"].ratio = val("scale.noop_cpu") / val("scale.dryrun_done_cpu")
    r["latency.vs_baseline"].ratio = val("latency.baseline") / val("latency.workflow")
    pseudo.ratios(r)
    zipstore.ratios(r)
    for key in (
        "requests.transfer_per_scan",
        "requests.noop_rerun",
        "scale.dag_build",
        "scale.dag_rss",
        "scale.slurm_jobs_per_25",
        "scale.slurm_nodes_jobs_per_25",
        "transfer.job_rss",
    ):
        r[key].ratio = val(key)


def render_results(ctx: Ctx, started: dt.datetime, seconds: float, command: str) -> str:
    info = machine.describe()
    study_line = ", ".join(f"{k}: {v}" for k, v in ctx.facts.items())
    verdicts = [row.verdict for row in ctx.rows.values() if row.verdict]
    passed = sum(v == "PASS" for v in verdicts)
    return "\n".join(
        [
            f"# xnat-prep benchmark ({ctx.mode.name}), {started:%Y-%m-%d %H:%M} UTC",
            "",
            f"`{command}`: {ctx.mode.reps} repetition(s) per row (whole workflow: {ctx.mode.pipeline_reps}), "
            f"medians; {seconds / 60:.0f} min in all. **{passed} of {len(verdicts)} targets met.**",
            "",
            "## Machine",
            "",
            "| | |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in info.items()),
            "",
            "## Setup",
            "",
            f"- Study: demo-data `{ctx.mode.study.size}`, {ctx.mode.study.subjects} subjects x "
            f"{ctx.mode.study.sessions} sessions; {study_line}.",
            "- One bundled server (`xnat-prep server`, plain: no faults) for every download and conversion "
            "row; the whole-workflow rows get a fresh copy of the same data each (the workflow writes back). "
            f"Client, server and dcm2niix share the {info['cores']} cores.",
            f"- Workflow: `snakemake --cores {ctx.cores}` with the repository's Snakefile and default "
            f"workflow profile, `xnat.max_connections: {ctx.max_connections}`; "
            f"the raw-GET limit uses the same {ctx.max_connections} connections, plain dcm2niix the same "
            f"{ctx.cores} processes at a time, with the workflow's dcm2niix options.",
            "- Every snakemake process runs with a `scontrol` that fails at once first on PATH: the Slurm "
            "executor plugin calls `scontrol show config` on import (10 s timeout) and this machine has the "
            "Slurm client without a running controller (each snakemake start would be ~9 s longer).",
            "- The package is byte-compiled before measuring, as `scripts/setup.sh` does.",
            f"- Rows in [brackets] use the same server with `latency_ms={LATENCY_MS}` on every request "
            "(a real XNAT's per-request cost), one repetition, no target.",
            "",
            "## Results",
            "",
            table.render(list(ctx.rows.values())),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke run: tiny study, 1 repetition")
    parser.add_argument("--reps", type=int, help="repetitions per row (default: 3 full, 1 quick)")
    parser.add_argument("--results-dir", type=Path, default=workflow.REPO / "bench" / "results")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a new temporary one)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "xnat-prep-bench-cache",
        help="where seeded studies are kept between runs",
    )
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--scale-scans", type=int, help="scans in the synthetic manifest (multiple of 50)")
    parser.add_argument(
        "--study",
        help="another study than the mode's, as SIZE:SUBJECTSxSESSIONS (e.g. realistic:4x1)",
    )
    parser.add_argument("--max-connections", type=int, default=4, help="the workflow's xnat.max_connections")
    parser.add_argument(
        "--only",
        nargs="*",
        choices=["transfer", "pipeline", "scale", "big", "pseudonymise", "zipstore"],
        help="run only these parts (the others' rows stay empty)",
    )
    parser.add_argument(
        "--scale-parts",
        nargs="+",
        choices=SCALE_PARTS,
        default=list(SCALE_PARTS),
        help="which scale rows to measure (default: all)",
    )
    parser.add_argument(
        "--name",
        help="results file suffix: bench/results/<date>-<name>.md (default: none, or 'quick')",
    )
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    if args.reps:
        mode = replace(mode, reps=args.reps, pipeline_reps=min(args.reps, mode.pipeline_reps))
    if args.scale_scans:
        mode = replace(mode, scale_scans=args.scale_scans)
    if args.study:
        size, _, shape = args.study.partition(":")
        subjects, _, sessions = shape.partition("x")
        mode = replace(mode, study=study.StudySpec(size, int(subjects), int(sessions)))
    started = dt.datetime.now(dt.UTC)
    start = time.perf_counter()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="xnat-prep-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"bench: {mode.name} mode, scratch {work}", flush=True)
    # Every measured job imports xnat_prep from this tree (an editable install): compile it once,
    # as scripts/setup.sh does, or each job compiles it again where PYTHONDONTWRITEBYTECODE is set.
    compileall.compile_dir(workflow.REPO / "src", quiet=1)
    ctx = Ctx(
        mode,
        work,
        args.cores,
        args.max_connections,
        measure.shim_dir(work),
        # the scale rows need no server: seeding the study (GBs) only when another part runs
        None if args.only and set(args.only) <= {"scale"} else study.prepare(mode.study, args.cache),
        define_rows(mode),
    )
    command = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    args.results_dir.mkdir(parents=True, exist_ok=True)
    suffix = args.name or ("quick" if args.quick else "")
    out = args.results_dir / f"{started:%Y-%m-%d}{'-' + suffix if suffix else ''}.md"
    parts = {
        "transfer": transfer_and_convert,
        "pipeline": pipeline,
        "scale": functools.partial(scale_rows, parts=args.scale_parts),
        "big": big_scan,
    }
    parts["pseudonymise"] = pseudo.measure
    parts["zipstore"] = zipstore.measure
    for name, part in parts.items():
        if args.only is None or name in args.only:
            t0 = time.perf_counter()
            part(ctx)
            print(f"bench: {name} done in {time.perf_counter() - t0:.0f} s", flush=True)
            # written after every part, so a failure later keeps what was measured
            ratios(ctx)
            out.write_text(render_results(ctx, started, time.perf_counter() - start, command))
    print(out.read_text())
    print(f"bench: written {out}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    # Exit 1 when a measurement is missing (xnat-get may legitimately fail to install).
    measured = [r for r in ctx.rows.values() if r.key not in table.DERIVED and r.key != "download.xnat_get"]
    return 1 if args.only is None and any(not r.samples for r in measured) else 0


if __name__ == "__main__":
    sys.exit(main())
