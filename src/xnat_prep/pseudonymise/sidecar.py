"""dcm2niix's JSON sidecars made from pseudonymised DICOM: keep no identifier.

dcm2niix copies some header fields into the sidecar even with ``-ba y`` (institution, station,
serial number, UIDs, times; ``-ba n`` adds names, IDs, birth date and dates). The pseudonymised
DICOM no longer holds the originals, but the sidecar is also what goes to BIDS and back to
XNAT, so the fields that identify a subject, a visit or a device are removed outright.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from xnat_prep.fsutil import atomic_write

# Sidecar keys that identify a person, a visit, a site or a device, or hold a UID.
IDENTIFYING_KEYS = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "PatientWeight",
        "AccessionNumber",
        "StudyID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "FrameOfReferenceUID",
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "OperatorsName",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "StationName",
        "DeviceSerialNumber",
        "AcquisitionDateTime",
        "AcquisitionDate",
        "StudyDate",
        "SeriesDate",
        "ContentDate",
        "StudyTime",
        "ImageComments",
        "ProcedureStepDescription",
    }
)


def scrub_sidecar(
    data: Mapping[str, Any], drop: Iterable[str] = IDENTIFYING_KEYS, values: Iterable[str] = ()
) -> dict[str, Any]:
    """A copy of ``data`` without the ``drop`` keys and with no string that contains one of
    ``values`` (identifying strings the caller knows of, e.g. the original labels)."""
    drop = set(drop)
    needles = [v for v in values if v]

    def ok(v: Any) -> bool:
        if isinstance(v, str):
            return not any(n.lower() in v.lower() for n in needles)
        if isinstance(v, list):
            return all(ok(x) for x in v)
        return True

    return {k: v for k, v in data.items() if k not in drop and ok(v)}


def scrub_sidecar_file(
    path: str | Path, drop: Iterable[str] = IDENTIFYING_KEYS, values: Iterable[str] = ()
) -> list[str]:
    """Rewrite a sidecar in place (atomically) without its identifying keys; returns the keys removed."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    clean = scrub_sidecar(data, drop, values)
    removed = [k for k in data if k not in clean]
    if removed:
        atomic_write(path, json.dumps(clean, indent="\t") + "\n", fsync=False)
    return removed
