"""``python -m bench.importing``: import throughput, `xnat-prep import` vs the tutorials' loop.

The same synthetic study (demo data, ``--size``, ``--sessions`` sessions of one subject each) is
imported into a fresh bundled server (the unmodified one: it fsyncs every stored file) by:

- baseline: the tutorials' sequential xnatpy loop: ``xnat.connect``, then per session zip the
  folder (``shutil.make_archive``) and ``session.services.import_(zip, project=, subject=,
  experiment=)``;
- ``xnat-prep import --csv``: preflight (headers, md5 of every file), plan, one streamed zip per
  session, wait for the archive, verify counts and digests, receipts; one process, one row after
  another;
- its rerun on the filled server: what a no-op costs, and its modifying requests (must be 0).

Wall-clock per run, median over ``--reps``; sessions/min and MB/s from the study's size. Written
to ``bench/results/<date>-import.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import machine, measure
from bench.measure import median
from xnat_prep.demodata.dicom import SessionInfo
from xnat_prep.demodata.generate import write_session
from xnat_prep.server.testing import running_server

REPO = Path(__file__).resolve().parents[1]
PROJECT, USER, PASSWORD = "IMPORT", "admin", "admin"
MODIFYING = {"PUT", "POST", "DELETE"}
BASELINE = """
import shutil, sys, tempfile, xnat
url, project, root = sys.argv[1:4]
with xnat.connect(url, user="admin", password="admin", loglevel="ERROR") as session:
    for line in sys.argv[4:]:
        subject, label = line.split("/")
        with tempfile.TemporaryDirectory() as tmp:
            archive = shutil.make_archive(f"{tmp}/{label}", "zip", f"{root}/{subject}/{label}")
            session.services.import_(archive, project=project, subject=subject, experiment=label)
"""


def make_study(root: Path, size: str, n: int) -> list[tuple[str, str]]:
    sessions = [(f"IMP{i:03d}", f"IMP{i:03d}_MR1") for i in range(1, n + 1)]
    for subject, label in sessions:
        if not (root / subject / label).is_dir():
            write_session(root / subject / label, SessionInfo(PROJECT, subject, label, 0), size)
    return sessions


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{cmd[:4]} failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def fresh_server(work: Path, name: str):
    shutil.rmtree(work / name, ignore_errors=True)
    return running_server(work / name)


def create_project(url: str) -> None:
    import requests

    requests.put(f"{url}/data/projects/{PROJECT}", auth=(USER, PASSWORD), timeout=30).raise_for_status()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.importing", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=["tiny", "small", "realistic"])
    parser.add_argument("--sessions", type=int, default=6)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--results-dir", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a new temporary one)")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="xnat-prep-bench-import-"))
    work.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    data = work / "dicom"
    sessions = make_study(data, args.size, args.sessions)
    n_files, n_bytes = measure.tree_size(data)
    csv = work / "import.csv"
    csv.write_text(
        "project,subject,session,source\n"
        + "".join(f"{PROJECT},{s},{e},{data / s / e}\n" for s, e in sessions)
    )
    env = {**os.environ, "XNAT_USER": USER, "XNAT_PASS": PASSWORD}
    times: dict[str, list[float]] = {"baseline": [], "xnat-prep": [], "rerun": []}
    requests_seen: dict[str, int] = {}
    for rep in range(args.reps):
        with fresh_server(work, f"base-{rep}") as srv:
            create_project(srv.url)
            keys = [f"{s}/{e}" for s, e in sessions]
            times["baseline"].append(
                timed([sys.executable, "-c", BASELINE, srv.url, PROJECT, str(data), *keys], env)
            )
            requests_seen["baseline"] = len(srv.requests())
        with fresh_server(work, f"ours-{rep}") as srv:
            create_project(srv.url)
            out = work / f"out-{rep}"
            cmd = [sys.executable, "-m", "xnat_prep.cli", "--log", str(work / "import.log"), "import"]
            cmd += ["--csv", str(csv), "--host", srv.url, "--output-root", str(out)]
            before = len(srv.requests())
            times["xnat-prep"].append(timed(cmd, env))
            requests_seen["xnat-prep"] = len(srv.requests()) - before
            before = len(srv.requests())
            times["rerun"].append(timed(cmd, env))
            rerun = srv.requests()[before:]
            requests_seen["rerun"] = len(rerun)
            requests_seen["rerun_modifying"] = sum(r["method"] in MODIFYING for r in rerun)
        print(f"bench.importing: rep {rep + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()))
    mb = n_bytes / 1e6
    lines = [
        f"# Import throughput, {started:%Y-%m-%d}",
        "",
        f"Command: `python -m bench.importing --size {args.size} --sessions {args.sessions}"
        f" --reps {args.reps}`; "
        f"study: {len(sessions)} sessions ({args.size}), {n_files:,} files, {mb:.1f} MB; "
        "a fresh bundled server (fsync per file) per run; wall-clock medians.",
        "",
        "| run | time (s) | sessions/min | MB/s | requests | vs baseline |",
        "|---|---|---|---|---|---|",
    ]
    base = median(times["baseline"])
    for key, label in (
        ("baseline", "baseline: xnatpy loop (connect; per session make_archive + services.import_)"),
        ("xnat-prep", "`xnat-prep import --csv` (preflight, plan, streamed zip, verify, receipts)"),
        ("rerun", "`xnat-prep import --csv` again (all skip)"),
    ):
        t = median(times[key])
        rate = f"{len(sessions) / t * 60:.1f}" if key != "rerun" else "-"
        mbs = f"{mb / t:.1f}" if key != "rerun" else "-"
        reqs = str(requests_seen[key]) + (
            f" ({requests_seen['rerun_modifying']} modifying)" if key == "rerun" else ""
        )
        lines.append(f"| {label} | {t:.1f} | {rate} | {mbs} | {reqs} | {base / t:.2f}x |")
    lines += ["", "## Machine", "", *(f"- {k}: {v}" for k, v in machine.describe().items())]
    lines.append(f"- load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out_md = args.results_dir / f"{started:%Y-%m-%d}-import.md"
    out_md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"bench.importing: written {out_md}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
