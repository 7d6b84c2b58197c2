"""A converted BIDS-typical demo study on disk, without a server: the demo generator's ``bids``
protocol, each series converted by the real dcm2niix through ``convert.convert_scan`` into the
workflow's layout, and the manifest (``scans.tsv``) discovery would have written."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from xnat_prep import convert, manifest, paths
from xnat_prep.demodata.generate import generate, series_folder
from xnat_prep.demodata.protocols import session_protocol

REPO = Path(__file__).resolve().parents[2]
SUBJECTS = ("SUB001", "SUB002")


@dataclass
class Converted:
    root: Path
    scans: list[manifest.ScanRow]


def make_study(base: Path, protocol: str = "bids") -> Converted:
    dicom = base / "dicom-src"
    plans = generate(dicom, "tiny", n_subjects=2, protocol=protocol)
    root = base / "results"
    rows = []
    for p in plans:
        for spec in session_protocol("tiny", protocol=protocol):
            scan = paths.scan_dir(str(spec.number), spec.description)
            row = manifest.ScanRow(
                project="DEMO",
                subject=p.subject,
                subject_id=f"DEMO_S{p.subject[-3:]}",
                session=p.session,
                session_id=f"DEMO_E{p.subject[-3:]}",
                xsi_type="xnat:mrSessionData",
                scan_id=str(spec.number),
                scan_type=spec.description,
                series_description=spec.description,
                scan=scan,
                resource="DICOM",
                n_files=spec.n_files,
                bytes=1000,
            )
            rows.append(row)
            convert.convert_scan(
                dicom_dir=dicom / p.subject / p.session / series_folder(spec),
                receipt=paths.convert_receipt(root, "DEMO", p.subject, p.session, scan),
                name=f"{p.session}_{scan}",
                scan_id=row.scan_id,
                scan_type=row.scan_type,
            )
    manifest.write_tsv(root / paths.SCANS_TSV, rows)
    shutil.rmtree(dicom)
    return Converted(root, rows)


@pytest.fixture(scope="session")
def converted_template(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    return make_study(tmp_path_factory.mktemp("bids-study"))


@pytest.fixture
def converted(converted_template: Converted, tmp_path: Path) -> Converted:
    """A private copy (the BIDS step writes under the root)."""
    root = tmp_path / "results"
    shutil.copytree(converted_template.root, root)
    return Converted(root, converted_template.scans)
