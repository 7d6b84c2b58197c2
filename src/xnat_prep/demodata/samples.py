"""Real scanner DICOM as a second source: the Siemens files nibabel ships for its own tests."""

from __future__ import annotations

import gzip
import shutil
from importlib import resources
from pathlib import Path

# One series of one study (same StudyInstanceUID, SeriesInstanceUID, SeriesNumber 12, anonymised):
# two mosaic b=0 volumes at 36x36x48 and a b=0/b=1000 pair at 128x128x48 (896x896 mosaics).
# XNAT keeps them as one scan; dcm2niix splits it by matrix size into two 4D NIfTIs.
SIEMENS_SERIES = "12-CBU_DTI_64D_1A"
SIEMENS_FILES = ("0.dcm", "1.dcm", "siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz")


def siemens_samples(dest_dir: Path) -> list[Path]:
    """Copy (decompressing ``.gz``) nibabel's Siemens DTI samples to ``dest_dir/12-CBU_DTI_64D_1A/``."""
    source = resources.files("nibabel") / "nicom" / "tests" / "data"
    folder = Path(dest_dir) / SIEMENS_SERIES
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SIEMENS_FILES:
        target = folder / name.removesuffix(".gz")
        with (source / name).open("rb") as src, target.open("wb") as dst:
            shutil.copyfileobj(gzip.GzipFile(fileobj=src) if name.endswith(".gz") else src, dst)
        paths.append(target)
    return paths
