"""`xnat-prep validate`: the workflow's offline checks from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from xnat_prep.cli import main


def setup(tmp_path: Path, csv: str, extra: str = "") -> Path:
    (tmp_path / "subjects.csv").write_text(csv)
    config = tmp_path / "my.yaml"
    config.write_text(f"xnat: {{host: 'https://xnat.example.org'}}\nsubjects: {{csv: subjects.csv}}\n{extra}")
    return config


def test_ok_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.chdir(tmp_path.parent)
    config = setup(tmp_path, "Project,Subject,Session\nP,001,a\nP,001,b\nQ,002,\n")
    assert main(["validate", "--configfile", str(config), "--directory", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "OK: 2 subject(s) in project(s) P, Q, 1 with chosen sessions; XNAT https://xnat.example.org"
    )
    assert not (tmp_path / "results").exists()


def test_first_problem_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    values = tmp_path / "values.csv"
    values.write_text("session,field,value\ns1,Bad Name,1\n")
    config = setup(tmp_path, "Project,Subject\nP,001\n", f"custom_variables: {{values_csv: {values}}}\n")
    assert main(["validate", "--configfile", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "values.csv, row 2, column 'field'" in err[0]


def test_no_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert main(["validate", "--configfile", str(empty)]) == 2
    assert "no config: pass --configfile" in capsys.readouterr().err


def test_a_log_in_a_new_folder_is_made_and_an_unwritable_one_is_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """A step's command run by hand (the workflow prints each) with its rule's log path: the
    folder is made, as Snakemake does; a log that cannot be written is one line, exit 2."""
    monkeypatch.chdir(tmp_path.parent)
    config = setup(tmp_path, "Project,Subject\nP,001\n")
    log = tmp_path / "logs" / "validate" / "run.log"
    assert (
        main(["--log", str(log), "validate", "--configfile", str(config), "--directory", str(tmp_path)]) == 0
    )
    assert log.is_file()
    (tmp_path / "file").write_text("not a folder")
    bad = tmp_path / "file" / "run.log"
    assert main(["--log", str(bad), "validate", "--configfile", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"xnat-prep validate: error: --log {bad}: cannot write the log there ("
    )
