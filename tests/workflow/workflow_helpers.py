"""Helpers of the workflow tests: `snakemake` as a subprocess against the bundled server over HTTP."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from xnat_prep import manifest, paths
from xnat_prep.server.testing import ServerHandle

REPO = Path(__file__).resolve().parents[2]
RUNNER = "runner"
ROLES = {RUNNER: "member", "owner1": "owner", "collab": "collaborator", "nobody": "none"}
PASSWORD = f"Wf-{secrets.token_hex(8)}"
ADMIN = ("admin", "admin-" + secrets.token_hex(4))
SUBJECTS = ["001", "SUB002"]
MODIFYING = {"PUT", "POST", "DELETE"}
# Login/logout are PUT/DELETE too, but change no data.
SESSION_PATHS = re.compile(r"^/data/(services/auth|JSESSION)$")


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    requests: list[dict[str, Any]]  # what the server got during the run

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def lines(self, prefix: str) -> list[str]:
        """The rest of the stderr lines that start with ``prefix`` (the workflow's own messages)."""
        return [ln[len(prefix) :] for ln in self.stderr.splitlines() if ln.startswith(prefix)]

    def data_writes(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] in MODIFYING and not SESSION_PATHS.match(r["path"])]


@dataclass
class Study:
    server: ServerHandle
    csv: Path  # DEMO's subject list, as the demo seeding writes it (BOM, quoted)
    base: Path

    @property
    def url(self) -> str:
        return self.server.url

    def config(self, workdir: Path, **sections: Any) -> dict[str, Any]:
        """The demo config, ``sections`` merged on top (one level deep)."""
        config: dict[str, Any] = {
            "xnat": {"host": self.url, "max_connections": 2},
            "subjects": {"csv": str(self.csv)},
        }
        for key, value in sections.items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
        return config

    def snakemake(
        self,
        workdir: Path,
        config: dict[str, Any] | None,
        *args: str,
        user: str = RUNNER,
        password: str | None = PASSWORD,
        env: dict[str, str] | None = None,
        timeout: float = 900,  # a whole run on a shared, loaded machine can take minutes
        background: bool = False,
    ) -> Result | subprocess.Popen:
        """Run ``snakemake -s <repo>/Snakefile --directory workdir`` with credentials in the env only."""
        workdir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
        cmd += ["--cores", "2", *args]  # before --configfile, which takes several values
        if config is not None:
            (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            cmd += ["--configfile", str(workdir / "config.yaml")]
        full_env = clean_env(workdir)
        if password is not None:
            full_env.update(XNAT_USER=user, XNAT_PASS=password)
        full_env.update(env or {})
        if background:
            return subprocess.Popen(
                cmd,
                cwd=workdir,
                env=full_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        before = len(self.server.requests())
        proc = subprocess.run(cmd, cwd=workdir, env=full_env, capture_output=True, text=True, timeout=timeout)
        return Result(proc.returncode, proc.stdout, proc.stderr, self.server.requests()[before:])

    def admin_get(self, path: str, **params: str) -> Any:
        response = requests.get(self.url + path, params={"format": "json", **params}, auth=ADMIN, timeout=30)
        response.raise_for_status()
        return response.json()

    def files_on_server(self, scan: manifest.ScanRow, resource: str) -> dict[str, str]:
        """Path in the resource -> md5 digest, as the server lists a scan's resource."""
        listing = self.admin_get(
            f"/data/experiments/{scan.session_id}/scans/{scan.scan_id}/resources/{resource}/files"
        )
        return {row["URI"].split("/files/", 1)[1]: row["digest"] for row in listing["ResultSet"]["Result"]}

    def faults(self, spec: str | None) -> None:
        """Switch the server's fault injection (None: off)."""
        url = self.url + "/xapi/xnatprep/faults"
        if spec is None:
            requests.delete(url, auth=ADMIN, timeout=30).raise_for_status()
        else:
            requests.put(url, json={"spec": spec}, auth=ADMIN, timeout=30).raise_for_status()


def clean_env(workdir: Path) -> dict[str, str]:
    """The test process's environment without any XNAT credentials or host, HOME in ``workdir``."""
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XNAT", "NETRC"))}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    # matplotlib's font cache (the report's chart) built once for all runs, not once per fresh HOME
    env.setdefault("MPLCONFIGDIR", str(Path(tempfile.gettempdir()) / "xnat-prep-tests-matplotlib"))
    return env


def users_file(path: Path) -> Path:
    """admin (site admin), runner (member of DEMO only) and one user per other role on DEMO
    (``ROLES``), via the `xnat-prep users` CLI."""

    def users(*args: str, password: str | None = None) -> None:
        subprocess.run(
            [sys.executable, "-m", "xnat_prep.cli", "users", "--file", str(path), *args],
            input=password,
            text=True,
            check=True,
            capture_output=True,
        )

    users("add", "admin", "--admin", password=ADMIN[1] + "\n")
    for login, role in ROLES.items():  # one user per role on DEMO, all with the distinctive password
        users("add", login, password=PASSWORD + "\n")
        if role != "none":
            users("role", login, "DEMO", role)
    return path


class CmdlineWatch:
    """Samples every process's command line while a run goes on, looking for a secret."""

    def __init__(self, secret: str):
        self.secret = secret.encode()
        self.hits: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                if self.secret in cmdline:
                    self.hits.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
            self.samples += 1
            time.sleep(0.02)

    def __enter__(self) -> CmdlineWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Run:
    workdir: Path
    config: dict[str, Any]
    result: Result
    watch: CmdlineWatch

    @property
    def root(self) -> Path:
        return self.workdir / self.config.get("output_root", "results")

    def scans(self) -> list[manifest.ScanRow]:
        return manifest.read_scans(self.root / paths.SCANS_TSV)

    def where(self, scan: manifest.ScanRow) -> tuple[Path, str, str, str, str]:
        """Arguments of the ``paths`` builders for ``scan``."""
        return (self.root, scan.project, scan.subject, scan.session, scan.scan)


MAIN_DERIVED = [{"name": "bold_volumes", "scan_types": ["fmri*"], "measure": "n_volumes"}]


def file_md5s(directory: Path) -> dict[str, str]:
    """Relative path -> md5 of every file under ``directory`` (hidden files included)."""
    import hashlib

    return {
        p.relative_to(directory).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def all_files(directory: Path) -> Sequence[Path]:
    return [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []
