"""run: a workflow run's start (credentials, alias token) and end (token revoked, problems, exit code)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from xnat_prep import config, manifest, paths, report, run, slots
from xnat_prep.errors import UserError
from xnat_prep.manifest import ErrorRow, ScanRow


def settings(tmp_path: Path, url: str, alias_token: bool) -> dict:
    return config.validate(
        {
            "xnat": {"host": url, "alias_token": alias_token},
            "subjects": {"csv": "-"},
            "output_root": str(tmp_path / "results"),
        }
    )


def test_start_without_credentials_stops(tmp_path, monkeypatch):
    for var in ("XNAT_USER", "XNAT_PASS", "XNATPY_USER", "XNATPY_PASS", "XNAT_CREDENTIALS_FILE", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(UserError, match="no XNAT credentials"):
        run.start(settings(tmp_path, "http://127.0.0.1:9", False), environ={})


def test_alias_token_for_the_run_then_revoked(tmp_path, xnat_server_session, monkeypatch):
    monkeypatch.setenv("XNAT_USER", "admin")
    monkeypatch.setenv("XNAT_PASS", "admin")
    cfg = settings(tmp_path, xnat_server_session.url, True)
    environ: dict[str, str] = {}
    state = run.start(cfg, environ)
    assert state.token is not None and environ["XNAT_USER"] == state.token.user != "admin"
    token = (state.token.user, state.token.password)
    assert requests.get(f"{xnat_server_session.url}/data/projects", auth=token, timeout=10).ok
    outcome = run.finish(cfg, state, succeeded=False, full_run=True)
    assert outcome.exit_code == 0 and outcome.lines == []
    assert requests.get(f"{xnat_server_session.url}/data/projects", auth=token, timeout=10).status_code == 401


def test_start_opens_the_jobs_connection_slots_and_holds_none_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("XNAT_USER", "admin")
    monkeypatch.setenv("XNAT_PASS", "admin")
    monkeypatch.chdir(tmp_path)
    cfg = settings(tmp_path, "http://127.0.0.1:9", False)
    environ: dict[str, str] = {}
    assert run.start(cfg, environ).pool is None and slots.ENV not in environ  # jobs on cluster nodes
    state = run.start(cfg, environ, pool_size=3)
    assert state.pool is not None and environ[slots.ENV] == f"3:{state.pool.folder}"
    assert state.pool.held == 0  # the Snakemake process never takes a slot (its token requests)
    state.pool.take(3)  # all 3 free for the jobs
    state.pool.release()


def write_run(root: Path, *, converted: bool, error: bool) -> None:
    scan = ScanRow(
        "P", "S", "SID", "E", "EID", "xnat:mrSessionData", "1", "T1w", "t1", "1-T1w", "DICOM", 1, 10
    )
    manifest.write_tsv(root / paths.SCANS_TSV, [scan])
    errors = [ErrorRow("P", "NOPE", "", "subject not found in project P")] if error else []
    manifest.write_tsv(root / paths.ERRORS_TSV, errors, ErrorRow)
    if converted:
        receipt = paths.convert_receipt(root, "P", "S", "E", "1-T1w")
        from xnat_prep import receipts

        receipts.write(receipt, {"status": "converted", "outputs": []})
    report.write_report(
        root,
        upload=False,
        variables=False,
        summary=root / paths.SUMMARY_TSV,
        amounts_tsv=root / paths.DATA_AMOUNT_TSV,
        plot_png=root / paths.DATA_AMOUNT_PNG,
    )


def test_a_rerun_lists_every_problem_still_standing(tmp_path):
    cfg = settings(tmp_path, "http://127.0.0.1:9", False)
    root = Path(cfg["output_root"])
    write_run(root, converted=False, error=True)
    outcome = run.finish(cfg, run.RunState(), succeeded=True, full_run=True)
    assert outcome.exit_code == 1
    assert "xnat-prep: problem: P/NOPE: error: subject not found in project P" in outcome.lines
    assert "xnat-prep: problem: P/S/E scan 1 (T1w): missing: not downloaded" in outcome.lines
    assert outcome.lines[-1].endswith("add: -R discover")
    # a partial run (targets, --until) does not judge the whole study
    assert run.finish(cfg, run.RunState(), succeeded=True, full_run=False).exit_code == 0


def test_a_clean_run_ends_quietly_and_a_stale_report_asks_for_another_run(tmp_path):
    cfg = settings(tmp_path, "http://127.0.0.1:9", False)
    root = Path(cfg["output_root"])
    write_run(root, converted=True, error=False)
    assert run.finish(cfg, run.RunState(), succeeded=True, full_run=True) == run.Outcome()
    extra = ScanRow(
        "P", "S", "SID", "E", "EID", "xnat:mrSessionData", "2", "T2w", "t2", "2-T2w", "DICOM", 1, 10
    )
    manifest.write_tsv(root / paths.SCANS_TSV, [*manifest.read_scans(root / paths.SCANS_TSV), extra])
    stale = run.finish(cfg, run.RunState(), succeeded=True, full_run=True)
    assert stale.exit_code == 1 and "run the same command again" in stale.lines[0]


def test_interrupt_warning_only_for_a_cluster_head_that_ignores_sigint():
    import signal

    warning = run.interrupt_warning(True, signal.SIG_IGN)
    assert warning and warning.startswith("xnat-prep: warning:") and "SIGINT" in warning
    assert run.interrupt_warning(True, signal.default_int_handler) is None
    assert run.interrupt_warning(True, signal.SIG_DFL) is None
    assert run.interrupt_warning(False, signal.SIG_IGN) is None  # local jobs: Ctrl-C is not the way out


def test_interrupt_warning_reads_this_process_sigint():
    import signal

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as inherited from `cmd &` in a script
    try:
        assert run.interrupt_warning(True) is not None
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as started from a terminal
        assert run.interrupt_warning(True) is None
    finally:
        signal.signal(signal.SIGINT, previous)
