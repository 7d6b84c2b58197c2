"""Run the server as a subprocess for tests: ``with running_server(tmp_path) as srv: ...``."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

START_TIMEOUT = 60.0  # a loaded machine (CI, shared cores) can take long to import


@dataclass
class ServerHandle:
    url: str
    data_dir: Path
    process: subprocess.Popen
    admin: tuple[str, str] = ("admin", "admin")

    def requests(self) -> list[dict[str, Any]]:
        """The request log so far, parsed."""
        path = self.data_dir / "requests.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def running_server(
    data_dir: str | os.PathLike,
    *,
    users_file: str | os.PathLike | None = None,
    faults: str | None = None,
    session_timeout: float | None = None,
    tls: tuple[str | os.PathLike, str | os.PathLike] | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[ServerHandle]:
    """Start ``xnat-prep server --port 0`` on ``data_dir``, yield its handle, SIGTERM it on exit.

    ``tls`` is (certificate file, key file). The environment variable ``XNAT_PREP_SERVER_ARGS`` adds
    server options to every server the tests start (``--anonymize``: a site that anonymizes).
    """
    data_dir = Path(data_dir)
    cmd = [sys.executable, "-m", "xnat_prep.cli", "server", "--data-dir", str(data_dir), "--port", "0"]
    if users_file is not None:
        cmd += ["--users", str(users_file)]
    if faults is not None:
        cmd += ["--faults", faults]
    if session_timeout is not None:
        cmd += ["--session-timeout", str(session_timeout)]
    if tls is not None:
        cmd += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    cmd += list(extra_args)
    # e.g. XNAT_PREP_SERVER_ARGS=--anonymize runs every test's server as a site that anonymizes on import
    cmd += shlex.split(os.environ.get("XNAT_PREP_SERVER_ARGS", ""))
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr)
        try:
            url = _first_line(process, stderr)
            yield ServerHandle(url=url, data_dir=data_dir, process=process)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            assert process.stdout is not None
            process.stdout.close()


def _first_line(process: subprocess.Popen, stderr: Any) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or (process.poll() is not None and not selector.select(0)):
            break
        if selector.select(min(left, 0.2)):
            byte = os.read(process.stdout.fileno(), 1)
            if not byte:
                break
            line += byte
    selector.close()
    if line.endswith(b"\n") and line.startswith((b"http://", b"https://")):
        return line.decode().strip()
    if process.poll() is None:
        process.kill()
        process.wait()
    stderr.seek(0)
    raise RuntimeError(
        f"xnat-prep server did not start (first line {line!r}); stderr:\n"
        f"{stderr.read().decode(errors='replace')}"
    )
