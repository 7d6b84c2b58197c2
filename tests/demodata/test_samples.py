"""Real Siemens DICOM (shipped with nibabel) as a second source, through the real dcm2niix."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest

from xnat_prep.demodata import siemens_samples


def test_samples_are_one_real_siemens_series(tmp_path):
    paths = siemens_samples(tmp_path)
    assert [p.name for p in paths] == ["0.dcm", "1.dcm", "siemens_dwi_0.dcm", "siemens_dwi_1000.dcm"]
    headers = [pydicom.dcmread(p) for p in paths]
    assert {ds.Manufacturer for ds in headers} == {"SIEMENS"}
    assert len({ds.SeriesInstanceUID for ds in headers}) == 1 and {ds.SeriesNumber for ds in headers} == {12}
    assert all(p.parent == tmp_path / "12-CBU_DTI_64D_1A" for p in paths)
    assert "MOSAIC" in headers[0].ImageType


def test_dcm2niix_splits_the_series_by_matrix_and_reads_the_csa_b_values(tmp_path, dcm2niix):
    siemens_samples(tmp_path / "dicom")
    result = dcm2niix(tmp_path / "dicom" / "12-CBU_DTI_64D_1A", tmp_path / "nii")
    assert result.returncode == 0, result.log
    shapes = {nib.load(p).shape: p for p in result.niftis}
    # mosaics unpacked: 256x256 -> 36x36x48 (two b=0 volumes) and 896x896 -> 128x128x48 (b=0, b=1000)
    assert set(shapes) == {(36, 36, 48, 2), (128, 128, 48, 2)}
    dwi = shapes[(128, 128, 48, 2)]
    assert np.loadtxt(dwi.with_suffix(".bval")).tolist() == [0, 1000]
    bvec = np.loadtxt(dwi.with_suffix(".bvec"))
    assert np.allclose(bvec[:, 0], 0)
    assert np.linalg.norm(bvec[:, 1]) == pytest.approx(1, abs=1e-3)
    assert np.loadtxt(shapes[(36, 36, 48, 2)].with_suffix(".bval")).tolist() == [0, 0]
    # what dcm2niix says about them: slice timing notes (Siemens CSA), not conversion problems
    assert all("slice timing" in w.lower() for w in result.warnings()), result.log
