"""The live progress view (logger plugin xnat-prep-progress, on in the default profile) on real runs:
under a pseudo-terminal (redrawn in place) and without one (plain lines); the final view's counts
equal the run report's."""

from __future__ import annotations

import csv
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workflow_helpers import PASSWORD, REPO, RUNNER, Run, Study, clean_env

from xnat_prep import paths
from xnat_prep.progress import human_bytes
from xnat_prep.report import PROBLEM_STATES

pytestmark = pytest.mark.workflow

STAGE_LINE = re.compile(r"^(?P<name>[a-z_]+)\s+(?P<done>\d+)/(?P<total>\d+)\s+(?P<rest>.*)$")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def final_view(output: str) -> dict[str, dict[str, str]]:
    """The stages of the last "[xnat-prep done]" block: name -> done, total, the rest of the line
    (the header's problem count under the name ``all``)."""
    assert "[xnat-prep done]" in output, output[-3000:]
    block = ANSI.sub("", output.rsplit("[xnat-prep done]", 1)[1]).replace("\r", "").splitlines()
    stages = {"all": {"rest": block[0]}}
    block = block[1:]
    for line in block:
        m = STAGE_LINE.match(line)
        if not m:
            break
        stages[m["name"]] = m.groupdict()
    return stages


def problems_of(rest: str) -> int:
    return int(re.search(r"(\d+) problem\(s\)", rest)[1])


def skipped_of(rest: str) -> int:
    m = re.search(r"(\d+) skipped", rest)
    return int(m[1]) if m else 0


def check_against_report(stages: dict[str, dict[str, str]], root: Path) -> None:
    """The final view agrees with report/summary.tsv (scans, sessions, DICOM bytes, outcomes)."""
    with open(root / paths.SUMMARY_TSV, encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["scan_id"]]
    sessions = {(r["project"], r["subject"], r["session"]) for r in rows}
    assert problems_of(stages.pop("all")["rest"]) == sum(r["state"] in PROBLEM_STATES for r in rows) > 0
    assert stages["discover"]["done"] == "1"
    download = stages["download_session"]
    assert int(download["done"]) == int(download["total"]) == len(sessions)
    dicom_bytes = sum(int(r["dicom_bytes"]) for r in rows)
    assert f"{human_bytes(dicom_bytes)} of {human_bytes(dicom_bytes)}" in " ".join(download["rest"].split())
    convert = stages["convert_session"]
    assert int(convert["done"]) == int(convert["total"]) == len(sessions)
    assert skipped_of(convert["rest"]) == sum(r["convert"] == "skipped" for r in rows)
    assert problems_of(convert["rest"]) == sum(r["convert"] == "failed" for r in rows)
    assert " ".join(convert["rest"].split()).startswith(f"{human_bytes(dicom_bytes)} of")
    for stage in ("upload_session", "set_variables"):
        assert int(stages[stage]["done"]) == len(sessions)
        assert problems_of(stages[stage]["rest"]) == 0
    assert stages["report"]["done"] == "1"
    assert all("finished" in s["rest"] for s in stages.values())


def test_plain_lines_without_a_terminal(main_run: Run) -> None:
    """The main run's stderr is a pipe: plain blocks, no terminal control, Snakemake's output kept."""
    output = main_run.result.stderr
    assert main_run.result.rc == 1, output[-3000:]  # the demo's broken series: 2 problems
    assert "\x1b[" not in output
    assert "Finished jobid" in output and "steps (100%) done" in output  # Snakemake's own lines
    assert output.count("[xnat-prep done]") == 1
    assert len(main_run.result.lines("xnat-prep: problem: DEMO/")) == 2  # the workflow's lines intact
    check_against_report(final_view(output), main_run.root)


def test_redrawn_in_place_under_a_pseudo_terminal(study: Study, tmp_path: Path) -> None:
    workdir = tmp_path / "pty"
    workdir.mkdir()
    config = study.config(workdir)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--cores", "2", "--configfile", str(workdir / "config.yaml")]
    env = clean_env(workdir)
    env.update(XNAT_USER=RUNNER, XNAT_PASS=PASSWORD, TERM="xterm", COLUMNS="200")
    for name in ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID"):
        env.pop(name, None)
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=secondary, stdout=secondary, stderr=secondary)
    os.close(secondary)
    chunks = []
    while True:
        ready, _, _ = select.select([primary], [], [], 1.0)
        if ready:
            try:
                data = os.read(primary, 65536)
            except OSError:  # the terminal's other end closed
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(primary)
    rc = proc.wait(timeout=600)
    output = b"".join(chunks).decode("utf-8", "replace")
    assert rc == 1, output[-3000:]  # the demo's broken series: 2 problems
    assert re.search(r"\x1b\[\d+F\x1b\[J", output)  # the view erased and redrawn in place
    assert "Finished jobid" in output  # Snakemake's own output still there
    assert output.count("[xnat-prep done]") == 1
    # the workflow's own last lines are intact, not drawn over: one per rejected series
    lines = ANSI.sub("", output).replace("\r", "").splitlines()
    assert len([ln for ln in lines if ln.startswith("xnat-prep: problem: DEMO/")]) == 2
    check_against_report(final_view(output), workdir / "results")
