"""Connection slots: the workflow's XNAT connection cap, held by the jobs' connections themselves.

Snakemake frees a job's units of the ``xnat_api`` cap when the job exits, and only then starts
the next one. So with the cap alone every connection the job held stays idle while the next job
starts Python, imports, reads its manifest and sends its first request: 0.3-0.45 s per round of
jobs on the project's 2-core test machine, seconds on a busy login node or a cold shared
filesystem. With the pool, Snakemake may start network jobs for twice the cap's units (the
second half waits); a job does its start-up, then takes its slots just before its first request
to the workflow's XNAT and keeps them until it exits. A waiting job is ready to send the moment a
slot frees, and the cap still holds: at most N slots exist.

A slot is a ``flock`` lock on ``slot-<i>`` in a folder on this host's temp space. The kernel
releases a killed job's slots, and the locks are never inherited by a job's children (dcm2niix).
A process takes all the slots it needs at once, under the folder's ``lock`` (one taker at a
time, holders never wait), so two jobs that need several slots never each hold some and wait for
the rest. Only the jobs on this host can share the pool; a run whose network jobs go to cluster
nodes keeps Snakemake's cap alone (``connection_pool_wanted``). The run opens its pool at its
start, once Snakemake knows where the jobs will run (``run.start``; not at parse time, not in a
dry run).

A process joins the pool only when told to (``join``: the ``xnat-prep`` command line, which the
workflow's jobs run): the Snakemake process itself, which also talks to XNAT (an alias token
minted at the start and revoked at the end), never takes a slot.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from xnat_prep.errors import UserError

log = logging.getLogger(__name__)

ENV = "XNAT_PREP_SLOTS"  # "<N>:<folder>", set by the workflow for its jobs
POLL_S = 0.01  # how often a taker looks for freed slots (a flock cannot wait for "any of N")
_SHOW_WAIT_S = 0.1  # a wait longer than this is logged


class Pool:
    """N slots in ``folder``: ``take(units)`` blocks until this process holds ``units`` of them."""

    def __init__(self, folder: Path, size: int) -> None:
        if size < 1:
            raise ValueError(f"a connection pool needs 1 slot or more, not {size}")
        self.folder = folder
        self.size = size
        self._held: dict[int, int] = {}  # slot index -> the open file holding its lock

    @property
    def held(self) -> int:
        return len(self._held)

    def create(self) -> None:
        """The folder (mode 700, this user's) and its files, checked: UserError naming the folder if
        it cannot be made, is another user's, or ``flock`` does not work there."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            for folder in (self.folder.parent, self.folder):  # in a shared /tmp: ours, or not used
                if folder.stat().st_uid != os.getuid():
                    raise UserError(f"{folder}: the XNAT connection-slot folder belongs to another user")
            for name in ("lock", *(f"slot-{i}" for i in range(self.size))):
                fd = self._open(name)
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # ENOLCK/ENOSYS where flock is off
                except BlockingIOError:
                    pass  # a job of an earlier, still-ending run holds it: flock works
                finally:
                    os.close(fd)
        except OSError as exc:
            raise UserError(
                f"{self.folder}: cannot keep the XNAT connection slots there "
                f"({exc.strerror or exc}); set TMPDIR to a local folder"
            ) from None

    def _open(self, name: str) -> int:
        # O_CREAT: a temp cleaner that removed the folder mid-run does not stop the jobs
        try:
            return os.open(self.folder / name, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            return os.open(self.folder / name, os.O_RDWR | os.O_CREAT, 0o600)

    def take(self, units: int) -> float:
        """Hold ``units`` slots (at most all N) more than now; the seconds waited."""
        want = min(self.held + units, self.size)
        started = time.monotonic()
        lock = self._open("lock")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one taker at a time; released by os.close
            while True:
                for i in range(self.size):
                    if len(self._held) >= want:
                        return time.monotonic() - started
                    if i in self._held:
                        continue
                    fd = self._open(f"slot-{i}")
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        os.close(fd)  # another process holds it
                        continue
                    self._held[i] = fd
                if len(self._held) >= want:
                    return time.monotonic() - started
                time.sleep(POLL_S)
        finally:
            os.close(lock)

    def release(self) -> None:
        """Give every slot back (a process that exits gives them back anyway)."""
        while self._held:
            os.close(self._held.popitem()[1])


def folder_for(workdir: str | Path, host: str) -> Path:
    """The pool folder of one working directory and server, in this host's temp space."""
    key = hashlib.sha256(f"{os.path.abspath(workdir)}\n{host}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"xnat-prep-{os.getuid()}" / f"slots-{key}"


def connection_pool_wanted(cluster_executor: bool, network_on_submit_host: bool) -> bool:
    """Whether the jobs that talk to XNAT run on this host, where they can share a pool."""
    return not cluster_executor or network_on_submit_host


def open_pool(
    workdir: str | Path, host: str, size: int, environ: MutableMapping[str, str] = os.environ
) -> Pool:
    """The run's pool of ``size`` slots, made and named in the environment its jobs inherit
    (UserError naming the folder if it cannot be kept)."""
    pool = Pool(folder_for(workdir, host), size)
    pool.create()
    environ[ENV] = f"{pool.size}:{pool.folder}"
    return pool


# -- the process's membership: joined by the command line, used by xnat_api.http.Session ---------

_lock = threading.Lock()  # a download job's worker threads start their connections at once
_member: tuple[Pool, str] | None = None  # the pool and the host it caps
_units = 1


def join(environ: Mapping[str, str] = os.environ) -> None:
    """Take part in the pool the environment names (a workflow job), for the requests to the
    workflow's server (``XNAT_HOST``, as the workflow exports it); else stay out."""
    global _member, _units
    value = environ.get(ENV, "")
    size, _, folder = value.partition(":")
    # config.HOST_ENV, by name: the command line imports this module for every command, and
    # config would cost them its imports
    host = environ.get("XNAT_HOST", "").rstrip("/")
    _units = 1
    named = size.isdigit() and int(size) > 0 and folder and host
    _member = (Pool(Path(folder), int(size)), host) if named else None


def need(units: int) -> None:
    """How many connections this process opens to the pool's host at most (default 1)."""
    global _units
    _units = max(1, units)


def before_request(host: str) -> None:
    """Hold this process's slots before its first request to the pool's host (a no-op after)."""
    member = _member
    if member is None or member[0].held or host != member[1]:
        return
    with _lock:
        pool = member[0]
        if pool.held:
            return
        try:
            waited = pool.take(_units)
        except OSError as exc:
            raise UserError(f"{pool.folder}: XNAT connection slots: {exc.strerror or exc}") from None
        if waited > _SHOW_WAIT_S:
            log.info(
                "waited %.1f s for %d of the run's %d XNAT connection slot(s)", waited, pool.held, pool.size
            )


def release() -> None:
    """Give this process's slots back early: its requests are over, what is left is local (its
    receipts, the interpreter's exit); a later request would take them again."""
    member = _member
    if member is not None:
        with _lock:
            member[0].release()


def leave() -> None:
    """Give the slots back and stop taking part (tests; a job's exit does the same)."""
    global _member
    with _lock:
        if _member is not None:
            _member[0].release()
        _member = None
