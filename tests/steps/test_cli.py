"""The four step subcommands chained by hand, without Snakemake (XNAT_HOST + env credentials)."""

from __future__ import annotations

import os
import subprocess
import sys

from step_helpers import import_session

from xnat_prep import manifest, paths, receipts, report
from xnat_prep.server.testing import running_server


def xnat_prep(*args, env):
    command = [sys.executable, "-m", "xnat_prep.cli", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    return result


def test_steps_by_hand(tmp_path):
    """Every step the rules run, as a user would type it: the same commands, the same layout."""
    with running_server(tmp_path / "xnat") as server:
        session = import_session(server.url, tmp_path / "src", "E1", [{"n_slices": 5, "description": "T1w"}])
        env = os.environ | {"XNAT_HOST": server.url, "XNAT_USER": "admin", "XNAT_PASS": "admin"}
        root = tmp_path / "out"
        where = ("P1", "sub-E1", "E1")
        csv = tmp_path / "subjects.csv"
        csv.write_text("Project,Subject\nP1,sub-E1\n")
        xnat_prep("discover", "--subjects", csv, "--selection", '{"include_types": ["T1*"]}',
                  "--output-root", root, env=env)  # fmt: skip
        [row] = manifest.read_scans(root / paths.SCANS_TSV)
        assert (row.scan_id, row.scan, row.n_files) == ("1", "1-T1w", 5)
        common = ["--session-id", session.session_id]
        session_receipt = paths.session_download_receipt(root, *where)
        xnat_prep("download-session", "--files", paths.session_files(root, *where), *common,
                  "--scans", '[{"scan_id": "1", "resource": "DICOM", "scan": "1-T1w"}]',
                  "--receipt", session_receipt, env=env)  # fmt: skip
        converted = paths.convert_receipt(root, *where, "1-T1w")
        xnat_prep("convert-scan", "--dicom", paths.dicom_dir(root, *where, "1-T1w"), "--receipt", converted,
                  "--name", "E1_T1w", "--scan-id", "1", "--scan-type", "T1w", env=env)  # fmt: skip
        xnat_prep("upload-session", *common, "--convert-receipts", converted,
                  "--receipt", paths.upload_receipt(root, *where), env=env)  # fmt: skip
        values = tmp_path / "values.csv"
        values.write_text("session,field,value\nE1,Group,control\nOTHER,group,patient\n")
        xnat_prep("set-variables", *common, "--session", "E1", "--convert-receipts", converted,
                  "--derived", '[{"name": "t1_voxels", "measure": "voxel_size", "scan_types": ["t1*"]}]',
                  "--values-csv", values, "--receipt", paths.variables_receipt(root, *where),
                  env=env)  # fmt: skip
        reported = xnat_prep("report", "--output-root", root, env=env)
        assert receipts.read(paths.download_receipt(root, *where, "1-T1w"))["http_requests"] == 1
        assert receipts.read(session_receipt)["scans"][0]["n_files"] == 5
        assert receipts.read(converted)["status"] == "converted"
        assert receipts.read(paths.upload_receipt(root, *where))["sent"] == 2
        after = receipts.read(paths.variables_receipt(root, *where))["after"]
        assert after["group"] == "control" and after["t1_voxels"] == "1x1x2"
        assert after["xnatprep_status"] == "complete"
        assert "(0 problem(s))" in reported.stdout
        assert [r.state for r in report.summarize(root)] == ["ok"]


def test_log_option_gets_the_log_and_stderr_one_line(tmp_path):
    """`xnat-prep --log F CMD` (how the shell: rules call a step): the error in F and as one line."""
    log = tmp_path / "step.log"
    command = [sys.executable, "-m", "xnat_prep.cli", "--log", str(log), "download-session",
               "--files", str(tmp_path / "none.tsv"), "--session-id", "E", "--scans", "[{}]",
               "--receipt", str(tmp_path / "d.json"),
               "--host", "http://127.0.0.1:9"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"xnat-prep download-session: error: {tmp_path / 'none.tsv'}: "
        f"[Errno 2] No such file or directory: '{tmp_path / 'none.tsv'}'"
    ]
    assert "ERROR download-session: " in log.read_text() and "none.tsv" in log.read_text()
    assert not (tmp_path / "d.json").exists()
