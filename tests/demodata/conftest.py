"""Fixtures for the demo data tests: generated sessions (made once per module) and a dcm2niix runner."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from xnat_prep.demodata.dicom import SessionInfo
from xnat_prep.demodata.generate import series_folder, write_session
from xnat_prep.demodata.protocols import SeriesSpec, session_protocol


@dataclass
class Conversion:
    returncode: int
    log: str
    niftis: list[Path]

    def warnings(self) -> list[str]:
        return [line for line in self.log.splitlines() if "warning" in line.lower()]

    def sidecar(self, nifti: Path) -> Path:
        return nifti.with_name(nifti.name.removesuffix(".gz").removesuffix(".nii") + ".json")


@pytest.fixture(scope="session")
def dcm2niix() -> Callable[[Path, Path], Conversion]:
    """Run the real dcm2niix binary on one folder: ``convert(dicom_dir, out_dir) -> Conversion``."""
    binary = shutil.which("dcm2niix")
    assert binary, "dcm2niix must be on PATH (pip package dcm2niix is a project dependency)"

    def convert(dicom_dir: Path, out_dir: Path) -> Conversion:
        out_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [binary, "-z", "n", "-b", "y", "-f", "%s_%d", "-o", str(out_dir), str(dicom_dir)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        return Conversion(proc.returncode, proc.stdout + proc.stderr, sorted(out_dir.glob("*.nii")))

    return convert


@dataclass
class Session:
    root: Path
    info: SessionInfo
    specs: tuple[SeriesSpec, ...]

    def folder(self, spec: SeriesSpec) -> Path:
        return self.root / series_folder(spec)


def make_session(
    root: Path,
    size: str,
    edge_cases: bool = True,
    seed: int = 0,
    subject: str = "SUB001",
    session: str = "SUB001_MR1",
) -> Session:
    info = SessionInfo("DEMO", subject, session, seed)
    write_session(root, info, size, edge_cases)
    return Session(root, info, session_protocol(size, edge_cases))


@pytest.fixture(scope="session")
def session_maker() -> Callable[..., Session]:
    """``session_maker(root, size, edge_cases=True, seed=0, subject=..., session=...) -> Session``."""
    return make_session


@pytest.fixture(scope="module")
def tiny_session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    return make_session(tmp_path_factory.mktemp("tiny") / "SUB001_MR1", "tiny")


@pytest.fixture(scope="module")
def small_session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    return make_session(tmp_path_factory.mktemp("small") / "SUB001_MR1", "small")
