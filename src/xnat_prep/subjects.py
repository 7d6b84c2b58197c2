"""Read and validate the subject CSV, offline.

The subject CSV is what XNAT's "Download CSV" gives for a subject listing: a ``Project`` and a
``Subject`` column among others (ignored). An optional ``Experiment``/``Session`` column picks
sessions; without it every session of the subject is processed. Spreadsheet habits are handled:
a UTF-8 BOM, quoted cells, ``="001"`` (Excel's way of keeping leading zeros), ``;`` or tab as the
separator, blank lines at the end. Everything is read as text, so ``001`` stays ``001``.

Every problem is a UserError naming the file, row and column. Rows are numbered as a spreadsheet
shows them: the header is row 1.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from xnat_prep.errors import UserError, where

# XNAT refuses other characters in IDs and labels ("Invalid character in subject label":
# xnat-web's SubjectResource/ExperimentResource check letters, digits, '_' and '-').
LABEL = re.compile(r"^[A-Za-z0-9_-]+$")
_EXCEL_TEXT = re.compile(r'^="(.*)"$')

SUBJECT_COLUMNS = {
    "project": ("project", "project id", "project_id"),
    "subject": ("subject", "subject label", "subject_label"),
    "session": ("experiment", "session", "experiment label", "experiment_label", "session_label"),
}


@dataclass(frozen=True)
class Subject:
    """One subject to process; ``sessions`` empty means all of its sessions."""

    project: str
    subject: str
    sessions: tuple[str, ...]
    row: int


def _cell(value: str) -> str:
    """A cell as text: surrounding blanks and Excel's ``="..."`` wrapper removed."""
    value = value.strip()
    match = _EXCEL_TEXT.match(value)
    return match.group(1).strip() if match else value


def _records(path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells) for every row including the header; the file must be UTF-8."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a CSV file") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(f"{where(path, line)}: not UTF-8 text (save it as 'CSV UTF-8')") from None
    header_line = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=header_line.count) if header_line else ","
    reader = csv.reader(text.splitlines(keepends=True), delimiter=delimiter, strict=True)
    try:
        for cells in reader:
            yield reader.line_num, [_cell(c) for c in cells]
    except csv.Error as exc:
        raise UserError(f"{where(path, reader.line_num)}: broken CSV quoting ({exc})") from None


def _padded(cells: list[str], header: list[str]) -> list[str]:
    """A row with missing trailing cells (ragged spreadsheet rows) filled with ""."""
    return cells + [""] * (len(header) - len(cells))


def _table(path: str | Path, columns: dict[str, tuple[str, ...]], required: set[str]):
    """The column indexes found and the non-blank data rows; checks header and blank rows."""
    records = list(_records(path))
    if not records or not any(records[0][1]):
        raise UserError(f"{path}: empty file (expected a header row with {', '.join(sorted(required))})")
    header = [h.lower() for h in records[0][1]]
    index: dict[str, int] = {}
    for key, names in columns.items():
        found = [i for i, h in enumerate(header) if h in names]
        if len(found) > 1:
            raise UserError(
                f"{where(path, 1)}: more than one {key} column ({', '.join(records[0][1][i] for i in found)})"
            )
        if found:
            index[key] = found[0]
    missing = [k for k in sorted(required) if k not in index]
    if missing:
        raise UserError(
            f"{where(path, 1)}: no '{missing[0].capitalize()}' column (found: {', '.join(records[0][1])})"
        )
    rows = records[1:]
    while rows and not any(rows[-1][1]):
        rows.pop()  # blank lines at the end, as spreadsheets write them
    for rownum, cells in rows:
        if not any(cells):
            raise UserError(f"{where(path, rownum)}: empty row (delete it)")
    return index, rows, records[0][1]


def _label(path: str | Path, rownum: int, column: str, value: str, what: str) -> str:
    """Check one ID/label cell."""
    if not value:
        raise UserError(f"{where(path, rownum, column)}: empty {what}")
    if not LABEL.match(value):
        bad = sorted({c for c in value if not re.match(r"[A-Za-z0-9_-]", c)})
        raise UserError(
            f"{where(path, rownum, column)}: {what} {value!r} contains {''.join(bad)!r}; XNAT labels "
            "hold only letters, digits, '_' and '-'"
        )
    return value


def read(path: str | Path, project: str | None = None) -> list[Subject]:
    """The subjects of a subject CSV, in file order; ``project`` is ``subjects.project``."""
    index, rows, header = _table(path, SUBJECT_COLUMNS, {"subject"} if project else {"project", "subject"})
    name = {key: header[i] for key, i in index.items()}
    subjects: dict[tuple[str, str], Subject] = {}
    seen: dict[tuple[str, str, str], int] = {}
    for rownum, cells in rows:
        cell = {key: _padded(cells, header)[i] for key, i in index.items()}
        if "project" in index:
            proj = _label(path, rownum, name["project"], cell["project"], "project")
            if project and proj != project:
                raise UserError(
                    f"{where(path, rownum, name['project'])}: project {proj!r} differs from "
                    f"subjects.project {project!r} in the config"
                )
        else:
            proj = project or ""
        subj = _label(path, rownum, name["subject"], cell["subject"], "subject")
        sess = cell.get("session", "")
        if sess:
            _label(path, rownum, name["session"], sess, "session")
        key = (proj, subj, sess)
        if key in seen:
            raise UserError(
                f"{where(path, rownum)}: duplicate of row {seen[key]} ({'/'.join(filter(None, key))})"
            )
        seen[key] = rownum
        prev = subjects.get((proj, subj))
        if prev is None:
            subjects[(proj, subj)] = Subject(proj, subj, (sess,) if sess else (), rownum)
        elif not sess or not prev.sessions:
            raise UserError(
                f"{where(path, rownum)}: subject {proj}/{subj} is also in row {prev.row}; one of them "
                "selects all its sessions, so list either all wanted sessions or the subject once"
            )
        else:
            subjects[(proj, subj)] = Subject(proj, subj, (*prev.sessions, sess), prev.row)
    if not subjects:
        raise UserError(f"{path}: no subjects (only a header row)")
    return list(subjects.values())
