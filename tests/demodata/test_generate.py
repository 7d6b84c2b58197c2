"""The generated DICOM on its own: layout, tags, geometry, determinism, labels, subject CSV, CLI."""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from xnat_prep import subjects
from xnat_prep.cli import main
from xnat_prep.demodata import generate, plan_sessions
from xnat_prep.demodata.dicom import BASIC_TEXT_SR, MR_IMAGE, SECONDARY_CAPTURE, _file_meta
from xnat_prep.demodata.protocols import PROTOCOLS, SIZES
from xnat_prep.errors import UserError

REQUIRED_MR = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "PatientID",
    "PatientName",
    "StudyDate",
    "StudyTime",
    "SeriesNumber",
    "SeriesDescription",
    "ProtocolName",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "Manufacturer",
    "MagneticFieldStrength",
    "RepetitionTime",
    "EchoTime",
    "FlipAngle",
    "ScanningSequence",
    "SequenceVariant",
    "MRAcquisitionType",
    "AcquisitionTime",
    "PixelData",
)
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
# ImageOrientationPatient (row direction, column direction) of each plane, LPS, as scanners write it
PLANES = {"ax": ((1, 0, 0), (0, 1, 0)), "sag": ((0, 1, 0), (0, 0, -1)), "cor": ((1, 0, 0), (0, 0, -1))}


def read_series(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


def test_tiny_session_is_small_and_fast(tmp_path, session_maker):
    session_maker(tmp_path / "warm-up", "tiny", edge_cases=False)  # first call pays for imports
    start = time.process_time()  # CPU time: the budget must not depend on what else the machine runs
    s = session_maker(tmp_path / "timed", "tiny", edge_cases=False, subject="SUB002", session="SUB002_MR1")
    elapsed = time.process_time() - start
    size = sum(p.stat().st_size for p in s.root.rglob("*.dcm"))
    assert elapsed < 1.0, f"tiny session took {elapsed:.2f} s"
    assert size < 2_000_000
    kinds = {(spec.acquisition, spec.volumes > 1, bool(spec.bvals)) for spec in s.specs}
    assert {("3D", False, False), ("2D", True, False), ("2D", True, True)} <= kinds  # 3D, 4D BOLD, DWI


def test_one_file_per_slice_in_instance_order(tiny_session):
    for spec in tiny_session.specs:
        files = sorted(tiny_session.folder(spec).glob("*.dcm"))
        assert len(files) == spec.n_files, spec.description
        numbers = [pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber for f in files]
        assert numbers == list(range(1, spec.n_files + 1))
        assert [f.name for f in files] == [f"{n:04d}.dcm" for n in numbers]


def test_mr_files_have_required_tags_and_uint16_pixels(tiny_session):
    for spec in tiny_session.specs:
        if spec.kind not in ("mr", "localizer"):
            continue
        for ds in read_series(tiny_session.folder(spec)):
            missing = [k for k in REQUIRED_MR if k not in ds]
            assert not missing, f"{spec.description}: {missing}"
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert ds.SOPClassUID == MR_IMAGE and ds.Modality == "MR"
            assert (ds.Rows, ds.Columns) == (spec.rows, spec.cols)
            assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 0
            assert ds.SeriesDescription == spec.description and ds.SeriesNumber == spec.number
            if spec.defect is None:
                pixels = ds.pixel_array
                assert pixels.dtype == np.uint16 and pixels.shape == (spec.rows, spec.cols)
                assert 0 < pixels.max() < 4096


def test_slice_positions_follow_orientation_and_spacing(small_session):
    for spec in small_session.specs:
        if spec.kind != "mr" or spec.slices < 2:
            continue
        files = read_series(small_session.folder(spec))[: spec.slices]
        row, col = (np.array(v, float) for v in PLANES[spec.orientation])
        normal = np.cross(row, col)
        for ds in files:
            assert np.allclose(ds.ImageOrientationPatient, [*row, *col])
            assert np.allclose([float(x) for x in ds.PixelSpacing], spec.pixel_spacing)
            assert float(ds.SliceThickness) == spec.thickness
            assert float(ds.SpacingBetweenSlices) == spec.spacing
        steps = np.diff([np.array(ds.ImagePositionPatient, float) for ds in files], axis=0)
        assert np.allclose(steps, spec.spacing * normal, atol=1e-3), spec.description
        # the stack is centred on the head: first and last slice mirror each other along the normal
        ends = [np.array(files[i].ImagePositionPatient, float) @ normal for i in (0, -1)]
        assert ends[0] == pytest.approx(-ends[1], abs=1e-3)


def test_localizer_has_three_orthogonal_planes(tiny_session):
    spec = tiny_session.specs[0]
    assert spec.kind == "localizer"
    normals = [
        np.cross(*np.reshape(np.array(ds.ImageOrientationPatient, float), (2, 3)))
        for ds in read_series(tiny_session.folder(spec))
    ]
    axes = [int(np.argmax(np.abs(n))) for n in normals]
    assert sorted(axes) == [0, 1, 2]  # one plane across each patient axis: sagittal, coronal, axial
    assert all(np.allclose(np.abs(n), np.eye(3)[a]) for n, a in zip(normals, axes, strict=True))


def test_bold_temporal_tags(tiny_session):
    spec = next(s for s in tiny_session.specs if s.volumes > 1 and not s.bvals)
    files = read_series(tiny_session.folder(spec))
    for index, ds in enumerate(files):
        volume, slice_ = divmod(index, spec.slices)
        assert ds.InstanceNumber == index + 1
        assert ds.TemporalPositionIdentifier == volume + 1
        assert ds.NumberOfTemporalPositions == spec.volumes
        assert ds.AcquisitionNumber == volume + 1
        assert np.allclose(ds.ImagePositionPatient, files[slice_].ImagePositionPatient)

    def seconds(ds):
        t = dt.datetime.strptime(ds.AcquisitionTime, "%H%M%S.%f")
        return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6

    times = np.array([seconds(ds) for ds in files]).reshape(spec.volumes, spec.slices)
    assert np.allclose(np.diff(times, axis=0), spec.tr / 1000)  # one TR between volumes
    offsets = times[0] - times[0].min()
    assert sorted(offsets) == pytest.approx(np.arange(spec.slices) * spec.tr / 1000 / spec.slices)


def test_dwi_tags(tiny_session):
    spec = next(s for s in tiny_session.specs if s.bvals)
    files = read_series(tiny_session.folder(spec))
    for index, ds in enumerate(files):
        volume = index // spec.slices
        b = spec.bvals[volume]
        item = ds.MRDiffusionSequence[0]
        assert ds.DiffusionBValue == item.DiffusionBValue == b
        if b:
            g = np.array(item.DiffusionGradientDirectionSequence[0].DiffusionGradientOrientation)
            assert np.allclose(g, spec.bvecs[volume]) and np.linalg.norm(g) == pytest.approx(1, abs=1e-5)
            assert np.allclose(ds.DiffusionGradientOrientation, g)
        else:
            assert "DiffusionGradientOrientation" not in ds and item.DiffusionDirectionality == "NONE"
    # diffusion weighting attenuates the signal
    b0 = files[0].pixel_array.astype(float).mean()
    assert files[-1].pixel_array.astype(float).mean() < 0.9 * b0


def test_edge_case_series(tiny_session):
    base = {s.number for s in PROTOCOLS["tiny"]}
    extra = [s for s in tiny_session.specs if s.number not in base]
    by_kind = {s.kind: s for s in extra}
    # (a) duplicate scan type: same SeriesDescription, different series
    descriptions = [s.description for s in tiny_session.specs]
    duplicate = next(d for d in descriptions if d and descriptions.count(d) > 1)
    uids = {
        read_series(tiny_session.folder(s))[0].SeriesInstanceUID
        for s in tiny_session.specs
        if s.description == duplicate
    }
    assert len(uids) == 2
    # (b) no type: SeriesDescription present but empty
    untyped = next(s for s in extra if s.description == "")
    ds = read_series(tiny_session.folder(untyped))[0]
    assert "SeriesDescription" in ds and ds.SeriesDescription == ""
    assert tiny_session.folder(untyped).name.endswith("-unknown")
    # (c) non-image: Secondary Capture screenshot and a Basic Text SR without pixel data
    (sc,) = read_series(tiny_session.folder(by_kind["secondary_capture"]))
    assert sc.SOPClassUID == SECONDARY_CAPTURE and sc.PhotometricInterpretation == "RGB"
    (sr,) = read_series(tiny_session.folder(by_kind["report"]))
    assert sr.SOPClassUID == BASIC_TEXT_SR and sr.Modality == "SR" and "PixelData" not in sr
    assert "lesion" in sr.ContentSequence[0].TextValue
    # (d) broken: pixel data shorter than Rows x Columns x 2
    broken = next(s for s in extra if s.defect)
    for ds in read_series(tiny_session.folder(broken)):
        assert len(ds.PixelData) < ds.Rows * ds.Columns * 2


def test_same_seed_same_bytes_other_seed_other_data(tmp_path, session_maker):
    a = session_maker(tmp_path / "a", "tiny", seed=7)
    b = session_maker(tmp_path / "b", "tiny", seed=7)
    c = session_maker(tmp_path / "c", "tiny", seed=8)
    files = sorted(p.relative_to(a.root) for p in a.root.rglob("*.dcm"))
    assert files == sorted(p.relative_to(b.root) for p in b.root.rglob("*.dcm"))
    assert all((a.root / f).read_bytes() == (b.root / f).read_bytes() for f in files)
    t1 = next(s for s in a.specs if s.acquisition == "3D")
    first = a.folder(t1).relative_to(a.root) / "0001.dcm"
    da, dc = pydicom.dcmread(a.root / first), pydicom.dcmread(c.root / first)
    assert da.SOPInstanceUID != dc.SOPInstanceUID and da.PixelData != dc.PixelData


def test_uids_are_valid_and_distinct_across_series_and_sessions(tmp_path, session_maker):
    one = session_maker(tmp_path / "1", "tiny", subject="SUB001", session="SUB001_MR1")
    two = session_maker(tmp_path / "2", "tiny", subject="SUB001", session="SUB001_MR2")
    instances, series = [], []
    for s in (one, two):
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(s.root.rglob("*.dcm"))]
        studies = {ds.StudyInstanceUID for ds in headers}
        frames = {ds.FrameOfReferenceUID for ds in headers if "FrameOfReferenceUID" in ds}
        assert len(studies) == 1 and len(frames) == 1  # one study, one frame of reference per session
        instances += [ds.SOPInstanceUID for ds in headers]
        series += list({(ds.SeriesNumber, ds.SeriesInstanceUID) for ds in headers})
        for ds in headers:
            for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID):
                assert len(uid) <= 64 and UID.match(uid)
    assert len(set(instances)) == len(instances)
    assert len({uid for _, uid in series}) == len(series) == len(one.specs) + len(two.specs)


def test_fast_writer_matches_pydicom(tiny_session, tmp_path):
    """SeriesWriter's bytes are what pydicom's own writer makes of the same dataset."""
    for path in sorted(tiny_session.root.rglob("*.dcm"))[::17]:
        ds = pydicom.dcmread(path)
        ds.file_meta = _file_meta(ds)
        ds.save_as(tmp_path / "again.dcm", enforce_file_format=True)
        assert (tmp_path / "again.dcm").read_bytes() == path.read_bytes(), path


def test_session_labels():
    def labels(*args, **kwargs):
        return [(p.subject, p.session, p.session_index) for p in plan_sessions(*args, **kwargs)]

    assert labels(2, 2) == [
        ("SUB001", "SUB001_MR1", 0),
        ("SUB001", "SUB001_MR2", 1),
        ("SUB002", "SUB002_MR1", 0),
        ("SUB002", "SUB002_MR2", 1),
    ]
    assert labels(1, 2, "numeric") == [("001", "00101", 0), ("001", "00102", 1)]
    assert labels(2, 1, subject_labels=["007", "A"]) == [("007", "007_MR1", 0), ("A", "A_MR1", 0)]
    with pytest.raises(UserError):
        plan_sessions(2, 1, subject_labels=["only-one"])
    with pytest.raises(UserError):
        plan_sessions(0, 1)


def test_generate_tree_and_subject_csv(tmp_path):
    plans = generate(tmp_path, "tiny", n_subjects=2, n_sessions=2, project="P1", style="numeric")
    assert len(plans) == 4
    for p in plans:
        folders = sorted(d.name for d in (tmp_path / p.subject / p.session).iterdir())
        assert folders == sorted(f"{s.number}-{s.description}" for s in PROTOCOLS["tiny"])
        ds = pydicom.dcmread(next((tmp_path / p.subject / p.session).rglob("*.dcm")))
        assert (str(ds.PatientName), ds.PatientID) == (p.subject, p.session)
        assert ds.PatientComments == f"Project: P1 Subject: {p.subject} Session: {p.session}"
    raw = (tmp_path / "subjects.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf" + b'"Project","Subject"')
    lines = raw.decode("utf-8-sig").splitlines()
    assert lines[1].startswith('"P1","001",') and lines[2].startswith('"P1","002",') and len(lines) == 3
    # the workflow's reader accepts it and keeps the labels as text
    assert [(s.project, s.subject, s.sessions) for s in subjects.read(tmp_path / "subjects.csv")] == [
        ("P1", "001", ()),
        ("P1", "002", ()),
    ]


def test_cli_writes_a_folder(tmp_path, capsys):
    assert (
        main(
            [
                "demo-data",
                "--out",
                str(tmp_path),
                "--size",
                "tiny",
                "--subjects",
                "1",
                "--sessions",
                "2",
                "--edge-cases",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "SUB001").iterdir()) == ["SUB001_MR1", "SUB001_MR2"]
    assert (tmp_path / "SUB001" / "SUB001_MR2" / "7-Screen_Save" / "0001.dcm").is_file()
    assert "wrote 2 session(s)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "exactly one of --out DIR or --server URL"),
        (["--out", "x", "--server", "http://127.0.0.1:9"], "exactly one of --out DIR or --server URL"),
        (["--out", "x", "--csv", "y.csv"], "--csv is for --server"),
    ],
)
def test_cli_argument_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo-data", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_refuses_a_password_argument(capsys):
    with pytest.raises(SystemExit):
        main(["demo-data", "--server", "http://127.0.0.1:9", "--password", "secret"])
    assert "unrecognized arguments" in capsys.readouterr().err


def test_every_size_has_3d_4d_and_dwi():
    for size in SIZES:
        specs = PROTOCOLS[size]
        assert any(s.acquisition == "3D" for s in specs)
        assert any(s.volumes > 1 and not s.bvals for s in specs)
        assert any(s.bvals for s in specs)
