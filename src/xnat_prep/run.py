"""A workflow run's start and end, as plain functions (``onstart``/``onsuccess``/``onerror`` call them).

Start: the credentials must be there before the first job; with ``xnat.alias_token`` the run
swaps the password for one alias token, which the jobs find where they look for credentials first
(the environment they inherit), never printed. End: the token is revoked; a full run lists every
problem still standing (from the report built from the manifest and all receipts, so a rerun
repeats what an earlier run found) and exits non-zero while any remains.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from xnat_prep import config as config_mod
from xnat_prep import credentials, manifest, paths, report, slots
from xnat_prep.errors import UserError
from xnat_prep.xnat_api import Client, Connection


@dataclass
class RunState:
    """What the start of a run leaves for its end."""

    connection: Connection | None = None
    token: credentials.Credentials | None = None
    pool: slots.Pool | None = None  # the jobs' XNAT connection slots, when they run on this host


@dataclass
class Outcome:
    """The end of a run: lines for stderr and the exit status (0: nothing to add)."""

    lines: list[str] = field(default_factory=list)
    exit_code: int = 0


def start(
    config: Mapping, environ: MutableMapping[str, str] = os.environ, *, pool_size: int | None = None
) -> RunState:
    """Check that credentials are there; open the jobs' pool of ``pool_size`` connection slots
    if given (jobs on this host: ``slots``); mint the run's alias token if the config asks."""
    connection = config_mod.connection(config)
    creds = credentials.resolve(connection.host)
    state = RunState(connection)
    if pool_size:
        state.pool = slots.open_pool(os.getcwd(), connection.host, pool_size, environ)
    if environ.get(config_mod.DOWN_FILE_ENV):  # XNAT found down by an earlier run: try it again
        Path(environ[config_mod.DOWN_FILE_ENV]).unlink(missing_ok=True)
    if config["xnat"]["alias_token"]:
        with Client(connection, creds) as client:
            state.token = client.mint_token()
        environ.update(XNAT_USER=state.token.user, XNAT_PASS=state.token.password)
    return state


def interrupt_warning(cluster: bool, handler: Callable[..., object] | int | None = None) -> str | None:
    """A warning for a head under a cluster executor that ignores SIGINT, else None.

    A shell without job control (a script, ``cmd &`` in one, many CI runners) starts its
    background commands with SIGINT ignored, and Python keeps it ignored: Ctrl-C or ``kill -INT``,
    the documented way to stop the head (the executor then cancels the cluster jobs), would do
    nothing and the head would wait on for the jobs. ``handler``: SIGINT's current handler.
    """
    handler = signal.getsignal(signal.SIGINT) if handler is None else handler
    if not cluster or handler != signal.SIG_IGN:
        return None
    return (
        "xnat-prep: warning: this Snakemake ignores SIGINT (started in the background by a shell without "
        "job control), so Ctrl-C and kill -INT will not stop it or cancel its cluster jobs; start it in "
        "the foreground, e.g. in tmux or screen (docs/slurm.md)"
    )


def problems_standing(config: Mapping) -> bool:
    """Whether the last report lists problems (read when the workflow is parsed: cheap, offline)."""
    root = Path(os.path.normpath(config["output_root"]))
    return bool(report.problems(root / paths.SUMMARY_TSV))


def finish(config: Mapping, state: RunState, *, succeeded: bool, full_run: bool) -> Outcome:
    """Revoke the alias token; after a successful full run, list the problems still standing."""
    out = Outcome()
    if state.token is not None and state.connection is not None:
        try:
            with Client(state.connection, state.token) as client:
                client.invalidate_token(state.token)
        except UserError as error:
            out.lines.append(f"xnat-prep: warning: {error}")
    if not succeeded or not full_run:
        return out
    root = Path(os.path.normpath(config["output_root"]))
    summary = root / paths.SUMMARY_TSV
    if not report.covers_manifest(summary, root):
        # Snakemake 9.27 does not add to the run all the jobs that a checkpoint run again finds
        out.lines.append(
            "xnat-prep: discovery ran again and found work this run did not include; "
            "run the same command again to process it"
        )
        out.exit_code = 1
        return out
    problems = report.problems(summary)
    out.lines += [f"xnat-prep: problem: {line}" for line in problems]
    if problems:
        out.lines.append(f"xnat-prep: {len(problems)} problem(s); details in {summary}")
        if manifest.read_errors(root / paths.ERRORS_TSV):
            out.lines.append("xnat-prep: to list the subjects on XNAT again once fixed, add: -R discover")
        if any(f": {report.DENIED}: " in line for line in problems):
            out.lines.append(
                "xnat-prep: to write to XNAT once you have write permission, "
                "add: -R upload_session set_variables"
            )
        out.exit_code = 1
    return out
