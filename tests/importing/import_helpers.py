"""Helpers for the import-direction tests: sessions on disk, CSVs, what the server logged and holds.

A module of its own (not conftest.py): see tests/steps/step_helpers.py for why.
"""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from xnat_prep.credentials import Credentials
from xnat_prep.demodata.dicom import SessionInfo
from xnat_prep.demodata.generate import write_session
from xnat_prep.importing.decide import session_scans
from xnat_prep.xnat_api import Client, Connection, RetryPolicy

REPO = Path(__file__).resolve().parents[2]
ADMIN = Credentials("admin", "admin", "test admin")
FAST_RETRY = RetryPolicy(attempts=8, total_seconds=60, backoff=0.02, max_backoff=0.2)
MODIFYING = {"PUT", "POST", "DELETE"}
IMPORT_HEADER = ["project", "subject", "session", "source", "dest", "on_conflict"]


def run_import(url: str, csv: Path, out: Path, **kwargs: Any) -> dict[str, Any]:
    """``import_csv`` as the admin, with quick retries."""
    from xnat_prep.importing import sessions

    return sessions.import_csv(
        Connection(url), csv, output_root=out, credentials=ADMIN, retry=FAST_RETRY, **kwargs
    )


def client(url: str, credentials: Credentials = ADMIN) -> Client:
    return Client(Connection(url), credentials, retry=FAST_RETRY)


def make_project(url: str, project: str) -> None:
    with client(url) as c:
        c.put(f"/data/projects/{project}")


def synthetic(root: Path, subject: str, session: str, project: str = "P", seed: int = 0) -> Path:
    """A tiny synthetic MR session (4 series, 131 files) in ``root/subject/session``."""
    folder = root / subject / session
    write_session(folder, SessionInfo(project, subject, session, seed), "tiny")
    return folder


def write_csv(path: Path, rows: list[list[str]], header: list[str] = IMPORT_HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def writes(server: Any, since: int = 0) -> list[str]:
    """The modifying requests in the server's log after its first ``since`` lines."""
    return [f"{r['method']} {r['path']}" for r in server.requests()[since:] if r["method"] in MODIFYING]


def local_md5s(folder: Path, pattern: str = "*") -> list[str]:
    return sorted(hashlib.md5(p.read_bytes()).hexdigest() for p in folder.rglob(pattern) if p.is_file())


def session_id(url: str, project: str, label: str) -> str | None:
    with client(url) as c:
        return next((str(e["ID"]) for e in c.project_experiments(project) if e["label"] == label), None)


def downloaded_md5s(url: str, project: str, label: str) -> list[str]:
    """Every DICOM file of the session downloaded (not its listed digest): md5s of the bytes."""
    sid = session_id(url, project, label)
    assert sid is not None, f"{project}/{label} not on the server"
    out = []
    with client(url) as c:
        for row in c.session_files(sid):
            out.append(c.get(row["URI"], lambda r: hashlib.md5(r.content).hexdigest()))
    return sorted(out)


def scans(url: str, project: str, label: str) -> dict[str, int]:
    """SeriesInstanceUID -> file count of the archived session."""
    sid = session_id(url, project, label)
    assert sid is not None
    with client(url) as c:
        return {uid: s.n_files for uid, s in session_scans(c, sid).items()}


def snakemake(workdir: Path, config: dict, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``snakemake -s <repo>/Snakefile`` in ``workdir`` with ``config``; XNAT settings only from ``env``."""
    import yaml

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--cores", "2", *args, "--configfile", str(workdir / "config.yaml")]
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    full = {k: v for k, v in os.environ.items() if not k.startswith(("XNAT", "NETRC"))}
    full.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), **env)
    return subprocess.run(cmd, cwd=workdir, env=full, capture_output=True, text=True, timeout=600)
