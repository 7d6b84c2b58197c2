"""Pseudonymisation rows: files/s per core of ``xnat-prep pseudonymise`` on one session of the
benchmark's study size, against the floor of the same files read and written by pydicom with
no change (target: at least 0.8 of the floor).

Both run in a process of their own, one core, on the same sample of files (every series of the
session, evenly thinned to ``SAMPLE`` files), output to the same disk; the time is taken inside
that process around the file loop, so it leaves out the interpreter's start and imports that a
job pays once; the rate is files per CPU second of that process. ``python -m bench.pseudonymise
floor|pseudonymise IN OUT`` is that process; ``python -m bench.pseudonymise`` alone measures
these rows without the rest of the benchmark (no server to seed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.table import Row

SAMPLE = 2000
ROW_KEYS = ("pseudo.floor", "pseudo.workflow", "pseudo.vs_floor")


def rows() -> list[Row]:
    return [
        Row(
            "pseudo.floor",
            "pseudonymise floor: pydicom read + write of the same files, no change, 1 core",
            "files/s",
        ),
        Row("pseudo.workflow", "pseudonymise: xnat-prep pseudonymise (default profile), 1 core", "files/s"),
        Row(
            "pseudo.vs_floor",
            "pseudonymise vs floor: files/s / floor files/s",
            "x",
            target=">= 0.8",
            ok=lambda r: r >= 0.8,
        ),
    ]


def ratios(r: dict[str, Row]) -> None:
    r["pseudo.vs_floor"].ratio = r["pseudo.workflow"].value / r["pseudo.floor"].value


def sample(session: Path, limit: int = SAMPLE) -> Path:
    """A folder of symlinks to at most ``limit`` files of ``session``, every series represented."""
    files = sorted(p for p in session.rglob("*.dcm"))
    step = max(1, -(-len(files) // limit))
    chosen = files[::step]
    out = session.with_name(session.name + "-sample")
    shutil.rmtree(out, ignore_errors=True)
    for f in chosen:
        target = out / f.parent.name / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(f)
    return out


def measure(ctx) -> None:
    """Generate one session (the study's size), then time both loops ``ctx.mode.reps`` times."""
    from xnat_prep.demodata import write_session
    from xnat_prep.demodata.dicom import SessionInfo

    root = ctx.work / "pseudonymise"
    shutil.rmtree(root, ignore_errors=True)
    session = root / "session"
    write_session(session, SessionInfo("BENCH", "SUB001", "SUB001_MR1", 0), ctx.mode.study.size)
    src = sample(session)
    key = root / "bench.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, os.urandom(32).hex().encode())
    os.close(fd)
    n = 0
    for _ in range(ctx.mode.reps):
        for kind, row in (("floor", "pseudo.floor"), ("pseudonymise", "pseudo.workflow")):
            out = root / f"out-{kind}"
            shutil.rmtree(out, ignore_errors=True)
            env = dict(os.environ, XNAT_PREP_PSEUDO_KEY_FILE=str(key))
            proc = subprocess.run(
                [sys.executable, "-m", "bench.pseudonymise", kind, str(src), str(out)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(proc.stdout.splitlines()[-1])
            n = result["files"]
            # per core: CPU time of the one-process loop (on a shared machine wall time also
            # counts the other processes' turns; both are near equal on an idle one)
            ctx.add(row, result["files"] / result["cpu_seconds"])
            shutil.rmtree(out, ignore_errors=True)
    note = f"{n:,} files of one {ctx.mode.study.size} session"
    ctx.rows["pseudo.floor"].note = note
    ctx.rows["pseudo.workflow"].note = note + " (written; quarantined ones are read only)"
    shutil.rmtree(root, ignore_errors=True)


def _floor(src: Path, out: Path) -> int:
    import pydicom

    n = 0
    for top, _, names in os.walk(src):
        for name in sorted(names):
            ds = pydicom.dcmread(os.path.join(top, name))
            target = out / os.path.relpath(top, src) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(target, enforce_file_format=True)
            n += 1
    return n


def _pseudonymise(src: Path, out: Path) -> int:
    from xnat_prep.pseudonymise import load_key, pseudonymise_tree

    data = pseudonymise_tree(src, out, key=load_key(None), subject_id="XNAT_S00001")
    return data["n_input"]


def _one(kind: str, src: Path, out: Path) -> int:
    """The measured process: one loop over the files, timed (wall and CPU) around the loop."""
    import pydicom  # noqa: F401  (imported before the clock starts, as in a job)

    import xnat_prep.pseudonymise  # noqa: F401

    start, cpu = time.perf_counter(), time.process_time()
    n = (_floor if kind == "floor" else _pseudonymise)(src, out)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"files": n, "seconds": wall, "cpu_seconds": cpu}))
    return 0


def standalone(argv: list[str]) -> int:
    """These rows alone (no server needed): ``python -m bench.pseudonymise [--size S] [--reps N]``,
    written to ``bench/results/<date>-pseudonymise.md``."""
    import argparse
    import datetime as dt
    from types import SimpleNamespace

    from bench import machine, table
    from bench.workflow import REPO

    parser = argparse.ArgumentParser(prog="python -m bench.pseudonymise", description=standalone.__doc__)
    parser.add_argument("--size", default="realistic", choices=["tiny", "small", "realistic"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--results-dir", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="xnat-prep-bench-pseudo-") as work:
        rows_ = {r.key: r for r in rows()}
        ctx = SimpleNamespace(
            work=Path(work),
            mode=SimpleNamespace(reps=args.reps, study=SimpleNamespace(size=args.size)),
            rows=rows_,
            add=lambda key, value: rows_[key].samples.append(value),
        )
        measure(ctx)
    ratios(rows_)
    info = machine.describe()
    text = "\n".join(
        [
            f"# xnat-prep benchmark: pseudonymisation, {started:%Y-%m-%d %H:%M} UTC",
            "",
            f"`python -m bench.pseudonymise --size {args.size} --reps {args.reps}`: medians of {args.reps}, "
            "floor and pseudonymisation alternating, each a process of its own.",
            "",
            "| | |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in info.items()),
            "",
            table.render(list(rows_.values())),
            "",
        ]
    )
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"{started:%Y-%m-%d}-pseudonymise.md"
    out.write_text(text)
    print(text)
    print(f"bench: written {out}")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] in ("floor", "pseudonymise"):
        return _one(argv[1], Path(argv[2]), Path(argv[3]))
    return standalone(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
