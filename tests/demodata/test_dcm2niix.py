"""The real dcm2niix converts every generated image series cleanly, to the geometry the tags say.

Expected values come from the series specs, never from dcm2niix's own output.
"""

from __future__ import annotations

import json
import time

import nibabel as nib
import numpy as np
import pydicom
import pytest

from xnat_prep.demodata.dicom import BASIC_TEXT_SR, SECONDARY_CAPTURE, SessionInfo, write_series
from xnat_prep.demodata.protocols import PROTOCOLS, SeriesSpec, session_protocol

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
# ImageOrientationPatient (row direction, column direction) of each plane, LPS, as scanners write it
PLANES = {"ax": ((1, 0, 0), (0, 1, 0)), "sag": ((0, 1, 0), (0, 0, -1)), "cor": ((1, 0, 0), (0, 0, -1))}


def image_series(size: str) -> list[SeriesSpec]:
    specs = session_protocol(size, edge_cases=True)
    return [s for s in specs if s.kind in ("mr", "localizer") and not s.defect]


def axis_along(img: nib.Nifti1Image, direction_lps) -> int:
    """The voxel axis of ``img`` that runs along a patient (LPS) direction; fails if none does."""
    target = LPS_TO_RAS @ np.asarray(direction_lps, float)
    columns = img.affine[:3, :3] / np.linalg.norm(img.affine[:3, :3], axis=0)
    alignment = np.abs(columns.T @ target)
    assert alignment.max() == pytest.approx(1, abs=1e-4), f"no axis along {direction_lps}: {img.affine}"
    return int(np.argmax(alignment))


def check_stack(img: nib.Nifti1Image, spec: SeriesSpec, plane: str) -> None:
    """Shape and voxel size along the row, column and slice directions of ImageOrientationPatient."""
    row, col = PLANES[plane]
    zooms = img.header.get_zooms()
    slices, spacing = (1, spec.thickness) if spec.kind == "localizer" else (spec.slices, spec.spacing)
    for direction, length, size in (
        (row, spec.cols, spec.pixel_spacing[1]),
        (col, spec.rows, spec.pixel_spacing[0]),
        (np.cross(row, col), slices, spacing),
    ):
        axis = axis_along(img, direction)
        assert img.shape[axis] == length and zooms[axis] == pytest.approx(size, abs=1e-3), (spec, axis)


def check_diffusion(img: nib.Nifti1Image, spec: SeriesSpec, nifti) -> None:
    bvals = np.loadtxt(nifti.with_suffix(".bval"), ndmin=1)
    bvecs = np.loadtxt(nifti.with_suffix(".bvec"), ndmin=2)
    assert bvals.tolist() == pytest.approx(list(spec.bvals))
    assert bvecs.shape == (3, spec.volumes)
    # dcm2niix writes vectors in voxel space (FSL's sign convention aside): rotate ours to compare
    rotation = img.affine[:3, :3] / np.linalg.norm(img.affine[:3, :3], axis=0)
    for v, g in enumerate(spec.bvecs):
        expected = rotation.T @ (LPS_TO_RAS @ np.asarray(g, float))
        assert np.abs(bvecs[:, v]) == pytest.approx(np.abs(expected), abs=2e-3), v


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_every_image_series_converts_without_warnings(size, request, dcm2niix, tmp_path):
    session = request.getfixturevalue(f"{size}_session")
    for spec in image_series(size):
        result = dcm2niix(session.folder(spec), tmp_path / str(spec.number))
        where = f"{size} series {spec.number} {spec.description!r}:\n{result.log}"
        assert result.returncode == 0, where
        assert result.warnings() == [], where
        if spec.kind == "localizer":
            assert len(result.niftis) == 3, where
            planes = ["sag", "cor", "ax"]
            for nifti in result.niftis:
                img = nib.load(nifti)
                dicom_iop = json.loads(result.sidecar(nifti).read_text())["ImageOrientationPatientDICOM"]
                plane = next(p for p in planes if np.allclose(dicom_iop, np.ravel(PLANES[p])))
                planes.remove(plane)
                check_stack(img, spec, plane)
            continue
        assert len(result.niftis) == 1, where
        (nifti,) = result.niftis
        img = nib.load(nifti)
        check_stack(img, spec, spec.orientation)
        sidecar = json.loads(result.sidecar(nifti).read_text())
        assert sidecar.get("SeriesDescription", "") == spec.description
        assert sidecar["RepetitionTime"] == pytest.approx(spec.tr / 1000)
        assert sidecar["SliceThickness"] == pytest.approx(spec.thickness)
        assert sidecar["MagneticFieldStrength"] == 3
        if spec.volumes > 1:
            assert img.ndim == 4 and img.shape[3] == spec.volumes, where
        else:
            assert img.ndim == 3, where
        has_bval = nifti.with_suffix(".bval").exists()
        assert has_bval == bool(spec.bvals), where
        if spec.bvals:
            check_diffusion(img, spec, nifti)


def test_bold_signal_follows_the_block_design(small_session, dcm2niix, tmp_path):
    spec = next(s for s in small_session.specs if s.volumes > 1 and not s.bvals)
    (nifti,) = dcm2niix(small_session.folder(spec), tmp_path).niftis
    data = np.asarray(nib.load(nifti).dataobj, dtype=float)
    means = data.reshape(-1, spec.volumes).mean(axis=0)
    blocks = np.array([(v // 5) % 2 for v in range(spec.volumes)], bool)
    assert means[blocks].mean() > means[~blocks].mean()  # task blocks are brighter


def test_edge_case_series_with_dcm2niix(tiny_session, dcm2niix, tmp_path):
    extra = {
        s.kind if not s.defect else "broken": s
        for s in tiny_session.specs
        if s.number > max(p.number for p in PROTOCOLS["tiny"])
    }
    # the broken series: dcm2niix fails and writes no image
    broken = dcm2niix(tiny_session.folder(extra["broken"]), tmp_path / "broken")
    assert broken.returncode != 0 and broken.niftis == [], broken.log
    assert "not large enough" in broken.log
    # the report has no pixels at all: dcm2niix finds nothing to convert
    report = dcm2niix(tiny_session.folder(extra["report"]), tmp_path / "report")
    assert report.returncode != 0 and report.niftis == [], report.log
    # the screenshot has pixels, so dcm2niix happily makes a 2D RGB "image" of it: which is why
    # the workflow must recognise non-image series by SOP class, not by dcm2niix failing
    screen = dcm2niix(tiny_session.folder(extra["secondary_capture"]), tmp_path / "screen")
    assert screen.returncode == 0 and len(screen.niftis) == 1
    assert nib.load(screen.niftis[0]).shape[:2] == (
        extra["secondary_capture"].cols,
        extra["secondary_capture"].rows,
    )
    classes = {
        kind: pydicom.dcmread(next(tiny_session.folder(extra[kind]).glob("*.dcm"))).SOPClassUID
        for kind in ("report", "secondary_capture")
    }
    assert classes == {"report": BASIC_TEXT_SR, "secondary_capture": SECONDARY_CAPTURE}


def test_realistic_t1_converts(tmp_path, dcm2niix):
    spec = next(s for s in PROTOCOLS["realistic"] if s.acquisition == "3D")
    start = time.perf_counter()
    files = write_series(SessionInfo("DEMO", "SUB001", "SUB001_MR1", 0), spec, tmp_path / "t1")
    generated = time.perf_counter() - start
    assert len(files) == 176 and (spec.rows, spec.cols) == (256, 256)
    start = time.perf_counter()
    result = dcm2niix(tmp_path / "t1", tmp_path / "nii")
    converted = time.perf_counter() - start
    assert result.returncode == 0 and result.warnings() == [], result.log
    (nifti,) = result.niftis
    img = nib.load(nifti)
    check_stack(img, spec, "sag")
    # sagittal: the 176 slices run along x
    assert img.shape[axis_along(img, (1, 0, 0))] == 176
    print(f"realistic T1: generated {generated:.1f} s, dcm2niix {converted:.1f} s")
