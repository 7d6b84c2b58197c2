"""The progress model (xnat_prep.progress) on synthetic Snakemake events, and its logger plugin."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.registry import LoggerPluginRegistry
from snakemake_interface_logger_plugins.tests import MockOutputSettings, TestLogHandlerBase

import snakemake_logger_plugin_xnat_prep_progress as plugin
from xnat_prep import manifest, paths, receipts
from xnat_prep.progress import Progress, human_bytes


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


SESSIONS = [("P", "S1", "S1_MR1"), ("P", "S2", "S2_MR1")]
SCANS_PER_SESSION = 2
SCAN_BYTES = 1_000_000


def write_manifest(root: Path) -> None:
    rows = [
        manifest.ScanRow(p, s, f"XS{s}", sess, f"XE{sess}", "xnat:mrSessionData", str(i), "T1", "t1",
                         f"{i}-T1", "DICOM", 10, SCAN_BYTES)
        for p, s, sess in SESSIONS
        for i in range(1, SCANS_PER_SESSION + 1)
    ]  # fmt: skip
    manifest.write_tsv(root / paths.SCANS_TSV, rows)


def info(progress: Progress, jobid: int, rule: str, root: Path, **wildcards: str) -> Path:
    """A JOB_INFO for ``rule`` with its real output path; returns the receipt path."""
    if rule == "discover":
        output = root / paths.SCANS_TSV
    else:
        template = {**plugin_templates()}[rule]
        output = root / template.format(**wildcards)
    progress.on_job_info(jobid, rule, wildcards, [str(output)])
    return output


def plugin_templates() -> dict[str, str]:
    from xnat_prep.progress import PER_SCAN, PER_SESSION

    return {**PER_SESSION, **PER_SCAN}


def session_wildcards(key: tuple[str, str, str]) -> dict[str, str]:
    return dict(zip(("project", "subject", "session"), key, strict=True))


def test_fresh_run_totals_bytes_rate_eta(tmp_path: Path) -> None:
    clock = Clock()
    progress = Progress(clock)
    progress.on_stats({"discover": 1, "report": 1, "all": 1, "total": 3})
    assert [s.name for s in progress.ordered()] == ["discover", "report"]  # aggregate targets hidden

    info(progress, 1, "discover", tmp_path)
    clock.now += 2
    write_manifest(tmp_path)
    progress.on_job_finished(1)
    # downloads not seen yet: no stage; the first job brings the manifest's total
    receipt = info(progress, 2, "download_session", tmp_path, **session_wildcards(SESSIONS[0]))
    stage = progress.stages["download_session"]
    assert (stage.total, stage.done, stage.running) == (2, 0, 1)
    assert stage.bytes_total == 2 * SCANS_PER_SESSION * SCAN_BYTES
    assert stage.eta(clock.now) is None  # nothing finished yet: no rate

    clock.now += 4
    receipts.write(receipt, {"step": "download_session", "bytes": 2_000_000, "n_files": 20})
    progress.on_job_finished(2)
    assert stage.bytes_done == 2_000_000
    assert stage.rate(clock.now) == pytest.approx(500_000)  # 2 MB in 4 s
    assert stage.eta(clock.now) == pytest.approx(4)  # 2 MB left
    line = next(ln for ln in progress.lines() if ln.startswith("download_session"))
    assert "1/2" in line and "2.0 MB of 4.0 MB" in line and "500.0 kB/s" in line and "ETA 4s" in line

    receipt = info(progress, 3, "download_session", tmp_path, **session_wildcards(SESSIONS[1]))
    clock.now += 4
    receipts.write(receipt, {"step": "download_session", "bytes": 2_000_000})
    progress.on_job_finished(3)
    assert stage.finished and stage.eta(clock.now) == 0
    assert "finished" in next(ln for ln in progress.lines() if ln.startswith("download_session"))


def test_scan_stage_counts_manifest_bytes_and_receipt_outcomes(tmp_path: Path) -> None:
    clock = Clock()
    progress = Progress(clock)
    write_manifest(tmp_path)
    jobid = 10
    outcomes = ["converted", "skipped", "failed", None]  # None: the job itself fails
    for (p, s, sess), scan in [(k, f"{i}-T1") for k in SESSIONS for i in (1, 2)]:
        outcome = outcomes.pop(0)
        receipt = info(
            progress, jobid, "pseudonymise_scan", tmp_path, project=p, subject=s, session=sess, scan=scan
        )
        clock.now += 1
        if outcome is None:
            progress.on_job_error(jobid)
        else:
            receipts.write(receipt, {"status": outcome})
            progress.on_job_finished(jobid)
        jobid += 1
    stage = progress.stages["pseudonymise_scan"]
    assert (stage.total, stage.done, stage.failed, stage.problems, stage.skipped) == (4, 3, 1, 1, 1)
    assert stage.bytes_done == 3 * SCAN_BYTES  # the manifest's sizes of the scans finished
    assert stage.finished
    assert progress.problems == 2
    assert progress.counts()["pseudonymise_scan"] == {
        "total": 4, "done": 3, "failed": 1, "problems": 1, "skipped": 1, "bytes": 3 * SCAN_BYTES
    }  # fmt: skip
    assert "1 skipped  2 problem(s)" in progress.lines()[-1]


def test_rerun_uses_stats_and_skips_receipts_already_there(tmp_path: Path) -> None:
    """A rerun: the DAG is complete at the start (stats exact); scans converted before are not counted."""
    progress = Progress(Clock())
    write_manifest(tmp_path)
    p, s, sess = SESSIONS[0]
    for scan in ("1-T1", "2-T1"):  # the first session's scans are converted already
        receipts.write(paths.pseudo_receipt(tmp_path, p, s, sess, scan), {"status": "converted"})
    progress.on_stats({"pseudonymise_scan": 2, "report": 1})
    p, s, sess = SESSIONS[1]
    info(progress, 5, "pseudonymise_scan", tmp_path, project=p, subject=s, session=sess, scan="1-T1")
    stage = progress.stages["pseudonymise_scan"]
    assert stage.total == 2
    assert stage.bytes_total == 2 * SCAN_BYTES  # only the second session's scans are to do


def test_jobs_seen_raise_a_total_the_manifest_cannot_explain(tmp_path: Path) -> None:
    """Outputs redone although their receipts exist (a changed param): the total follows the jobs."""
    progress = Progress(Clock())
    write_manifest(tmp_path)
    for key in SESSIONS:
        receipts.write(paths.upload_receipt(tmp_path, *key), {"status": "uploaded"})
    for jobid, key in enumerate(SESSIONS):
        info(progress, jobid, "upload_session", tmp_path, **session_wildcards(key))
    stage = progress.stages["upload_session"]
    assert (stage.total, stage.running, stage.bytes_total) == (2, 2, None)  # uploads count jobs only
    progress.on_job_finished(0)
    receipts.write(paths.upload_receipt(tmp_path, *SESSIONS[1]), {"status": "denied"})
    progress.on_job_finished(1)
    assert (stage.done, stage.problems, stage.finished) == (2, 1, True)


def test_a_retried_job_is_a_problem_only_while_it_has_failed(tmp_path: Path) -> None:
    progress = Progress(Clock())
    write_manifest(tmp_path)
    receipt = info(progress, 1, "download_session", tmp_path, **session_wildcards(SESSIONS[0]))
    progress.on_job_error(1)
    stage = progress.stages["download_session"]
    assert (stage.failed, stage.running, progress.problems) == (1, 0, 1)
    info(progress, 1, "download_session", tmp_path, **session_wildcards(SESSIONS[0]))  # retries: 2
    assert (stage.failed, stage.running, progress.problems) == (0, 1, 0)
    receipts.write(receipt, {"bytes": 5})
    progress.on_job_finished(1)
    progress.on_job_finished(1)  # a duplicate event counts once
    assert (stage.done, stage.failed, stage.bytes_done, stage.total) == (1, 0, 5, 2)


def test_unknown_rules_and_events_out_of_order_are_harmless(tmp_path: Path) -> None:
    progress = Progress(Clock())
    progress.on_job_finished(99)  # never started
    progress.on_job_error(98, "mystery")
    progress.on_job_info(1, "import_session", {"project": "P"}, ["somewhere/else.json (temp)"])
    progress.on_job_finished(1)
    progress.on_progress(1, 3)
    assert progress.stages["import_session"].done == 1
    assert progress.stages["mystery"].failed == 1
    assert progress.lines()[0].startswith("[xnat-prep progress] 1/3 jobs")
    assert progress.root is None  # no known layout seen: no manifest read


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (4_200_000, "4.2 MB"), (3e12, "3.0 TB")]
)
def test_human_bytes(n: float, text: str) -> None:
    assert human_bytes(n) == text


# ----- the plugin (a thin adapter) -----


class TestProgressPlugin(TestLogHandlerBase):
    """The logger-plugin interface's own conformance tests."""

    __test__ = True

    def get_log_handler_cls(self) -> type:
        return plugin.LogHandler

    def get_log_handler_settings(self) -> plugin.LogHandlerSettings:
        return plugin.LogHandlerSettings(mode="plain", interval=3600)


def record(
    event: LogEvent | None, msg: str | None = "", level: int = logging.INFO, **extra: object
) -> logging.LogRecord:
    rec = logging.LogRecord("snakemake", level, "x.py", 1, msg, (), None)
    if event is not None:
        rec.event = event  # type: ignore[attr-defined]
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def make_handler(mode: str, stream: io.StringIO) -> plugin.LogHandler:
    settings = MockOutputSettings()
    settings.nocolor = True
    handler = plugin.LogHandler(settings, plugin.LogHandlerSettings(mode=mode, interval=3600))
    handler.stream = stream
    return handler


def feed_a_job(handler: plugin.LogHandler, tmp_path: Path) -> None:
    write_manifest(tmp_path)
    handler.emit(record(None, "Building DAG of jobs..."))
    p, s, sess = SESSIONS[0]
    out = paths.session_download_receipt(tmp_path, p, s, sess)
    handler.emit(record(LogEvent.JOB_INFO, " Rule: download_session", jobid=7, rule_name="download_session",
                        rule_msg=None, wildcards={"project": p, "subject": s, "session": sess},
                        output=[str(out)], input=[], log=[], benchmark=None, reason="missing output",
                        resources={}, priority=0, threads=1, indent=False, local=False,
                        is_checkpoint=False, printshellcmd=True, is_handover=False, shellcmd=""))  # fmt: skip
    receipts.write(out, {"bytes": 2_000_000})
    handler.emit(record(LogEvent.JOB_FINISHED, "Finished jobid: 7", job_id=7))
    handler.emit(record(LogEvent.PROGRESS, None, done=1, total=2))


def test_plugin_plain_adds_the_view_and_leaves_snakemake_its_own_handler(tmp_path: Path) -> None:
    stream = io.StringIO()
    handler = make_handler("plain", stream)
    assert not handler.writes_to_stream  # Snakemake keeps its default terminal handler
    feed_a_job(handler, tmp_path)
    handler.close()
    text = stream.getvalue()
    assert "\x1b[" not in text  # no terminal control in plain mode
    assert "Building DAG of jobs..." not in text  # Snakemake writes its own messages
    assert text.startswith("[xnat-prep done] 1/2 jobs")  # one block at the end
    assert "download_session" in text and "2.0 MB of 4.0 MB" in text


def test_plugin_live_redraws_in_place(tmp_path: Path) -> None:
    stream = io.StringIO()
    handler = make_handler("live", stream)
    assert handler.writes_to_stream  # it owns the terminal: Snakemake's messages go through it
    feed_a_job(handler, tmp_path)
    # Snakemake's own messages, as its default handler writes them
    text = stream.getvalue()
    assert "Building DAG of jobs..." in text and "Finished jobid: 7" in text and "1 of 2 steps (50%)" in text
    handler.close()
    text = stream.getvalue()
    assert "\x1b[2F\x1b[J" in text  # the two-line view (header + one stage) erased before the next message
    assert text.rstrip().splitlines()[-1].startswith("download_session     1/2")
    assert text.count("[xnat-prep done]") == 1


def test_plugin_live_erases_the_view_when_every_job_is_done(tmp_path: Path) -> None:
    """The workflow prints its problem lines after the last job: the view must not be drawn over them."""
    stream = io.StringIO()
    handler = make_handler("live", stream)
    feed_a_job(handler, tmp_path)
    handler.emit(record(LogEvent.PROGRESS, None, done=2, total=2))
    tail = stream.getvalue().rsplit("\x1b[J", 1)[1]
    assert tail == "2 of 2 steps (100%) done\n"  # erased, the message written, no view under it
    stream.write("xnat-prep: problem: something\n")  # the workflow's own print
    handler.close()
    assert (
        stream.getvalue().split("xnat-prep: problem: something\n")[1].startswith("[xnat-prep done] 2/2 jobs")
    )


def test_plugin_is_silent_in_a_dry_run(tmp_path: Path) -> None:
    stream = io.StringIO()
    settings = MockOutputSettings()
    settings.dryrun = True
    handler = plugin.LogHandler(settings, plugin.LogHandlerSettings())
    handler.stream = stream
    feed_a_job(handler, tmp_path)
    handler.close()
    assert not handler.writes_to_stream and stream.getvalue() == ""  # Snakemake's own handler writes


def test_auto_mode() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert plugin.live_possible(Tty(), {"TERM": "xterm"})
    assert not plugin.live_possible(io.StringIO(), {"TERM": "xterm"})
    assert not plugin.live_possible(Tty(), {"TERM": "dumb"})
    assert not plugin.live_possible(Tty(), {"TERM": "xterm", "SLURM_JOB_ID": "42"})  # a batch job


def test_snakemake_finds_the_plugin() -> None:
    """Discovered by Snakemake's naming rule (snakemake_logger_plugin_<name> on sys.path)."""
    assert "xnat-prep-progress" in LoggerPluginRegistry().plugins


def test_session_conversion_counts_each_scans_outcome(tmp_path: Path) -> None:
    """convert_session is one job per session: its skipped and problem counts are its scans' outcomes,
    its bytes the session's scans' manifest sizes; other per-session receipts' scan maps are not counted."""
    progress = Progress(Clock())
    write_manifest(tmp_path)
    p, s, sess = SESSIONS[0]
    receipt = info(progress, 1, "convert_session", tmp_path, project=p, subject=s, session=sess)
    receipts.write(receipt, {"scans": {"1-T1": {"status": "failed"}, "2-T1": {"status": "skipped"}}})
    progress.on_job_finished(1)
    receipt = info(progress, 2, "upload_session", tmp_path, project=p, subject=s, session=sess)
    receipts.write(receipt, {"scans": {"1-T1": {"status": "failed"}}})
    progress.on_job_finished(2)
    stage = progress.stages["convert_session"]
    assert (stage.done, stage.problems, stage.skipped) == (1, 1, 1)
    assert stage.bytes_done == SCANS_PER_SESSION * SCAN_BYTES
    assert progress.stages["upload_session"].problems == 0
    assert progress.problems == 1


def test_closing_cancels_only_the_schedulers_pending_timers(tmp_path: Path) -> None:
    import inspect
    import threading

    from snakemake.scheduling.job_scheduler import JobScheduler

    # what it relies on: Snakemake re-evaluates through a threading.Timer the interpreter waits for
    assert "threading.Timer(" in inspect.getsource(JobScheduler._schedule_reevalutation)

    def wake() -> None:
        return None

    wake.__module__ = "snakemake.scheduling.job_scheduler"  # as the scheduler's own lambda
    theirs, ours = threading.Timer(30, wake), threading.Timer(30, lambda: None)
    theirs.start()
    ours.start()
    try:
        handler = make_handler("plain", io.StringIO())
        feed_a_job(handler, tmp_path)
        handler.close()
        theirs.join(timeout=5)
        assert not theirs.is_alive()  # cancelled: the process exits without waiting 30 s
        assert ours.is_alive() and not ours.finished.is_set()  # another's timer is left alone
    finally:
        theirs.cancel()
        ours.cancel()
