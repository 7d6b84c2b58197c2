"""environment.yml (for conda users on HPC) must stay in step with pyproject.toml.

conda cannot be reached here, so this static check is what keeps the file right.
"""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# PyPI name -> conda-forge/bioconda name where they differ
CONDA_NAMES: dict[str, str] = {}
# on PyPI only: listed in environment.yml's pip section, with the same bound
PIP_ONLY = {"bids-validator-deno"}


def _split(spec: str) -> tuple[str, str]:
    name, constraint = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", spec).groups()
    return name.lower().replace("_", "-"), constraint.replace(" ", "")


def _pyproject_deps() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(_split(d.split(";")[0]) for d in data["project"]["dependencies"])


def _env() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def test_every_runtime_dependency_is_in_environment_yml_with_the_same_bound():
    conda = dict(_split(d) for d in _env()["dependencies"] if isinstance(d, str))
    pip = dict(_split(d) for d in _pip_section()[1:])
    for name, constraint in _pyproject_deps().items():
        if name in PIP_ONLY:
            assert pip.get(name) == constraint, f"{name}: pyproject says '{constraint}', pip section {pip}"
            continue
        conda_name = CONDA_NAMES.get(name, name)
        assert conda_name in conda, f"{name} is in pyproject.toml but not in environment.yml"
        assert conda[conda_name] == constraint, (
            f"{name}: pyproject says '{constraint}', environment.yml says '{conda[conda_name]}'"
        )


def _pip_section() -> list[str]:
    return next(d for d in _env()["dependencies"] if isinstance(d, dict))["pip"]


def test_python_version_matches_requires_python():
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    conda = dict(_split(d) for d in _env()["dependencies"] if isinstance(d, str))
    assert conda["python"] == requires


def test_package_itself_is_installed_by_pip_and_channels_are_set():
    env = _env()
    pip = [d for d in env["dependencies"] if isinstance(d, dict)]
    assert pip and pip[0]["pip"][0] == "-e ."
    assert {_split(d)[0] for d in pip[0]["pip"][1:]} == PIP_ONLY  # nothing else bypasses conda
    assert env["channels"][:2] == ["conda-forge", "bioconda"]
