"""The module table of docs/architecture.md, enforced: who may import what, where arguments are parsed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "xnat_prep"
ACCESS_LAYER = PACKAGE / "xnat_api"
# The bundled server is the other end of the wire: it speaks HTTP, it does not call XNAT.
SERVER = PACKAGE / "server"


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, anywhere in it (functions, TYPE_CHECKING)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_parser_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The checks below are only as good as this: imports in functions and under TYPE_CHECKING count."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import requests\n"
        "def f():\n    from xnat.session import XNATSession\n"
    )
    assert {"requests", "xnat"} <= imported(probe)


@pytest.mark.parametrize("library", ["xnat", "requests"])
def test_only_the_access_layer_talks_to_xnat(library: str) -> None:
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in modules()
        if library in imported(p) and ACCESS_LAYER not in p.parents and SERVER not in p.parents
    ]
    assert offenders == []


def test_argparse_only_in_the_commands_and_the_dispatcher() -> None:
    allowed = {PACKAGE / "cli.py"}
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in modules()
        if "argparse" in imported(p) and p not in allowed and p.parent != PACKAGE / "commands"
    ]
    assert offenders == []


def test_every_command_is_a_module_of_commands() -> None:
    from xnat_prep import cli

    for name in cli.COMMANDS:
        path = PACKAGE / (cli.module_name(name).removeprefix("xnat_prep.").replace(".", "/") + ".py")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert {"add_arguments", "run"} <= functions, path


def test_logging_is_configured_once() -> None:
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in modules()
        if "basicConfig" in p.read_text(encoding="utf-8") and p != PACKAGE / "cli.py"
    ]
    assert offenders == []


def test_no_module_builds_the_receipt_folder_pairing_by_hand() -> None:
    """``x.json`` beside ``x/`` is spelled in paths.outputs_of/receipt_of only (no ``[:-5]``, no
    ``with_suffix("")`` on a receipt, no ``f"{scan}.json"``)."""
    hand_made = re.compile(r"""\[: ?-len\(["']\.json["']\)\]|\.with_suffix\(["']{2}\)|\}\.json["']""")
    assert all(hand_made.search(t) for t in ('x[: -len(".json")]', 'p.with_suffix("")', 'f"{scan}.json"'))
    assert not hand_made.search('TABLE = "ps3.15-table.json"')
    offenders = []
    for path in modules():
        if path == PACKAGE / "paths.py" or SERVER in path.parents:
            continue
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.relative_to(PACKAGE)}: {m}" for m in hand_made.findall(text)]
    assert offenders == []


# Runtime dependencies that the product uses without importing them, and how.
USED_WITHOUT_IMPORT = {
    "snakemake-executor-plugin-slurm": "profiles/slurm (executor: slurm)",
    "pygments": "snakemake --report renders the report with it",
    "dcm2niix": "its wheel ships the dcm2niix binary, run by convert.py",
    "bids-validator-deno": "its wheel ships the bids-validator-deno command, run by bids/validate.py",
}
IMPORT_NAMES = {"pyyaml": "yaml"}


def test_every_runtime_dependency_is_used_by_the_product() -> None:
    import tomllib

    project = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    names = {re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower() for d in project["project"]["dependencies"]}
    everything = set().union(*(imported(p) for p in modules()))
    unused = sorted(
        n
        for n in names - set(USED_WITHOUT_IMPORT)
        if IMPORT_NAMES.get(n, n).replace("-", "_") not in everything
    )
    assert unused == []
    assert set(USED_WITHOUT_IMPORT) <= names  # no stale entry here
