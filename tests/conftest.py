"""Shared fixtures: the bundled XNAT-compatible server as a subprocess.

``xnat_server`` is a fresh server per test (its own data dir); ``xnat_server_session`` is one
server shared by the whole session, for tests that do not change shared state (or only add
objects with unique names). Both yield ``xnat_prep.server.testing.ServerHandle``
(``.url``, ``.data_dir``, ``.process``, ``.requests()``, ``.admin``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from xnat_prep.server.testing import ServerHandle, running_server


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        help="also run the heavy cases: the reliability suite (marker reliability_full; figures in "
        "tests/workflow/RELIABILITY.md) and the other whole-workflow variants (marker full_only)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--full"):
        return
    skip = pytest.mark.skip(reason="heavy reliability case: run with --full")
    # CI keeps one whole-workflow run per feature; the variants of it run with --full
    variant = pytest.mark.skip(reason="a heavier variant of a case CI runs: run with --full")
    for item in items:
        if "reliability_full" in item.keywords:
            item.add_marker(skip)
        elif "full_only" in item.keywords:
            item.add_marker(variant)


@pytest.fixture
def xnat_server(tmp_path: Path) -> Iterator[ServerHandle]:
    with running_server(tmp_path / "xnat-data") as server:
        yield server


@pytest.fixture(scope="session")
def xnat_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    with running_server(tmp_path_factory.mktemp("xnat-session") / "xnat-data") as server:
        yield server
