"""The workflow with pseudonymise.enabled: download, pseudonymise, convert, upload, report; the
quarantined series are listed and nothing of the source's identity reaches the NIfTI side."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
from workflow_helpers import Study

from xnat_prep import paths, receipts
from xnat_prep.pseudonymise import new_key_file
from xnat_prep.pseudonymise.sidecar import IDENTIFYING_KEYS


def test_pseudonymised_run_end_to_end(study: Study, tmp_path: Path) -> None:
    key = new_key_file(tmp_path / "pseudo.key")
    config = study.config(
        tmp_path,
        scans={"exclude_types": ["*broken*"]},  # dcm2niix rejects that one: a problem of its own
        pseudonymise={"enabled": True, "key_file": str(key)},
    )
    result = study.snakemake(tmp_path, config)
    assert result.rc == 0, result.output[-3000:]
    root = tmp_path / "results"
    summary = (root / paths.SUMMARY_TSV).read_text()
    assert "quarantined" in summary  # the screen save and the report are held back and listed
    scans = [line.split("\t") for line in summary.splitlines()[1:]]
    assert any(int(row[-1]) > 0 for row in scans)

    # what the source says about the subjects, from the downloaded (identifiable) DICOM
    identity: set[str] = set()
    for dcm in (root / "dicom").rglob("*.dcm"):
        ds = pydicom.dcmread(dcm, stop_before_pixels=True)
        identity |= {
            str(ds.get(k, "")) for k in ("PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID")
        }
        identity |= {str(ds.get("StudyDate", ""))}
    identity = {v for v in identity if len(v) >= 6}  # "001" would match any number
    assert len(identity) >= 4
    nifti_side = [p for p in (root / "nifti").rglob("*") if p.is_file()]
    assert any(p.name.endswith(".nii.gz") for p in nifti_side)
    for path in nifti_side:
        data = path.read_bytes()
        leaked = sorted(v for v in identity if v.encode() in data)
        assert leaked == [], f"{path}: {leaked}"
        if len(path.relative_to(root / "nifti").parts) == 5:  # a scan's output (not a session's receipt)
            assert not any(part.startswith("SUB") for part in path.name.split("_")), path.name
    sidecars = [p for p in nifti_side if p.suffix == ".json"]
    assert sidecars
    for path in sidecars:
        assert not set(json.loads(path.read_text())) & set(IDENTIFYING_KEYS), path
    # pseudonymised DICOM on disk carries the method and the key's fingerprint, never the key
    some = next((root / "pseudo").rglob("*.dcm"))
    ds = pydicom.dcmread(some, stop_before_pixels=True)
    assert ds.PatientIdentityRemoved == "YES"
    assert key.read_text().strip() not in some.read_bytes().decode("latin-1")
    upload = next(root.glob("receipts/upload/**/*.json"))
    assert receipts.read(upload)["sent"] > 0
