"""XNAT's image session import service (``POST /data/services/import``), minus the DICOM network.

An uploaded zip or tar(.gz) of DICOM files becomes one session document::

    {"xsi_type": "xnat:mrSessionData", "fields": {date, time, modality, UID, scanner, ...},
     "labels": {"project", "subject", "session"}  (from DICOM, used when the request gives none),
     "scans": [{"id": "3", "xsi_type": "xnat:mrScanData",
                "fields": {type, series_description, frames, modality, UID, quality},
                "files": [{"path", "size", "md5", "crc32", "blob"}]}]}

which the store then puts in the archive (``Store.archive_session``) or keeps in the prearchive.
As in XNAT: files are sorted into scans by SeriesNumber, a scan's type and series_description are
its SeriesDescription, the scan and session data types follow Modality (MR, CT, PT; anything else is
``otherDicom``), each scan gets a ``DICOM`` resource (format DICOM, content RAW), and missing labels
come from XNAT's default DICOM identifiers: project from StudyDescription (0008,1030), subject from
PatientName (0010,0010), session from PatientID (0010,0020). Members that are not DICOM are skipped.
"""

from __future__ import annotations

import io
import itertools
import re
import tempfile
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from xnat_prep.server.options import DEFAULT_NAME_TEMPLATE, TEMPLATE_VARIABLE
from xnat_prep.server.store import CHUNK, Blob, Store
from xnat_prep.server.zipstream import NotAnArchive, iter_members

if TYPE_CHECKING:
    import pydicom

    from xnat_prep.server.anonymize import Script

SESSION_TYPES = {"PT": "xnat:petSessionData", "MR": "xnat:mrSessionData", "CT": "xnat:ctSessionData"}
SCAN_TYPES = {"PT": "xnat:petScanData", "MR": "xnat:mrScanData", "CT": "xnat:ctScanData"}
OTHER_SESSION, OTHER_SCAN = "xnat:otherDicomSessionData", "xnat:otherDicomScanData"
# Only these are parsed (the scan fields from every file, the session fields from each scan's first)
HEADER_TAGS = [
    "SeriesNumber", "SeriesInstanceUID", "SeriesDescription", "Modality", "NumberOfFrames",
    "StudyDate", "StudyTime", "StudyInstanceUID", "StudyDescription", "StationName",
    "InstitutionName", "PatientID", "PatientName", "MagneticFieldStrength",
    "SOPClassUID", "SOPInstanceUID", "InstanceNumber",
]  # fmt: skip
IN_MEMORY = 4 << 20  # members up to this size are parsed from memory, bigger ones from their blob


class ImportFailed(Exception):
    """The upload cannot be imported (not an archive, no DICOM, missing labels)."""


def xnat_label(text: str) -> str:
    """XNAT's label cleaning: anything but letters, digits, ``_`` and ``-`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text.strip())


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if re.fullmatch(r"\d{8}", value) else ""


def _time(value: str) -> str:
    return f"{value[:2]}:{value[2:4]}:{value[4:6]}" if re.match(r"\d{6}", value) else ""


def dicom_file_name(ds: pydicom.Dataset, template: str = DEFAULT_NAME_TEMPLATE) -> str:
    """The name XNAT gives an archived DICOM file, from its naming template.

    ``${Keyword}`` is the element's value (``no-value-for-Keyword`` when absent); ``${HashAWithB}`` is
    the Java ``List.hashCode`` of those values as an unsigned base-36 number, as XNAT computes it.
    """
    values = {}
    for variable in TEMPLATE_VARIABLE.findall(template):
        for keyword in variable[4:].split("With") if variable.startswith("Hash") else [variable]:
            values[keyword] = _text(ds, keyword) or f"no-value-for-{keyword}"

    def substitute(match: re.Match[str]) -> str:
        variable = match.group(1)
        if variable.startswith("Hash"):
            return _java_list_hash([values[k] for k in variable[4:].split("With")])
        return values[variable]

    name = TEMPLATE_VARIABLE.sub(substitute, template)
    return name if re.search(r"\.[A-Za-z0-9]+$", template) else name + ".dcm"


def _java_list_hash(items: list[str]) -> str:
    h = 1
    for item in items:
        s = 0
        data = item.encode("utf-16-be")  # String.hashCode works on UTF-16 code units
        for i in range(0, len(data), 2):
            s = (31 * s + (data[i] << 8 | data[i + 1])) & 0xFFFFFFFF
        h = (31 * h + s) & 0xFFFFFFFF
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        h, rest = divmod(h, 36)
        out = digits[rest] + out
        if not h:
            return out


def read_session(store: Store, body: IO[bytes], template: str = DEFAULT_NAME_TEMPLATE) -> dict[str, Any]:
    """Receive an upload and parse it into a session document; its DICOM files become blobs, named
    with XNAT's DICOM file-name template (the upload's names are not kept, as in XNAT)."""
    blobs: list[str] = []
    try:
        with tempfile.TemporaryFile(dir=store.data_dir, prefix=".import-") as upload:
            for chunk in iter(lambda: body.read(1 << 20), b""):
                upload.write(chunk)
            scans = _receive_scans(store, upload, blobs, template)
    except NotAnArchive as exc:
        store.discard_blobs(blobs)
        raise ImportFailed(str(exc)) from exc
    except BaseException:
        store.discard_blobs(blobs)
        raise
    if not scans:
        raise ImportFailed("the upload contains no DICOM files")
    return _session(scans)


def _receive_scans(
    store: Store, upload: IO[bytes], blobs: list[str], template: str
) -> dict[str, dict[str, Any]]:
    """Store each DICOM member as a blob and group them by SeriesNumber (header kept in ``_first``)."""
    import pydicom  # deferred: it costs a quarter second of server start-up
    from pydicom.errors import InvalidDicomError

    tags = [pydicom.tag.Tag(keyword) for keyword in HEADER_TAGS]  # once, not in every dcmread

    def header(source: IO[bytes] | Path) -> pydicom.Dataset | None:
        try:
            return pydicom.dcmread(source, stop_before_pixels=True, specific_tags=tags)
        except (InvalidDicomError, ValueError, EOFError, OSError):
            return None  # not DICOM: skipped, as XNAT does

    scans: dict[str, dict[str, Any]] = {}
    for member, stream in iter_members(upload):
        base = PurePosixPath(member).name
        if base.startswith(".") or base.upper() == "DICOMDIR" or "__MACOSX" in member:
            continue
        head = stream.read(IN_MEMORY + 1)
        if len(head) <= IN_MEMORY:  # parsed from memory, before writing: non-DICOM never hits the disk
            if (ds := header(io.BytesIO(head))) is not None:
                blob = store.receive(iter((head,)))
                blobs.append(blob.name)
                _add_file(scans, ds, dicom_file_name(ds, template), blob)
            continue
        blob = store.receive(itertools.chain((head,), iter(partial(stream.read, CHUNK), b"")))
        blobs.append(blob.name)
        if (ds := header(store.blob_path(blob.name))) is None:  # too big to hold: parsed from its blob
            store.discard_blobs([blobs.pop()])
            continue
        _add_file(scans, ds, dicom_file_name(ds, template), blob)
    return scans


def _add_file(scans: dict[str, dict[str, Any]], ds: pydicom.Dataset, base: str, blob: Blob) -> None:
    """Add a blob to its scan (as ``base``), which this header makes if it is the scan's first."""
    modality = _text(ds, "Modality") or "OT"
    series = _text(ds, "SeriesNumber") or _text(ds, "SeriesInstanceUID") or "1"
    series = series if re.fullmatch(r"[A-Za-z0-9_.-]+", series) else xnat_label(series)
    scan = scans.get(series)
    if scan is None:
        description = _text(ds, "SeriesDescription")
        scan = scans[series] = {
            "id": series,
            "xsi_type": SCAN_TYPES.get(modality, OTHER_SCAN),
            "fields": {
                "type": description,
                "series_description": description,
                "modality": modality,
                "UID": _text(ds, "SeriesInstanceUID"),
                "quality": "usable",
                "frames": 0,
            },
            "files": [],
            "_first": ds,
            "_paths": set(),
            "_names": {},
        }
    scan["fields"]["frames"] += int(ds.get("NumberOfFrames", 1) or 1)
    path = _unique(base, scan["_names"], scan["_paths"])
    scan["files"].append(
        {"path": path, "size": blob.size, "md5": blob.md5, "crc32": blob.crc32, "blob": blob.name}
    )


def _unique(base: str, names: dict[str, int], paths: set[str]) -> str:
    """``base``, or NAME-2.dcm, NAME-3.dcm... if the scan has it already (the same SOP instance twice:
    both kept; XNAT would replace the first, *unverified*, and a silent loss, so not copied)."""
    path, n = base, names.get(base, 1)
    while path in paths:
        n += 1
        path = f"{PurePosixPath(base).stem}-{n}{PurePosixPath(base).suffix}"
    names[base] = n
    paths.add(path)
    return path


def _session(scans: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(
        scans.values(),
        key=lambda s: (not s["id"].isdigit(), int(s["id"]) if s["id"].isdigit() else 0, s["id"]),
    )
    headers = [scan.pop("_first") for scan in ordered]
    for scan in ordered:
        del scan["_paths"], scan["_names"]
    first = headers[0]
    modalities = [scan["fields"]["modality"] for scan in ordered]
    primary = next((m for m in ("PT", "MR", "CT") if m in modalities), modalities[0])
    fields = {
        "date": _date(_text(first, "StudyDate")),
        "time": _time(_text(first, "StudyTime")),
        "modality": primary,
        "UID": _text(first, "StudyInstanceUID"),
        "scanner": _text(first, "StationName"),
        "acquisition_site": _text(first, "InstitutionName"),
        "dcmPatientId": _text(first, "PatientID"),
        "dcmPatientName": _text(first, "PatientName"),
    }
    if primary == "MR":
        fields["fieldStrength"] = _text(first, "MagneticFieldStrength")
    for scan in ordered:
        scan["fields"]["frames"] = str(scan["fields"]["frames"])
        scan["files"].sort(key=lambda f: f["path"])
    return {
        "xsi_type": SESSION_TYPES.get(primary, OTHER_SESSION),
        "fields": {k: v for k, v in fields.items() if v},
        "labels": {
            "project": xnat_label(_text(first, "StudyDescription")),
            "subject": xnat_label(_text(first, "PatientName")),
            "session": xnat_label(_text(first, "PatientID")),
        },
        "scans": ordered,
    }


def parse_dest(dest: str) -> dict[str, str]:
    """``/archive/projects/P/subjects/S/experiments/E`` or ``/prearchive/projects/P`` -> parts."""
    parts = [p for p in dest.split("/") if p]
    if parts and parts[0] == "data":
        parts = parts[1:]
    if not parts or parts[0] not in ("archive", "prearchive"):
        raise ImportFailed(f"dest must start with /archive or /prearchive, got {dest!r}")
    out = {"area": parts[0]}
    for key, name in zip(parts[1::2], parts[2::2], strict=False):
        target = {"projects": "project", "subjects": "subject", "experiments": "session"}.get(key)
        if target is None:
            raise ImportFailed(f"cannot understand dest {dest!r}")
        out[target] = name
    return out


def anonymize_session(
    store: Store, doc: dict[str, Any], script: Script, variables: dict[str, str], template: str
) -> None:
    """Rewrite every file of a session document with an anonymization script (anonymize.py): new
    blobs (the old ones are dropped), names and session values from the rewritten headers."""
    from xnat_prep.server.anonymize import rewrite

    first: pydicom.Dataset | None = None
    for scan in doc["scans"]:
        names: dict[str, int] = {}
        paths: set[str] = set()
        files = []
        for f in scan["files"]:
            data, ds = rewrite(store.blob_path(f["blob"]).read_bytes(), script, variables)
            first = first or ds
            blob = store.receive(iter((data,)))
            path = _unique(dicom_file_name(ds, template), names, paths)
            files.append(
                {"path": path, "size": blob.size, "md5": blob.md5, "crc32": blob.crc32, "blob": blob.name}
            )
            store.discard_blobs([f["blob"]])
            f["blob"] = blob.name  # so that a failure below discards the new blob, not the old
        scan["files"] = sorted(files, key=lambda f: f["path"])
    if first is not None:
        for key, keyword in (("dcmPatientId", "PatientID"), ("dcmPatientName", "PatientName")):
            doc["fields"][key] = _text(first, keyword)
        doc["fields"] = {k: v for k, v in doc["fields"].items() if v}
