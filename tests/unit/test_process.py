"""process: xnat-prep's processes (the command line, Snakemake's) skip the interpreter's final
garbage collections; a probe registered first among the exit callbacks runs last and sees the heap
frozen."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# registered before anything else: runs after every other exit callback
PROBE = "import atexit, gc; atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0))\n"


def run(code: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_without_it_the_heap_is_not_frozen() -> None:
    assert run("import xnat_prep.process").strip().endswith("frozen at exit: False")


def test_the_heap_is_frozen_at_exit() -> None:
    out = run(
        """
        from xnat_prep import process
        process.exit_without_final_collection()
        process.exit_without_final_collection()  # again, as in-process callers do
        """
    )
    assert out.strip() == "frozen at exit: True"


def test_the_command_line_registers_it() -> None:
    out = run("from xnat_prep import cli; cli.main([])")  # the help, exit status 2
    assert out.strip().endswith("frozen at exit: True")


def test_the_workflow_registers_it_in_snakemakes_process(tmp_path: Path) -> None:
    # the Slurm executor plugin asks `scontrol show config` when Snakemake loads it (10 s to time
    # out where the Slurm client has no controller): one that fails at once, as bench/ does
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "scontrol").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "scontrol").chmod(0o755)
    (tmp_path / "subjects.csv").write_text("Project,Subject,Session\nDEMO,001,\n")
    (tmp_path / "config.yaml").write_text(
        f"xnat: {{host: 'http://127.0.0.1:9'}}\nsubjects: {{csv: '{tmp_path / 'subjects.csv'}'}}\n"
        f"output_root: '{tmp_path / 'results'}'\n"
    )
    out = run(
        f"""
        from pathlib import Path
        from snakemake.api import SnakemakeApi
        from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings
        with SnakemakeApi(OutputSettings()) as api:
            api.workflow(
                resource_settings=ResourceSettings(),
                config_settings=ConfigSettings(configfiles=[Path({str(tmp_path / "config.yaml")!r})]),
                storage_settings=StorageSettings(),
                snakefile=Path({str(REPO / "Snakefile")!r}),
                workdir=Path({str(tmp_path)!r}),
            )._workflow  # parses the Snakefile (nothing runs)
        """,
        cwd=tmp_path,
        env=dict(os.environ, PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"),
    )
    assert out.strip().endswith("frozen at exit: True")
