"""The workflow with BIDS on, over HTTP to the bundled server: the demo's BIDS-typical study ->
plan (lint) -> download -> dcm2niix -> BIDS -> the official validator, and the lint stopping a
run before any download."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from xnat_prep import paths
from xnat_prep.server.testing import running_server

pytestmark = [pytest.mark.workflow, pytest.mark.slow, pytest.mark.timeout(1800)]
REPO = Path(__file__).resolve().parents[2]
MAPPING = REPO / "config" / "bids.yaml"
ADMIN = ("admin", "admin")


@dataclass
class Server:
    url: str
    csv: Path

    def snakemake(
        self, workdir: Path, mapping: Path, *args: str, timeout: float = 1200, **config_extra
    ) -> subprocess.CompletedProcess:
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "xnat": {"host": self.url},
            "subjects": {"csv": str(self.csv)},
            "upload": {"enabled": False},
            "custom_variables": {"enabled": False},
            "bids": {"mapping": str(mapping)},
            **config_extra,
        }
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        home = workdir / "home"
        home.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XNAT", "NETRC"))}
        env.update(HOME=str(home), XNAT_USER=ADMIN[0], XNAT_PASS=ADMIN[1])
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
        cmd += ["--cores", "2", *args, "--configfile", str(workdir / "config.yaml")]
        return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from xnat_prep.demodata import seed_server

    base = tmp_path_factory.mktemp("bids-server")
    with running_server(base / "xnat-data") as handle:
        csv = base / "subjects.csv"
        seed_server(handle.url, *ADMIN, "DEMO", 2, 1, "tiny", protocol="bids", csv=csv)
        yield Server(handle.url, csv)


@pytest.fixture(scope="module")
def bids_run(
    server: Server, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess]:
    workdir = tmp_path_factory.mktemp("bids-run")
    return workdir, server.snakemake(workdir, MAPPING)


def test_demo_study_to_valid_bids(bids_run, server):
    workdir, result = bids_run
    assert result.returncode == 0, result.stderr[-4000:]
    root = workdir / "results"
    validation = json.loads((root / paths.BIDS_VALIDATE_RECEIPT).read_text())
    assert validation["errors"] == 0, validation["issues"][:5]
    bids = root / paths.BIDS_DIR
    func = sorted(p.name for p in (bids / "sub-SUB001/ses-MR1/func").glob("*.nii.gz"))
    assert func == [
        "sub-SUB001_ses-MR1_task-nback_dir-AP_run-1_bold.nii.gz",
        "sub-SUB001_ses-MR1_task-nback_dir-AP_run-1_sbref.nii.gz",
        "sub-SUB001_ses-MR1_task-nback_dir-AP_run-2_bold.nii.gz",
        "sub-SUB001_ses-MR1_task-nback_dir-AP_run-2_sbref.nii.gz",
        "sub-SUB001_ses-MR1_task-nback_dir-AP_run-3_bold.nii.gz",
        "sub-SUB001_ses-MR1_task-nback_dir-AP_run-3_sbref.nii.gz",
        "sub-SUB001_ses-MR1_task-rest_acq-me_dir-AP_echo-1_bold.nii.gz",
        "sub-SUB001_ses-MR1_task-rest_acq-me_dir-AP_echo-2_bold.nii.gz",
        "sub-SUB001_ses-MR1_task-rest_acq-me_dir-AP_echo-3_bold.nii.gz",
    ]
    scans = (bids / "sub-SUB001/ses-MR1/sub-SUB001_ses-MR1_scans.tsv").read_text().splitlines()
    # run 2 is the repeat (scan 10), not the cancelled scan 8
    assert any(
        line.startswith("func/sub-SUB001_ses-MR1_task-nback_dir-AP_run-2_bold.nii.gz\t")
        and line.endswith("\t10")
        for line in scans
    )
    ap = json.loads((bids / "sub-SUB001/ses-MR1/fmap/sub-SUB001_ses-MR1_acq-se_dir-AP_epi.json").read_text())
    assert ap["B0FieldIdentifier"] == "se"
    assert ap["IntendedFor"] == [
        f"bids::sub-SUB001/ses-MR1/{name}"
        for name in (
            "func/sub-SUB001_ses-MR1_task-nback_dir-AP_run-1_sbref.nii.gz",
            "func/sub-SUB001_ses-MR1_task-nback_dir-AP_run-1_bold.nii.gz",
            "func/sub-SUB001_ses-MR1_task-nback_dir-AP_run-2_sbref.nii.gz",
            "func/sub-SUB001_ses-MR1_task-nback_dir-AP_run-2_bold.nii.gz",
            "func/sub-SUB001_ses-MR1_task-nback_dir-AP_run-3_sbref.nii.gz",
            "func/sub-SUB001_ses-MR1_task-nback_dir-AP_run-3_bold.nii.gz",
            "dwi/sub-SUB001_ses-MR1_acq-dir6_dir-AP_dwi.nii.gz",
        )
    ]
    phasediff = json.loads(
        (bids / "sub-SUB001/ses-MR1/fmap/sub-SUB001_ses-MR1_acq-gre_phasediff.json").read_text()
    )
    assert phasediff["B0FieldIdentifier"] == "grefmap" and len(phasediff["IntendedFor"]) == 3
    bold = json.loads(
        (bids / "sub-SUB001/ses-MR1/func/sub-SUB001_ses-MR1_task-nback_dir-AP_run-1_bold.json").read_text()
    )
    assert bold["B0FieldSource"] == "se" and bold["TaskName"] == "nback"
    description = json.loads((bids / "dataset_description.json").read_text())
    assert description["SourceDatasets"] == [{"URL": f"{server.url.rstrip('/')}/data/projects/DEMO"}]
    assert [g["Name"] for g in description["GeneratedBy"]] == ["xnat-prep", "dcm2niix"]
    assert (bids / "participants.tsv").read_text() == "participant_id\nsub-SUB001\nsub-SUB002\n"
    # hard links to the converted files, no second copy
    nifti = bids / "sub-SUB001/ses-MR1/anat/sub-SUB001_ses-MR1_T1w.nii.gz"
    assert nifti.stat().st_nlink == 2
    assert (bids / "sub-SUB001/ses-MR1/dwi/sub-SUB001_ses-MR1_acq-dir6_dir-AP_dwi.bval").is_file()


def test_rerun_changes_nothing(bids_run, server):
    workdir, result = bids_run
    assert result.returncode == 0
    bids = workdir / "results" / paths.BIDS_DIR
    before = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in bids.rglob("*") if p.is_file()}
    again = server.snakemake(workdir, MAPPING, "--forcerun", "bids_dataset")
    assert again.returncode == 0, again.stderr[-3000:]
    after = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in bids.rglob("*") if p.is_file()}
    assert after == before
    receipt = json.loads((workdir / "results" / paths.BIDS_RECEIPT).read_text())
    assert receipt["written"] == 0 and receipt["removed"] == []


def test_lint_error_stops_before_download(server, tmp_path):
    text = MAPPING.read_text().replace('"*scout*|*localizer*"', '"*localizer*"')
    broken = tmp_path / "bids.yaml"
    broken.write_text(text)
    workdir = tmp_path / "run"
    result = server.snakemake(workdir, broken)
    assert result.returncode != 0
    assert (
        "error: unmapped: session SUB001_MR1, scan 1 (type 'AAHead_Scout', "
        "description 'AAHead_Scout'): no rule matches" in result.stderr
    )
    assert not (workdir / "results" / "dicom").exists()


def test_pseudonymised_run_gives_pseudonymised_bids(server, tmp_path):
    from xnat_prep.pseudonymise import load_key, new_key_file

    key = new_key_file(tmp_path / "pseudo.key")
    workdir = tmp_path / "run"
    result = server.snakemake(workdir, MAPPING, pseudonymise={"enabled": True, "key_file": str(key)})
    assert result.returncode == 0, result.stderr[-4000:]
    root = workdir / "results"
    folder = root / paths.BIDS_DIR
    subject_ids = sorted(
        {line.split("\t")[2] for line in (root / paths.SCANS_TSV).read_text().splitlines()[1:]}
    )
    expected = sorted(f"sub-{load_key(key).pseudonym(i)}" for i in subject_ids)
    assert sorted(p.name for p in folder.glob("sub-*")) == expected
    names = "".join(str(p) for p in folder.rglob("*"))
    assert "SUB00" not in names and "ses-1" in names
    assert json.loads((root / paths.BIDS_VALIDATE_RECEIPT).read_text())["errors"] == 0
