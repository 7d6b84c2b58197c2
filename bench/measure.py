"""Running a command and measuring it: wall time, peak RSS of its process tree, exit status.

Peak RSS is the ``ru_maxrss`` of the command's process as reported by GNU ``time`` (``%M``): the
largest RSS of the command *and* of every descendant it waited for, so a snakemake run's figure
covers its job processes too. No polling, so no sampling gaps. Why not ``wait4`` here directly:
Linux folds the forking process's peak RSS into the child's at ``exec`` (the child starts as a
copy of its parent), so a child of this (large) Python process would report at least the
harness's own RSS; ``/usr/bin/time`` is a tiny parent.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

GNU_TIME = shutil.which("time", path="/usr/bin:/bin")


@dataclass(frozen=True)
class Run:
    """One measured command."""

    wall_s: float
    max_rss_mb: float
    returncode: int
    log: Path | None
    cpu_s: float = 0.0  # user + system time of the command and every descendant it waited for


class CommandFailed(RuntimeError):
    """A measured command exited non-zero; the message ends with the tail of its log."""


def run(
    cmd: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> Run:
    """Run ``cmd`` to completion, its stdout+stderr into ``log`` (or discarded).

    After ``timeout`` seconds the command's process group is SIGKILLed (returncode -9): SIGTERM
    can deadlock a busy snakemake (docs/snakemake-scaling.md, G1). The clock starts after
    :func:`settle`.
    """
    settle()
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    rss_file = tempfile.NamedTemporaryFile(prefix="bench-rss-", delete=False)  # noqa: SIM115
    rss_file.close()
    timed = [GNU_TIME, "-f", "%M", "-o", rss_file.name, *cmd] if GNU_TIME else list(cmd)
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(
            timed, cwd=cwd, env=dict(env) if env else None, stdout=out, stderr=out, start_new_session=True
        )
        while True:
            pid, status, usage = os.wait4(proc.pid, 0 if timeout is None else os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout:  # type: ignore[operator]
                os.killpg(proc.pid, signal.SIGKILL)
                timeout = None
            time.sleep(0.05)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        max_rss_kb = usage.ru_maxrss
        if GNU_TIME:
            text = Path(rss_file.name).read_text().split()
            # "Command exited with non-zero status N" comes first when it failed; %M is last
            max_rss_kb = int(text[-1]) if text and text[-1].isdigit() else 0
    finally:
        if log:
            out.close()
        os.unlink(rss_file.name)
    result = Run(wall, max_rss_kb / 1024, proc.returncode, log, usage.ru_utime + usage.ru_stime)
    if check and result.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:] if log else ""
        raise CommandFailed(f"{' '.join(map(str, cmd))} exited {result.returncode}\n{tail}")
    return result


def settle() -> None:
    """Write back what earlier rows left dirty before a measurement starts (``sync``): otherwise
    the page cache's writeback of the last row's gigabytes, and on a disk mounted with online
    discard the trimming of what it deleted, is billed to whichever row comes next. Seen here: the
    raw GET measured right after a conversion row took 13.4 s, the same GET hashing too 9.8 s."""
    os.sync()


def children_cpu() -> float:
    """User + system seconds of this process's children that have ended and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median(values: Sequence[float]) -> float:
    """The median (the table's statistic: robust to one disturbed repetition)."""
    return statistics.median(values)


def shim_dir(root: Path) -> Path:
    """A directory with a ``scontrol`` that fails at once, to put first on PATH.

    The Slurm executor plugin runs ``scontrol show config`` (10 s timeout) whenever it is
    imported, and every snakemake process imports every installed executor plugin. On a
    machine with the Slurm client but no reachable controller that adds ~9 s to each
    snakemake start, which would be measured as workflow time. A real cluster answers at once,
    and a workstation without Slurm has no ``scontrol``: both behave like the shim.
    """
    shim = root / "shim"
    shim.mkdir(parents=True, exist_ok=True)
    exe = shim / "scontrol"
    exe.write_text("#!/bin/sh\nexit 1\n")
    exe.chmod(0o755)
    return shim


def tree_size(root: Path) -> tuple[int, int]:
    """(files, bytes) under ``root``: checks that a client fetched the same data."""
    n = size = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            n += 1
            size += os.path.getsize(os.path.join(dirpath, name))
    return n, size
