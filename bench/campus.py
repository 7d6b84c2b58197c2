"""``python -m bench.campus``: the download path on loopback and on a modelled campus XNAT, side by side.

The bundled server runs twice on the same data: as it is (loopback) and with ``--model campus``
(50 ms per request, 40 MB/s per connection, 125 MB/s server-wide, zips built at 30 MB/s; see
src/xnat_prep/server/model.py). For each, in one run and interleaved per repetition:

- download: the tutorial's sequential xnatpy script, the raw parallel GET of every scan's zip at
  the workflow's connection cap, and the workflow's download stage (discovery done first, not
  timed; ``xnat.scans_in_parallel`` k as configured);
- whole run CSV -> NIfTI: the workflow (discover, download, convert, report; no upload, no
  variables) vs the tutorial's script followed by dcm2niix on each scan one after another;
- one session of 20 large scans (random bytes, as bench/bigscan.py): ``xnat-prep
  download-session`` (the rule's command) with k = 4 vs k = 1, and the k = 4 job's peak RSS.

The study is made for this: a few sessions of large 3D series (few, big DICOM files), so what is
measured is the transfer, not the creation of hundreds of thousands of small files (the main
bench covers that case). Results go to ``bench/results/<date>-campus.md``.

    python -m bench.campus [--subjects 4] [--reps 2] [--big-scans 20] [--big-mb 64]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import requests

from bench import clients, machine, measure, study, workflow
from bench.table import Row, render
from xnat_prep import convert, manifest, paths
from xnat_prep.demodata import protocols
from xnat_prep.server import testing
from xnat_prep.server.testing import ServerHandle, running_server

MB = 1_000_000
MiB = 1 << 20
CAP = 4  # xnat.max_connections for every row, and the raw GET's pool size
SIZE = "campus"  # the demo-data protocol registered below
DCM2NIIX_DEFAULT_GZ = 6  # what `dcm2niix -z y` compresses at: the tutorial's conversion


def register_protocol() -> None:
    """A session of large 3D series: ~220 MB in ~870 files (a modern structural protocol)."""
    generate = importlib.import_module("xnat_prep.demodata.generate")  # the package shadows it
    generate.SIZES = (*generate.SIZES, SIZE)
    t1 = protocols._t1(2, 384, 240, 0.7)  # 384x384, 240 slices: 70 MB
    protocols.PROTOCOLS[SIZE] = (
        t1,
        replace(t1, number=3, description="T1w_MPRAGE_rep"),
        protocols._t2(4, 384, 192, 0.7, 0.7),  # 57 MB
        protocols._flair(5, 256, 256, 192, 0.9, 0.9),  # 25 MB
    )


@contextlib.contextmanager
def server(data: Path, model: str | None) -> Iterator[ServerHandle]:
    testing.START_TIMEOUT = 180  # a shared machine at load 30 takes more than the tests' 15 s
    with running_server(data, extra_args=["--model", model] if model else []) as srv:
        yield srv


def rows(subjects: int, big: str) -> dict[str, Row]:
    out: list[Row] = []
    for net in ("loopback", "campus"):
        tag = f"[{net}]"
        out += [
            Row(f"{net}.tutorial", f"{tag} download: tutorial xnatpy script (sequential download_dir)", "s"),
            Row(
                f"{net}.raw_zip",
                f"{tag} download: raw limit, parallel GET of each scan's zip, {CAP} connections",
                "s",
            ),
            Row(f"{net}.workflow", f"{tag} download: workflow download stage (after discovery)", "s"),
            Row(
                f"{net}.vs_tutorial",
                f"{tag} download speed-up: tutorial / workflow",
                "x",
                **({"target": ">= 3.5", "ok": lambda r: r >= 3.5} if net == "campus" else {}),
            ),
            Row(
                f"{net}.vs_raw",
                f"{tag} download vs raw limit: raw zip GET / workflow",
                "x",
                **({"target": ">= 0.9", "ok": lambda r: r >= 0.9} if net == "campus" else {}),
            ),
            Row(
                f"{net}.noop",
                f"{tag} download stage again with nothing to do: Snakemake's start, DAG, checkpoint",
                "s",
            ),
            Row(
                f"{net}.ceiling_vs_tutorial",
                f"{tag} best tutorial / workflow a Snakemake stage can reach here: tutorial / (raw + fixed)",
                "x",
            ),
            Row(
                f"{net}.ceiling_vs_raw",
                f"{tag} best raw / workflow any Snakemake stage can reach here: raw / (raw + fixed cost)",
                "x",
            ),
            Row(
                f"{net}.run_tutorial", f"{tag} CSV -> NIfTI: tutorial script, then dcm2niix scan by scan", "s"
            ),
            Row(
                f"{net}.dcm2niix",
                f"{tag} of which dcm2niix -z y scan by scan (the tutorial's conversion; gzip level 6)",
                "s",
            ),
            Row(
                f"{net}.dcm2niix_same",
                f"{tag} the same dcm2niix with the workflow's options (gzip level {convert.GZ_LEVEL})",
                "s",
            ),
            Row(
                f"{net}.run_ceiling",
                f"{tag} best CSV -> NIfTI speed-up here: tutorial + dcm2niix / max(dcm2niix_same / "
                f"{os.cpu_count()} cores, raw GET + fixed cost)",
                "x",
            ),
            Row(f"{net}.run_workflow", f"{tag} CSV -> NIfTI: whole workflow (no upload, no variables)", "s"),
            Row(
                f"{net}.run_vs_tutorial",
                f"{tag} CSV -> NIfTI speed-up: tutorial + dcm2niix / workflow",
                "x",
                **({"target": ">= 3", "ok": lambda r: r >= 3} if net == "campus" else {}),
            ),
            Row(
                f"{net}.run_vs_tutorial_same",
                f"{tag} the same, with the tutorial's dcm2niix at the workflow's gzip level",
                "x",
            ),
        ]
    out += [
        Row("big.k1", f"[campus] one session of {big}: download-session, k = 1", "s"),
        Row("big.k4", f"[campus] one session of {big}: download-session, k = 4", "s"),
        Row("big.k1_cpu", "[campus] CPU of the k = 1 job (user+sys)", "s"),
        Row("big.k4_cpu", "[campus] CPU of the k = 4 job (user+sys)", "s"),
        Row("big.k1_server_cpu", "[campus] CPU of the server during the k = 1 job", "s"),
        Row("big.k4_server_cpu", "[campus] CPU of the server during the k = 4 job", "s"),
        Row("big.k4_vs_k1", "[campus] large scans: k=1 / k=4", "x", target=">= 3", ok=lambda r: r >= 3),
        Row("big.k4_rss", "[campus] peak RSS, k=4 job", "MB", target="<= 200 MB", ok=lambda r: r <= 200),
    ]  # fmt: skip
    return {r.key: r for r in out}


def upload_big_session(srv: ServerHandle, n_scans: int, scan_bytes: int, n_files: int) -> tuple[str, Path]:
    """Session BIG01_MR1 in project BIG: ``n_scans`` scans of ``n_files`` random files; its ID and
    a manifest file list (what discovery would write)."""
    http = requests.Session()
    http.auth = (study.USER, study.PASSWORD)
    http.put(f"{srv.url}/data/projects/BIG", timeout=60).raise_for_status()
    resp = http.put(
        f"{srv.url}/data/projects/BIG/subjects/BIG01/experiments/BIG01_MR1",
        params={"xsiType": "xnat:mrSessionData"},
        timeout=60,
    )
    resp.raise_for_status()
    session_id = resp.text.strip()
    rows: list[manifest.FileRow] = []
    for scan in range(1, n_scans + 1):
        base = f"{srv.url}/data/experiments/{session_id}/scans/{scan}"
        http.put(base, params={"xsiType": "xnat:mrScanData", "xnat:mrScanData/type": "BIG"}, timeout=60)
        for i in range(n_files):
            data = os.urandom(scan_bytes // n_files)
            http.put(f"{base}/resources/DICOM/files/f{i:03d}.dcm", data=data, timeout=600).raise_for_status()
        listing = http.get(f"{base}/resources/DICOM/files", params={"format": "json"}, timeout=60).json()
        rows += [
            manifest.FileRow(str(scan), "DICOM", r["Name"], int(r["Size"]), r["digest"], r["URI"])
            for r in listing["ResultSet"]["Result"]
        ]
    return session_id, rows


def cpu_now(srv: ServerHandle) -> tuple[float, float]:
    """(CPU seconds of this process's waited-for children, of the server process) so far."""
    t = os.times()
    fields = Path(f"/proc/{srv.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    server = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return t.children_user + t.children_system, server


def big_job(
    srv: ServerHandle, session_id: str, files: list, n_scans: int, k: int, work: Path, env: dict
) -> measure.Run:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    file_list = work / "files.tsv"
    manifest.write_tsv(file_list, files)
    scans = ",".join(
        f'{{"scan_id": "{s}", "resource": "DICOM", "scan": "{s}-BIG"}}' for s in range(1, n_scans + 1)
    )
    cmd = [
        sys.executable, "-m", "xnat_prep.cli", "download-session", "--files", str(file_list),
        "--session-id", session_id, "--scans", f"[{scans}]", "--receipt", str(work / "BIG.json"),
        "--host", srv.url, "--parallel", str(k),
    ]  # fmt: skip
    return measure.run(cmd, env=env, log=work.with_suffix(".log"))


def tutorial_folders(dest: Path) -> list[tuple[Path, str]]:
    """The scan folders the tutorial's download_dir left (one per scan), named for dcm2niix."""
    folders = sorted({p.parent for p in dest.rglob("*.dcm")})
    return [(f, f"s{i}") for i, f in enumerate(folders)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.campus", description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=4, help="subjects of one session each (default 4)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument(
        "--k",
        default="auto",
        help="xnat.scans_in_parallel of the workflow rows (default: auto)",
    )
    parser.add_argument("--big-scans", type=int, default=20)
    parser.add_argument("--big-mb", type=int, default=64, help="MB per large scan (8 files each)")
    parser.add_argument("--only", nargs="*", choices=["download", "run", "big"])
    parser.add_argument("--results-dir", type=Path, default=workflow.REPO / "bench" / "results")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "xnat-prep-bench-cache")
    args = parser.parse_args(argv)
    register_protocol()
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    loads = [os.getloadavg()[0]]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="xnat-prep-campus-"))
    work.mkdir(parents=True, exist_ok=True)
    shim = measure.shim_dir(work)
    env = workflow.env(shim)
    big = f"{args.big_scans} scans x {args.big_mb} MB"
    table = rows(args.subjects, big)
    only = set(args.only or ["download", "run", "big"])
    spec = study.StudySpec(SIZE, args.subjects, 1)
    if only & {"download", "run"}:
        print(f"bench.campus: seeding/using {spec.name} in {args.cache}", flush=True)
        the_study = study.prepare(spec, args.cache)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    facts: dict[str, str] = {}

    def add(key: str, value: float) -> None:
        table[key].samples.append(value)
        print(f"bench.campus: {key} = {value:.2f}", flush=True)

    def new_workflow(name: str, host: str, **config: object) -> workflow.Workflow:
        wf = workflow.Workflow(work / name, host, the_study.subjects_csv, 2, CAP, shim)
        shutil.rmtree(wf.workdir, ignore_errors=True)
        wf.write_config(**config)
        cfg = wf.configfile.read_text().replace(
            f"max_connections: {CAP}", f"max_connections: {CAP}\n  scans_in_parallel: {args.k}"
        )
        wf.configfile.write_text(cfg)
        return wf

    cpu: dict[str, list[tuple[float, float]]] = {}

    def measured(srv: ServerHandle, key: str, fn) -> float:
        """``fn()`` (a wall time), recorded, with the CPU it and the server used meanwhile."""
        before = cpu_now(srv)
        value = fn()
        after = cpu_now(srv)
        add(key, value)
        cpu.setdefault(key, []).append((after[0] - before[0], after[1] - before[1]))
        return value

    out = work / "out"
    for rep in range(args.reps if only & {"download", "run"} else 0):
        for net, model in (("loopback", None), ("campus", "campus")):
            data = study.clone(the_study.data_dir, work / f"server-{net}")
            with server(data, model) as srv:
                if "download" in only:
                    ref = new_workflow(f"{net}-ref-{rep}", srv.url)
                    ref.run(["--until", "discover"], "discover")
                    scans = manifest.read_scans(ref.results / paths.SCANS_TSV)
                    facts["scans"] = str(len(scans))
                    zips = [
                        f"/data/experiments/{r.session_id}/scans/{r.scan_id}/resources/{r.resource}/files?format=zip"
                        for r in scans
                    ]
                    clients.remove(out)
                    tut = measured(
                        srv,
                        f"{net}.tutorial",
                        lambda net=net, srv=srv, rep=rep: (
                            clients.tutorial(
                                srv.url,
                                the_study.subject_labels(),
                                out / "tutorial",
                                env,
                                logs / f"{net}-tut-{rep}.log",
                            ).wall_s
                        ),
                    )
                    n, size = measure.tree_size(out / "tutorial")
                    facts["DICOM"] = f"{n:,} files, {size / 1e9:.2f} GB"
                    if "run" in only and net == "campus":  # the tutorial's files, then dcm2niix scan by scan
                        before = cpu_now(srv)
                        folders = tutorial_folders(out / "tutorial")
                        conv = clients.plain_dcm2niix(
                            folders, out / "nii", 1, gz_level=DCM2NIIX_DEFAULT_GZ
                        ).wall_s
                        after = cpu_now(srv)
                        add(f"{net}.run_tutorial", tut + conv)
                        add(f"{net}.dcm2niix", conv)
                        add(
                            f"{net}.dcm2niix_same",
                            clients.plain_dcm2niix(folders, out / "nii-same", 1).wall_s,
                        )
                        c0, s0 = cpu[f"{net}.tutorial"][-1]
                        cpu.setdefault(f"{net}.run_tutorial", []).append(
                            (c0 + after[0] - before[0], s0 + after[1] - before[1])
                        )
                    clients.remove(out)
                    measured(
                        srv,
                        f"{net}.raw_zip",
                        lambda net=net, srv=srv, zips=zips, rep=rep: (
                            clients.raw_get(
                                srv.url, zips, CAP, out / "zip", env, logs / f"{net}-raw-{rep}.log"
                            ).wall_s
                        ),
                    )
                    clients.remove(out, ref.workdir)
                    wf = new_workflow(f"{net}-dl-{rep}", srv.url)
                    wf.run(["--until", "discover"], "discover")
                    measured(
                        srv, f"{net}.workflow", lambda wf=wf: wf.stage("download_stage", "download").wall_s
                    )
                    add(f"{net}.noop", wf.stage("download_stage", "download-noop").wall_s)
                    clients.remove(wf.results)  # the logs stay (--workdir)
                if "run" in only and net == "campus":  # the whole-run target is campus's; time is short
                    wf = new_workflow(
                        f"{net}-run-{rep}",
                        srv.url,
                        upload={"enabled": False},
                        custom_variables={"enabled": False},
                    )
                    measured(srv, f"{net}.run_workflow", lambda wf=wf: wf.run([], "run").wall_s)
                    clients.remove(wf.results)
            clients.remove(data)
            loads.append(os.getloadavg()[0])
    if "big" in only:
        data = work / "server-big"
        with server(data, "campus") as srv:
            session_id, files = upload_big_session(srv, args.big_scans, args.big_mb * MB, 8)
            for _ in range(args.reps):
                for k in (1, 4):
                    before = cpu_now(srv)
                    job = big_job(srv, session_id, files, args.big_scans, k, work / f"big-k{k}", env)
                    after = cpu_now(srv)
                    add(f"big.k{k}", job.wall_s)
                    add(f"big.k{k}_cpu", after[0] - before[0])
                    add(f"big.k{k}_server_cpu", after[1] - before[1])
                    if k == 4:
                        add("big.k4_rss", job.max_rss_mb)
                loads.append(os.getloadavg()[0])
            clients.remove(work / "big-k1", work / "big-k4")
        clients.remove(data)
    for net in ("loopback", "campus"):
        ratio(table, f"{net}.vs_tutorial", f"{net}.tutorial", f"{net}.workflow")
        ratio(table, f"{net}.vs_raw", f"{net}.raw_zip", f"{net}.workflow")
        ratio(table, f"{net}.run_vs_tutorial", f"{net}.run_tutorial", f"{net}.run_workflow")
        same, raw, fixed = table[f"{net}.dcm2niix_same"], table[f"{net}.raw_zip"], table[f"{net}.noop"]
        if same.samples and raw.samples and fixed.samples:  # neither conversion nor download is faster
            table[f"{net}.run_ceiling"].ratio = table[f"{net}.run_tutorial"].value / max(
                same.value / (os.cpu_count() or 1), raw.value + fixed.value
            )
            if table[f"{net}.run_workflow"].samples:
                table[f"{net}.run_vs_tutorial_same"].ratio = (
                    table[f"{net}.run_tutorial"].value - table[f"{net}.dcm2niix"].value + same.value
                ) / table[f"{net}.run_workflow"].value
        if raw.samples and fixed.samples:
            table[f"{net}.ceiling_vs_raw"].ratio = raw.value / (raw.value + fixed.value)
            if table[f"{net}.tutorial"].samples:
                table[f"{net}.ceiling_vs_tutorial"].ratio = table[f"{net}.tutorial"].value / (
                    raw.value + fixed.value
                )
    ratio(table, "big.k4_vs_k1", "big.k1", "big.k4")
    for key, pairs in cpu.items():
        client = measure.median([c for c, _ in pairs])
        srv_cpu = measure.median([s for _, s in pairs])
        table[key].note = (
            f"CPU: clients {client:.1f} s, server {srv_cpu:.1f} s; "
            f"{(client + srv_cpu) / table[key].value:.2f} cores busy"
        )
    table["big.k4_rss"].ratio = table["big.k4_rss"].value if table["big.k4_rss"].samples else None
    text = report(args, table, facts, started, time.perf_counter() - t0, loads)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    dest = args.results_dir / f"{started:%Y-%m-%d}-campus.md"
    dest.write_text(text)
    print(text)
    print(f"bench.campus: written {dest}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def ratio(table: dict[str, Row], key: str, slow: str, fast: str) -> None:
    if table[slow].samples and table[fast].samples:
        table[key].ratio = table[slow].value / table[fast].value


def report(args, table, facts, started, seconds, loads) -> str:
    info = machine.describe()
    verdicts = [r.verdict for r in table.values() if r.verdict]
    return "\n".join(
        [
            f"# xnat-prep benchmark: loopback and campus, {started:%Y-%m-%d %H:%M} UTC",
            "",
            f"`python -m bench.campus --subjects {args.subjects} --reps {args.reps} --k {args.k} "
            f"--big-scans {args.big_scans} --big-mb {args.big_mb}`: {args.reps} repetitions, medians; "
            f"{seconds / 60:.0f} min in all. "
            f"**{sum(v == 'PASS' for v in verdicts)} of {len(verdicts)} targets met.**",
            "",
            "| | |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in info.items()),
            f"| load average (1 min) during the run | {', '.join(f'{x:.1f}' for x in loads)} |",
            "",
            f"- Study: {args.subjects} subjects x 1 session of large 3D series (demo-data protocol "
            f"`{SIZE}` of bench/campus.py); {facts.get('scans', '?')} scans; {facts.get('DICOM', '?')}.",
            "- loopback: `xnat-prep server` as it is; campus: `xnat-prep server --model campus` (50 ms per "
            "request, 40 MB/s per connection, 125 MB/s for the server, zips built at 30 MB/s).",
            f"- Workflow: `snakemake --cores 2`, default profile, `xnat.max_connections: {CAP}`, "
            f"`xnat.scans_in_parallel: {args.k}`; raw limit: bench/raw_get.py with {CAP} connections.",
            "",
            render(list(table.values())),
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
