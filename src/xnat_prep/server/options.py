"""Server-wide settings that change what the server answers, and the ``xnat-prep server`` options
that set them (``add_arguments``, ``from_args``)."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

from xnat_prep.errors import UserError
from xnat_prep.server.anonymize import Script
from xnat_prep.server.anonymize import load as load_script

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dicom-file-name-template",
        default=DEFAULT_NAME_TEMPLATE,
        metavar="T",
        help="name archived DICOM files with this template, as XNAT's dicomFileNameTemplate "
        "(default: XNAT's, ${StudyInstanceUID}-${SeriesNumber}-${InstanceNumber}-"
        "${HashSOPClassUIDWithSOPInstanceUID}; .dcm is added without an extension)",
    )
    parser.add_argument(
        "--anonymize",
        action="store_true",
        help="rewrite imported DICOM with XNAT's default anonymization script, as a site with its "
        "site-wide script enabled: (0008,1030) := project, (0010,0010) := subject, (0010,0020) := session",
    )
    parser.add_argument(
        "--anonymize-script",
        type=Path,
        metavar="FILE",
        help="rewrite imported DICOM with this DicomEdit script instead (a subset: :=, - removal, "
        "conditions with = != ~; see docs/server.md)",
    )


def from_args(args: argparse.Namespace) -> Options:
    """The options ``add_arguments`` read; UserError for a bad template or script."""
    script = load_script(args.anonymize_script) if args.anonymize or args.anonymize_script else None
    return Options(dicom_name_template=check_template(args.dicom_file_name_template), anonymize=script)


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
