"""Referential integrity (graph, partitions, injectivity, form), what must stay untouched, and
the per-element rules, on a series whose references nest three levels deep."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom
import pytest
from pseudo_helpers import PHILIPS_MR, PLANTED, UID_FORM, files, partition, uid_graph
from pydicom.uid import UID

from xnat_prep.pseudonymise import Profile, Pseudonymiser, pseudonymise_tree, quarantine_reason


@pytest.fixture(scope="module")
def done(refs: Path, key, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("refs-out") / "out"
    pseudonymise_tree(refs, out, key=key, subject_id="XNAT_S00001")
    return out


def _by_sop(folder: Path) -> dict[str, pydicom.Dataset]:
    return {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(f) for f in files(folder))}


def test_reference_graph_is_the_original_with_each_uid_replaced(refs: Path, done: Path, key) -> None:
    before, after = uid_graph(refs), uid_graph(done)
    fixed = {"meta/(0002,0002)", "meta/(0002,0010)", "meta/(0002,0012)"}

    def f(uid: str) -> str:
        return uid if uid.startswith("1.2.840.10008.") else key.uid(uid)

    expected = {(f(a), p, f(b)) for a, p, b in before if p not in fixed}
    assert {e for e in after if e[1] not in fixed} == expected
    # nested three levels deep: RTReferencedStudy -> Series -> ContourImage -> SOP instance
    deep = [e for e in after if "(3006,0014)" in e[1] and e[1].endswith("(0008,1155)")]
    t1 = {str(ds.SOPInstanceUID) for ds in _by_sop(done).values() if ds.SeriesNumber == 2}
    assert len(deep) == 2 and {e[2] for e in deep} <= t1


def test_injective_and_no_original_survives(refs: Path, done: Path) -> None:
    def instance_uids(folder: Path) -> set[str]:  # the implementation UID names the writing software
        return {
            u
            for _, p, u in uid_graph(folder)
            if not u.startswith("1.2.840.10008.") and p != "meta/(0002,0012)"
        }

    originals, new = instance_uids(refs), instance_uids(done)
    assert len(new) == len(originals) and not (new & originals)
    for _, _, uid in uid_graph(done):
        assert UID_FORM.match(uid) and len(uid) <= 64 and UID(uid).is_valid


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"])
def test_grouping_unchanged(refs: Path, done: Path, key, keyword: str) -> None:
    def renamed(groups):
        return {frozenset(key.uid(u) for u in g) for g in groups}

    assert partition(done, keyword) == renamed(partition(refs, keyword))


def test_untouched_and_meta_follows(refs: Path, done: Path, key) -> None:
    before, after = _by_sop(refs), _by_sop(done)
    for sop, ds in before.items():
        new = after[key.uid(sop)]
        assert new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID
        assert (
            new.SOPClassUID == ds.SOPClassUID
            and new.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        )
        assert hashlib.sha256(new.PixelData).digest() == hashlib.sha256(ds.PixelData).digest()
        for kw in (
            "ImagePositionPatient",
            "ImageOrientationPatient",
            "PixelSpacing",
            "SeriesNumber",
            "InstanceNumber",
        ):
            assert new.get(kw) == ds.get(kw), kw
        for a, b in zip(
            ds.get("ReferencedImageSequence", []), new.get("ReferencedImageSequence", []), strict=True
        ):
            assert a.ReferencedSOPClassUID == b.ReferencedSOPClassUID


def test_bookkeeping_and_values(refs: Path, done: Path, key) -> None:
    p = Pseudonymiser(key, "XNAT_S00001")
    for ds in _by_sop(done).values():
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.PatientName == p.pseudonym and ds.PatientID == p.pseudonym
        assert f"key {key.fingerprint}" in ds.DeidentificationMethod
        codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
        assert {"113100", "113107", "113108", "113105", "113111"} == codes
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        assert "PatientBirthDate" not in ds or ds.PatientBirthDate == ""
        assert "OtherPatientIDs" not in ds and not ds.get("AccessionNumber")
    t1 = next(ds for ds in _by_sop(done).values() if ds.SeriesNumber == 2)
    assert t1.SeriesDescription.strip() == "T1 by"  # cleaned: the physician's name removed, the rest kept
    assert not t1.get("OperatorsName") and not t1.get("PerformingPhysicianName")  # X/Z/D, X/Z: emptied


def test_nested_and_private(refs: Path, done: Path, key) -> None:
    p = Pseudonymiser(key, "XNAT_S00001")
    derived = next(ds for ds in _by_sop(done).values() if ds.SeriesNumber == 99)
    shifted = p.offset_days
    frame = derived.PerFrameFunctionalGroupsSequence[0].FrameContentSequence[0]
    import datetime as dt

    want = (dt.date(2023, 4, 5) + dt.timedelta(days=shifted)).strftime("%Y%m%d")
    assert frame.FrameAcquisitionDateTime == want + "101500.000000"  # date moved, time kept
    # the unknown private block is gone, creator and all; the kept Philips block stays in place
    assert not any(e.tag.group == 0x0011 for e in derived)
    block = derived.private_block(0x2005, PHILIPS_MR)
    original = pydicom.dcmread(files(refs / "derived")[0])
    assert block[0x40].value == key.uid(str(original.private_block(0x2005, PHILIPS_MR)[0x40].value))
    assert block[0x43].value == want
    # free text in a block kept whole is dropped: it is where names go
    assert 0x20051041 not in derived and 0x20051042 not in derived
    assert PLANTED["private_name"] == original.private_block(0x2005, PHILIPS_MR)[0x42].value


def test_quarantine_reasons(study: Path) -> None:
    session = study / "SUB001" / "SUB001_MR1"
    sc = pydicom.dcmread(files(session / "7-Screen_Save")[0])
    sr = pydicom.dcmread(files(session / "8-Radiology_Report")[0])
    mr = pydicom.dcmread(files(session / "2-T1w_MPRAGE")[0])
    assert quarantine_reason(sc).startswith("secondary capture")
    assert quarantine_reason(sr).startswith("structured report")
    assert quarantine_reason(mr) == ""
    mr.BurnedInAnnotation = "YES"
    assert quarantine_reason(mr) == "BurnedInAnnotation is YES"
    mr.BurnedInAnnotation = "NO"
    mr.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    assert quarantine_reason(mr) == "ImageType says SCREEN SAVE"


def test_retain_uids_and_full_dates(refs: Path, key) -> None:
    ds = pydicom.dcmread(files(refs / "t1")[0])
    sop, date = str(ds.SOPInstanceUID), ds.StudyDate
    Pseudonymiser(key, "S", profile=Profile(("retain_uids", "retain_longitudinal_full_dates"))).dataset(ds)
    assert ds.SOPInstanceUID == sop and ds.StudyDate == date
    assert ds.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert {"113110", "113106"} <= {i.CodeValue for i in ds.DeidentificationMethodCodeSequence}
