"""convert_scan: dcm2niix run and checks, non-image skip, rejected scans, atomic outputs."""

from __future__ import annotations

import os
import subprocess
import sys

import nibabel
import pydicom
import pytest
from dicomfake import BASIC_TEXT_SR, SECONDARY_CAPTURE, write_series
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from xnat_prep import convert, receipts


def run(tmp_path, dicom, **kwargs):
    out, receipt = tmp_path / "nifti" / "1-T1w", tmp_path / "nifti" / "1-T1w.json"
    result = convert.convert_scan(dicom_dir=dicom, receipt=receipt, name="sub_T1w", **kwargs)
    assert receipts.read(receipt) == result
    return result, out


def test_converts_and_records_geometry_checked_against_nibabel(tmp_path):
    write_series(tmp_path / "dicom", n_slices=5, size=16, spacing=(0.9, 0.9, 1.2))
    result, out = run(tmp_path, tmp_path / "dicom", scan_id="1", scan_type="T1w")
    assert result["status"] == "converted", result["reason"]
    assert (result["n_dicom"], result["n_converted"]) == (5, 5)
    assert result["dcm2niix_version"].startswith("v1.")
    names = sorted(o["name"] for o in result["outputs"])
    assert names == ["sub_T1w.json", "sub_T1w.nii.gz"]
    image = next(o for o in result["outputs"] if o["name"].endswith(".nii.gz"))
    header = nibabel.load(out / "sub_T1w.nii.gz").header
    assert image["shape"] == list(header.get_data_shape())
    assert image["voxel_size"] == pytest.approx([float(z) for z in header.get_zooms()[:3]])
    assert image["voxel_size"] == pytest.approx([0.9, 0.9, 1.2])
    assert sorted(p.name for p in out.parent.iterdir()) == ["1-T1w", "1-T1w.json"]  # no temp left


def test_uncompressed_output(tmp_path):
    write_series(tmp_path / "dicom")
    result, out = run(tmp_path, tmp_path / "dicom", compress=False)
    assert (out / "sub_T1w.nii").is_file()
    assert next(o for o in result["outputs"] if o["name"] == "sub_T1w.nii")["shape"] == [16, 16, 4]


@pytest.mark.parametrize(
    ("sop_class", "pixels", "reason"),
    [
        (SECONDARY_CAPTURE, True, "secondary capture"),
        ("1.2.840.10008.5.1.4.1.1.7.4", True, "secondary capture"),
        (BASIC_TEXT_SR, False, "structured report"),
        ("1.2.840.10008.5.1.4.1.1.104.1", False, "encapsulated document"),
        ("1.2.840.10008.5.1.4.1.1.11.1", False, "presentation state"),
        ("1.2.840.10008.5.1.4.1.1.66", False, "raw data"),
        ("1.2.840.10008.5.1.4.1.1.4", False, "no pixel data"),
    ],
)
def test_non_image_scans_are_skipped_without_dcm2niix(tmp_path, sop_class, pixels, reason):
    write_series(tmp_path / "dicom", n_slices=2, sop_class=sop_class, pixels=pixels)
    (tmp_path / "nifti" / "1-T1w").mkdir(parents=True)  # stale outputs of an earlier run
    result, out = run(tmp_path, tmp_path / "dicom")
    assert result["status"] == "skipped"
    assert reason in result["reason"] and sop_class in result["reason"]
    assert result["dcm2niix_version"] is None  # dcm2niix did not run
    assert not out.exists()


def test_fast_sniffer_agrees_with_pydicom_fallback(tmp_path):
    for syntax in (ImplicitVRLittleEndian, ExplicitVRBigEndian):
        first = write_series(tmp_path / syntax, n_slices=1, transfer_syntax=syntax)[0]
        assert pydicom.dcmread(first).file_meta.TransferSyntaxUID == syntax
        assert convert.non_image_reason(first) == ""
    sr = write_series(tmp_path / "sr", n_slices=1, sop_class=BASIC_TEXT_SR, pixels=False)[0]
    assert convert._sniff(sr) == convert._sniff_pydicom(sr) == (BASIC_TEXT_SR, False)
    mr = write_series(tmp_path / "mr", n_slices=1)[0]
    assert convert._sniff(mr) == convert._sniff_pydicom(mr) == ("1.2.840.10008.5.1.4.1.1.4", True)


def test_rejected_scan_fails_with_dcm2niix_message(tmp_path):
    files = write_series(tmp_path / "dicom", n_slices=4)
    ds = pydicom.dcmread(files[2])
    ds.PixelData = ds.PixelData[:100]  # truncated image: dcm2niix refuses the series
    ds.save_as(files[2])
    result, out = run(tmp_path, tmp_path / "dicom")
    assert result["status"] == "failed"
    assert "exit status 1" in result["reason"] and "not large enough" in result["reason"]
    assert not out.exists()


def test_not_dicom_at_all_fails_with_dcm2niix_message(tmp_path):
    (tmp_path / "dicom").mkdir()
    (tmp_path / "dicom" / "a.dcm").write_text("hello")
    result, _ = run(tmp_path, tmp_path / "dicom")
    assert result["status"] == "failed"
    assert "Unable to find any DICOM images" in result["reason"]


def test_fewer_converted_than_downloaded_fails(tmp_path):
    write_series(tmp_path / "dicom", n_slices=3)
    write_series(tmp_path / "dicom" / "sr", n_slices=1, sop_class=BASIC_TEXT_SR, pixels=False)
    result, _ = run(tmp_path, tmp_path / "dicom")
    assert result["status"] == "failed"
    assert "converted 3 of 4" in result["reason"]


def test_rerun_replaces_outputs(tmp_path):
    write_series(tmp_path / "dicom")
    _first, out = run(tmp_path, tmp_path / "dicom")
    (out / "stale.txt").write_text("from an older run")
    second, _ = run(tmp_path, tmp_path / "dicom")
    assert second["status"] == "converted"
    assert sorted(p.name for p in out.iterdir()) == ["sub_T1w.json", "sub_T1w.nii.gz"]


def test_extra_options_reach_dcm2niix(tmp_path):
    write_series(tmp_path / "dicom")
    result, out = run(tmp_path, tmp_path / "dicom", extra="-b n")  # later flags win: no sidecar
    assert result["status"] == "converted"
    assert result["dcm2niix_args"][-2:] == ["-b", "n"]
    assert [p.name for p in out.iterdir()] == ["sub_T1w.nii.gz"]


def test_gzip_level_reaches_dcm2niix_and_changes_only_the_compression(tmp_path):
    write_series(tmp_path / "dicom", n_slices=8, size=64)
    fast, fast_out = run(tmp_path / "a", tmp_path / "dicom")
    small, small_out = run(tmp_path / "b", tmp_path / "dicom", gz_level=9)
    assert "-3" in fast["dcm2niix_args"] and "-9" in small["dcm2niix_args"]  # default 3, not 6
    assert "-9" not in fast["dcm2niix_args"]
    images = [nibabel.load(out / "sub_T1w.nii.gz") for out in (fast_out, small_out)]
    assert images[0].get_fdata().tobytes() == images[1].get_fdata().tobytes()  # the same image
    assert (fast_out / "sub_T1w.json").read_bytes() == (small_out / "sub_T1w.json").read_bytes()


def test_common_path_imports_neither_pydicom_nor_nibabel(tmp_path):
    """Both cost ~0.3 s per job; the convert stage must stay within 15% of plain dcm2niix."""
    write_series(tmp_path / "dicom", n_slices=2)
    code = (
        "import sys; from xnat_prep import convert; "
        f"r = convert.convert_scan(dicom_dir={str(tmp_path / 'dicom')!r}, "
        f"receipt={str(tmp_path / 'o.json')!r}, name='x'); "
        "print(r['status'], 'pydicom' in sys.modules, 'nibabel' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["converted", "False", "False"]


@pytest.mark.parametrize(
    ("script", "said"),
    [
        ("kill -9 $$", "dcm2niix was killed by SIGKILL (out of memory?"),
        ("echo 'Error: No space left on device' >&2; exit 1", "ran out of disk space"),
        ("exit 7", "exit status 7 (output folder read-only)"),
    ],
)
def test_a_conversion_stopped_by_the_machine_fails_the_job_and_records_nothing(tmp_path, script, said):
    """Not a verdict on the data: the job fails (exit 1, one line), no receipt, no output folder,
    so Snakemake's retry or the next run converts the scan. The real dcm2niix then does."""
    write_series(tmp_path / "dicom", n_slices=2)
    fake = tmp_path / "bin" / "dcm2niix"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    receipt = tmp_path / "nifti" / "1-T1w.json"
    command = [sys.executable, "-m", "xnat_prep.cli", "--log", str(tmp_path / "log"), "convert-scan"]
    command += ["--dicom", str(tmp_path / "dicom")]
    command += ["--receipt", str(receipt), "--name", "x"]
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 1, proc.stderr
    [line] = proc.stderr.splitlines()
    assert said in line and line.startswith("xnat-prep convert-scan: error: ") and "run again" in line
    assert sorted(p.name for p in receipt.parent.iterdir()) == []  # no receipt, no output, no temp
    result, _ = run(tmp_path, tmp_path / "dicom")
    assert result["status"] == "converted"
