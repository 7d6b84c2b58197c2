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
from dataclasses import dataclass, field
from functools import cache, lru_cache

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
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
    sop_class = first_value(ds, 0x00080016)
    for prefix, what in QUARANTINE_SOP_CLASSES:
        if sop_class == prefix or sop_class.startswith(prefix + ("" if prefix.endswith(".") else ".")):
            return f"{what} (SOP class {sop_class})"
    if first_value(ds, 0x00280301).upper() == "YES":
        return "BurnedInAnnotation is YES"
    image_type = (
        [v.upper() for v in _texts(ds, 0x00080008, ds.get_item(0x00080008))] if 0x00080008 in ds else []
    )
    if "SCREEN SAVE" in image_type:
        return "ImageType says SCREEN SAVE"
    if not _has_pixels(ds):
        return f"no pixel data (SOP class {sop_class or 'missing'})"
    return ""


def first_value(ds: Dataset, tag: int) -> str:
    """The first value of a text or UI element as a string ("" if absent), without conversion."""
    if tag not in ds:
        return ""
    texts = _texts(ds, tag, ds.get_item(tag))
    return texts[0] if texts else ""


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
        self,
        key: Key,
        subject_id: str,
        pseudonym: str | None = None,
        profile: Profile | None = None,
        labels: tuple[str, ...] = (),
    ):
        if not subject_id.strip():
            raise ValueError("subject_id must not be blank")
        self.key = key
        self.subject_id = subject_id
        # The XNAT labels (project, subject, session) identify as much as PatientName: cleaned out of
        # kept text too (XNAT writes "Project: P Subject: S Session: E" into PatientComments). Short
        # ones are left alone, as for the values found in a file (they would match anywhere).
        self.labels = {t for t in (label.strip() for label in labels) if len(t) >= (4 if t.isdigit() else 3)}
        self.profile = profile or Profile()
        self.pseudonym = pseudonym or key.pseudonym(subject_id)
        self.offset_days = key.date_offset_days(subject_id) if self.profile.shifts_dates else 0
        self.stats = Stats()
        self._method = [  # LO is at most 64 characters a value: three values
            f"xnat-prep {__version__} pseudonymise",
            f"PS3.15 {table()['edition']} Table E.1-1",
            f"key {key.fingerprint}",
        ]
        self._identifying_tags: dict[int, bool] = {}
        self._bookkeeping_raw: dict[tuple, list] = {}
        # The same for every file: built once (the elements are only ever written, never changed).
        codes = Sequence([_code(v, m) for v, m in self.profile.codes()])
        self._bookkeeping = [
            DataElement(PATIENT_NAME, "PN", self.pseudonym),
            DataElement(PATIENT_ID, "LO", self.pseudonym),
            DataElement(0x00120062, "CS", "YES"),  # Patient Identity Removed
            DataElement(0x00120063, "LO", self._method),  # De-identification Method
            DataElement(0x00120064, "SQ", codes),  # De-identification Method Code Sequence
            DataElement(0x00280303, "CS", "MODIFIED" if self.profile.shifts_dates else "UNMODIFIED"),
        ]

    # --- values -----------------------------------------------------------------------
    def uid(self, original: str) -> str:
        original = original.strip().rstrip("\0")
        if not original or is_well_known(original) or self.profile.retains_uids:
            return original
        new = self.stats.uids.get(original)
        if new is None:
            new = self.stats.uids[original] = self.key.uid(original)
        return new

    def _identifies(self, tag: int) -> bool:
        """Whether a text attribute's value is identifying: the profile removes or replaces it."""
        found = self._identifying_tags.get(tag)
        if found is None:
            action = self.profile.action(tag)
            found = self._identifying_tags[tag] = action in ("X", "Z", "D", "U") or tag in (
                PATIENT_NAME,
                PATIENT_ID,
            )
        return found

    def _note(self, found: set[str], texts: list[str], vr: str) -> None:
        for text in texts:
            text = text[:8] if vr == "DT" else text
            for part in [text] + (text.split("^") if vr == "PN" else []):
                part = part.strip()
                if len(part) >= (4 if part.isdigit() else 3):
                    found.add(part)

    def _cleaner(self, identifiers: tuple[str, ...]):
        pattern = _pattern(identifiers)

        def clean(text: str) -> str:
            text = _UID_IN_TEXT.sub(lambda m: self.uid(m.group(0)), text)
            return pattern.sub("", text) if pattern else text

        return clean

    # --- the dataset ------------------------------------------------------------------
    def dataset(self, ds: Dataset) -> None:
        """Pseudonymise ``ds`` (and its file meta) in place.

        One pass over every element does the profile's actions and notes the identifying
        strings of the file (the values it removes or replaces: names, IDs, dates, ...); the
        text it keeps but cleans (descriptions, kept private text) is cleaned after that pass,
        of every identifying string wherever it stood.
        """
        st = _Pass({self.subject_id, *self.labels})
        self._walk(ds, st)
        identifiers = tuple(sorted(st.found, key=lambda s: (-len(s), s)))
        clean = self._cleaner(identifiers)
        markers: list[bytes] = []

        def binary_markers() -> list[bytes]:  # only files with kept private binary data need them
            if not markers:
                markers.extend(s.encode("latin-1", "ignore") for s in identifiers)
                markers.extend(u.encode() for u in st.uids)
            return markers

        while st.texts or st.private:
            while st.texts:
                d, tag, raw, vr = st.texts.pop()
                _rewrite(d, tag, raw, vr, lambda vs: [clean(v) for v in vs])
            while st.private:
                d, creators = st.private.pop()
                self._private(d, creators, clean, binary_markers, st)
        for elem in self._bookkeeping_for(getattr(ds, "original_encoding", (None, None))):
            ds[elem.tag] = elem
        self._file_meta(ds)

    def _bookkeeping_for(self, encoding: tuple[bool | None, bool | None]) -> list:
        """The bookkeeping elements, encoded once per transfer syntax as raw elements (written
        as they are) when the dataset's encoding is known."""
        if None in encoding:
            return self._bookkeeping
        found = self._bookkeeping_raw.get(encoding)
        if found is None:
            found = self._bookkeeping_raw[encoding] = [_to_raw(e, *encoding) for e in self._bookkeeping]
        return found

    def _file_meta(self, ds: Dataset) -> None:
        """File meta in place: instance UIDs follow the dataset, the writer is us, no source AE."""
        meta = getattr(ds, "file_meta", None)
        if meta is None:
            meta = ds.file_meta = FileMetaDataset()
        for tag in list(meta.keys()):
            tag = int(tag)
            raw = meta.get_item(tag)
            if tag == 0x00020016:  # Source Application Entity Title: names a device
                del meta[tag]
            elif (raw.VR or _public_vr(tag)) == "UI" and not _fixed_uid(tag) and tag != 0x00020012:
                _rewrite(meta, tag, raw, "UI", lambda vs: [self.uid(v) for v in vs])
        for tag, source in ((0x00020003, 0x00080018), (0x00020002, 0x00080016)):
            if source in ds:
                meta[tag] = _meta_element(tag, "UI", _texts(ds, source, ds.get_item(source))[0])
        meta[0x00020012] = _IMPLEMENTATION_UID
        meta[0x00020013] = _IMPLEMENTATION_NAME

    def _map_uids(self, value):
        if isinstance(value, (list, MultiValue)):
            return [self.uid(str(v)) for v in value]
        return self.uid(str(value)) if value else value

    def _walk(self, ds: Dataset, st: _Pass) -> None:
        creators: dict[tuple[int, int], str] = {}
        shift_days = self.offset_days if self.profile.shifts_dates else None
        # pydicom's element dict, read directly: get_item() per tag costs a Tag() and more.
        private = False
        for tag, raw in list(ds._dict.items()):
            tag = int(tag)
            group = tag >> 16
            if group & 1:
                private = True
                if 0x10 <= (tag & 0xFFFF) <= 0xFF:
                    creators[(group, tag & 0xFF)] = str(ds[tag].value or "").strip()
                continue
            if tag == _PIXEL_DATA:
                continue
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
                        self._walk(item, st)
                continue
            if vr == "UI":
                if action == "X":
                    del ds[tag]
                elif action == "Z":
                    _empty(ds, tag, raw, vr)
                elif not _fixed_uid(tag):
                    texts = _texts(ds, tag, raw)
                    st.uids.extend(t for t in texts if t)
                    _put(ds, tag, raw, vr, [self.uid(v) for v in texts])
                continue
            dated = vr in ("DA", "DT")
            if dated and (shift_days is not None or action in ("X", "Z", "D")):
                texts = _texts(ds, tag, raw)
                self._note(st.found, texts, vr)
                if shift_days is not None and action in (None, "K", "C"):
                    f = shift_date if vr == "DA" else shift_datetime
                    _put(ds, tag, raw, vr, [f(v, shift_days) for v in texts])
                    continue
            elif vr in _TEXT_VRS and self._identifies(tag):
                self._note(st.found, _texts(ds, tag, raw), vr)
            if action == "X":
                del ds[tag]
            elif action == "Z":
                _empty(ds, tag, raw, vr)
            elif action == "D":
                self._dummy(ds, tag, raw, vr)
            elif action == "C" and vr in _TEXT_VRS:
                st.texts.append((ds, tag, raw, vr))
        if private:
            st.private.append((ds, creators))

    def _shift(self, elem: DataElement, vr: str) -> None:
        if not elem.value:
            return
        shift = shift_date if vr == "DA" else shift_datetime
        values = [shift(str(v), self.offset_days) for v in _as_list(elem.value)]
        elem.value = values if len(values) > 1 else values[0]

    def _dummy(self, ds: Dataset, tag: int, raw, vr: str) -> None:
        if vr in _BINARY_VRS:
            ds[tag].value = b""
        elif vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
            ds[tag].value = 0
        else:
            dummy = _DUMMY.get(vr, "ANONYMOUS")
            _rewrite(ds, tag, raw, vr, lambda vs: [dummy])

    def _private(self, ds: Dataset, creators: dict[tuple[int, int], str], clean, binary_markers, st) -> None:
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
            self._kept_private(ds, tag, creator, clean, binary_markers, st)

    def _kept_private(self, ds: Dataset, tag: int, creator: str, clean, binary_markers, st) -> None:
        elem = ds[tag]
        vr = elem.VR
        if vr == "SQ":
            for item in elem.value:
                self._walk(item, st)  # its deferred cleaning joins the caller's queue
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
            if any(m and m in data for m in binary_markers()):
                del ds[tag]
                self.stats.binary_dropped += 1


def _to_raw(elem: DataElement, implicit: bool, little: bool) -> RawDataElement:
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = implicit, little
    write_data_element(fp, elem)
    data = fp.getvalue()
    header = 8 if implicit or elem.VR not in ("SQ", "OB", "OW", "UN", "UT", "UC", "UR") else 12
    value = data[header:]
    return RawDataElement(
        elem.tag, None if implicit else elem.VR, len(value), value, 0, implicit, little, True, False
    )


@dataclass
class _Pass:
    """What one pass over a file collects: identifying strings, its UIDs, and the cleaning left
    for after the pass (text elements to clean, datasets whose private elements to sort)."""

    found: set[str]
    uids: list[str] = field(default_factory=list)
    texts: list[tuple] = field(default_factory=list)
    private: list[tuple] = field(default_factory=list)


def _texts(ds: Dataset, tag: int, raw) -> list[str]:
    """An element's values as strings, from its raw bytes when it can (no conversion)."""
    texts = _raw_texts(raw)
    if texts is not None:
        return texts
    value = ds[tag].value
    return [str(v).strip(" \0") for v in _as_list(value)]


def _put(ds: Dataset, tag: int, raw, vr: str, values: list[str]) -> None:
    """Set an element's values (raw bytes when the element was raw ASCII)."""
    text = "\\".join(values)
    if raw.is_raw and text.isascii():
        data = text.encode("ascii")
        if len(data) % 2:
            data += b"\0" if vr == "UI" else b" "
        ds._dict[raw.tag] = raw._replace(value=data, length=len(data))
        return
    ds[tag] = DataElement(tag, vr, values if len(values) > 1 else (values[0] if values else ""))


def _meta_element(tag: int, vr: str, text: str) -> RawDataElement:
    """A file meta element (explicit VR little endian), raw: pydicom deep-copies the file meta
    on every write, which costs little for raw elements."""
    data = text.encode("ascii")
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    return RawDataElement(BaseTag(tag), vr, len(data), data, 0, False, True, True, False)


_IMPLEMENTATION_UID = _meta_element(0x00020012, "UI", PYDICOM_IMPLEMENTATION_UID)
_IMPLEMENTATION_NAME = _meta_element(0x00020013, "SH", "XNATPREP_PSEUDO")


def _raw_texts(raw) -> list[str] | None:
    """The values of a raw (not yet converted) ASCII element; None if it is not one."""
    if not raw.is_raw or not isinstance(raw.value, bytes) or not raw.value.isascii():
        return None
    return [v.strip(" \0") for v in raw.value.decode("ascii").split("\\")]


def _rewrite(ds: Dataset, tag: int, raw, vr: str, fn) -> None:
    """Replace a text or UI element's values by ``fn(values)``.

    A raw element gets new raw bytes (pydicom writes raw values as they are: converting and
    re-encoding every element costs more than reading and writing the file); anything else goes
    through pydicom's conversion.
    """
    if raw.is_raw and not raw.value:
        return
    texts = _raw_texts(raw)
    if texts is not None:
        text = "\\".join(fn(texts))
        if text.isascii():
            data = text.encode("ascii")
            if len(data) % 2:
                data += b"\0" if vr == "UI" else b" "
            ds[tag] = raw._replace(value=data, length=len(data))
            return
    elem = ds[tag]
    if elem.value in (None, ""):
        return
    values = fn([str(v) for v in _as_list(elem.value)])
    elem.value = values if len(values) > 1 else (values[0] if values else "")


def _empty(ds: Dataset, tag: int, raw, vr: str) -> None:
    if raw.is_raw:
        ds[tag] = raw._replace(value=b"", length=0)
    else:
        ds[tag].value = (
            b"" if vr in _BINARY_VRS else ("" if vr in _TEXT_VRS or vr in _DUMMY or vr == "UI" else None)
        )


@lru_cache(maxsize=256)
def _pattern(identifiers: tuple[str, ...]) -> re.Pattern | None:
    """One regex for a file's identifiers (the files of a series share them: compiled once)."""
    if not identifiers:
        return None
    return re.compile("|".join(re.escape(s) for s in identifiers), re.IGNORECASE)


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item
