"""Server-wide settings that change what the server answers (``xnat-prep server`` options)."""

from __future__ import annotations

from dataclasses import dataclass

from xnat_prep.server.anonymize import Script
from xnat_prep.server.importer import DEFAULT_NAME_TEMPLATE


@dataclass(frozen=True)
class Options:
    # XNAT's dicomFileNameTemplate: archived DICOM files are named from their headers
    dicom_name_template: str = DEFAULT_NAME_TEMPLATE
    # the site-wide anonymization script run on every import (anonymize.py); None: off, as by default
    anonymize: Script | None = None
