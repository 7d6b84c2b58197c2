"""End to end through the workflow: project A on server 1 (identifiable demo data) -> discover ->
download -> pseudonymise -> `push` to project B on server 2. B holds only pseudonymised data under
the pseudonyms (a leak scan over every file B stored and every request B got), A got no write, and
a rerun (forced) sends B no modifying request."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pydicom
import pytest
from import_helpers import REPO, client, make_project, snakemake

from xnat_prep import paths, receipts
from xnat_prep.importing import push
from xnat_prep.pseudonymise import new_key_file
from xnat_prep.server.testing import running_server

MODIFYING = {"PUT", "POST", "DELETE"}
SUBJECTS = ["ALICEQ17", "BOBZZ42"]  # distinctive: a leak of a label is a plain substring hit

pseudo_helpers_dir = REPO / "tests" / "pseudonymise"


def _leak_scan():
    sys.path.insert(0, str(pseudo_helpers_dir))
    try:
        import pseudo_helpers
    finally:
        sys.path.remove(str(pseudo_helpers_dir))
    return pseudo_helpers


def data_writes(server, since: int) -> list[str]:
    """Modifying requests after ``since``, login/logout left out (they change no data)."""
    return [
        f"{r['method']} {r['path']}"
        for r in server.requests()[since:]
        if r["method"] in MODIFYING and r["path"] not in ("/data/JSESSION", "/data/services/auth")
    ]


@pytest.mark.workflow
@pytest.mark.slow
def test_workflow_pushes_only_pseudonymised_data_to_b(tmp_path: Path) -> None:
    from xnat_prep.demodata import seed_server

    work = tmp_path / "work"
    work.mkdir()
    with running_server(tmp_path / "xnat-a") as a, running_server(tmp_path / "xnat-b") as b:
        csv = tmp_path / "subjects.csv"
        seed_server(a.url, "admin", "admin", "PROJA", 2, 1, "tiny", subject_labels=SUBJECTS, csv=csv)
        make_project(b.url, "PROJB")
        key = new_key_file(tmp_path / "pseudo.key")
        config = {
            "xnat": {"host": a.url, "max_connections": 2},
            "subjects": {"csv": str(csv)},
            "pseudonymise": {"enabled": True, "key_file": str(key)},
            "push": {"enabled": True, "project": "PROJB", "host": b.url, "nifti": True, "variables": True},
        }
        env = {
            "XNAT_USER": "admin",
            "XNAT_PASS": "admin",
            "XNAT_PUSH_USER": "admin",
            "XNAT_PUSH_PASS": "admin",
        }
        a_before, b_before = len(a.requests()), len(b.requests())

        run = snakemake(work, config, "push", env=env)

        assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
        assert data_writes(a, a_before) == []  # the source saw only reads
        assert len([r for r in b.requests()[b_before:] if r["path"] == "/data/services/import"]) == 2
        root = work / "results"
        plan = (root / paths.PUSH_PLAN).read_text().splitlines()
        assert [line.split("\t")[12] for line in plan[1:]] == ["import", "import"]

        # the labels on B are the pseudonyms, never A's
        with client(b.url) as c:
            experiments = c.project_experiments("PROJB")
        pseudo_receipts = sorted((root / "pseudo").rglob("*.json"))
        pseudonyms = {receipts.read(r)["pseudonym"] for r in pseudo_receipts}
        assert len(pseudonyms) == 2
        labels = sorted(e["label"] for e in experiments)
        assert len(labels) == 2
        for label in labels:
            subject = label.rsplit("_", 1)[0]
            assert subject in pseudonyms
            study = pydicom.dcmread(next((root / push.STAGING).glob(f"{subject}/{label}/*.dcm")))
            assert label == push.session_pseudonym(subject, str(study.StudyInstanceUID))

        # the NIfTI results and custom variables went onto the copies (not onto A)
        uploaded = sorted((root / "receipts/push-upload/PROJB").rglob("*.json"))
        assert len(uploaded) == 2 and all(receipts.read(r)["sent"] > 0 for r in uploaded)
        some = receipts.read(uploaded[0])
        scan_id, entry = next((k, v) for k, v in some["scans"].items() if v["status"] == "converted")
        with client(b.url) as c:
            on_b = c.resource_digests(some["session_id"], scan_id, "NIFTI")
            _, fields = c.experiment(some["session_id"])
        assert on_b == {f["name"]: f["md5"] for f in entry["files"]}
        assert any(name.endswith(".nii.gz") for name in on_b)
        assert fields.get("xnatprep_status") == "complete"

        # the leak scan: what A's data says about its subjects, searched in all B stored and got
        helpers = _leak_scan()
        identifying: set[str] = set(SUBJECTS) | {f"{s}_MR1" for s in SUBJECTS} | {"PROJA"}
        for scan in (p for p in (root / "dicom").rglob("*") if p.is_dir() and any(p.glob("*.dcm"))):
            identifying |= helpers.identifying_values(scan)
        source = pydicom.dcmread(next((root / "dicom").rglob("*.dcm")), stop_before_pixels=True)
        assert str(source.PatientName) in identifying and str(source.StudyInstanceUID) in identifying
        assert source.StudyDate in identifying
        assert len(list((tmp_path / "xnat-b/blobs").rglob("*"))) > 100  # B's files and database are scanned
        leaks = helpers.leaks(identifying, [tmp_path / "xnat-b"])
        assert leaks == []
        # and what push sent, by its receipts (names, labels): only pseudonyms
        for receipt in (root / "receipts/push").rglob("*.json"):
            sent = json.dumps(receipts.read(receipt))
            assert not [v for v in identifying if v in sent], receipt

        # a forced rerun: decided again against B, all skip, no modifying request to either
        a_mid, b_mid = len(a.requests()), len(b.requests())
        again = snakemake(work, config, "push", "--forcerun", "push", env=env)

        assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
        plan = (root / paths.PUSH_PLAN).read_text().splitlines()
        assert [line.split("\t")[12] for line in plan[1:]] == ["skip", "skip"]
        assert data_writes(b, b_mid) == []
        assert data_writes(a, a_mid) == []
