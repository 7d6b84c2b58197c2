"""Snakemake logger plugin ``xnat-prep-progress``: xnat-prep's live progress view per stage.

``snakemake --logger xnat-prep-progress`` (the workflow's default profile sets it). Snakemake finds
logger plugins as top-level packages named ``snakemake_logger_plugin_<name>`` on ``sys.path``
(``snakemake_interface_logger_plugins``, ``PluginRegistryBase.collect_plugins``): this package is
shipped in the xnat-prep distribution (``src/``), so installing xnat-prep, editable or not,
registers it; there is no entry point to declare.

A thin adapter: the events go to :class:`xnat_prep.progress.Progress`; this file only draws.
Snakemake runs plugin handlers in a thread of their own (a queue listener), while its default
handler writes synchronously, in order with the workflow's own prints (the problem lines at the
end). So:

- plain (no terminal, a batch job, or ``mode: plain``): Snakemake's default handler stays as it
  is and this one only adds the view, as one block per write: every ``interval`` seconds while
  jobs run, and once at the end;
- live (a terminal): Snakemake lets one handler own the terminal, so this one takes it and also
  writes Snakemake's own messages, with Snakemake's default filter, formatter and colours, the
  view redrawn in place under them. When the last job is done it erases the view and waits for
  the end, so the workflow's final lines are not drawn over.

The log file under ``.snakemake/log/`` is Snakemake's own, untouched.
"""

# no `from __future__ import annotations`: the settings' field types must be real types (argparse)
import io
import os
import sys
import threading
from dataclasses import dataclass, field
from logging import LogRecord
from typing import Any, TextIO

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

from xnat_prep.progress import Progress

# The main Snakemake process runs inside a batch job: nobody watches a terminal redraw.
BATCH_JOB_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID")
MODES = ("auto", "live", "plain")


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    mode: str = field(
        default="auto",
        metadata={
            "help": "live: redraw the view in place; plain: print it as lines every --interval seconds; "
            "auto: live in a terminal, plain otherwise and inside a batch job.",
            "choices": list(MODES),
        },
    )
    interval: int = field(
        default=30,
        metadata={"help": "Seconds between two views in plain mode.", "type": int},
    )


def live_possible(stream: TextIO, environ: Any = os.environ) -> bool:
    """Whether ``auto`` means live: a terminal that is not dumb, not inside a batch job."""
    isatty = getattr(stream, "isatty", None)
    if not (isatty and isatty()) or environ.get("TERM") == "dumb":
        return False
    return not any(environ.get(name) for name in BATCH_JOB_VARIABLES)


class LogHandler(LogHandlerBase):
    def __post_init__(self) -> None:
        from snakemake.logging import ColorizingTextHandler, DefaultFilter, DefaultFormatter

        cs = self.common_settings
        settings = self.settings if isinstance(self.settings, LogHandlerSettings) else LogHandlerSettings()
        self.stream: TextIO = sys.stdout if getattr(cs, "stdout", False) else sys.stderr
        # Snakemake's default terminal output, unchanged (this handler replaces it on the stream)
        self.default = ColorizingTextHandler(
            nocolor=cs.nocolor,
            stream=self.stream,
            formatter=DefaultFormatter(cs.quiet, cs.show_failed_logs),
            filter=DefaultFilter(cs.quiet, cs.debug_dag, cs.verbose, cs.dryrun, cs.printshellcmds),
        )
        self.messages = _Buffer()
        self.default.stream = self.messages  # colours were decided on the real stream above
        quiet = {str(q).lower().rsplit(".", 1)[-1] for q in (cs.quiet or ())}
        self.enabled = not cs.dryrun and not quiet & {"progress", "all"}
        wanted = settings.mode == "live" or (settings.mode == "auto" and live_possible(self.stream))
        self.live = self.enabled and wanted
        self.interval = max(int(settings.interval), 1)
        self.model = Progress()
        self.lock = threading.RLock()
        self.drawn = 0  # lines of the live view on screen
        self.closed = False
        self.stop = threading.Event()
        self.ticker = threading.Thread(target=self._tick, name="xnat-prep-progress", daemon=True)
        if self.enabled:
            self.ticker.start()

    @property
    def writes_to_stream(self) -> bool:
        return self.live  # plain: Snakemake keeps its own terminal handler

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True  # every event feeds the view; the default filter applies to the messages shown

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False

    def emit(self, record: LogRecord) -> None:
        try:
            with self.lock:
                self._feed(record)
                if self.live:
                    self.default.handle(record)  # into self.messages
                    self._frame(self.messages.take())
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        _cancel_scheduler_timers()
        with self.lock:
            if not self.closed and self.enabled and self.model.stages:
                self.stop.set()
                # no view after a run that ended before any job ran (a config or credentials error):
                # its one error line stays the only thing said
                if any(s.done or s.failed or s.running for s in self.model.stages.values()):
                    final = "".join(line + "\n" for line in self.model.lines(final=True))
                    self._put(self._erase() + final)
            self.closed = True
        super().close()

    # ----- drawing -----

    def _feed(self, record: LogRecord) -> None:
        event = getattr(record, "event", None)
        get = record.__dict__.get
        if event == LogEvent.RUN_INFO and isinstance(get("stats"), dict):
            self.model.on_stats(get("stats"))
        elif event == LogEvent.JOB_INFO:
            self.model.on_job_info(
                get("jobid"), get("rule_name"), get("wildcards") or {}, get("output") or []
            )
        elif event == LogEvent.JOB_FINISHED:
            self.model.on_job_finished(get("job_id"))
        elif event == LogEvent.JOB_ERROR:
            self.model.on_job_error(get("jobid"), get("rule_name"))
        elif event == LogEvent.PROGRESS:
            self.model.on_progress(get("done") or 0, get("total") or 0)
        elif event == LogEvent.ERROR:
            self.model.on_error()

    def _tick(self) -> None:
        while not self.stop.wait(0.5 if self.live else self.interval):
            with self.lock:
                if self.closed:
                    return
                if self.live:
                    self._frame("")
                elif any(s.running for s in self.model.stages.values()) and not self.model.complete:
                    self._put("".join(line + "\n" for line in self.model.lines()))

    def _frame(self, messages: str) -> None:
        """One write: the view erased, Snakemake's messages, the view again (none once all is done:
        the workflow prints its last lines then, and the final view comes at close())."""
        view = []
        if self.model.stages and not self.model.complete:
            columns = _columns(self.stream)
            view = [line[: columns - 1] for line in self.model.lines()]
        self._put(self._erase() + messages + "".join(line + "\n" for line in view))
        self.drawn = len(view)

    def _erase(self) -> str:
        """Up to the view's first line and erase below (nothing when no view is drawn)."""
        erase = f"\x1b[{self.drawn}F\x1b[J" if self.live and self.drawn else ""
        self.drawn = 0
        return erase

    def _put(self, text: str) -> None:
        """One write call: another thread's print lands before or after it, never inside."""
        if text:
            self.stream.write(text)
            self.stream.flush()


class _Buffer(io.StringIO):
    """Where Snakemake's default handler writes in live mode, to go out within one frame."""

    def take(self) -> str:
        text = self.getvalue()
        self.seek(0)
        self.truncate()
        return text


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 120


def _cancel_scheduler_timers() -> None:
    """Cancel the re-evaluation timers Snakemake's job scheduler leaves pending at the end of a run.

    With a job rate limit (``--max-jobs-per-timespan``, on by default: 100/1s) every pass of the
    scheduler starts a non-daemon ``threading.Timer`` of the timespan that only wakes the scheduler
    again, and the interpreter waits for it before exiting: every run that ran a job ended about
    1 s after its last job (a one-job Snakefile: 2.1 s against 1.1 s with nothing to do). When the
    logging closes, the scheduler is done; nothing is lost by not waking it. Only timers whose
    function comes from Snakemake's scheduling package are touched.
    """
    for thread in threading.enumerate():
        function = getattr(thread, "function", None)
        if isinstance(thread, threading.Timer) and getattr(function, "__module__", "").startswith(
            "snakemake.scheduling"
        ):
            thread.cancel()
