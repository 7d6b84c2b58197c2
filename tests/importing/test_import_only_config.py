"""An import-only config needs no subject CSV: the import targets run without one, and a target of
the download direction asked for without one stops with one clear line (nothing requested)."""

from __future__ import annotations

from pathlib import Path

from import_helpers import make_project, snakemake, synthetic, write_csv

from xnat_prep import cli, config
from xnat_prep.server.testing import running_server

ENV = {"XNAT_USER": "admin", "XNAT_PASS": "admin"}


def test_import_targets_run_without_a_subject_csv(tmp_path: Path) -> None:
    folder = synthetic(tmp_path / "dicom", "S1", "S1_MR1", project="IMPONLY")
    csv = write_csv(tmp_path / "import.csv", [["IMPONLY", "S1", "S1_MR1", str(folder)]])
    with running_server(tmp_path / "xnat") as server:
        make_project(server.url, "IMPONLY")
        settings = {"xnat": {"host": server.url}, "import": {"csv": str(csv)}}
        before = len(server.requests())

        wrong = snakemake(tmp_path / "work", settings, env=ENV)  # the default target: `all`

        assert wrong.returncode != 0
        assert f"xnat-prep: error: {config.NO_SUBJECTS}" in wrong.stderr
        assert server.requests()[before:] == []

        ran = snakemake(tmp_path / "work", settings, "import_all", env=ENV)

        assert ran.returncode == 0, (ran.stdout + ran.stderr)[-3000:]
        assert (tmp_path / "work/results/receipts/import/IMPONLY/S1/S1_MR1.json").is_file()


def test_validate_accepts_an_import_only_config(tmp_path: Path, capsys) -> None:
    (tmp_path / "c.yaml").write_text("xnat: {host: 'https://xnat.example.org'}\n")

    assert cli.main(["validate", "--configfile", str(tmp_path / "c.yaml"), "--directory", str(tmp_path)]) == 0
    assert "no subject CSV" in capsys.readouterr().out
