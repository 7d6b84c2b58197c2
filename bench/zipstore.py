"""``dicom.store: zip`` rows: the workflow's zip-mode download against the raw zip-GET limit, its
conversion from zips (unpacked in node-local temp space) against plain dcm2niix on the unpacked
folders, and the DICOM files it leaves per scan.

Measured side by side in each repetition, on one copy of the study's server: the raw parallel GET
of every scan's zip (``bench/raw_get.py``, the same connections as the workflow), the same with
each body's md5 computed as it streams (the verification the workflow cannot skip; the raw GETs
go before the workflow in even repetitions, after it in odd ones, and every measurement starts
after a ``sync``: the order and the last row's writeback are not billed to one side), the workflow's
download stage with ``dicom.store: zip``, its convert stage (defaults: RAM for scans within
``dicom.ram_tmp_mb``, else ``dicom.local_tmp`` on this machine's disk, as ``$TMPDIR`` would be on a
node), then the same zips unpacked and deleted again where the workflow unpacks them (the
conversion's share that is not dcm2niix), then unpacked onto the disk and plain dcm2niix on those
folders with the same parallelism and options. Beside the raw GETs, the download stage's own session
jobs run without Snakemake (``bench/session_jobs.py``, chained and batched): plus Snakemake's fixed
cost, they bound what a stage of one job per session, or of batched sessions, reaches here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from bench import clients, study
from bench.measure import run as timed
from bench.measure import settle
from bench.table import Row
from xnat_prep import config, dicomzip, manifest, paths


def rows() -> list[Row]:
    return [
        Row("zip.limit_zip", "dicom.store zip: raw limit, parallel GET of each scan's zip", "s"),
        Row("zip.download", "dicom.store zip: workflow download_session stage (after discovery)", "s"),
        Row(
            "zip.download_vs_limit",
            "dicom.store zip: raw zip-GET time / workflow download time",
            "x",
            target=">= 0.8",
            ok=lambda r: r >= 0.8,
        ),
        Row("zip.noop", "dicom.store zip: download stage again, nothing to do (Snakemake's fixed cost)", "s"),
        Row(
            "zip.limit_zip_cpu",
            "dicom.store zip: raw zip GET, CPU time of the client (user + system; not the server's)",
            "s",
        ),
        Row(
            "zip.download_cpu",
            "dicom.store zip: workflow download stage, CPU time of Snakemake and its jobs (not the server's)",
            "s",
        ),
        Row("zip.noop_cpu", "dicom.store zip: download stage with nothing to do, CPU time", "s"),
        Row(
            "zip.download_cpu_per_session",
            "dicom.store zip: CPU time per session job beyond the raw client's for the same bytes: "
            "(download stage - nothing to do - raw GET) / sessions",
            "s",
        ),
        Row(
            "zip.download_ceiling",
            "dicom.store zip: best raw/workflow a Snakemake stage reaches here: raw / (raw + fixed cost)",
            "x",
        ),
        Row(
            "zip.limit_zip_md5",
            "dicom.store zip: raw limit verifying: parallel GET of each scan's zip, md5 as it streams",
            "s",
        ),
        Row(
            "zip.download_ceiling_verified",
            "dicom.store zip: best raw/workflow a Snakemake stage that hashes every byte reaches here: "
            "raw / (raw with md5 + fixed cost)",
            "x",
        ),
        Row(
            "zip.jobs_chained",
            "dicom.store zip: the stage's session jobs (the commands Snakemake runs) by a plain driver, "
            "scheduled as the workflow does on one host (twice the cap started, its connection slots), "
            "no Snakemake",
            "s",
        ),
        Row(
            "zip.jobs_batched",
            "dicom.store zip: the same sessions, one process per connection running its share in turn "
            "(sessions batched into jobs), no Snakemake",
            "s",
        ),
        Row(
            "zip.jobs_chained_cpu",
            "dicom.store zip: the session jobs chained, CPU time (driver and jobs)",
            "s",
        ),
        Row("zip.jobs_batched_cpu", "dicom.store zip: the sessions batched, CPU time (driver and jobs)", "s"),
        Row(
            "zip.bound_per_session",
            "dicom.store zip: best raw/workflow a stage of one job per session reaches here: "
            "raw / (jobs chained + fixed cost)",
            "x",
        ),
        Row(
            "zip.bound_batched",
            "dicom.store zip: best raw/workflow a stage of batched sessions reaches here: "
            "raw / (jobs batched + fixed cost)",
            "x",
        ),
        Row(
            "zip.md5",
            "dicom.store zip: md5 of the zips' bytes alone, one core (the verification's cost)",
            "s",
        ),
        Row(
            "zip.files_per_scan",
            "dicom.store zip: DICOM files left on the shared filesystem per scan",
            "files",
            target="<= 2",
            ok=lambda r: r <= 2,
        ),
        Row("zip.dcm2niix", "dicom.store zip: plain dcm2niix on the unpacked folders, same parallelism", "s"),
        Row(
            "zip.unpack",
            "dicom.store zip: unpacking the zips and deleting them again where conversion does, one process",
            "s",
        ),
        Row(
            "zip.unpack_disk",
            "dicom.store zip: unpacking the zips onto the local disk (the folders plain dcm2niix reads)",
            "s",
        ),
        Row(
            "zip.unpack_syscalls",
            "dicom.store zip: creating and deleting the same files where conversion unpacks, from memory "
            "(the system calls alone, no zip), one process",
            "s",
        ),
        Row(
            "zip.nifti_md5",
            "dicom.store zip: md5 of the NIfTI outputs alone, one core (what each scan's receipt records)",
            "s",
        ),
        Row(
            "zip.convert_noop",
            "dicom.store zip: convert stage again, nothing to do (Snakemake's fixed cost)",
            "s",
        ),
        Row(
            "zip.convert_floor",
            "dicom.store zip: least convert / dcm2niix a stage that unpacks as the workflow does "
            "reaches here: (dcm2niix + unpack/cores + fixed cost) / dcm2niix",
            "x",
        ),
        Row(
            "zip.convert_bound",
            "dicom.store zip: least convert / dcm2niix any stage that writes the files for dcm2niix and "
            "records its outputs' md5 reaches here: (dcm2niix + (system calls + md5)/cores + fixed cost) "
            "/ dcm2niix",
            "x",
        ),
        Row(
            "zip.convert", "dicom.store zip: workflow convert_session stage, unpacking each zip in temp", "s"
        ),
        Row("zip.dcm2niix_cpu", "dicom.store zip: plain dcm2niix on the unpacked folders, CPU time", "s"),
        Row(
            "zip.convert_cpu",
            "dicom.store zip: workflow convert stage, CPU time of Snakemake, its jobs and dcm2niix",
            "s",
        ),
        Row(
            "zip.convert_cpu_vs_dcm2niix",
            "dicom.store zip: workflow convert CPU time / plain dcm2niix CPU time (the stage is CPU-bound "
            "on 2 cores: this is what the wall-time ratio follows)",
            "x",
        ),
        Row(
            "zip.convert_vs_dcm2niix",
            "dicom.store zip: workflow convert time / plain dcm2niix time",
            "x",
            target="<= 1.2",
            ok=lambda r: r <= 1.2,
        ),
    ]


def ratios(r: dict[str, Row]) -> None:
    spread = (
        "zip.limit_zip",
        "zip.limit_zip_md5",
        "zip.download",
        "zip.noop",
        "zip.jobs_chained",
        "zip.jobs_batched",
    )
    for key in spread:
        if len(r[key].samples) > 1:  # the spread: on this VM it is as large as the differences
            r[key].note = "repetitions (in order): " + ", ".join(f"{v:.2f}" for v in r[key].samples)
    if r["zip.download"].samples and r["zip.limit_zip"].samples:
        r["zip.download_vs_limit"].ratio = r["zip.limit_zip"].value / r["zip.download"].value
    if r["zip.convert"].samples and r["zip.dcm2niix"].samples:
        r["zip.convert_vs_dcm2niix"].ratio = r["zip.convert"].value / r["zip.dcm2niix"].value
    # the best raw / workflow a stage reaches here: raw / (what it must do at least + fixed cost)
    bounds = {
        "zip.download_ceiling": "zip.limit_zip",
        "zip.download_ceiling_verified": "zip.limit_zip_md5",
        "zip.bound_per_session": "zip.jobs_chained",
        "zip.bound_batched": "zip.jobs_batched",
    }
    for key, least in bounds.items():
        if r["zip.noop"].samples and r["zip.limit_zip"].samples and r[least].samples:
            r[key].ratio = r["zip.limit_zip"].value / (r[least].value + r["zip.noop"].value)
    cores = os.cpu_count() or 1
    fixed = r["zip.convert_noop"] if r["zip.convert_noop"].samples else r["zip.noop"]  # older runs: noop
    if r["zip.unpack"].samples and r["zip.dcm2niix"].samples and fixed.samples:
        least = r["zip.dcm2niix"].value + r["zip.unpack"].value / cores + fixed.value
        r["zip.convert_floor"].ratio = least / r["zip.dcm2niix"].value
    if all(r[k].samples for k in ("zip.unpack_syscalls", "zip.nifti_md5", "zip.dcm2niix")) and fixed.samples:
        dcm2niix = r["zip.dcm2niix"].value
        extra = (r["zip.unpack_syscalls"].value + r["zip.nifti_md5"].value) / cores
        r["zip.convert_bound"].ratio = (dcm2niix + extra + fixed.value) / dcm2niix
    if r["zip.convert_cpu"].samples and r["zip.dcm2niix_cpu"].samples:
        r["zip.convert_cpu_vs_dcm2niix"].ratio = r["zip.convert_cpu"].value / r["zip.dcm2niix_cpu"].value
    if r["zip.files_per_scan"].samples:
        r["zip.files_per_scan"].ratio = r["zip.files_per_scan"].value


def session_commands(wf, log_name: str) -> Path:  # wf: bench.workflow.Workflow
    """The download jobs' shell commands of the stage, as ``snakemake -n -p`` prints them, one
    per line in a file; their logs go to ``bare-logs/`` instead of the workflow's ``logs/``."""
    dry = wf.stage("download_stage", log_name, "-n", "-p")
    prefix = "Shell command: "
    commands = [
        line.removeprefix(prefix).replace("--log logs/", "--log bare-logs/", 1)
        for line in dry.log.read_text().splitlines()  # type: ignore[union-attr]
        if line.startswith(prefix) and " download-session " in line
    ]
    if not commands:
        raise RuntimeError(f"no download-session command in {dry.log}")
    path = wf.workdir / f"{log_name}.txt"
    path.write_text("".join(f"{c}\n" for c in commands))
    return path


def bare_jobs(ctx, wf, jobs: Path, conns: int, rep: int, log: Path) -> None:
    """The session jobs without Snakemake, chained and batched (bench/session_jobs.py), each
    checked complete (a receipt per session); the workflow's results, if there, set aside meanwhile."""
    dicom, aside = wf.results / "dicom", wf.results / "dicom.measured"
    if dicom.exists():
        os.replace(dicom, aside)
    n_jobs = len(jobs.read_text().splitlines())
    env = jobs_env(wf, ctx.env)
    for mode in ("chains", "batched") if rep % 2 == 0 else ("batched", "chains"):
        cmd = [sys.executable, "-m", "bench.session_jobs", mode, str(conns), str(jobs)]
        got = timed(cmd, cwd=wf.workdir, env=env, log=log / f"zip-jobs-{mode}-{rep}.log")
        key = "zip.jobs_chained" if mode == "chains" else "zip.jobs_batched"
        ctx.add(key, got.wall_s)
        ctx.add(f"{key}_cpu", got.cpu_s)
        receipts = list(dicom.glob("*/*/*.json"))  # a session's receipt: its job verified all of it
        if len(receipts) != n_jobs:
            raise RuntimeError(f"{mode}: {len(receipts)} session receipts for {n_jobs} jobs")
        clients.remove(dicom)
    if aside.exists():
        os.replace(aside, dicom)


def jobs_env(wf, env: dict[str, str]) -> dict[str, str]:  # wf: bench.workflow.Workflow
    """The environment the workflow gives its jobs (server, connection cap, temp space), on top of
    the bench's (credentials, PATH), and the bench package importable (before the rest of the
    path: the jobs import the same xnat_prep as the workflow's)."""
    rest = [p for p in [env.get("PYTHONPATH")] if p]
    environ = dict(env, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent.parent), *rest]))
    config.export_for_jobs(config.load([wf.configfile]), environ)
    environ[config.DOWN_FILE_ENV] = str(wf.workdir / config.DOWN_FILE)  # relative to the run's directory
    return environ


def md5_time(files: list[Path]) -> float:
    """Seconds to md5 ``files`` one after another (read from the page cache: they were just written)."""
    started = time.perf_counter()
    for path in files:
        with open(path, "rb") as fh:
            hashlib.file_digest(fh, "md5")
    return time.perf_counter() - started


def syscalls_time(zip_path: Path, root: Path) -> float:
    """Seconds to create the zip's files in a fresh folder in ``root`` and delete them again, their
    bytes already in memory: the system calls any unpacker makes, without reading the zip."""
    with zipfile.ZipFile(zip_path) as archive:
        blobs = [archive.read(i) for i in archive.infolist() if not dicomzip.skipped_entry(i.filename)]
    folder = tempfile.mkdtemp(dir=root, prefix="bench-syscalls-")
    started = time.perf_counter()
    names = []
    for i, blob in enumerate(blobs):
        name = f"{folder}/{i}"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, blob)
        os.close(fd)
        names.append(name)
    for name in names:
        os.unlink(name)
    os.rmdir(folder)
    return time.perf_counter() - started


def nifti_outputs(results: Path) -> list[Path]:
    """The conversion's outputs (NIfTI, sidecars, bval/bvec) whose md5 the scans' receipts record:
    ``nifti/<project>/<subject>/<session>/<scan>/<file>``."""
    return sorted(p for p in (results / "nifti").glob("*/*/*/*/*") if p.is_file())


def dicom_files_per_scan(results: Path, n_scans: int, n_sessions: int) -> tuple[float, int]:
    """(files per scan, files) under ``results/dicom``, the session receipts left out."""
    n = sum(len(names) for _, _, names in os.walk(results / "dicom"))
    return (n - n_sessions) / n_scans, n


def measure(ctx) -> None:  # ctx: bench.__main__.Ctx (not imported: __main__ imports this module)
    data = study.clone(ctx.study.data_dir, ctx.work / "server-zipstore")
    out = ctx.work / "zip-out"
    log = ctx.work / "logs"
    log.mkdir(exist_ok=True)
    with study.server(data) as srv:
        warm = True  # the first GET reads the server's blobs from disk: not measured
        for rep in range(ctx.mode.reps):
            wf = ctx.workflow(f"zipstore-{rep}", srv.url)
            node = ctx.work / f"zip-node-tmp-{rep}"
            node.mkdir(parents=True, exist_ok=True)
            wf.write_config(dicom={"store": "zip", "local_tmp": str(node)})
            wf.run(["--until", "discover"], "zip-discover")
            scans = manifest.read_scans(wf.results / paths.SCANS_TSV)
            zips = [
                f"/data/experiments/{r.session_id}/scans/{r.scan_id}/resources/{r.resource}/files?format=zip"
                for r in scans
            ]
            conns = ctx.max_connections
            if warm:
                clients.raw_get(srv.url, zips, conns, out / "zip", ctx.env, log / "zip-warm-up.log")
                clients.remove(out / "zip")
                warm = False

            def raw(rep: int = rep, zips: list[str] = zips, conns: int = conns) -> float:
                """Both raw GETs; the client's CPU time of the plain one (no md5)."""
                for key, md5 in (("zip.limit_zip", False), ("zip.limit_zip_md5", True)):
                    name = f"{key.removeprefix('zip.').replace('_', '-')}-{rep}.log"
                    got = clients.raw_get(srv.url, zips, conns, out / "zip", ctx.env, log / name, md5=md5)
                    ctx.add(key, got.wall_s)
                    if not md5:
                        ctx.add("zip.limit_zip_cpu", got.cpu_s)
                        raw_cpu = got.cpu_s
                    clients.remove(out / "zip")
                return raw_cpu

            jobs = session_commands(wf, f"zip-commands-{rep}")

            # the raw GETs, the bare jobs and the workflow in the same repetition, in turn first or last
            if rep % 2 == 0:
                raw_cpu = raw()
                bare_jobs(ctx, wf, jobs, conns, rep, log)
            before = study.request_count(srv)
            download = wf.stage("download_stage", f"zip-download-{rep}")
            ctx.add("zip.download", download.wall_s)
            ctx.add("zip.download_cpu", download.cpu_s)
            n_requests = study.request_count(srv) - before
            noop = wf.stage("download_stage", f"zip-download-noop-{rep}")
            ctx.add("zip.noop", noop.wall_s)
            ctx.add("zip.noop_cpu", noop.cpu_s)
            if rep % 2 == 1:
                bare_jobs(ctx, wf, jobs, conns, rep, log)
                raw_cpu = raw()
            sessions = {(r.project, r.subject, r.session) for r in scans}
            ctx.add("zip.download_cpu_per_session", (download.cpu_s - noop.cpu_s - raw_cpu) / len(sessions))
            kept = [paths.dicom_zip(wf.results, r.project, r.subject, r.session, r.scan) for r in scans]
            settle()
            ctx.add("zip.md5", md5_time(kept))
            per_scan, n_files = dicom_files_per_scan(wf.results, len(scans), len(sessions))
            ctx.add("zip.files_per_scan", per_scan)
            ctx.rows["zip.files_per_scan"].note = (
                f"{n_files:,} files under dicom/ for {len(scans)} scans and {len(sessions)} sessions "
                f"(a session receipt each); {n_requests / len(scans):.2f} requests per scan"
            )
            in_ram = set(dicomzip.RAM_TMP.glob("xnat-prep-*"))
            converted = wf.stage("convert_stage", f"zip-convert-{rep}")
            ctx.add("zip.convert", converted.wall_s)
            ctx.add("zip.convert_cpu", converted.cpu_s)
            leftover = [*node.iterdir(), *(set(dicomzip.RAM_TMP.glob("xnat-prep-*")) - in_ram)]
            if leftover:
                ctx.rows["zip.convert"].note = f"{len(leftover)} unpacked folder(s) left in temp!"
            ctx.add("zip.convert_noop", wf.stage("convert_stage", f"zip-convert-noop-{rep}").wall_s)
            settle()
            ctx.add("zip.nifti_md5", md5_time(nifti_outputs(wf.results)))
            settle()
            started = time.perf_counter()
            where = []  # each zip's unpack root (RAM or node), for the system calls' row
            for source in kept:  # where and as the conversion unpacks, without dcm2niix
                with dicomzip.dicoms(source, str(node)) as found:
                    where.append(found.folder.parent)
            ctx.add("zip.unpack", time.perf_counter() - started)
            settle()
            ctx.add(
                "zip.unpack_syscalls",
                sum(syscalls_time(z, root) for z, root in zip(kept, where, strict=True)),
            )
            ctx.rows["zip.unpack"].note = "in " + ", ".join(sorted(set(map(str, where))))
            folders = []
            settle()
            started = time.perf_counter()
            for i, (source, r) in enumerate(zip(kept, scans, strict=True)):  # dcm2niix's input
                folder = out / "unpacked" / str(i)
                folder.mkdir(parents=True)
                dicomzip.unpack(source, folder)
                folders.append((folder, f"{paths.safe_component(r.session)}_{r.scan}"))
            ctx.add("zip.unpack_disk", time.perf_counter() - started)
            plain = clients.plain_dcm2niix(folders, out / "dcm2niix", ctx.cores)
            ctx.add("zip.dcm2niix", plain.wall_s)
            ctx.add("zip.dcm2niix_cpu", plain.cpu_s)
            # the jobs' logs stay (timelines: when each job started, got its slots, ended)
            shutil.copytree(wf.workdir / "logs", log / f"zipstore-{rep}", dirs_exist_ok=True)
            for name in ("zip-download", "zip-download-noop", "zip-convert"):
                shutil.copy2(wf.workdir / f"bench-{name}-{rep}.log", log / f"zipstore-{rep}")
            clients.remove(out, wf.workdir, node)
    clients.remove(data)
