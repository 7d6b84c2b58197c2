"""Every output path of the workflow, and the sanitising of XNAT labels into path components.

The rules in ``workflow/rules/*.smk`` spell the same patterns literally (so ``grep`` finds the
producer of any file); the library, discovery and the report build them here.
``tests/unit/test_layout.py`` checks that both agree.

One pairing runs through the layout: a step's receipt ``x.json`` describes the folder ``x/``
beside it (a scan's DICOM or NIfTI files, a session's scan folders): :func:`outputs_of` and
:func:`receipt_of` are the only places that spell it.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# A path whose parts are all safe already and none is "", "." or "..": most of them, checked in one match
_NAME = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
_PLAIN_NAME = re.compile(_NAME)
_PLAIN_RELPATH = re.compile(rf"{_NAME}(?:/{_NAME})*")

# Relative to ``output_root``; the placeholders are the Snakemake wildcards of the same name.
SCANS_TSV = "manifest/scans.tsv"
SESSIONS_TSV = "manifest/sessions.tsv"
ERRORS_TSV = "manifest/errors.tsv"
SKIPPED_TSV = "manifest/skipped.tsv"  # not a declared output: the plan's, rewritten by every discovery
DICOM_TSV = "manifest/dicom.tsv"  # DICOM header values read for scans.dicom: kept across discoveries
PLAN_TSV = "plan/plan.tsv"
INVENTORY_TSV = "plan/inventory.tsv"
FILES_DIR = "manifest/files"
SESSION_FILES = "manifest/files/{project}/{subject}/{session}.tsv"
SESSION_DOWNLOAD_RECEIPT = "dicom/{project}/{subject}/{session}.json"
DICOM_DIR = "dicom/{project}/{subject}/{session}/{scan}"
DICOM_ZIP = "dicom/{project}/{subject}/{session}/{scan}.zip"  # dicom.store: zip (one verified zip per scan)
DOWNLOAD_RECEIPT = "dicom/{project}/{subject}/{session}/{scan}.json"
PSEUDO_RECEIPT = "pseudo/{project}/{subject}/{session}/{scan}.json"
PSEUDO_DIR = "pseudo/{project}/{subject}/{session}/{scan}"
PSEUDO_ZIP = "pseudo/{project}/{subject}/{session}/{scan}.zip"  # dicom.store: zip
PSEUDO_SESSION_DIR = "pseudo/{project}/{subject}/{session}"
NIFTI_DIR = "nifti/{project}/{subject}/{session}/{scan}"
CONVERT_RECEIPT = "nifti/{project}/{subject}/{session}/{scan}.json"
SESSION_CONVERT_RECEIPT = "nifti/{project}/{subject}/{session}.json"
# in a session's NIfTI folder: the settings its scans were converted with (no scan's receipt is
# named like it: a {scan} value always holds a "-")
CONVERT_SETTINGS_NAME = "convert_session.json"
UPLOAD_RECEIPT = "receipts/upload/{project}/{subject}/{session}.json"
VARIABLES_RECEIPT = "receipts/variables/{project}/{subject}/{session}.json"
IMPORT_PLAN = "import/import_plan.tsv"
IMPORT_RECEIPT = "receipts/import/{project}/{subject}/{session}.json"
RESOURCES_PLAN = "import/resources_plan.tsv"
RESOURCES_RECEIPT = "receipts/resources/{project}/{subject}/{session}.json"
PUSH_PLAN = "push/import_plan.tsv"
PUSH_RECEIPT = "receipts/push/{project}/{subject}/{session}.json"
PUSH_STAGING = (
    "push/staging"  # the pseudonymised sessions as pushed: {subject pseudonym}/{session pseudonym}/
)
PUSH_UPLOAD_RECEIPT = "receipts/push-upload/{project}/{subject}/{session}.json"
PUSH_VARIABLES_RECEIPT = "receipts/push-variables/{project}/{subject}/{session}.json"
BIDS_DIR = "bids"
BIDS_LINT_TSV = "plan/bids_lint.tsv"  # the plan's lint of the BIDS mapping (one problem a row)
BIDS_PLAN_TSV = "plan/bids_plan.tsv"  # one row per scan -> its predicted BIDS names
BIDS_RECEIPT = "receipts/bids/bids_dataset.json"
BIDS_BUILD_MANIFEST = "receipts/bids/build_manifest.json"  # what the last build wrote (not an output)
BIDS_VALIDATE_RECEIPT = "receipts/bids/bids_validate.json"
SUMMARY_TSV = "report/summary.tsv"
DATA_AMOUNT_TSV = "report/data_amount.tsv"
DATA_AMOUNT_PNG = "report/data_amount.png"
REPORT_PROJECTS_TSV = "report/projects.tsv"  # xnat-prep summary's tables, from the manifest
REPORT_SCAN_TYPES_TSV = "report/scan_types.tsv"


def safe_component(label: str) -> str:
    """One path component from an XNAT label: keep ``[A-Za-z0-9._-]``, replace the rest by ``_``.

    Raises ValueError for labels that would not name a directory of their own ("", ".", "..").
    """
    safe = _UNSAFE.sub("_", label)
    if safe in ("", ".", ".."):
        raise ValueError(f"label {label!r} cannot be used as a path component")
    return safe


def safe_relpath(path: str) -> PurePosixPath:
    """A resource file path (``a/b/c.dcm``) as a relative path, each part sanitised.

    Absolute paths, ``..`` parts and NUL characters are refused (ValueError): a server must not make us write
    outside the scan's directory. Empty parts and ``.`` (``a//b``, ``./a``) are dropped.
    """
    return PurePosixPath(*safe_relparts(path))


def plain_name(text: str) -> bool:
    """Whether ``text`` is one path component that :func:`safe_relparts` keeps as it is (no
    separator, not hidden, nothing to replace)."""
    return _PLAIN_NAME.fullmatch(text) is not None


def safe_relparts(path: str) -> list[str]:
    """:func:`safe_relpath`'s parts, without building a path object (unpacking makes thousands)."""
    if _PLAIN_RELPATH.fullmatch(path):
        return path.split("/")
    if path.startswith("/") or path.startswith("\\"):
        raise ValueError(f"absolute file path {path!r} in a resource")
    if "\0" in path:
        raise ValueError(f"file path {path!r} in a resource holds a NUL character")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts:
        raise ValueError(f"empty file path {path!r} in a resource")
    if ".." in parts:
        raise ValueError(f"file path {path!r} in a resource leaves its directory")
    return [safe_component(p) for p in parts]


def scan_dir(scan_id: str, scan_type: str) -> str:
    """The ``{scan}`` wildcard value: ``{scan_id}-{type}``, ``unknown`` for an empty type."""
    return f"{safe_component(scan_id)}-{safe_component(scan_type) if scan_type.strip() else 'unknown'}"


def outputs_of(receipt: str | Path) -> Path:
    """The folder a receipt describes: ``x.json`` -> ``x`` (see the module docstring)."""
    receipt = Path(receipt)
    if receipt.suffix != ".json":
        raise ValueError(f"{receipt}: a receipt is a .json file")
    return receipt.with_suffix("")


def zip_of(folder: str | Path) -> Path:
    """The zip that stands for a folder in ``dicom.store: zip``: ``x`` -> ``x.zip``."""
    folder = Path(folder)
    return folder.with_name(folder.name + ".zip")


def receipt_of(folder: str | Path) -> Path:
    """The receipt of a folder: ``x`` -> ``x.json``."""
    folder = Path(folder)
    return folder.with_name(folder.name + ".json")


def root_of(path: str | Path, template: str) -> Path:
    """The output root of ``path``, which is ``template`` (no placeholders) under it."""
    path, parts = Path(path), len(PurePosixPath(template).parts)
    if path.parts[-parts:] != PurePosixPath(template).parts:
        raise ValueError(f"{path} is not {template} under an output root")
    return path.parents[parts - 1]


def build(root: str | Path, template: str, **wildcards: str) -> Path:
    """``root / template`` with the wildcards filled in, each sanitised as one component."""
    return Path(root) / template.format(**{k: safe_component(v) for k, v in wildcards.items()})


def session_files(root: str | Path, project: str, subject: str, session: str) -> Path:
    """The manifest file list of one session."""
    return build(root, SESSION_FILES, project=project, subject=subject, session=session)


def session_download_receipt(root: str | Path, project: str, subject: str, session: str) -> Path:
    """The download receipt of one session (the ``download_session`` rule's output)."""
    return build(root, SESSION_DOWNLOAD_RECEIPT, project=project, subject=subject, session=session)


def download_receipt(root: str | Path, project: str, subject: str, session: str, scan: str) -> Path:
    """The download receipt of one scan (written by ``download_session``, not a declared output)."""
    return build(root, DOWNLOAD_RECEIPT, project=project, subject=subject, session=session, scan=scan)


def session_convert_receipt(root: str | Path, project: str, subject: str, session: str) -> Path:
    """The convert receipt of one session (the ``convert_session`` rule's output)."""
    return build(root, SESSION_CONVERT_RECEIPT, project=project, subject=subject, session=session)


def convert_receipt(root: str | Path, project: str, subject: str, session: str, scan: str) -> Path:
    """The convert receipt of one scan (written by ``convert_session``, not a declared output)."""
    return build(root, CONVERT_RECEIPT, project=project, subject=subject, session=session, scan=scan)


def dicom_dir(root: str | Path, project: str, subject: str, session: str, scan: str) -> Path:
    """Where one scan's DICOM files go (not a declared output: see docs/architecture.md)."""
    return build(root, DICOM_DIR, project=project, subject=subject, session=session, scan=scan)


def dicom_zip(root: str | Path, project: str, subject: str, session: str, scan: str) -> Path:
    """One scan's verified zip in ``dicom.store: zip`` (beside its receipt, instead of the folder)."""
    return build(root, DICOM_ZIP, project=project, subject=subject, session=session, scan=scan)


def pseudo_receipt(root: str | Path, project: str, subject: str, session: str, scan: str) -> Path:
    """The pseudonymise receipt of one scan (the ``pseudonymise_scan`` rule's output)."""
    return build(root, PSEUDO_RECEIPT, project=project, subject=subject, session=session, scan=scan)


def pseudo_session_dir(root: str | Path, project: str, subject: str, session: str) -> Path:
    """The folder of one session's pseudonymised scans (each ``<scan>/`` beside ``<scan>.json``)."""
    return build(root, PSEUDO_SESSION_DIR, project=project, subject=subject, session=session)


def nifti_dir(root: str | Path, project: str, subject: str, session: str, scan: str) -> Path:
    """Where one scan's NIfTI files go."""
    return build(root, NIFTI_DIR, project=project, subject=subject, session=session, scan=scan)


def upload_receipt(root: str | Path, project: str, subject: str, session: str) -> Path:
    """The upload receipt of one session."""
    return build(root, UPLOAD_RECEIPT, project=project, subject=subject, session=session)


def variables_receipt(root: str | Path, project: str, subject: str, session: str) -> Path:
    """The custom-variables receipt of one session."""
    return build(root, VARIABLES_RECEIPT, project=project, subject=subject, session=session)


def import_receipt(root: str | Path, project: str, subject: str, session: str, push: bool = False) -> Path:
    """The receipt of one imported session (of one pushed copy with ``push``)."""
    template = PUSH_RECEIPT if push else IMPORT_RECEIPT
    return build(root, template, project=project, subject=subject, session=session)


def resources_receipt(root: str | Path, project: str, subject: str, session: str) -> Path:
    """The receipt of one session's files uploaded from a resources CSV."""
    return build(root, RESOURCES_RECEIPT, project=project, subject=subject, session=session)
