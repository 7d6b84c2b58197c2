"""The subject -> pseudonym mapping CSV: ``subject_id,pseudonym`` (other columns ignored).

``subject_id`` is the stable XNAT subject ID (the accession, e.g. ``XNAT_S00001``), the same
value the date offset is derived from. Every problem is one UserError naming file, row, column.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from xnat_prep.errors import UserError, where

COLUMNS = ("subject_id", "pseudonym")
# A pseudonym becomes PatientID (LO, 64) and PatientName (PN): keep it to safe characters.
_PSEUDONYM = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def read_mapping(path: str | Path) -> dict[str, str]:
    """``{subject_id: pseudonym}``; duplicates, blanks and unsafe pseudonyms are errors."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or []]
            for column in COLUMNS:
                if column not in header:
                    raise UserError(
                        f"{where(path, 1)}: missing column {column!r} (need {', '.join(COLUMNS)})"
                    )
            mapping: dict[str, str] = {}
            owner: dict[str, str] = {}
            for row_no, row in enumerate(reader, start=2):
                row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
                subject, pseudonym = row.get("subject_id", ""), row.get("pseudonym", "")
                if not subject:
                    raise UserError(f"{where(path, row_no, 'subject_id')}: blank")
                if not pseudonym:
                    raise UserError(f"{where(path, row_no, 'pseudonym')}: blank for subject {subject!r}")
                if not _PSEUDONYM.match(pseudonym):
                    raise UserError(
                        f"{where(path, row_no, 'pseudonym')}: {pseudonym!r} is not 1-64 of A-Z a-z 0-9 _ . -"
                    )
                if subject in mapping:
                    raise UserError(
                        f"{where(path, row_no, 'subject_id')}: subject {subject!r} is listed twice"
                    )
                if pseudonym in owner:
                    raise UserError(
                        f"{where(path, row_no, 'pseudonym')}: {pseudonym!r} is another subject's too"
                    )
                mapping[subject] = pseudonym
                owner[pseudonym] = subject
    except FileNotFoundError:
        raise UserError(f"{path}: mapping CSV not found") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: not a readable CSV ({exc})") from None
    if not mapping:
        raise UserError(f"{path}: mapping CSV has no rows")
    return mapping


def pseudonym_for(mapping: dict[str, str], subject_id: str, path: str | Path) -> str:
    """The subject's pseudonym; a subject the mapping does not list is an error."""
    try:
        return mapping[subject_id]
    except KeyError:
        raise UserError(f"{path}: subject {subject_id!r} is not in the mapping CSV") from None
