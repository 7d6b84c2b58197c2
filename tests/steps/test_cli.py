"""The four step subcommands chained by hand, without Snakemake (XNAT_HOST + env credentials)."""

from __future__ import annotations

import os
import subprocess
import sys

from step_helpers import import_session

from xnat_prep import manifest, receipts
from xnat_prep.server.testing import running_server


def xnat_prep(*args, env):
    command = [sys.executable, "-m", "xnat_prep.cli", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    return result


def test_steps_by_hand(tmp_path):
    with running_server(tmp_path / "xnat") as server:
        session = import_session(server.url, tmp_path / "src", "E1", [{"n_slices": 5, "description": "T1w"}])
        files_tsv = tmp_path / "files.tsv"
        manifest.write_tsv(files_tsv, session.files["1"])
        env = os.environ | {"XNAT_HOST": server.url, "XNAT_USER": "admin", "XNAT_PASS": "admin"}
        out = tmp_path / "out"
        common = ["--session-id", session.session_id]
        xnat_prep("download-session", "--files", files_tsv, *common,
                  "--scans", '[{"scan_id": "1", "resource": "DICOM", "scan": "1-T1w"}]',
                  "--dest", out / "dicom", "--receipt", out / "dicom.json", env=env)  # fmt: skip
        xnat_prep("convert-scan", "--dicom", out / "dicom/1-T1w", "--out", out / "nifti/1-T1w",
                  "--receipt", out / "nifti/1-T1w.json", "--name", "E1_T1w", "--scan-id", "1",
                  "--scan-type", "T1w", env=env)  # fmt: skip
        xnat_prep("upload-session", *common, "--scan", "1", out / "nifti/1-T1w.json",
                  "--receipt", out / "up.json", env=env)  # fmt: skip
        values = tmp_path / "values.csv"
        values.write_text("session,field,value\nE1,Group,control\nOTHER,group,patient\n")
        xnat_prep("set-variables", *common, "--session", "E1", "--convert-receipts", out / "nifti/1-T1w.json",
                  "--derived", "t1_voxels=voxel_size:t1*", "--values-csv", values,
                  "--receipt", out / "vars.json", env=env)  # fmt: skip
        assert receipts.read(out / "dicom/1-T1w.json")["http_requests"] == 1
        assert receipts.read(out / "dicom.json")["scans"][0]["n_files"] == 5
        assert receipts.read(out / "nifti/1-T1w.json")["status"] == "converted"
        assert receipts.read(out / "up.json")["sent"] == 2
        after = receipts.read(out / "vars.json")["after"]
        assert after["group"] == "control" and after["t1_voxels"] == "1x1x2"
        assert after["xnatprep_status"] == "complete"


def test_log_option_gets_the_log_and_stderr_one_line(tmp_path):
    """`xnat-prep --log F CMD` (how the shell: rules call a step): the error in F and as one line."""
    log = tmp_path / "step.log"
    command = [sys.executable, "-m", "xnat_prep.cli", "--log", str(log), "download-session",
               "--files", str(tmp_path / "none.tsv"), "--session-id", "E", "--scans", "[{}]",
               "--dest", str(tmp_path / "d"), "--receipt", str(tmp_path / "d.json"),
               "--host", "http://127.0.0.1:9"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"xnat-prep download-session: error: {tmp_path / 'none.tsv'}: "
        f"[Errno 2] No such file or directory: '{tmp_path / 'none.tsv'}'"
    ]
    assert "ERROR download-session: " in log.read_text() and "none.tsv" in log.read_text()
    assert not (tmp_path / "d.json").exists()
