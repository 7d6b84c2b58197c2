"""Helpers for the pseudonymisation tests (a unique module name: pytest puts each test folder
on ``sys.path``): the reference-rich fixture, the UID reference graph, the leak scan, and
dcm2niix conversions compared output by output."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from xnat_prep.convert import dcm2niix_binary

# Identifying values planted in the reference fixture (besides the demo data's own).
PLANTED = {
    "physician": "WHO^DOCTOR",
    "operator": "SMITH^ALICE",
    "other_id": "HOSP-99817",
    "accession": "ACC7731X",
    "address": "12 Hospital Road, Springfield",
    "private_name": "Private Label Kowalski",
    "nested_date": "20230405",
}
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
PHILIPS_MR = "Philips MR Imaging DD 001"


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _ref(sop_class: str, sop: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop
    return item


def make_reference_series(session: Path, out: Path) -> None:
    """Localizer + T1 (each slice referencing the localizer), and an Enhanced-MR-like derived
    object that references everything through nested sequences, with PHI in sequences and
    private elements (kept and unkept blocks), a private UI and a UID inside a private LO."""
    loc = [pydicom.dcmread(p) for p in files(session / "1-localizer")]
    t1 = [pydicom.dcmread(p) for p in files(session / "2-T1w_MPRAGE")]
    for folder, series in (("loc", loc), ("t1", t1)):
        (out / folder).mkdir(parents=True)
        for i, ds in enumerate(series):
            if folder == "t1":
                ds.ReferencedImageSequence = Sequence([_ref(x.SOPClassUID, x.SOPInstanceUID) for x in loc])
                ds.PerformingPhysicianName = PLANTED["physician"]
                ds.OperatorsName = PLANTED["operator"]
                ds.OtherPatientIDs = PLANTED["other_id"]
                ds.AccessionNumber = PLANTED["accession"]
                ds.InstitutionAddress = PLANTED["address"]
                ds.SeriesDescription = "T1 by Doctor Who"
            ds.save_as(out / folder / f"{i:04d}.dcm", enforce_file_format=True)

    base = t1[0]
    d = Dataset()
    d.file_meta = base.file_meta.copy()
    for kw in (
        "SpecificCharacterSet",
        "StudyDate",
        "StudyTime",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
    ):
        setattr(d, kw, getattr(base, kw))
    d.SOPClassUID = ENHANCED_MR
    d.SOPInstanceUID = generate_uid(entropy_srcs=["derived", str(base.SOPInstanceUID)])
    d.file_meta.MediaStorageSOPClassUID = ENHANCED_MR
    d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID
    d.StudyInstanceUID = base.StudyInstanceUID
    d.SeriesInstanceUID = generate_uid(entropy_srcs=["derived-series", str(base.SeriesInstanceUID)])
    d.FrameOfReferenceUID = base.FrameOfReferenceUID
    d.Modality, d.SeriesNumber, d.InstanceNumber = "MR", 99, 1
    d.ImageType = ["DERIVED", "PRIMARY", "M", "NONE"]
    d.ReferringPhysicianName = PLANTED["physician"]
    # references: series -> images, frame of reference -> study -> series (three levels)
    series_item = Dataset()
    series_item.SeriesInstanceUID = base.SeriesInstanceUID
    series_item.ReferencedInstanceSequence = Sequence([_ref(x.SOPClassUID, x.SOPInstanceUID) for x in t1])
    d.ReferencedSeriesSequence = Sequence([series_item])
    rt_series = Dataset()
    rt_series.SeriesInstanceUID = base.SeriesInstanceUID
    rt_series.ContourImageSequence = Sequence([_ref(x.SOPClassUID, x.SOPInstanceUID) for x in t1[:2]])
    rt_study = Dataset()
    rt_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    rt_study.ReferencedSOPInstanceUID = base.StudyInstanceUID
    rt_study.RTReferencedSeriesSequence = Sequence([rt_series])
    frame = Dataset()
    frame.FrameOfReferenceUID = base.FrameOfReferenceUID
    frame.RTReferencedStudySequence = Sequence([rt_study])
    d.ReferencedFrameOfReferenceSequence = Sequence([frame])
    related = Dataset()
    related.StudyInstanceUID = base.StudyInstanceUID
    related.SeriesInstanceUID = loc[0].SeriesInstanceUID
    d.RelatedSeriesSequence = Sequence([related])
    d.SourceImageSequence = Sequence([_ref(x.SOPClassUID, x.SOPInstanceUID) for x in t1[:1]])
    dim = Dataset()
    dim.DimensionOrganizationUID = generate_uid(entropy_srcs=["dim", str(base.SOPInstanceUID)])
    d.DimensionOrganizationSequence = Sequence([dim])
    frame_content = Dataset()
    frame_content.FrameAcquisitionDateTime = PLANTED["nested_date"] + "101500.000000"
    frame_content.DimensionIndexValues = [1]
    per_frame = Dataset()
    per_frame.FrameContentSequence = Sequence([frame_content])
    d.PerFrameFunctionalGroupsSequence = Sequence([per_frame])
    visit = Dataset()
    visit.ScheduledProcedureStepStartDate = PLANTED["nested_date"]
    visit.ScheduledPerformingPhysicianName = PLANTED["physician"]
    d.RequestAttributesSequence = Sequence([visit])
    # private: an unknown block (removed) and a kept Philips block with a UI and a UID in text
    unknown = d.private_block(0x0011, "ACME RESEARCH 1", create=True)
    unknown.add_new(0x01, "LO", PLANTED["private_name"])
    philips = d.private_block(0x2005, PHILIPS_MR, create=True)
    philips.add_new(0x40, "UI", str(base.SeriesInstanceUID))
    philips.add_new(0x41, "LT", f"ref {base.SOPInstanceUID}")
    philips.add_new(0x42, "LO", PLANTED["private_name"])
    philips.add_new(0x43, "DA", PLANTED["nested_date"])
    d.Rows, d.Columns, d.SamplesPerPixel, d.PhotometricInterpretation = 4, 4, 1, "MONOCHROME2"
    d.BitsAllocated, d.BitsStored, d.HighBit, d.PixelRepresentation = 16, 12, 11, 0
    d.NumberOfFrames = 1
    d.PixelData = np.arange(16, dtype="<u2").tobytes()
    (out / "derived").mkdir()
    d.save_as(out / "derived" / "0001.dcm", enforce_file_format=True)


# --- the UID reference graph ------------------------------------------------------------
def walk_uids(ds: Dataset, path: str = "") -> Iterator[tuple[str, str]]:
    """(tag path, UID) of every UI value at every depth, file meta included, private included."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and not path:
        for elem in meta:
            if elem.VR == "UI" and elem.value:
                yield f"meta/{elem.tag}", str(elem.value)
    for elem in ds:
        p = f"{path}/{elem.tag}"
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                yield from walk_uids(item, f"{p}[{i}]")
        elif elem.VR == "UI" and elem.value:
            values = (
                elem.value if isinstance(elem.value, list | pydicom.multival.MultiValue) else [elem.value]
            )
            for v in values:
                yield p, str(v)


def uid_graph(folder: Path) -> set[tuple[str, str, str]]:
    """(this file's SOPInstanceUID, tag path, UID) edges over every file."""
    edges = set()
    for f in files(folder):
        ds = pydicom.dcmread(f)
        for path, uid in walk_uids(ds):
            edges.add((str(ds.SOPInstanceUID), path, uid))
    return edges


def partition(folder: Path, keyword: str) -> set[frozenset[str]]:
    """Files grouped by ``keyword``: the groups as sets of each file's SOPInstanceUID."""
    groups: dict[str, set[str]] = {}
    for f in files(folder):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        groups.setdefault(str(ds.get(keyword, "")), set()).add(str(ds.SOPInstanceUID))
    return {frozenset(g) for g in groups.values()}


# --- the leak scan ----------------------------------------------------------------------
_DATE_VRS = ("DA", "DT")


def identifying_values(folder: Path, extra: tuple[str, ...] = ()) -> set[str]:
    """Every value in the input a pseudonymised output must not contain: names, IDs, dates,
    UIDs (not the standard's own), institution, station, device serial, the folder names."""
    found = set(extra)
    keywords = (
        "PatientName",
        "PatientID",
        "OtherPatientIDs",
        "PatientBirthDate",
        "AccessionNumber",
        "InstitutionName",
        "InstitutionAddress",
        "StationName",
        "DeviceSerialNumber",
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "OperatorsName",
        "PatientComments",
    )
    for f in files(folder):
        found |= {part for part in f.relative_to(folder).parts[:-1] if len(part) >= 4}
        ds = pydicom.dcmread(f)
        for kw in keywords:
            for v in _values(ds.get(kw)):
                found.add(v)
        for path, uid in walk_uids(ds):  # the implementation UID names the writing software
            if not uid.startswith("1.2.840.10008.") and path != "meta/(0002,0012)":
                found.add(uid)
        for elem in _all(ds):
            if elem.VR in _DATE_VRS:
                found |= {v[:8] for v in _values(elem.value)}
    return {v for v in found if len(v) >= 4}


def _values(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list | pydicom.multival.MultiValue):
        return [str(v).strip() for v in value if str(v).strip()]
    return [str(value).strip()]


def _all(ds: Dataset):
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _all(item)


def leaks(values: set[str], roots: list[Path]) -> list[str]:
    """``value in path`` for each value found in a file's bytes or in any file or folder name."""
    found = []
    needles = {v: v.encode() for v in values}
    for root in roots:
        items = [root] if root.is_file() else sorted(root.rglob("*"))
        for item in items:
            rel = str(item.relative_to(root.parent))
            for v in values:
                if v in rel:
                    found.append(f"{v!r} in the name {rel}")
            if item.is_file():
                data = item.read_bytes()
                found += [f"{v!r} in {rel}" for v, b in needles.items() if b in data]
    return found


# --- dcm2niix ---------------------------------------------------------------------------
def convert(dicom_dir: Path, out_dir: Path) -> list[dict]:
    """dcm2niix (the workflow's options, uncompressed) -> one summary per output image,
    sorted by shape and voxel hash, so outputs compare whatever their names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            dcm2niix_binary(),
            "-b",
            "y",
            "-ba",
            "y",
            "-z",
            "n",
            "-f",
            "%s_%e",
            "-o",
            str(out_dir),
            str(dicom_dir),
        ],
        capture_output=True,
        check=True,
    )
    import nibabel as nib

    outs = []
    for nii in sorted(out_dir.glob("*.nii")):
        img = nib.load(nii)
        data = np.asarray(img.dataobj)
        entry = {
            "name": nii.name,
            "shape": data.shape,
            "voxels": hashlib.sha256(data.tobytes()).hexdigest(),
            "affine": img.affine,
            "sidecar": json.loads(nii.with_suffix(".json").read_text()),
        }
        for ext in ("bval", "bvec"):
            side = nii.with_suffix(f".{ext}")
            entry[ext] = np.loadtxt(side) if side.exists() else None
        outs.append(entry)
    return sorted(outs, key=lambda e: (e["shape"], e["voxels"]))


# Sidecar keys allowed to differ between the original and the pseudonymised conversion.
EXPECTED_SIDECAR_CHANGES = frozenset(
    {
        "DeidentificationMethod",
        "DeidentificationMethodCodeSequence",
        "InstitutionName",
        "InstitutionAddress",
        "StationName",
        "DeviceSerialNumber",
        "SeriesInstanceUID",
        "StudyInstanceUID",
        "AcquisitionDateTime",
        "ProcedureStepDescription",
    }
)


def same_conversion(a: list[dict], b: list[dict]) -> list[str]:
    """Differences in voxels, affine, bval/bvec, SliceTiming and unexpected sidecar keys."""
    problems = []
    if len(a) != len(b):
        return [f"{len(a)} outputs vs {len(b)}"]
    for x, y in zip(a, b, strict=True):
        if x["shape"] != y["shape"] or x["voxels"] != y["voxels"]:
            problems.append(f"{x['name']}: voxels differ")
        if not np.allclose(x["affine"], y["affine"], atol=1e-6):
            problems.append(f"{x['name']}: affine differs")
        for ext in ("bval", "bvec"):
            if (x[ext] is None) != (y[ext] is None) or (
                x[ext] is not None and not np.allclose(x[ext], y[ext])
            ):
                problems.append(f"{x['name']}: {ext} differs")
        for key in sorted(set(x["sidecar"]) | set(y["sidecar"])):
            if key not in EXPECTED_SIDECAR_CHANGES and x["sidecar"].get(key) != y["sidecar"].get(key):
                problems.append(
                    f"{x['name']}: sidecar {key}: {x['sidecar'].get(key)!r} -> {y['sidecar'].get(key)!r}"
                )
    return problems


UID_FORM = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
