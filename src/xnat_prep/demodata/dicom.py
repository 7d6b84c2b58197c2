"""Write one series of a demo session as classic (one file per slice) DICOM with pydicom.

Everything is a function of (seed, project, subject, session, series): UIDs are hashes of
those, the noise comes from a generator seeded with them, and no clock is read, so the same
arguments give byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import numpy as np
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from xnat_prep.demodata import phantom
from xnat_prep.demodata.protocols import SeriesSpec

UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root; the suffix is a hash of what we hash
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
PIXEL_DATA = 0x7FE00010
IMPLEMENTATION_UID = UID_ROOT + "1"
IMPLEMENTATION_NAME = "XNATPREP_DEMO"
# Explicit VR: these VRs have 2 reserved bytes and a 4-byte length, the others a 2-byte length.
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})

# Row and column direction cosines, LPS.
ORIENTATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "ax": ((1, 0, 0), (0, 1, 0)),
    "sag": ((0, 1, 0), (0, 0, -1)),
    "cor": ((1, 0, 0), (0, 0, -1)),
}
# Philips private "slice orientation" (2001,100B): without it dcm2niix warns that it cannot
# validate the diffusion vectors.
PHILIPS_PLANES = {"ax": "TRANSVERSAL", "sag": "SAGITTAL", "cor": "CORONAL"}
PHILIPS_CREATOR = "Philips Imaging DD 001"
PHILIPS_BLOCK, PHILIPS_PLANE = 0x20010010, 0x2001100B
# Philips-style classic DICOM: dcm2niix reads b-values/vectors from the public tags
# (0018,9087)/(0018,9089) for this vendor without the private CSA header Siemens needs
# (with no or an unknown Manufacturer it warns that it assumes Philips).
EQUIPMENT = {
    "Manufacturer": "Philips Medical Systems",
    "ManufacturerModelName": "Ingenia",
    "SoftwareVersions": "xnat-prep demo-data",
    "InstitutionName": "xnat-prep demo site",
    "StationName": "PHANTOM3T",
}
MR_EQUIPMENT = {"MagneticFieldStrength": 3.0, "ImagingFrequency": 127.7, "ImagedNucleus": "1H"}


def stable_int(*parts: object) -> int:
    """A 64-bit integer from ``parts`` that is the same in every process (unlike hash())."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass(frozen=True)
class Demographics:
    sex: str
    birth: dt.date
    weight: float  # kg
    head_scale: float  # phantom size relative to the nominal head
    first_visit: dt.datetime


@dataclass(frozen=True)
class SessionInfo:
    """Who and when: everything about a session that is not a series."""

    project: str
    subject: str
    session: str
    seed: int
    session_index: int = 0  # 0 for a subject's first visit

    def uid(self, *parts: object) -> str:
        key = "\x1f".join(
            map(str, ("xnat-prep", self.seed, self.project, self.subject, self.session, *parts))
        )
        return str(generate_uid(prefix=UID_ROOT, entropy_srcs=[key]))

    def rng(self, *parts: object) -> np.random.Generator:
        return np.random.default_rng(stable_int(self.seed, self.project, self.subject, self.session, *parts))

    @cached_property
    def demographics(self) -> Demographics:
        """The subject's: the same in every session of the subject."""
        r = np.random.default_rng(stable_int(self.seed, self.project, self.subject))
        return Demographics(
            sex="FM"[int(r.integers(2))],
            birth=dt.date(1950, 1, 1) + dt.timedelta(days=int(r.integers(0, 365 * 50))),
            weight=round(float(r.uniform(50, 100)), 1),
            head_scale=float(r.uniform(0.93, 1.07)),
            first_visit=dt.datetime(2024, 1, 8, 8)
            + dt.timedelta(days=int(r.integers(0, 300)), minutes=15 * int(r.integers(0, 32))),
        )

    @cached_property
    def start(self) -> dt.datetime:
        return self.demographics.first_visit + dt.timedelta(days=120 * self.session_index)

    @cached_property
    def head_shift(self) -> tuple[float, float, float]:
        x, y, z = self.rng("position").uniform(-3, 3, 3)
        return (float(x), float(y), float(z))


def _ds_time(t: dt.datetime) -> str:
    return t.strftime("%H%M%S.%f")


def _age(birth: dt.date, on: dt.date) -> str:
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return f"{years:03d}Y"


def _common(info: SessionInfo, spec: SeriesSpec, sop_class: str, modality: str) -> Dataset:
    """Patient, study, series and equipment modules shared by every file of the series."""
    demo = info.demographics
    series_time = info.start + dt.timedelta(minutes=4 * (spec.number - 1))
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = info.start.strftime("%Y%m%d")
    ds.StudyTime = _ds_time(info.start)
    ds.SeriesTime = ds.ContentTime = _ds_time(series_time)
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = info.project
    ds.SeriesDescription = spec.description
    ds.update(EQUIPMENT)
    if modality == "MR":
        ds.update(MR_EQUIPMENT)
    # XNAT's default DICOM identification: PatientName -> subject, PatientID -> session,
    # and the "Project: Subject: Session:" comment takes precedence over both.
    ds.PatientName = info.subject
    ds.PatientID = info.session
    ds.PatientBirthDate = demo.birth.strftime("%Y%m%d")
    ds.PatientSex = demo.sex
    ds.PatientAge = _age(demo.birth, info.start.date())
    ds.PatientWeight = demo.weight
    ds.PatientComments = f"Project: {info.project} Subject: {info.subject} Session: {info.session}"
    ds.StudyInstanceUID = info.uid("study")
    ds.SeriesInstanceUID = info.uid("series", spec.number)
    ds.StudyID = "1"
    ds.SeriesNumber = spec.number
    ds.PatientPosition = "HFS"
    return ds


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_NAME
    return meta


def _save(ds: Dataset, path: Path) -> None:
    """pydicom's writer, for the one-file series."""
    ds.file_meta = _file_meta(ds)
    ds.save_as(path, enforce_file_format=True)


def element(tag: int, vr: str, value: bytes | str) -> bytes:
    """One element, explicit VR little endian, padded to an even length as DICOM requires."""
    data = value.encode("ascii") if isinstance(value, str) else value
    if len(data) % 2:
        data += b"\x00" if vr in ("UI", "OB") else b" "
    head = struct.pack("<HH2s", tag >> 16, tag & 0xFFFF, vr.encode())
    if vr in _LONG_VRS:
        return head + struct.pack("<HI", 0, len(data)) + data
    return head + struct.pack("<H", len(data)) + data


@cache
def _tag_vr(keyword: str) -> tuple[int, str]:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return tag, dictionary_VR(tag)


def standard(keyword: str, value: str) -> tuple[int, bytes]:
    """(tag, encoded element) of a standard text-valued attribute (DS/IS as their text)."""
    tag, vr = _tag_vr(keyword)
    return tag, element(tag, vr, value)


def decimals(*values: float) -> str:
    """A DS value (multi-valued with backslashes): four decimals at most, well within 16 chars."""
    return "\\".join(str(round(float(v), 4)) for v in values)


def _encode(elem: DataElement) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_data_element(buffer, elem)
    return buffer.getvalue()


def encode_all(ds: Dataset) -> dict[int, bytes]:
    """Every element of ``ds`` encoded by pydicom, by tag."""
    return {int(elem.tag): _encode(elem) for elem in ds}


class SeriesWriter:
    """Write the files of one series: what every file shares is encoded once (by pydicom), per
    file only the elements that change (by `element`).

    pydicom's whole-dataset write costs ~5 ms a file, most of the time of a 15,000-file
    session. The bytes are those ``Dataset.save_as(path, enforce_file_format=True)`` writes
    for the merged dataset (a test holds this to it).
    """

    def __init__(self, shared: Dataset) -> None:
        self._sop_class = str(shared.SOPClassUID)
        self._shared = encode_all(shared)

    def write(self, path: Path, sop_instance: str, own: dict[int, bytes]) -> None:
        """Write the shared elements with ``own`` (which wins, and holds SOPInstanceUID) merged in."""
        meta = b"".join(
            (
                element(0x00020001, "OB", b"\x00\x01"),
                element(0x00020002, "UI", self._sop_class),
                element(0x00020003, "UI", sop_instance),
                element(0x00020010, "UI", ExplicitVRLittleEndian),
                element(0x00020012, "UI", IMPLEMENTATION_UID),
                element(0x00020013, "SH", IMPLEMENTATION_NAME),
            )
        )
        parts = self._shared | own
        path.write_bytes(
            b"\x00" * 128
            + b"DICM"
            + element(0x00020000, "UL", struct.pack("<I", len(meta)))
            + meta
            + b"".join(parts[tag] for tag in sorted(parts))
        )


@dataclass(frozen=True)
class SliceGeometry:
    plane: str  # key of ORIENTATIONS
    position: np.ndarray  # ImagePositionPatient: centre of the first (top left) voxel
    row: np.ndarray  # direction of increasing column index
    col: np.ndarray  # direction of increasing row index
    normal: np.ndarray

    def points(self, spec: SeriesSpec) -> np.ndarray:
        """Patient coordinates (rows, cols, 3) of the voxel centres."""
        dy, dx = spec.pixel_spacing
        r = np.arange(spec.rows, dtype=np.float32)[:, None, None] * dy * self.col
        c = np.arange(spec.cols, dtype=np.float32)[None, :, None] * dx * self.row
        return (self.position + r + c).astype(np.float32)


def slice_geometry(spec: SeriesSpec) -> list[SliceGeometry]:
    """Slices centred on the head, ordered along the slice normal (a localizer: one per plane)."""
    dy, dx = spec.pixel_spacing
    planes = (
        ["sag", "cor", "ax"] * (spec.slices // 3)
        if spec.kind == "localizer"
        else [spec.orientation] * spec.slices
    )
    out = []
    for k, plane in enumerate(planes):
        row, col = (np.asarray(v, dtype=np.float64) for v in ORIENTATIONS[plane])
        normal = np.cross(row, col)
        offset = 0.0 if spec.kind == "localizer" else (k - (spec.slices - 1) / 2) * spec.spacing
        corner = -((spec.cols - 1) / 2) * dx * row - ((spec.rows - 1) / 2) * dy * col
        out.append(SliceGeometry(plane, corner + offset * normal, row, col, normal))
    return out


def _slice_times(spec: SeriesSpec) -> np.ndarray:
    """Interleaved (odd slices first, as Siemens does for an even count) acquisition offsets, s."""
    order = list(range(0, spec.slices, 2)) + list(range(1, spec.slices, 2))
    times = np.empty(spec.slices)
    times[order] = np.arange(spec.slices) * (spec.tr / 1000 / spec.slices)
    return times


def _mr_template(info: SessionInfo, spec: SeriesSpec) -> Dataset:
    ds = _common(info, spec, MR_IMAGE, "MR")
    kind = "DIFFUSION" if spec.bvals else ("FMRI" if spec.volumes > 1 else "M")
    ds.ImageType = ["ORIGINAL", "PRIMARY", kind, "NONE"]
    ds.ProtocolName = spec.description
    ds.BodyPartExamined = "BRAIN"
    ds.FrameOfReferenceUID = info.uid("frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.ScanningSequence = spec.sequence
    ds.SequenceVariant = spec.variant
    ds.ScanOptions = ""
    ds.MRAcquisitionType = spec.acquisition
    ds.SequenceName = spec.sequence_name
    ds.SliceThickness = spec.thickness
    ds.SpacingBetweenSlices = spec.spacing
    ds.RepetitionTime = spec.tr
    ds.EchoTime = spec.te
    if spec.ti is not None:
        ds.InversionTime = spec.ti
    ds.NumberOfAverages = 1
    ds.EchoNumbers = 1
    ds.EchoTrainLength = 1
    ds.PercentSampling = 100
    ds.PercentPhaseFieldOfView = round(100 * spec.rows / spec.cols, 4)
    ds.PixelBandwidth = 2000 if spec.sequence == "EP" else 200
    ds.ReceiveCoilName = "HEAD 32"
    ds.TransmitCoilName = "Body"
    ds.AcquisitionMatrix = [0, spec.cols, spec.rows, 0]
    ds.InPlanePhaseEncodingDirection = "COL"
    ds.FlipAngle = spec.flip
    ds.SAR = 0.1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = spec.rows, spec.cols
    ds.PixelSpacing = list(spec.pixel_spacing)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 1200, 2400
    if spec.volumes > 1:
        ds.NumberOfTemporalPositions = spec.volumes
        ds.TriggerTime = 0.0  # not cardiac gated; dcm2niix splits a series whose TriggerTime varies
    return ds


def _images(
    info: SessionInfo, spec: SeriesSpec, geometry: list[SliceGeometry]
) -> Iterator[tuple[int, int, np.ndarray]]:
    """(volume, slice, uint16 image) in acquisition order, noise included."""
    scale, shift = info.demographics.head_scale, info.head_shift
    labels = [phantom.tissue_map(g.points(spec), scale, shift) for g in geometry]
    base = [phantom.signal(lab, spec.contrast) for lab in labels]
    rng = info.rng("noise", spec.number)
    sigma = np.float32(25.0)
    for v in range(spec.volumes):
        for k, (lab, img) in enumerate(zip(labels, base, strict=True)):
            if spec.bvals:
                img = img * phantom.diffusion_attenuation(lab, spec.bvals[v], spec.bvecs[v])
            elif spec.volumes > 1:
                # block design (5 volumes on, 5 off) in the active region, plus a slow drift
                on = (v // 5) % 2 == 1
                img = (
                    img
                    * np.float32(1 + 0.002 * v / spec.volumes)
                    * np.where(
                        lab == phantom.Tissue.ACTIVE_GM, np.float32(1.03 if on else 1.0), np.float32(1.0)
                    )
                )
            noisy = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
            yield v, k, np.clip(np.rint(noisy), 0, 4095).astype("<u2")


def _write_mr(info: SessionInfo, spec: SeriesSpec, folder: Path) -> list[Path]:
    writer = SeriesWriter(_mr_template(info, spec))
    geometry = slice_geometry(spec)
    times = _slice_times(spec)
    series_start = info.start + dt.timedelta(minutes=4 * (spec.number - 1))
    width = max(4, len(str(spec.n_files)))
    diffusion: dict[int, bytes] = {}
    paths = []
    for v, k, image in _images(info, spec, geometry):
        if spec.bvals and k == 0:  # the same for every slice of the volume: encode once
            diffusion = encode_all(_diffusion(spec.bvals[v], spec.bvecs[v]))
        for e in range(spec.n_images):
            index = (v * spec.slices + k) * spec.n_images + e + 1
            path = folder / f"{index:0{width}d}.dcm"
            paths.append(path)
            extra = _echo_elements(spec, e, image) if spec.n_images > 1 else {}
            pixels = extra.pop(PIXEL_DATA, None) or image.tobytes()
            extra = diffusion | extra
            _write_image(
                info, spec, writer, (geometry[k], times[k], series_start), v, index, pixels, extra, path
            )
    return paths


def _echo_elements(spec: SeriesSpec, e: int, image: np.ndarray) -> dict[int, bytes]:
    """Echo number, echo time and pixels of image ``e`` of a multi-echo (or magnitude+phase) series."""
    n_echoes = max(1, len(spec.echoes))
    phase = e >= n_echoes
    te = spec.echoes[min(e, n_echoes - 1)] if spec.echoes else spec.te
    if phase:
        rows, cols = image.shape
        y, x = np.mgrid[0:rows, 0:cols]
        pixels = (2048 + 1500 * np.sin(x / cols * 2 * np.pi) * np.cos(y / rows * np.pi)).astype("<u2")
        image_type = "ORIGINAL\\PRIMARY\\P\\ND"
    else:
        decay = np.exp(-(te - (spec.echoes[0] if spec.echoes else te)) / 50.0)
        pixels = np.clip(np.rint(image * decay), 0, 4095).astype("<u2")
        image_type = "ORIGINAL\\PRIMARY\\M\\ND"
    return dict(
        (
            standard("EchoNumbers", str(min(e, n_echoes - 1) + 1)),
            standard("EchoTime", decimals(te)),
            standard("ImageType", image_type),
            (PIXEL_DATA, pixels.tobytes()),
        )
    )


def _write_image(
    info: SessionInfo,
    spec: SeriesSpec,
    writer: SeriesWriter,
    where: tuple[SliceGeometry, float, dt.datetime],
    v: int,
    index: int,
    pixels: bytes,
    extra: dict[int, bytes],
    path: Path,
) -> None:
    """One image file: the shared elements, its own position and time, ``extra`` and ``pixels``."""
    g, slice_time, series_start = where
    uid = info.uid("instance", spec.number, index)
    offset = v * spec.tr / 1000 + (slice_time if spec.volumes > 1 else 0)
    acquired = series_start + dt.timedelta(seconds=offset)
    own = dict(
        (
            standard("SOPInstanceUID", uid),
            standard("InstanceNumber", str(index)),
            standard("AcquisitionNumber", str(v + 1)),
            standard("AcquisitionDate", acquired.strftime("%Y%m%d")),
            standard("AcquisitionTime", _ds_time(acquired)),
            standard("ImagePositionPatient", decimals(*g.position)),
            standard("ImageOrientationPatient", decimals(*g.row, *g.col)),
            standard("SliceLocation", decimals(g.position @ g.normal)),
        )
    )
    own[PHILIPS_BLOCK] = element(PHILIPS_BLOCK, "LO", PHILIPS_CREATOR)
    own[PHILIPS_PLANE] = element(PHILIPS_PLANE, "CS", PHILIPS_PLANES[g.plane])
    if spec.volumes > 1:
        own.update((standard("TemporalPositionIdentifier", str(v + 1)),))
    own |= extra
    if spec.defect == "truncated_pixel_data":
        pixels = pixels[: len(pixels) // 2]
    own[PIXEL_DATA] = element(PIXEL_DATA, "OW", pixels)
    writer.write(path, uid, own)


def _diffusion(bval: float, bvec: tuple[float, float, float]) -> Dataset:
    """Standard diffusion attributes, both in the MR Diffusion Sequence and at the top level
    (the direction only where a gradient is applied, as scanners write it)."""
    ds, item = Dataset(), Dataset()
    item.DiffusionBValue = float(bval)
    item.DiffusionDirectionality = "DIRECTIONAL" if bval else "NONE"
    if bval:
        direction = Dataset()
        direction.DiffusionGradientOrientation = [float(x) for x in bvec]
        item.DiffusionGradientDirectionSequence = Sequence([direction])
        ds.DiffusionGradientOrientation = [float(x) for x in bvec]
    ds.MRDiffusionSequence = Sequence([item])
    ds.DiffusionBValue = float(bval)
    return ds


def _write_secondary_capture(info: SessionInfo, spec: SeriesSpec, folder: Path) -> list[Path]:
    """A screenshot: RGB, no geometry. dcm2niix may read it, the workflow must not convert it."""
    ds = _common(info, spec, SECONDARY_CAPTURE, "OT")
    ds.SOPInstanceUID = info.uid("instance", spec.number, 1)
    ds.ConversionType = "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = spec.rows, spec.cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    y, x = np.mgrid[0 : spec.rows, 0 : spec.cols]
    rgb = np.stack([x * 255 // spec.cols, y * 255 // spec.rows, ((x // 20 + y // 20) % 2) * 200], axis=-1)
    ds.PixelData = rgb.astype(np.uint8).tobytes()
    path = folder / "0001.dcm"
    _save(ds, path)
    return [path]


def _write_report(info: SessionInfo, spec: SeriesSpec, folder: Path) -> list[Path]:
    """A Basic Text SR: a document, no pixel data at all."""
    ds = _common(info, spec, BASIC_TEXT_SR, "SR")
    ds.SOPInstanceUID = info.uid("instance", spec.number, 1)
    ds.InstanceNumber = 1
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ConceptNameCodeSequence = Sequence([_code("11528-7", "LN", "Radiology Report")])
    finding = Dataset()
    finding.RelationshipType = "CONTAINS"
    finding.ValueType = "TEXT"
    finding.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", "Finding")])
    finding.TextValue = "Synthetic phantom; two small white matter lesions. Not a clinical report."
    ds.ContentSequence = Sequence([finding])
    path = folder / "0001.dcm"
    _save(ds, path)
    return [path]


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def write_series(info: SessionInfo, spec: SeriesSpec, folder: Path) -> list[Path]:
    """Write the series' files (``NNNN.dcm`` by InstanceNumber) into ``folder``; return them."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = {"secondary_capture": _write_secondary_capture, "report": _write_report}.get(
        spec.kind, _write_mr
    )
    return writer(info, spec, folder)
