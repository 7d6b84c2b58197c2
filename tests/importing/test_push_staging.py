"""What the pseudonymised push takes from the pseudonymise step, offline: the labels, the staged tree
(no source label in any path or name), and the errors that stop it before any request."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pydicom
import pytest
from import_helpers import synthetic

from xnat_prep import manifest, paths, receipts
from xnat_prep.errors import UserError
from xnat_prep.importing import push
from xnat_prep.pseudonymise import Key, Pseudonymiser, pseudonymise_tree

KEY = Key(b"k" * 32)


def results_with(tmp_path: Path, pseudonym: str | None = None) -> Path:
    """An output root as discover and pseudonymise_scan leave it: one session, its scans."""
    root = tmp_path / "results"
    session = synthetic(tmp_path / "dicom", "ALICEQ17", "ALICEQ17_MR1", project="PROJA")
    rows = []
    for series in sorted(p for p in session.iterdir() if p.is_dir()):
        scan = f"{series.name}-T1w"
        rows.append(
            manifest.ScanRow(
                *("PROJA", "ALICEQ17", "XNAT_S00001", "ALICEQ17_MR1", "XNAT_E00001", "xnat:mrSessionData"),
                *(series.name, "T1w", "T1w", scan, "DICOM", 1, 1),
            )
        )
        receipt = paths.pseudo_receipt(root, "PROJA", "ALICEQ17", "ALICEQ17_MR1", scan)
        data = pseudonymise_tree(
            series,
            paths.outputs_of(receipt),
            key=KEY,
            subject_id="XNAT_S00001",
            pseudonym=pseudonym,
            layout="flat",
        )
        receipts.write(receipt, data)
    manifest.write_tsv(root / paths.SCANS_TSV, rows, manifest.ScanRow)
    return root


def test_staged_tree_holds_only_pseudonymised_names(tmp_path: Path) -> None:
    root = results_with(tmp_path)

    [found] = push.pseudonymised_sessions(root)
    staged = push.stage([found], root / push.STAGING)

    assert found.subject == KEY.pseudonym("XNAT_S00001")
    assert re.fullmatch(rf"{found.subject}_[0-9A-F]{{10}}", found.session)
    names = [str(p.relative_to(staged)) for p in staged.rglob("*")]
    assert names and not [n for n in names if re.search("ALICE|PROJA|MR1|T1w", n)]
    study = pydicom.dcmread(next(staged.rglob("*.dcm")), stop_before_pixels=True)
    assert found.session == push.session_pseudonym(found.subject, str(study.StudyInstanceUID))
    assert [r.key for r in push.rows_from_tree(staged, "B")] == [f"B/{found.subject}/{found.session}"]


def test_a_pseudonym_that_is_no_xnat_label_stops_the_push(tmp_path: Path) -> None:
    root = results_with(tmp_path, pseudonym="P.001")

    with pytest.raises(UserError, match=r"pseudonym 'P\.001' is not usable as an XNAT label"):
        push.pseudonymised_sessions(root)


def test_a_scan_not_pseudonymised_yet_is_named(tmp_path: Path) -> None:
    root = results_with(tmp_path)
    receipt = next((root / "pseudo").rglob("*.json"))
    receipt.unlink()

    with pytest.raises(UserError, match=rf"{re.escape(str(receipt))}: not pseudonymised yet"):
        push.pseudonymised_sessions(root)


def test_xnat_labels_are_cleaned_out_of_kept_text(tmp_path: Path) -> None:
    session = synthetic(tmp_path / "dicom", "ALICEQ17", "ALICEQ17_MR1", project="PROJA")
    ds = pydicom.dcmread(next(session.rglob("*.dcm")))
    ds.PatientName, ds.PatientID = "Doe^Jane", "MRN123456"  # the labels are not the patient's name here
    ds.PatientComments = "Project: PROJA Subject: ALICEQ17 Session: ALICEQ17_MR1"
    ds.StudyDescription = "PROJA"
    plain, labelled = copy.deepcopy(ds), copy.deepcopy(ds)

    Pseudonymiser(KEY, "XNAT_S00001").dataset(plain)
    Pseudonymiser(KEY, "XNAT_S00001", labels=("PROJA", "ALICEQ17", "ALICEQ17_MR1")).dataset(labelled)

    assert "ALICEQ17" in str(plain.get("PatientComments", "")) + str(plain.get("StudyDescription", ""))
    kept = str(labelled.get("PatientComments", "")) + str(labelled.get("StudyDescription", ""))
    assert not re.search("PROJA|ALICEQ17", kept)
