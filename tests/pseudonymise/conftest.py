"""Fixtures for the pseudonymisation tests: a key file, a demo study with known identifying
values, a reference-rich series (nested references at three levels, private UIDs, PHI in
sequences and private elements), and nibabel's real Siemens DICOM."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pseudo_helpers as helpers
import pytest

from xnat_prep.demodata import generate, siemens_samples
from xnat_prep.pseudonymise import KEY_FILE_ENV, load_key

KEY = "7c1f0e5d3b2a4968a7e6d5c4b3a29180f1e2d3c4b5a69788"


def write_key(path: Path, text: str = KEY, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


@pytest.fixture(scope="session")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_key(tmp_path_factory.mktemp("key") / "pseudo.key")


@pytest.fixture(scope="session")
def key(key_file: Path):
    return load_key(key_file)


@pytest.fixture(autouse=True)
def _no_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)


@pytest.fixture(scope="session")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo study: SUB001 with two sessions, SUB002 with one... (tiny, with the edge cases)."""
    root = tmp_path_factory.mktemp("study")
    generate(root, "tiny", n_subjects=2, n_sessions=2, edge_cases=True)
    for broken in root.glob("*/*/*-T2w_broken"):  # truncated pixel data: an error (tested on its own)
        shutil.move(broken, root.parent / f"{broken.parent.name}-broken")
    return root


@pytest.fixture(scope="session")
def refs(tmp_path_factory: pytest.TempPathFactory, study: Path) -> Path:
    """A folder: localizer + T1 of SUB001_MR1 with references added, plus a derived object."""
    out = tmp_path_factory.mktemp("refs")
    helpers.make_reference_series(study / "SUB001" / "SUB001_MR1", out)
    return out


@pytest.fixture(scope="session")
def siemens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("siemens")
    siemens_samples(root)
    return root


@pytest.fixture
def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != KEY_FILE_ENV}
