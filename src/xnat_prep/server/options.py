"""Server-wide settings that change what the server answers (``xnat-prep server`` sets them)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from xnat_prep.errors import UserError
from xnat_prep.server.anonymize import Script
from xnat_prep.server.anonymize import load as load_script
from xnat_prep.server.model import NO_MODEL, Model

# XNAT's default dicomFileNameTemplate (TemplatizedDicomFileNamer; ".dcm" is added when it has no extension)
DEFAULT_NAME_TEMPLATE = (
    "${StudyInstanceUID}-${SeriesNumber}-${InstanceNumber}-${HashSOPClassUIDWithSOPInstanceUID}"
)
TEMPLATE_VARIABLE = re.compile(r"\$\{([A-Za-z0-9]+)\}")


@dataclass(frozen=True)
class Options:
    # XNAT's dicomFileNameTemplate: archived DICOM files are named from their headers
    dicom_name_template: str = DEFAULT_NAME_TEMPLATE
    # the site-wide anonymization script run on every import (anonymize.py); None: off, as by default
    anonymize: Script | None = None
    # what a real XNAT on a real network costs (model.py): latency, rate caps; none by default
    model: Model = NO_MODEL


def from_settings(
    template: str, anonymize: bool, anonymize_script: Path | None, model: Model | None = None
) -> Options:
    """Options from the command's settings; UserError for a bad template or script."""
    script = load_script(anonymize_script) if anonymize or anonymize_script else None
    return Options(dicom_name_template=check_template(template), anonymize=script, model=model or NO_MODEL)


def check_template(template: str) -> str:
    """Refuse a DICOM file-name template naming an element DICOM does not have (as XNAT does)."""
    if template == DEFAULT_NAME_TEMPLATE:
        return template  # known good; pydicom costs a quarter second of every server's start-up
    from pydicom.datadict import tag_for_keyword

    for variable in TEMPLATE_VARIABLE.findall(template):
        keywords = variable[4:].split("With") if variable.startswith("Hash") else [variable]
        if variable.startswith("Hash") and len(keywords) < 2:
            raise UserError(f"--dicom-file-name-template: ${{{variable}}} needs two keywords: HashAWithB")
        bad = [k for k in keywords if tag_for_keyword(k) is None]
        if bad:
            raise UserError(f"--dicom-file-name-template: {', '.join(bad)} is not a DICOM keyword")
    return template
