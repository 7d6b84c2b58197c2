"""The BIDS dataset from a converted demo study (real dcm2niix, no server): names, fieldmaps,
validator, determinism, reruns, mapping changes, pseudonyms, and ``bids-init``."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from conftest import REPO, make_study

from xnat_prep import bids, manifest, paths, plan
from xnat_prep.bids import dataset, draft, validate
from xnat_prep.errors import UserError

pytestmark = pytest.mark.slow  # a converted demo study (dcm2niix) and the validator
MAPPING = REPO / "config" / "bids.yaml"


def build(root: Path, mapping: Path = MAPPING, **kwargs) -> dataset.Result:
    layout, _ = bids.lint(root, mapping, pseudo=kwargs.pop("pseudo", None))
    return dataset.write(layout, bids.load(mapping), root, host="https://xnat.example.org", **kwargs)


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def stats(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_dataset_validates_with_zero_errors(converted):
    build(converted.root)
    result = validate.run(converted.root / paths.BIDS_DIR)
    assert result["errors"] == 0, validate.summary_lines(result)
    bids_dir = converted.root / paths.BIDS_DIR
    ses = bids_dir / "sub-SUB002" / "ses-MR1"
    assert sorted(p.name for p in (ses / "fmap").glob("*.json")) == [
        "sub-SUB002_ses-MR1_acq-gre_magnitude1.json",
        "sub-SUB002_ses-MR1_acq-gre_magnitude2.json",
        "sub-SUB002_ses-MR1_acq-gre_phasediff.json",
        "sub-SUB002_ses-MR1_acq-se_dir-AP_epi.json",
        "sub-SUB002_ses-MR1_acq-se_dir-PA_epi.json",
    ]
    phasediff = json.loads((ses / "fmap" / "sub-SUB002_ses-MR1_acq-gre_phasediff.json").read_text())
    assert (phasediff["EchoTime1"], phasediff["EchoTime2"]) == (0.00492, 0.00738)
    assert phasediff["IntendedFor"] == [
        f"bids::sub-SUB002/ses-MR1/func/sub-SUB002_ses-MR1_task-rest_acq-me_dir-AP_echo-{e}_bold.nii.gz"
        for e in (1, 2, 3)
    ]
    echo2 = json.loads(
        (ses / "func" / "sub-SUB002_ses-MR1_task-rest_acq-me_dir-AP_echo-2_bold.json").read_text()
    )
    assert echo2["B0FieldSource"] == "grefmap" and echo2["EchoTime"] == 0.038
    dwi = ses / "dwi" / "sub-SUB002_ses-MR1_acq-dir6_dir-AP_dwi"
    assert dwi.with_suffix(".bval").read_text().split() == [
        "0",
        "1000",
        "1000",
        "1000",
        "1000",
        "1000",
        "1000",
    ]
    assert (bids_dir / ".bidsignore").read_text() == dataset.BIDSIGNORE
    description = json.loads((bids_dir / "dataset_description.json").read_text())
    assert description["SourceDatasets"] == [{"URL": "https://xnat.example.org/data/projects/DEMO"}]
    assert description["GeneratedBy"][1]["Version"].startswith("v1.0.")


def test_rerun_changes_nothing(converted):
    build(converted.root)
    before = stats(converted.root / paths.BIDS_DIR)
    again = build(converted.root)
    assert again.written == [] and again.removed == []
    assert stats(converted.root / paths.BIDS_DIR) == before


def test_shuffled_manifest_gives_the_same_dataset(converted, tmp_path):
    build(converted.root)
    first = snapshot(converted.root / paths.BIDS_DIR)
    rows = list(converted.scans)
    random.Random(7).shuffle(rows)
    manifest.write_tsv(converted.root / paths.SCANS_TSV, rows)
    (converted.root / paths.BIDS_BUILD_MANIFEST).unlink()
    import shutil

    shutil.rmtree(converted.root / paths.BIDS_DIR)
    build(converted.root)
    assert snapshot(converted.root / paths.BIDS_DIR) == first


def test_mapping_change_renames_exactly_what_it_affects(converted, tmp_path):
    build(converted.root)
    folder = converted.root / paths.BIDS_DIR
    before = stats(folder)
    changed = tmp_path / "bids.yaml"
    changed.write_text(
        MAPPING.read_text().replace(
            "entities: {task: rest, acq: me, dir: AP}", "entities: {task: rest, acq: multiecho, dir: AP}"
        )
    )
    result = build(converted.root, changed)
    after = stats(folder)
    gone = sorted(set(before) - set(after))
    new = sorted(set(after) - set(before))
    assert len(gone) == len(new) == 2 * 2 * 3  # 2 subjects x 3 echoes x (nii.gz + json)
    assert all("acq-me_" in g for g in gone) and all("acq-multiecho_" in n for n in new)
    assert sorted(result.removed) == gone
    # everything else: same inode and mtime, except the files that name the renamed ones
    touched = {k for k in set(before) & set(after) if before[k] != after[k]}
    assert touched == {
        "sub-SUB001/ses-MR1/sub-SUB001_ses-MR1_scans.tsv",
        "sub-SUB002/ses-MR1/sub-SUB002_ses-MR1_scans.tsv",
        "sub-SUB001/ses-MR1/fmap/sub-SUB001_ses-MR1_acq-gre_phasediff.json",
        "sub-SUB001/ses-MR1/fmap/sub-SUB001_ses-MR1_acq-gre_magnitude1.json",
        "sub-SUB001/ses-MR1/fmap/sub-SUB001_ses-MR1_acq-gre_magnitude2.json",
        "sub-SUB002/ses-MR1/fmap/sub-SUB002_ses-MR1_acq-gre_phasediff.json",
        "sub-SUB002/ses-MR1/fmap/sub-SUB002_ses-MR1_acq-gre_magnitude1.json",
        "sub-SUB002/ses-MR1/fmap/sub-SUB002_ses-MR1_acq-gre_magnitude2.json",
    }


def test_unrouted_image_is_a_named_error(converted, tmp_path):
    changed = tmp_path / "bids.yaml"
    changed.write_text(
        MAPPING.read_text().replace("      - {sidecar: {EchoNumber: 2}, bids: fmap/magnitude2}\n", "")
    )
    with pytest.raises(
        UserError, match=r"session SUB001_MR1 scan 13 \(rule 'gre_fmap' \(#\d+\)\): no output routes"
    ):
        build(converted.root, changed)


def test_pseudonymised_labels_flow_through(converted, tmp_path):
    csv = tmp_path / "pseudonyms.csv"
    csv.write_text("subject_id,pseudonym\nDEMO_S001,PSN-A1\nDEMO_S002,PSN-B2\n")
    build(converted.root, pseudo={"mapping_csv": str(csv)}, pseudonymised=True)
    folder = converted.root / paths.BIDS_DIR
    assert sorted(p.name for p in folder.glob("sub-*")) == ["sub-PSNA1", "sub-PSNB2"]
    assert (folder / "sub-PSNA1" / "ses-1" / "anat" / "sub-PSNA1_ses-1_T1w.nii.gz").is_file()
    scans_tsv = (folder / "sub-PSNA1" / "ses-1" / "sub-PSNA1_ses-1_scans.tsv").read_text()
    assert "SUB001" not in scans_tsv and "DEMO_E" not in scans_tsv
    assert "SUB00" not in "".join(str(p) for p in folder.rglob("*"))


def test_bids_init_maps_reproin_names_with_no_edits(tmp_path):
    study = make_study(tmp_path, protocol="reproin")
    inventory = tmp_path / "inventory.tsv"
    inventory.write_text(plan.inventory(study.scans, []).to_csv(sep="\t", index=False))
    text = draft.draft(draft.read_inventory(inventory))
    (tmp_path / "bids.yaml").write_text(text)
    layout, lines = bids.lint(study.root, tmp_path / "bids.yaml")
    assert lines == []
    names = {p.scan.scan_id: p.relpaths() for p in layout.planned if p.scan.subject == "SUB001"}
    assert names["3"] == ["sub-SUB001/ses-MR1/fmap/sub-SUB001_ses-MR1_acq-se_dir-AP_epi"]
    assert names["10"] == ["sub-SUB001/ses-MR1/func/sub-SUB001_ses-MR1_task-nback_dir-AP_run-3_bold"]
    assert [s.scan_id for s, _ in layout.skipped if s.subject == "SUB001"] == ["1", "16"]
    result = dataset.write(layout, bids.load(tmp_path / "bids.yaml"), study.root)
    assert (
        "sub-SUB001/ses-MR1/func/sub-SUB001_ses-MR1_task-rest_acq-me_dir-AP_echo-3_bold.nii.gz"
        in result.files
    )
    # the only validator errors: what Philips-style DICOM cannot say (the mapping's metadata: does)
    found = validate.run(study.root / paths.BIDS_DIR)
    codes = {i["code"] for i in found["issues"] if i["severity"] == "error"}
    assert codes <= {"PHASE_ENCODING_DIRECTION_MUST_DEFINE", "TOTAL_READOUT_TIME_MUST_DEFINE"}


def test_bids_init_drafts_scanner_names(converted, tmp_path):
    inventory = tmp_path / "inventory.tsv"
    inventory.write_text(plan.inventory(converted.scans, []).to_csv(sep="\t", index=False))
    text = draft.draft(draft.read_inventory(inventory))
    assert text.count("  - name: ") == 10  # one rule per distinct (type, description)
    assert '  - name: aahead_scout\n    match: {series_description: "AAHead_Scout"}\n    skip: true' in text
    assert "bids: func/sbref  # a guess from the name: check it" in text
    (tmp_path / "bids.yaml").write_text(text)
    bids.load(tmp_path / "bids.yaml")
