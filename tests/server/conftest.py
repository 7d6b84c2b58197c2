"""Fixtures for the server tests: a DICOM zip, a populated shared server, an xnatpy connection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from server_helpers import PROJECT, api, make_dicom_zip

from xnat_prep.server.testing import ServerHandle


@pytest.fixture(scope="session")
def dicom_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 MR series (1: 3 slices 'T1w MPRAGE', 2: 2 slices 'rest fMRI', 5: 2 slices 'localizer')."""
    path = tmp_path_factory.mktemp("dicom") / "session.zip"
    make_dicom_zip(path)
    return path


@pytest.fixture(scope="session")
def populated(xnat_server_session: ServerHandle, dicom_zip: Path) -> ServerHandle:
    """The shared server with project PROJ1 and session SUBJ01/SUBJ01_MR1 imported from ``dicom_zip``."""
    srv = xnat_server_session
    api(srv, "PUT", f"/data/projects/{PROJECT}").raise_for_status()
    response = api(
        srv,
        "POST",
        "/data/services/import",
        params={"project": PROJECT, "subject": "SUBJ01", "session": "SUBJ01_MR1"},
        data=dicom_zip.read_bytes(),
        headers={"Content-Type": "application/zip"},
    )
    assert response.status_code == 200, response.text
    return srv


@pytest.fixture(scope="session")
def xnat_session(populated: ServerHandle) -> Iterator:
    """One xnatpy connection (admin) to the populated shared server."""
    import xnat

    session = xnat.connect(populated.url, user="admin", password="admin", loglevel="ERROR")
    yield session
    session.disconnect()
