"""Writing files and folders so that a crash leaves the old one or none, never half of one."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from pathlib import Path


def atomic_write(path: str | Path, text: str, *, mode: int | None = None, fsync: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and a rename.

    The temporary file is created 0600 (``mkstemp``), so a private file is never readable by others,
    not even for a moment; ``mode`` is applied before the rename. ``fsync`` makes the content durable
    before the name points at it (receipts, which say "done"); skip it for files that are rebuilt
    anyway when lost.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_stale_parts(path: str | Path) -> int:
    """Delete the temporary files :func:`atomic_write` leaves beside ``path`` when it is killed
    between creating and renaming one; returns how many. Only for a ``path`` that one process at a
    time writes (a job's own receipts): another writer's file in flight would go too."""
    path = Path(path)
    n = 0
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        stale.unlink(missing_ok=True)
        n += 1
    return n


def replace_dir(new: Path | None, out_dir: Path) -> None:
    """Put the folder ``new`` at ``out_dir`` (or, with None, just remove ``out_dir``), never leaving a
    mix of old and new: the old folder is renamed aside first and deleted last."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    if new is not None:
        os.replace(new, out_dir)
    if old is not None:
        shutil.rmtree(old)
