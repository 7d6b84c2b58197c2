"""Faults during imports (error answers, resets, cut answers, also after XNAT has acted on the
request): the run completes, and no session or file is there twice."""

from __future__ import annotations

from pathlib import Path

from import_helpers import (
    client,
    downloaded_md5s,
    local_md5s,
    make_project,
    run_import,
    synthetic,
    write_csv,
)

from xnat_prep import receipts
from xnat_prep.server.testing import running_server

# On the import requests and the listings that decide and verify (not every file of the checks)
FAULTS = "seed=4,error=0.3,statuses=500:502:503:429,reset=0.15,truncate=0.2" + (
    ",path=^/data/(services|projects|experiments/[^/]+/scans$)"
)
LABELS = ("E1", "E2", "E3")


def test_faults_during_import_leave_no_duplicates(tmp_path: Path) -> None:
    folders = {label: synthetic(tmp_path / "dicom", f"S{label}", label) for label in LABELS}
    csv = write_csv(
        tmp_path / "import.csv", [["P", f"S{label}", label, str(f)] for label, f in folders.items()]
    )
    with running_server(tmp_path / "xnat", faults=FAULTS) as server:
        make_project(server.url, "P")

        summary = run_import(server.url, csv, tmp_path / "out")

        assert summary["actions"] == {"import": 3}
        imports = [r for r in server.requests() if r["path"] == "/data/services/import"]
        assert len(imports) > len(LABELS), "the fault plan hit no import request: change its seed"
        with client(server.url) as c:
            c.delete("/xapi/xnatprep/faults")  # the checks below are not under test
            labels = sorted(e["label"] for e in c.project_experiments("P"))
        assert labels == sorted(LABELS)
        for label, folder in folders.items():
            assert downloaded_md5s(server.url, "P", label) == local_md5s(folder)
            assert (
                receipts.read(tmp_path / f"out/receipts/import/P/S{label}/{label}.json")["verified"][
                    "digests"
                ]
                == "verified"
            )


def test_an_import_whose_answer_is_lost_is_not_sent_again(tmp_path: Path) -> None:
    """XNAT archived the session but the answer was cut: look, find it complete, verify."""
    folder = synthetic(tmp_path / "dicom", "S1", "E1")
    csv = write_csv(tmp_path / "import.csv", [["P", "S1", "E1", str(folder)]])
    with running_server(tmp_path / "xnat", faults="truncate=1,path=^/data/services/import$") as server:
        make_project(server.url, "P")

        summary = run_import(server.url, csv, tmp_path / "out")

        assert summary["actions"] == {"import": 1}
        assert len([r for r in server.requests() if r["path"] == "/data/services/import"]) == 1
        assert downloaded_md5s(server.url, "P", "E1") == local_md5s(folder)
