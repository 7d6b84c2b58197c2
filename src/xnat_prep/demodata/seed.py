"""Seed an XNAT server with demo sessions through its import service (``POST /data/services/import``).

Each session is generated into a temporary folder, zipped and imported with xnatpy's import
service call (on the product's HTTP policy, ``xnat_api.objects``), a few sessions at a time in
threads (generation is CPU, the upload is I/O).
Sessions whose label the project already has are skipped, so a rerun imports nothing.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from xnat_prep.credentials import Credentials
from xnat_prep.demodata.dicom import SessionInfo
from xnat_prep.demodata.generate import (
    LabelStyle,
    PlannedSession,
    plan_sessions,
    write_session,
    write_subjects_csv,
)
from xnat_prep.errors import UserError
from xnat_prep.xnat_api import Client, Connection
from xnat_prep.xnat_api.objects import xnatpy_session

log = logging.getLogger(__name__)


def zip_session(folder: Path, dest: Path) -> Path:
    """Zip a session folder (paths relative to it). Stored, not deflated: DICOM barely shrinks
    for the CPU it costs, and the upload is on the same machine or a fast network."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return dest


def existing_sessions(client: Client, project: str) -> set[str]:
    """Labels of the project's experiments (one listing request, no per-object fetches)."""
    return {
        row["label"] for row in client.rows(f"/data/projects/{project}/experiments", {"columns": "ID,label"})
    }


def ensure_project(client: Client, project: str) -> None:
    """Create the project unless it exists (``PUT /data/projects/{P}``, as XNAT's REST API allows)."""
    if project not in {row["ID"] for row in client.rows("/data/projects", {"columns": "ID"})}:
        client.put(f"/data/projects/{project}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def seed_server(
    url: str,
    user: str,
    password: str,
    project: str,
    n_subjects: int,
    n_sessions: int,
    size: str = "tiny",
    seed: int = 0,
    edge_cases: bool = False,
    workers: int = 2,
    subject_labels: Sequence[str] | None = None,
    *,
    style: LabelStyle = "prefixed",
    csv: Path | None = None,
    verify_tls: bool = True,
    ca_bundle: str | None = None,
    protocol: str = "default",
) -> list[tuple[str, str]]:
    """Make ``project`` hold ``n_subjects`` x ``n_sessions`` demo sessions; return them all.

    Existing sessions (by label) are left alone; ``csv`` gets the subject list.
    """
    plans = plan_sessions(n_subjects, n_sessions, style, subject_labels)
    credentials = Credentials(user, password, "the seeding account")
    connection = Connection.from_settings(url, verify_tls, ca_bundle)
    with Client(connection, credentials) as client:
        ensure_project(client, project)
        have = existing_sessions(client, project)
    todo = [p for p in plans if p.session not in have]
    for p in plans:
        if p.session in have:
            log.info("%s/%s/%s exists: skipped", project, p.subject, p.session)

    # xnatpy sessions cache listings and are not meant to be shared across threads: one each.
    local = threading.local()
    with ExitStack() as stack, ThreadPoolExecutor(max(1, workers), thread_name_prefix="seed") as pool:
        lock = threading.Lock()

        def xnatpy() -> Any:
            if not hasattr(local, "xs"):
                with lock:
                    session = stack.enter_context(Client(connection, credentials))
                    local.xs = stack.enter_context(xnatpy_session(session))
            return local.xs

        def seed_one(p: PlannedSession) -> None:
            info = SessionInfo(project, p.subject, p.session, seed, p.session_index)
            with tempfile.TemporaryDirectory(prefix="xnat-prep-seed-") as tmp:
                folder = Path(tmp) / "session"
                write_session(folder, info, size, edge_cases, protocol)
                archive = zip_session(folder, Path(tmp) / f"{p.session}.zip")
                shutil.rmtree(folder)  # halves the peak disk use of a realistic session
                # data= (a stream) rather than a path: xnatpy draws a progress bar for paths
                with archive.open("rb") as stream:
                    xnatpy().services.import_(
                        data=stream,
                        project=project,
                        subject=p.subject,
                        experiment=p.session,
                        overwrite="none",
                        content_type="application/zip",
                    )
            log.info("%s/%s/%s imported", project, p.subject, p.session)

        failures = []
        for p, future in [(p, pool.submit(seed_one, p)) for p in todo]:
            try:
                future.result()
            except Exception as exc:  # report every failed session, not only the first
                failures.append(f"{p.session}: {_first_line(exc)}")
    if failures:
        raise UserError(
            f"seeding {url} project {project} failed for {len(failures)} session(s): " + "; ".join(failures)
        )
    if csv is not None:
        write_subjects_csv(Path(csv), project, plans, seed)
    return [(p.subject, p.session) for p in plans]
