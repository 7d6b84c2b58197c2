"""``xnat-prep summary`` and ``plan`` on a 1,000-session project: time, and requests from the
bundled server's own request log, checked against the issue's budgets.

    python -m bench.summary [--sessions 1000] [--out bench/results/DATE-summary.md]

The project is written into a fresh server data directory through the server's store
(``Store.archive_session``, what an import does), metadata only: every file row points at one
small blob, so the listings are those of a real archive of that shape (10 scans x 20 files per
session) while nothing is generated or copied. Then the bundled server runs on it, unmodified, and
the commands run as a user would (subprocesses, credentials in the environment).

Budgets (issue 11): counts-only <= 3 requests per project whatever its size (2 as built: the
subject listing and the project-wide scan search); the full summary <= 2 + 1 per session (as
built: 2 + 1 per session that has scans; see ``xnat_prep.summary``). The project also has one
subject without a session and one session without scans, which both must count. The full summary
runs twice: its session listings one after another (``--max-connections 1``) and four at once
(the default). Login requests are counted apart (``/data/JSESSION``, ``/data/services/auth``).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml

from xnat_prep.server.store import Store
from xnat_prep.server.testing import ServerHandle, running_server

USER, PASSWORD = "admin", "admin"  # the bundled server's first-run account
PROJECT = "SUMMARY1K"
SESSIONS_PER_SUBJECT = 2
SCANS = (  # (type, series description): 10 scans per session, two sharing a type
    ("T1w", "t1_mprage_sag"),
    ("T2w", "t2_spc_sag"),
    ("FLAIR", "t2_flair_tra"),
    ("fMRI", "rest_bold"),
    ("fMRI", "task_bold"),
    ("DWI", "dwi_64dir"),
    ("fmap", "fmap_AP"),
    ("fmap", "fmap_PA"),
    ("SWI", "swi_tra"),
    ("Localizer", "localizer"),
)
FILES_PER_SCAN = 20
LOGIN = ("/data/JSESSION", "/data/services/auth")


@dataclass
class Measured:
    what: str
    seconds: float
    requests: int  # data requests (without logins)
    logins: int
    budget: int | None
    by_path: Counter[str]


def build(data_dir: Path, sessions: int) -> None:
    """The synthetic project in a new data directory (server not running)."""
    store = Store(data_dir)
    try:
        store.create_project(PROJECT, USER, {})
        blob = store.receive(io.BytesIO(b"\0" * 4096))
        start = date(2020, 1, 6)
        for n in range(sessions):
            subject = f"S{n // SESSIONS_PER_SUBJECT:04d}"
            scans = [
                {
                    "id": str(k + 1),
                    "xsi_type": "xnat:mrScanData",
                    "fields": {"type": scan_type, "series_description": description},
                    "files": [_file(f"{k + 1}-{i:03d}.dcm", blob) for i in range(FILES_PER_SCAN)],
                }
                for k, (scan_type, description) in enumerate(SCANS)
            ]
            fields = {"date": (start + timedelta(days=n)).isoformat()}
            doc = {"xsi_type": "xnat:mrSessionData", "fields": fields, "scans": scans}
            store.archive_session(
                doc, PROJECT, subject, f"{subject}_MR{n % SESSIONS_PER_SUBJECT + 1}", "none", USER
            )
        # one subject without a session (the subject listing counts it), one session without scans
        store.create_subject(PROJECT, "S9999", USER, {})
        doc = {"xsi_type": "xnat:mrSessionData", "fields": {"date": "2019-12-31"}, "scans": []}
        store.archive_session(doc, PROJECT, "S9998", "S9998_MR1", "none", USER)
    finally:
        store.close()


def check(serial: Path, parallel: Path, sessions: int) -> None:
    """The serial and the parallel summary wrote the same tables, and they count what was built."""
    for name in ("projects.tsv", "subjects.tsv", "sessions.tsv", "scan_types.tsv"):
        if (serial / name).read_bytes() != (parallel / name).read_bytes():
            raise RuntimeError(f"{name} differs between the serial and the parallel summary")
    header, row = (serial / "projects.tsv").read_text().splitlines()[:2]
    project = dict(zip(header.split("\t"), row.split("\t"), strict=True))
    want = {
        "subjects": -(-sessions // SESSIONS_PER_SUBJECT) + 2,
        "sessions": sessions + 1,
        "scans": sessions * len(SCANS),
        "files": sessions * len(SCANS) * FILES_PER_SCAN,
    }
    got = {k: int(project[k]) for k in want}
    if got != want:
        raise RuntimeError(f"projects.tsv counts {got}, built {want}")


def _file(path: str, blob: Any) -> dict[str, Any]:
    return {"path": path, "size": blob.size, "md5": blob.md5, "blob": blob.name, "crc32": blob.crc32}


def measure(
    srv: ServerHandle, what: str, cmd: list[str], budget: int | None, env: dict[str, str]
) -> Measured:
    before = len(srv.requests())
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    made = srv.requests()[before:]
    logins = sum(r["path"] in LOGIN for r in made)
    data = [r for r in made if r["path"] not in LOGIN]
    by_path = Counter(_shape(r["path"]) for r in data)
    return Measured(what, seconds, len(data), logins, budget, by_path)


def _shape(path: str) -> str:
    """A request path with IDs generalised: /data/experiments/XNAT_E00012/scans/ALL/files -> .../E/..."""
    parts = path.split("/")
    return "/".join("{id}" if p.startswith(("XNAT_", "S0")) else p for p in parts)


def run(sessions: int, workdir: Path) -> list[Measured]:
    data_dir = workdir / "data"
    started = time.perf_counter()
    build(data_dir, sessions)
    build_seconds = time.perf_counter() - started
    print(f"built {sessions} sessions in {build_seconds:.1f} s", file=sys.stderr)
    env = dict(os.environ, XNAT_USER=USER, XNAT_PASS=PASSWORD)
    xnat_prep = [sys.executable, "-m", "xnat_prep.cli"]
    results = []
    with running_server(data_dir) as srv:
        host = ["--host", srv.url]
        summary = [*xnat_prep, "summary", "--project", PROJECT, *host, "--out"]
        counts = [*summary, str(workdir / "counts"), "--counts-only"]
        results.append(measure(srv, "summary --counts-only", counts, 3, env))
        budget = 2 + sessions + 1  # with the session without scans
        for n in (1, 4):
            full = [*summary, str(workdir / f"full{n}"), "--max-connections", str(n)]
            connections = "1 connection" if n == 1 else f"{n} connections"
            results.append(measure(srv, f"summary (full, {connections})", full, budget, env))
        check(workdir / "full1", workdir / "full4", sessions)
        subjects = sorted({f"S{n // SESSIONS_PER_SUBJECT:04d}" for n in range(sessions)})
        csv = workdir / "subjects.csv"
        csv.write_text("Project,Subject\n" + "".join(f"{PROJECT},{s}\n" for s in subjects))
        config = {
            "xnat": {"host": srv.url, "max_connections": 4},
            "subjects": {"csv": str(csv)},
            "output_root": str(workdir / "results"),
        }
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        plan_cmd = [*xnat_prep, "plan", "--configfile", str(workdir / "config.yaml")]
        results.append(measure(srv, "plan (discovery + plan)", plan_cmd, None, env))
    results.insert(0, Measured(f"build {sessions} sessions (store)", build_seconds, 0, 0, None, Counter()))
    return results


def table(results: list[Measured], sessions: int) -> str:
    lines = [
        "| what | time (s) | requests | budget | within | logins | requests by path |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    for m in results:
        within = "" if m.budget is None else ("yes" if m.requests <= m.budget else "**NO**")
        paths = ", ".join(f"`{p}` {n}" for p, n in m.by_path.most_common(4))
        budget = "" if m.budget is None else str(m.budget)
        lines.append(
            f"| {m.what} | {m.seconds:.1f} | {m.requests} | {budget} | {within} | {m.logins} | {paths} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.summary", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--out", type=Path, help="write the results as Markdown here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-summary-") as tmp:
        results = run(args.sessions, Path(tmp))
    load = os.getloadavg()
    text = (
        f"# summary and plan at {args.sessions} sessions\n\n"
        f"Project `{PROJECT}`: {args.sessions} MR sessions ({args.sessions // SESSIONS_PER_SUBJECT} "
        f"subjects with {SESSIONS_PER_SUBJECT} each, plus one without a session and one with a "
        f"session without scans), {len(SCANS)} scans x "
        f"{FILES_PER_SCAN} files per session, "
        "metadata only (every file row points at one 4 kB blob), written through the bundled server's store; "
        "the server and the commands run unmodified, as subprocesses, over HTTP on loopback.\n\n"
        f"{table(results, args.sessions)}\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.1f} / "
        f"{load[1]:.1f} / {load[2]:.1f} at the end (shared with other sessions' work).\n"
    )
    print(text)
    if args.out:
        args.out.write_text(text)
    failed = [m for m in results if m.budget is not None and m.requests > m.budget]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
