"""dcm2niix on pseudonymised vs original DICOM: the same voxels, affine, bval/bvec, slice
timing and sidecar (but for the expected keys), on the synthetic sessions and on the real
Siemens DICOM nibabel ships; the Siemens CSA headers; sidecars carry no original identifier."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pydicom
import pytest
from nibabel.nicom import csareader
from pseudo_helpers import convert, files, identifying_values, leaks, same_conversion

from xnat_prep.pseudonymise import IDENTIFYING_KEYS, csa, pseudonymise_tree, scrub_sidecar, scrub_sidecar_file

QUARANTINED = ("7-Screen_Save", "8-Radiology_Report")


@pytest.fixture(scope="module")
def synthetic(study: Path, key, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(original images of SUB001_MR1 without the quarantined series, pseudonymised session)."""
    root = tmp_path_factory.mktemp("synthetic")
    session = study / "SUB001" / "SUB001_MR1"
    images = root / "images"
    images.mkdir()
    for series in session.iterdir():
        if series.name not in QUARANTINED:
            (images / series.name).symlink_to(series, target_is_directory=True)
    pseudonymise_tree(session, root / "pseudo", key=key, subject_id="XNAT_S00001")
    return images, root / "pseudo"


@pytest.fixture(scope="module")
def siemens_pseudo(siemens: Path, key, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("siemens-pseudo") / "out"
    pseudonymise_tree(siemens, out, key=key, subject_id="XNAT_S00009")
    return out


def test_synthetic_geometry_unchanged(synthetic: tuple[Path, Path], tmp_path: Path) -> None:
    original, pseudo = synthetic
    a, b = convert(original, tmp_path / "a"), convert(pseudo, tmp_path / "b")
    assert len(a) >= 5 and any(x["bval"] is not None for x in a)
    assert same_conversion(a, b) == []


def test_siemens_geometry_unchanged(siemens: Path, siemens_pseudo: Path, tmp_path: Path) -> None:
    a, b = convert(siemens, tmp_path / "a"), convert(siemens_pseudo, tmp_path / "b")
    assert len(a) == 2 and all(x["bval"] is not None and "SliceTiming" in x["sidecar"] for x in a)
    assert all(x["sidecar"].get("EffectiveEchoSpacing") for x in a)  # read from the CSA series header
    assert same_conversion(a, b) == []


def test_no_identifier_in_nifti_or_sidecars(
    siemens: Path, siemens_pseudo: Path, synthetic, study: Path, tmp_path: Path
) -> None:
    for original, pseudo, extra in (
        (siemens, siemens_pseudo, ("MRC35119", "35119", "XNAT_S00009")),
        (synthetic[0], synthetic[1], ("SUB001", "SUB001_MR1", "XNAT_S00001")),
    ):
        out = tmp_path / pseudo.name
        convert(pseudo, out)
        values = identifying_values(original, extra)
        found = leaks(values, [out])
        assert not found, found[:10]
        for sidecar in out.glob("*.json"):  # what is left are pseudonymised values; the scrub drops them too
            scrub_sidecar_file(sidecar)
            assert not set(json.loads(sidecar.read_text())) & IDENTIFYING_KEYS


def test_scrub_sidecar_on_real_output(siemens: Path, tmp_path: Path) -> None:
    """dcm2niix without -ba y writes names, IDs and dates; the scrub leaves none of them."""
    out = tmp_path / "plain"
    out.mkdir()
    import subprocess

    from xnat_prep.convert import dcm2niix_binary

    subprocess.run(
        [dcm2niix_binary(), "-b", "y", "-ba", "n", "-z", "n", "-o", str(out), str(siemens)],
        check=True,
        capture_output=True,
    )
    values = identifying_values(siemens, ("MRC35119",))
    sidecars = sorted(out.glob("*.json"))
    raw = [json.loads(p.read_text()) for p in sidecars]
    assert any(set(r) & {"PatientName", "PatientID", "DeviceSerialNumber"} for r in raw)
    for path in sidecars:
        removed = scrub_sidecar_file(path)
        assert "DeviceSerialNumber" in removed
        text = path.read_text()
        assert not [v for v in values if v in text]
        assert "SliceTiming" in json.loads(text) and "EchoTime" in json.loads(text)
    assert scrub_sidecar({"a": "Dr Who", "b": ["x", "who"], "c": 1}, values=("who",)) == {"c": 1}


def test_csa_headers(siemens: Path, siemens_pseudo: Path) -> None:
    for original in files(siemens):
        ds = pydicom.dcmread(original)
        image = ds[0x00291010].value
        parsed = csa.read(image)
        assert csa.write(csa.read(csa.write(parsed))) == csa.write(parsed)  # stable round trip
        # the original carries the station name in a tag name's padding: the writer zeroes it
        assert b"MRC35119" in image and b"MRC35119" not in csa.write(parsed)
        ours = csareader.read(csa.write(parsed))["tags"]
        assert {k: v["items"] for k, v in ours.items()} == {
            k: v["items"] for k, v in csareader.read(image)["tags"].items()
        }
    for f in files(siemens_pseudo):
        ds = pydicom.dcmread(f)
        series = ds[0x00291020].value
        assert re.search(rb"### ASCCONV BEGIN.*### ASCCONV END ###", series, re.DOTALL)
        tags = csareader.read(series)["tags"]
        assert list(tags) == ["MrPhoenixProtocol"]
        assert b"tReferenceImage" not in series and b"1.3.12.2.1107" not in series and b"35119" not in series
        assert 0x00291009 not in ds and 0x00291019 not in ds  # "header versions" that are the study date
        assert ds.private_block(0x0019, "SIEMENS MR HEADER")[0x0A].value == 48  # mosaic size, in place
