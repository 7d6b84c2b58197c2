"""Pseudonymise one pydicom dataset in place: the profile's actions, keyed UIDs and per-subject
date shifts at every depth, private data kept only where dcm2niix needs it, and the burned-in
text check that sends a file to quarantine instead.

Traversal touches only what it must: an element is converted from its raw bytes only when its
action or VR (UI, DA, DT, SQ, or a kept private element) needs the value. That keeps the cost
near that of reading and writing the file (see the bench row).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from xnat_prep import __version__
from xnat_prep.pseudonymise import csa
from xnat_prep.pseudonymise.keys import Key, is_well_known
from xnat_prep.pseudonymise.profile import Profile, table

log = logging.getLogger(__name__)

# Private blocks dcm2niix reads, by (creator, group) -> element offsets kept (None: the whole
# block). Kept elements stay at their tags (dcm2niix addresses some by fixed element number);
# their values are cleaned like public ones (UIDs mapped, dates shifted, text scrubbed), and a
# binary value that contains an identifying string is dropped.
KEEP_PRIVATE: dict[tuple[str, int], frozenset[int] | None] = {
    # Siemens: CSA image (0x10) and series (0x20) headers, their type strings, ...
    ("SIEMENS CSA HEADER", 0x0029): frozenset({0x08, 0x10, 0x18, 0x20}),
    # ... mosaic size, b-value/vector, bandwidth, slice times (classic DICOM) ...
    ("SIEMENS MR HEADER", 0x0019): frozenset(
        {0x08, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18}
        | {0x27, 0x28, 0x29}
    ),
    # ... coil, PAT, PCS directions and the image type text (mosaic, XA) ...
    ("SIEMENS MR HEADER", 0x0051): frozenset(
        {0x08, 0x0A, 0x0B, 0x0C, 0x0E, 0x0F, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x19}
    ),
    # ... and the XA (enhanced) series/image parameters.
    ("SIEMENS MR SDS 01", 0x0021): None,
    ("SIEMENS MR IMA", 0x0021): None,
    # GE: acquisition, parameters (b-values, echo spacing, user data), series
    ("GEMS_ACQU_01", 0x0019): None,
    ("GEMS_PARM_01", 0x0043): None,
    ("GEMS_SERS_01", 0x0025): None,
    # Philips: image and MR private blocks (slice orientation, diffusion, per-frame sequence)
    ("Philips Imaging DD 001", 0x2001): None,
    ("Philips MR Imaging DD 001", 0x2005): None,
    ("Philips MR Imaging DD 005", 0x2005): None,
}
# In blocks kept whole, free text is dropped except these elements (names of sequences, which
# dcm2niix reports): free text is where a scanner or a person puts a name.
KEEP_PRIVATE_TEXT: dict[tuple[str, int], frozenset[int]] = {
    ("GEMS_ACQU_01", 0x0019): frozenset({0x9C, 0x9E}),  # pulse sequence name, internal name
    ("Philips Imaging DD 001", 0x2001): frozenset({0x20}),  # scanning technique
}
_FREE_TEXT_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
CSA_CREATOR = "SIEMENS CSA HEADER"

# SOP classes whose content is, or may be, burned-in or free text: never converted or pushed.
QUARANTINE_SOP_CLASSES = (
    ("1.2.840.10008.5.1.4.1.1.7", "secondary capture"),
    ("1.2.840.10008.5.1.4.1.1.88.", "structured report"),
    ("1.2.840.10008.5.1.4.1.1.104.", "encapsulated document"),
    ("1.2.840.10008.5.1.4.1.1.11.", "presentation state"),
)
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_BINARY_VRS = frozenset({"OB", "OW", "UN", "OD", "OF", "OL", "OV"})
# UIDs naming a class, syntax or scheme, not an instance: never remapped.
_FIXED_UID_KEYWORDS = frozenset({"TransferSyntaxUID", "CodingSchemeUID", "ContextUID"})
_DUMMY = {
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "AS": "000Y",
    "IS": "0",
    "DS": "0",
    "PN": "ANONYMOUS",
    "CS": "ANONYMOUS",
}
_DATE = re.compile(r"^\d{8}$")
_UID_IN_TEXT = re.compile(r"(?<![\d.])[0-9]+(?:\.[0-9]+){3,}(?![\d.])")  # a UID written into text
_PIXEL_DATA = 0x7FE00010
PATIENT_NAME, PATIENT_ID = 0x00100010, 0x00100020


@cache
def _public_vr(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


@cache
def _fixed_uid(tag: int) -> bool:
    from pydicom.datadict import keyword_for_tag

    kw = keyword_for_tag(tag)
    return kw.endswith("ClassUID") or kw in _FIXED_UID_KEYWORDS


def _has_pixels(ds: Dataset) -> bool:
    return any(t in ds for t in (_PIXEL_DATA, 0x7FE00008, 0x7FE00009))


def quarantine_reason(ds: Dataset) -> str:
    """Why the file may carry burned-in or free-text identity ("" if it is an ordinary image)."""
    sop_class = str(ds.get("SOPClassUID", "") or "")
    for prefix, what in QUARANTINE_SOP_CLASSES:
        if sop_class == prefix or sop_class.startswith(prefix + ("" if prefix.endswith(".") else ".")):
            return f"{what} (SOP class {sop_class})"
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        return "BurnedInAnnotation is YES"
    image_type = [str(v).upper() for v in _as_list(ds.get("ImageType", []))]
    if "SCREEN SAVE" in image_type:
        return "ImageType says SCREEN SAVE"
    if not _has_pixels(ds):
        return f"no pixel data (SOP class {sop_class or 'missing'})"
    return ""


def _as_list(value) -> list:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, MultiValue)) else [value]


def shift_date(value: str, days: int) -> str:
    """``YYYYMMDD`` moved by ``days``; anything that is not a date becomes ``""``."""
    value = value.strip()
    if not _DATE.match(value):
        return ""
    try:
        return (dt.date(int(value[:4]), int(value[4:6]), int(value[6:8])) + dt.timedelta(days=days)).strftime(
            "%Y%m%d"
        )
    except ValueError:
        return ""


def shift_datetime(value: str, days: int) -> str:
    """A DT value with its date part moved (time and UTC offset kept); ``""`` if not one."""
    value = value.strip()
    date = shift_date(value[:8], days)
    return date + value[8:] if date else ""


@dataclass
class Stats:
    uids: dict[str, str] = field(default_factory=dict)  # original -> new, for the re-identification table
    private_removed: int = 0
    private_kept: int = 0
    binary_dropped: int = 0


class Pseudonymiser:
    """Pseudonymises the datasets of one subject with one key and profile.

    The outputs depend only on (key, subject_id, pseudonym, profile, input): the instance
    holds no state that would make one file's result depend on another's (``stats`` only
    records).
    """

    def __init__(
        self, key: Key, subject_id: str, pseudonym: str | None = None, profile: Profile | None = None
    ):
        if not subject_id.strip():
            raise ValueError("subject_id must not be blank")
        self.key = key
        self.subject_id = subject_id
        self.profile = profile or Profile()
        self.pseudonym = pseudonym or key.pseudonym(subject_id)
        self.offset_days = key.date_offset_days(subject_id) if self.profile.shifts_dates else 0
        self.stats = Stats()
        self._method = [
            f"xnat-prep {__version__} pseudonymise",
            f"PS3.15 {table()['edition']} Table E.1-1",
            f"key {key.fingerprint}",
        ]
        self._codes = self.profile.codes()

    # --- values -----------------------------------------------------------------------
    def uid(self, original: str) -> str:
        original = original.strip().rstrip("\0")
        if not original or is_well_known(original) or self.profile.retains_uids:
            return original
        new = self.stats.uids.get(original)
        if new is None:
            new = self.stats.uids[original] = self.key.uid(original)
        return new

    def _identifiers(self, ds: Dataset) -> list[str]:
        """Strings of this dataset that the profile removes or replaces (names, IDs, dates,
        institution, ...), longest first: cleaning removes them wherever text is kept."""
        found = {self.subject_id}
        for elem in _iter_public(ds):
            tag = int(elem.tag)
            action = self.profile.action(tag)
            if elem.VR in ("DA", "DT"):
                if not (self.profile.shifts_dates or action in ("X", "Z", "D")):
                    continue
            elif elem.VR not in _TEXT_VRS or (
                action not in ("X", "Z", "D", "U") and tag not in (PATIENT_NAME, PATIENT_ID)
            ):
                continue
            for v in _as_list(elem.value):
                text = str(v).strip()[:8] if elem.VR == "DT" else str(v).strip()
                parts = [text] + (text.split("^") if elem.VR == "PN" else [])
                for part in parts:
                    part = part.strip()
                    if len(part) >= (4 if part.isdigit() else 3):
                        found.add(part)
        return sorted(found, key=len, reverse=True)

    def _cleaner(self, identifiers: Iterable[str]):
        pattern = (
            re.compile("|".join(re.escape(s) for s in identifiers), re.IGNORECASE) if identifiers else None
        )

        def clean(text: str) -> str:
            text = _UID_IN_TEXT.sub(lambda m: self.uid(m.group(0)), text)
            return pattern.sub("", text) if pattern else text

        return clean

    # --- the dataset ------------------------------------------------------------------
    def dataset(self, ds: Dataset) -> None:
        """Pseudonymise ``ds`` (and its file meta) in place."""
        identifiers = self._identifiers(ds)
        clean = self._cleaner(identifiers)
        binary_markers = [s.encode("latin-1", "ignore") for s in identifiers] + [
            u.encode() for u in self._dataset_uids(ds)
        ]
        self._walk(ds, clean, binary_markers)
        for tag in (PATIENT_NAME, PATIENT_ID):
            ds[tag] = DataElement(tag, _public_vr(tag), self.pseudonym)
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = list(self._method)
        ds.DeidentificationMethodCodeSequence = Sequence([_code(v, m) for v, m in self._codes])
        if self.profile.shifts_dates:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        self._file_meta(ds)

    def _dataset_uids(self, ds: Dataset) -> list[str]:
        out = []
        for elem in _iter_public(ds):
            if elem.VR == "UI" and not _fixed_uid(int(elem.tag)):
                out += [str(v) for v in _as_list(elem.value) if v and not is_well_known(str(v))]
        return out

    def _file_meta(self, ds: Dataset) -> None:
        meta = getattr(ds, "file_meta", None)
        new = FileMetaDataset()
        if meta is not None:
            for elem in meta:
                tag = int(elem.tag)
                if tag in (0x00020000, 0x00020001, 0x00020016, 0x00020012, 0x00020013):
                    continue  # group length/version are rewritten; source AE, implementation: ours
                if elem.VR == "UI" and not _fixed_uid(tag):
                    elem = DataElement(tag, "UI", self._map_uids(elem.value))
                new.add(elem)
        if "SOPInstanceUID" in ds:
            new.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if "SOPClassUID" in ds:
            new.MediaStorageSOPClassUID = ds.SOPClassUID
        new.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        new.ImplementationVersionName = "XNATPREP_PSEUDO"
        ds.file_meta = new

    def _map_uids(self, value):
        if isinstance(value, (list, MultiValue)):
            return [self.uid(str(v)) for v in value]
        return self.uid(str(value)) if value else value

    def _walk(self, ds: Dataset, clean, binary_markers: list[bytes]) -> None:
        creators: dict[tuple[int, int], str] = {}
        for tag in list(ds.keys()):
            tag = int(tag)
            group = tag >> 16
            if group & 1:
                if 0x10 <= (tag & 0xFFFF) <= 0xFF:
                    creators[(group, tag & 0xFF)] = str(ds[tag].value or "").strip()
                continue
            raw = ds.get_item(tag)
            vr = raw.VR or _public_vr(tag)
            if vr == "UN" and raw.VR is None:
                vr = ds[tag].VR
            action = self.profile.action(tag)
            if vr == "SQ":
                if action == "X":
                    del ds[tag]
                elif action in ("Z", "D"):
                    ds[tag].value = Sequence()
                else:
                    for item in ds[tag].value:
                        self._walk(item, clean, binary_markers)
                continue
            if vr == "UI":
                if action == "X":
                    del ds[tag]
                elif action == "Z":
                    ds[tag].value = ""
                elif not _fixed_uid(tag):
                    elem = ds[tag]
                    elem.value = self._map_uids(elem.value)
                continue
            if action is None or action == "K":
                if vr in ("DA", "DT") and self.profile.shifts_dates:
                    self._shift(ds[tag], vr)
                continue
            if action == "X":
                del ds[tag]
            elif action == "Z":
                ds[tag].value = (
                    b"" if vr in _BINARY_VRS else ("" if vr in _TEXT_VRS or vr in _DUMMY else None)
                )
            elif action == "D":
                self._dummy(ds, tag, vr)
            elif action == "C":
                self._clean(ds[tag], vr, clean)
        self._private(ds, creators, clean, binary_markers)

    def _shift(self, elem: DataElement, vr: str) -> None:
        if not elem.value:
            return
        shift = shift_date if vr == "DA" else shift_datetime
        values = [shift(str(v), self.offset_days) for v in _as_list(elem.value)]
        elem.value = values if len(values) > 1 else values[0]

    def _dummy(self, ds: Dataset, tag: int, vr: str) -> None:
        if vr in _BINARY_VRS:
            ds[tag].value = b""
        elif vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
            ds[tag].value = 0
        else:
            ds[tag].value = _DUMMY.get(vr, "ANONYMOUS")

    def _clean(self, elem: DataElement, vr: str, clean) -> None:
        if vr in ("DA", "DT"):
            if self.profile.shifts_dates:
                self._shift(elem, vr)
        elif vr in _TEXT_VRS and elem.value:
            values = [clean(str(v)) for v in _as_list(elem.value)]
            elem.value = values if len(values) > 1 else values[0]

    def _private(self, ds: Dataset, creators: dict[tuple[int, int], str], clean, binary_markers) -> None:
        kept_blocks = {
            (group, block) for (group, block), creator in creators.items() if (creator, group) in KEEP_PRIVATE
        }
        private = [int(t) for t in list(ds.keys()) if t.group & 1]
        for tag in private:
            group, elem_no = tag >> 16, tag & 0xFFFF
            if 0x10 <= elem_no <= 0xFF:
                if (group, elem_no) not in kept_blocks:
                    del ds[tag]
                continue
            block = elem_no >> 8
            creator = creators.get((group, block), "")
            allowed = KEEP_PRIVATE.get((creator, group), frozenset())
            if (group, block) not in kept_blocks or (allowed is not None and (elem_no & 0xFF) not in allowed):
                del ds[tag]
                self.stats.private_removed += 1
                continue
            free_text = allowed is None and ds[tag].VR in _FREE_TEXT_VRS
            if free_text and (elem_no & 0xFF) not in KEEP_PRIVATE_TEXT.get((creator, group), ()):
                del ds[tag]
                self.stats.private_removed += 1
                continue
            self.stats.private_kept += 1
            self._kept_private(ds, tag, creator, clean, binary_markers)

    def _kept_private(self, ds: Dataset, tag: int, creator: str, clean, binary_markers) -> None:
        elem = ds[tag]
        vr = elem.VR
        if vr == "SQ":
            for item in elem.value:
                self._walk(item, clean, binary_markers)
        elif vr == "UI":
            elem.value = self._map_uids(elem.value)
        elif vr in ("DA", "DT"):
            if self.profile.shifts_dates:
                self._shift(elem, vr)
        elif vr in _TEXT_VRS:
            values = [clean(str(v)) for v in _as_list(elem.value)]
            if any(
                _DATE.match(v.strip()) for v in values
            ):  # e.g. a CSA header "version" that is the study date
                del ds[tag]
                return
            elem.value = values if len(values) > 1 else (values[0] if values else "")
        elif vr in _BINARY_VRS and elem.value:
            data = bytes(elem.value)
            if creator == CSA_CREATOR and csa.is_csa2(data):
                try:
                    offset = tag & 0xFF
                    if offset == 0x10:
                        data = csa.clean_image_header(data, clean)
                    elif offset == 0x20:
                        data = csa.rebuild_series_header(data, clean)
                    elem.value = data
                except csa.CSAError as exc:
                    log.warning("dropping an unreadable Siemens CSA header (%s)", exc)
                    del ds[tag]
                    self.stats.binary_dropped += 1
                    return
            if any(m and m in data for m in binary_markers):
                del ds[tag]
                self.stats.binary_dropped += 1


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def _iter_public(ds: Dataset):
    """Every public element at every depth whose VR is text, date or UI (values converted)."""
    for tag in list(ds.keys()):
        tag = int(tag)
        if (tag >> 16) & 1 or tag == _PIXEL_DATA:
            continue
        raw = ds.get_item(tag)
        vr = raw.VR or _public_vr(tag)
        if vr == "SQ":
            for item in ds[tag].value:
                yield from _iter_public(item)
        elif vr in _TEXT_VRS or vr in ("DA", "DT", "UI"):
            yield ds[tag]
