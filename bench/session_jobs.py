"""The download stage's own jobs without Snakemake: what two designs could reach at best.

The zip rows compare the workflow's download stage with raw parallel GETs. Between the two lie
Snakemake's fixed cost (its start, DAG and checkpoint: the stage run again with nothing to do),
one process per session job (Python, imports, its manifest, its receipts), and the checking
itself. This driver runs the very commands Snakemake would run (``snakemake -n -p``, one per
session) with nothing scheduling them, so the bench can tell those apart in the same run:

- ``chains``: one process per session, scheduled as the workflow schedules them on one host:
  ``2N`` at a time sharing a pool of ``N`` connection slots (``xnat_prep.slots``), so the next jobs
  have started and wait, ready, while the running ones transfer; the per-session design with a
  scheduler that costs nothing;
- ``batched``: one process per connection, each running its share of the sessions in turn through
  ``xnat_prep.cli.main`` (round robin): a design that batched sessions into fewer jobs.

Added to Snakemake's fixed cost, each is the least any Snakemake stage of that design takes here.

    python -m bench.session_jobs chains|batched N COMMANDS.txt
    python -m bench.session_jobs share COMMANDS.txt     (one batched process; internal)

Run in the workflow's directory (the commands' log paths are relative to it) with the environment
the workflow gives its jobs (``xnat_prep.config.export_for_jobs``).
"""

from __future__ import annotations

import os
import queue
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path


def _chains(commands: list[str], n: int) -> int:
    from xnat_prep import slots

    pool = slots.open_pool(Path.cwd() / "bare", os.environ["XNAT_HOST"], n)  # in os.environ: jobs inherit it
    try:
        return _run_all(commands, 2 * n)
    finally:
        shutil.rmtree(pool.folder, ignore_errors=True)


def _run_all(commands: list[str], n: int) -> int:
    """``commands`` in ``n`` worker threads, each starting the next as its last one ends."""
    todo: queue.Queue[str] = queue.Queue()
    for command in commands:
        todo.put(command)
    failed: list[int] = []

    def worker() -> None:
        while True:
            try:
                command = todo.get_nowait()
            except queue.Empty:
                return
            code = subprocess.run(["bash", "-c", command], check=False).returncode
            if code:
                failed.append(code)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 1 if failed else 0


def _batched(commands: list[str], n: int) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-shares-") as tmp:
        procs = []
        for i in range(n):
            share = Path(tmp) / f"{i}.txt"
            share.write_text("".join(f"{c}\n" for c in commands[i::n]))
            procs.append(subprocess.Popen([sys.executable, "-m", "bench.session_jobs", "share", str(share)]))
        return 1 if any(p.wait() for p in procs) else 0


def _share(commands: list[str]) -> int:
    from xnat_prep import cli

    for command in commands:
        argv = shlex.split(command)
        if argv[0] != "xnat-prep":
            raise SystemExit(f"not an xnat-prep command: {command[:80]}")
        code = cli.main(argv[1:])
        if code:
            return code
    return 0


def main(argv: list[str]) -> int:
    mode, *rest = argv
    commands = [line for line in Path(rest[-1]).read_text().splitlines() if line.strip()]
    if mode == "share":
        return _share(commands)
    runs = {"chains": _chains, "batched": _batched}
    if mode not in runs:
        raise SystemExit(f"mode: chains, batched or share, not {mode!r}")
    return runs[mode](commands, int(rest[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
