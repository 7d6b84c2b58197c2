"""The benchmark study: a seeded server data directory (cached: seeding ~1 GB takes a while),
cheap copies of it for runs that write to the server, and the bundled server around it."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from xnat_prep.server.testing import ServerHandle, running_server

USER, PASSWORD = "admin", "admin"  # the bundled server's first-run account
PROJECT = "BENCH"


@dataclass(frozen=True)
class StudySpec:
    size: str  # demo-data size: tiny / small / realistic
    subjects: int
    sessions: int  # per subject

    @property
    def name(self) -> str:
        return f"{self.size}-{self.subjects}x{self.sessions}"


@dataclass(frozen=True)
class Study:
    spec: StudySpec
    data_dir: Path  # the seeded server data (never written by a benchmark run: see clone())
    subjects_csv: Path

    def subject_labels(self) -> list[str]:
        with open(self.subjects_csv, encoding="utf-8-sig", newline="") as fh:
            return [row["Subject"] for row in csv.DictReader(fh)]


def prepare(spec: StudySpec, cache: Path) -> Study:
    """The seeded study, from ``cache`` if an earlier run seeded it (seeding is deterministic)."""
    from xnat_prep.demodata import seed_server

    root = cache / spec.name
    study = Study(spec, root / "data", root / "subjects.csv")
    if (root / "seeded").exists():
        return study
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    with _unsynced_server(study.data_dir) as url:
        seed_server(
            url,
            USER,
            PASSWORD,
            PROJECT,
            spec.subjects,
            spec.sessions,
            spec.size,
            csv=study.subjects_csv,
            workers=2,
        )
    os.sync()  # once, instead of once per file
    (root / "seeded").write_text("ok\n")
    return study


@contextlib.contextmanager
def _unsynced_server(data_dir: Path) -> Iterator[str]:
    """The bundled server without its per-blob fsync, for seeding only (yields its URL).

    The server fsyncs every stored file before committing it. That is right for an archive, but
    a realistic session is ~14,000 files, and at ~30 fsyncs/s on a shared VM disk seeding the
    full study would take hours. Seeding data nobody measures does not need that durability;
    the measured runs use the unmodified server.
    """
    code = (
        "import os, sys; os.fsync = lambda fd: None; from xnat_prep.cli import main; "
        f"sys.exit(main(['server', '--data-dir', {str(data_dir)!r}, '--port', '0']))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"seeding server did not start: {url!r}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def clone(data_dir: Path, dest: Path) -> Path:
    """A copy of a (stopped) server's data directory that runs may write to.

    Blobs are immutable once written (a write makes a new blob), so they are hard-linked: the
    copy of gigabytes is instant and costs no disk. The SQLite files are copied.
    """
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for item in data_dir.iterdir():
        if item.is_dir():
            shutil.copytree(item, dest / item.name, copy_function=_link)
        else:
            shutil.copy2(item, dest / item.name)
    return dest


def _link(src: str, dst: str) -> None:
    Path(dst).hardlink_to(src)


@contextlib.contextmanager
def server(data_dir: Path) -> Iterator[ServerHandle]:
    """The bundled server on ``data_dir`` (plain: no faults unless set with ``set_faults``)."""
    with running_server(data_dir) as srv:
        yield srv


def set_faults(srv: ServerHandle, spec: str | None) -> None:
    """Switch the server's fault injection (e.g. ``latency_ms=50``) on, or off with None."""
    url = f"{srv.url}/xapi/xnatprep/faults"
    auth = (USER, PASSWORD)
    resp = (
        requests.put(url, json={"spec": spec}, auth=auth, timeout=30)
        if spec
        else requests.delete(url, auth=auth, timeout=30)
    )
    resp.raise_for_status()


def request_count(srv: ServerHandle) -> int:
    """Requests logged so far (count the difference around a measured run)."""
    path = srv.data_dir / "requests.jsonl"
    if not path.exists():
        return 0
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)
