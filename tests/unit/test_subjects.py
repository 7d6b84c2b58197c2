"""subjects: the XNAT "Download CSV" and spreadsheet habits; one message per problem."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xnat_prep.errors import UserError
from xnat_prep.subjects import Subject, read

LABELS = st.text("ABCabc019_-", min_size=1, max_size=12)


def write(tmp_path, text: str | bytes, name: str = "subjects.csv"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def error(tmp_path, text: str | bytes, project: str | None = None) -> str:
    with pytest.raises(UserError) as info:
        read(write(tmp_path, text), project)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_xnat_export_with_bom_quotes_and_extra_columns(tmp_path) -> None:
    text = '\ufeff"Project","Subject","M/F","YOB"\n"DEMO","001","F","1980"\n"DEMO","SUB002","M","1975"\n'
    assert read(write(tmp_path, text)) == [Subject("DEMO", "001", (), 2), Subject("DEMO", "SUB002", (), 3)]


def test_excel_habits(tmp_path) -> None:
    text = 'project;SUBJECT;Experiment\r\nDEMO;="001";="001_MR1"\r\nDEMO; 001 ;001_MR2\r\n;;\r\n\r\n'
    assert read(write(tmp_path, text)) == [Subject("DEMO", "001", ("001_MR1", "001_MR2"), 2)]


def test_project_from_config_when_no_column(tmp_path) -> None:
    assert read(write(tmp_path, "Subject\n001\n"), project="P1") == [Subject("P1", "001", (), 2)]


@given(st.lists(st.tuples(LABELS, LABELS), min_size=1, max_size=8, unique=True))
def test_any_valid_labels_read_back_as_text(tmp_path_factory, rows) -> None:
    buf = io.StringIO()
    csv.writer(buf, quoting=csv.QUOTE_ALL).writerows([("Project", "Subject"), *rows])
    path = tmp_path_factory.mktemp("h") / "s.csv"
    path.write_text(buf.getvalue())
    assert [(s.project, s.subject) for s in read(path)] == rows


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "empty file"),
        ('"Project","Label"\nP,1\n', "row 1: no 'Subject' column (found: Project, Label)"),
        ("Subject\n001\n", "row 1: no 'Project' column"),
        ("Project,Subject,Session,Experiment\nP,1,a,b\n", "row 1: more than one session column"),
        ("Project,Subject\n", "no subjects (only a header row)"),
        ("Project,Subject\nP,1\n,\nP,2\n", "row 3: empty row (delete it)"),
        ("Project,Subject\nP,1\nP,1\n", "row 3: duplicate of row 2 (P/1)"),
        ("Project,Subject\nP,\n", "row 2, column 'Subject': empty subject"),
        ("Project,Subject\nP,a b\n", "row 2, column 'Subject': subject 'a b' contains ' '; XNAT labels"),
        ("Project,Subject\nP.1,a\n", "row 2, column 'Project': project 'P.1' contains '.'"),
        ("Project,Subject,Session\nP,1,\nP,1,s1\n", "row 3: subject P/1 is also in row 2"),
        ('Project,Subject\nP,"1\n', "broken CSV quoting"),
        (b"Project,Subject\nP,J\xf6rg\n", "row 2: not UTF-8 text"),
    ],
)
def test_problems_name_file_row_and_column(tmp_path, text, expected) -> None:
    message = error(tmp_path, text)
    assert message.startswith(str(tmp_path / "subjects.csv"))
    assert expected in message


def test_project_mismatch(tmp_path) -> None:
    assert "row 2, column 'Project': project 'B' differs from subjects.project 'A'" in error(
        tmp_path, "Project,Subject\nB,1\n", project="A"
    )


def test_missing_file_and_directory(tmp_path) -> None:
    with pytest.raises(UserError, match="file not found"):
        read(tmp_path / "nope.csv")
    with pytest.raises(UserError, match="is a directory"):
        read(tmp_path)
