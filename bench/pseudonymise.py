"""Pseudonymisation rows: files/s per core of ``xnat-prep pseudonymise`` on one session of the
benchmark's study size, against the floor of the same files read and written by pydicom with
no change (target: at least 0.8 of the floor).

Both run in a process of their own, one core, on the same sample of files (every series of the
session, evenly thinned to ``SAMPLE`` files), output to the same disk; the time is taken inside
that process around the file loop, so it leaves out the interpreter's start and imports that a
job pays once. ``python -m bench.pseudonymise floor|pseudonymise IN OUT`` is that process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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
            ctx.add(row, result["files"] / result["seconds"])
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


def main(argv: list[str]) -> int:
    kind, src, out = argv[1], Path(argv[2]), Path(argv[3])
    import pydicom  # noqa: F401  (imported before the clock starts, as in a job)

    import xnat_prep.pseudonymise  # noqa: F401

    start, cpu = time.perf_counter(), time.process_time()
    n = (_floor if kind == "floor" else _pseudonymise)(src, out)
    print(
        json.dumps(
            {"files": n, "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
