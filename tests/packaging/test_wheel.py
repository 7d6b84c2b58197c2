"""A wheel (not the editable checkout) installed in a fresh venv validates a config and runs the demo.

The wheel must carry everything itself: the config schema (package data, found through
importlib.resources) and the workflow (installed under <venv>/share/xnat-prep). Its dependencies
come from the test venv through a path entry instead of a second download of ~400 MB; the test
checks that xnat_prep itself is the wheel's copy, not the checkout's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


# Without PYTHONPATH: a checkout on it would shadow the wheel's copy.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def run(*cmd, cwd, env=None, timeout=600):
    env = CLEAN_ENV if env is None else env
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{cmd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_validates_and_runs_the_demo(tmp_path):
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", REPO, cwd=tmp_path)
    [wheel] = (tmp_path / "dist").glob("xnat_prep-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "--no-deps", wheel, cwd=tmp_path)
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path).stdout
    (Path(site.strip()) / "test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    where = run(python, "-c", "import xnat_prep; print(xnat_prep.__file__)", cwd=tmp_path).stdout
    assert where.startswith(str(venv)), where  # the wheel's copy, not the checkout's

    env = dict(CLEAN_ENV)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    (tmp_path / "subjects.csv").write_text("Project,Subject\nP1,001\n")
    (tmp_path / "my.yaml").write_text(
        "xnat: {host: 'https://xnat.example.org'}\nsubjects: {csv: subjects.csv}\n"
    )
    ok = run(venv / "bin" / "xnat-prep", "validate", "--configfile", "my.yaml", cwd=tmp_path, env=env)
    assert ok.stdout.startswith("OK: 1 subject(s) in project(s) P1")

    demo = run(
        venv / "bin" / "xnat-prep", "demo", "--dir", tmp_path / "demo", "--size", "tiny",
        "--subjects", "1", "--cores", "2", cwd=tmp_path, env=env, timeout=900,
    )  # fmt: skip
    assert str(venv / "share" / "xnat-prep" / "Snakefile") in demo.stdout
    summary = (tmp_path / "demo" / "results" / "report" / "summary.tsv").read_text()
    assert "\tok\t" in summary
