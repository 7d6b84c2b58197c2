"""Tiny DICOM series for convert tests, written with pydicom (no demo-data dependency)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def write_series(
    folder: Path,
    n_slices: int = 4,
    size: int = 16,
    sop_class: str = MR_IMAGE,
    pixels: bool = True,
    spacing: tuple[float, float, float] = (1.0, 1.0, 2.0),
    transfer_syntax: str = ExplicitVRLittleEndian,
    series_number: int = 1,
    description: str = "t1",
    image_type: str = "ORIGINAL\\PRIMARY\\M\\ND",
) -> list[Path]:
    """``n_slices`` one-slice files of one series; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for i in range(n_slices):
        uid = generate_uid()
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, uid
        ds.Modality, ds.Manufacturer = "MR", "Philips Medical Systems"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientPosition = "Test^Fake", "FAKE01", "HFS"
        ds.SeriesNumber, ds.InstanceNumber = series_number, i + 1
        ds.ProtocolName = ds.SeriesDescription = description
        ds.ImageType = image_type.split("\\")
        if pixels:
            ds.ImagePositionPatient = [0.0, 0.0, i * spacing[2]]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.PixelSpacing = [spacing[0], spacing[1]]
            ds.SliceThickness = spacing[2]
            ds.Rows = ds.Columns = size
            ds.BitsAllocated = ds.BitsStored = 16
            ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 0, 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.PixelData = (np.arange(size * size, dtype=np.uint16) * (i + 1)).tobytes()
        path = folder / f"{i + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
