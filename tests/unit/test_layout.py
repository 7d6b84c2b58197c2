"""The rules' literal paths and ``xnat_prep.paths`` describe one layout."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from xnat_prep import paths

RULES = Path(__file__).resolve().parents[2] / "workflow" / "rules"
DECLARED = {  # every path a rule declares, as paths.py names it
    paths.SCANS_TSV,
    paths.SESSIONS_TSV,
    paths.ERRORS_TSV,
    paths.SESSION_FILES,
    paths.SESSION_DOWNLOAD_RECEIPT,
    paths.PSEUDO_RECEIPT,
    paths.SESSION_CONVERT_RECEIPT,
    paths.UPLOAD_RECEIPT,
    paths.VARIABLES_RECEIPT,
    paths.SUMMARY_TSV,
    paths.DATA_AMOUNT_TSV,
    paths.DATA_AMOUNT_PNG,
    paths.REPORT_PROJECTS_TSV,
    paths.REPORT_SCAN_TYPES_TSV,
    paths.PLAN_TSV,
    paths.INVENTORY_TSV,
    paths.IMPORT_PLAN,
    paths.IMPORT_RECEIPT,
    paths.PUSH_PLAN,
    paths.BIDS_RECEIPT,
    paths.BIDS_VALIDATE_RECEIPT,
}


def rule_paths() -> set[str]:
    text = "".join(p.read_text(encoding="utf-8") for p in sorted(RULES.glob("*.smk")))
    return set(re.findall(r'"<results>/([^"]+)"', text))


def test_the_rules_spell_exactly_the_paths_of_paths_py() -> None:
    assert rule_paths() == DECLARED


def test_folders_sit_beside_their_receipts() -> None:
    def folder(template: str) -> str:
        return paths.outputs_of(template).as_posix()

    assert folder(paths.SESSION_DOWNLOAD_RECEIPT) + "/{scan}" == paths.DICOM_DIR
    assert folder(paths.DOWNLOAD_RECEIPT) == paths.DICOM_DIR
    assert folder(paths.CONVERT_RECEIPT) == paths.NIFTI_DIR
    assert folder(paths.SESSION_CONVERT_RECEIPT) + "/{scan}.json" == paths.CONVERT_RECEIPT
    assert folder(paths.PSEUDO_RECEIPT) == paths.PSEUDO_DIR
    assert paths.PSEUDO_SESSION_DIR + "/{scan}" == paths.PSEUDO_DIR
    assert paths.receipt_of(PurePosixPath(paths.NIFTI_DIR)).as_posix() == paths.CONVERT_RECEIPT


def test_builders_fill_the_templates() -> None:
    where = ("P", "S", "E 1", "1-T1w")
    assert paths.dicom_dir("/r", *where) == Path("/r/dicom/P/S/E_1/1-T1w")
    assert paths.convert_receipt("/r", *where) == paths.receipt_of(paths.nifti_dir("/r", *where))
    assert paths.outputs_of(paths.session_download_receipt("/r", *where[:3])) / "1-T1w" == paths.dicom_dir(
        "/r", *where
    )
