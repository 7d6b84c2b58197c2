"""Helpers for the server tests: one-line HTTP calls, and a tiny DICOM zip (8x8 slices) made with pydicom."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import requests
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from xnat_prep.server.importer import dicom_file_name
from xnat_prep.server.testing import ServerHandle

PROJECT = "PROJ1"
# XNAT_PREP_SERVER_ARGS=--anonymize runs the suite against an anonymizing site (server.testing)
ANONYMIZING = "--anonymize" in os.environ.get("XNAT_PREP_SERVER_ARGS", "")
SAME_BYTES = "compares downloaded bytes with uploaded ones: holds only where the site does not anonymize"
ADMIN = ("admin", "admin")


def api(
    server: ServerHandle,
    method: str,
    path: str,
    *,
    auth: tuple[str, str] | None = ADMIN,
    timeout: float = 30,
    **kwargs,
) -> requests.Response:
    """One request to the server: admin by default, 30 s timeout."""
    return requests.request(method, server.url + path, auth=auth, timeout=timeout, **kwargs)


DEFAULT_SERIES = ((1, "T1w MPRAGE", "MR", 3), (2, "rest fMRI", "MR", 2), (5, "localizer", "MR", 2))


def dicom_slice(
    series_number: int,
    description: str,
    modality: str,
    instance: int,
    *,
    patient_id: str,
    patient_name: str,
    study_uid: str,
    series_uid: str,
) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName = patient_id, patient_name
    ds.StudyDescription = "TESTPROJ"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyDate, ds.StudyTime = "20240131", "101500"
    ds.Modality = modality
    ds.SeriesNumber, ds.InstanceNumber = series_number, instance
    ds.SeriesDescription = description
    ds.StationName = "SCANNER1"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = (np.arange(64, dtype=np.uint16) * instance).tobytes()
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def make_dicom_zip(
    path: Path, series=DEFAULT_SERIES, *, patient_id: str = "SESS01", patient_name: str = "SUBJ01"
) -> dict[int, int]:
    """Write the zip; returns {series number: number of files}."""
    study_uid = generate_uid()
    with zipfile.ZipFile(path, "w") as zf:
        for number, description, modality, slices in series:
            series_uid = generate_uid()
            for i in range(1, slices + 1):
                zf.writestr(
                    f"dicom/{number:03d}/IM{i:04d}.dcm",
                    dicom_slice(
                        number,
                        description,
                        modality,
                        i,
                        patient_id=patient_id,
                        patient_name=patient_name,
                        study_uid=study_uid,
                        series_uid=series_uid,
                    ),
                )
    return {number: slices for number, _, _, slices in series}


def archived(zip_path: Path, series: int) -> dict[str, bytes]:
    """{name the server archives it under: bytes} for one series of ``make_dicom_zip``'s zip.

    The server names archived DICOM files as XNAT does (its file-name template), not as uploaded.
    """
    with zipfile.ZipFile(zip_path) as zf:
        members = [zf.read(n) for n in zf.namelist() if f"/{series:03d}/" in n]
    return {
        dicom_file_name(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)): data for data in members
    }
