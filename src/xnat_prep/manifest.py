"""The manifest: what discovery found on XNAT, as TSV files the workflow reads at parse time.

Stdlib ``csv`` only (no pandas): the Snakefile reads ``scans.tsv`` on every parse, including in
every cluster job. Every value is a string in the file; counts and sizes are ints in the rows.
Files are rewritten only when their content changes, so an unchanged discovery keeps mtimes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from xnat_prep.fsutil import atomic_write


@dataclass(frozen=True)
class SessionIdentity:
    """Where a session sits on XNAT: the columns that start every scan and session row."""

    project: str
    subject: str
    subject_id: str
    session: str
    session_id: str
    xsi_type: str


@dataclass(frozen=True)
class ScanRow(SessionIdentity):
    """One selected scan (a row of ``scans.tsv``); ``scan`` is the ``{scan}`` wildcard value."""

    scan_id: str
    scan_type: str
    series_description: str
    scan: str
    resource: str
    n_files: int
    bytes: int


@dataclass(frozen=True)
class SessionRow(SessionIdentity):
    """One session with at least one selected scan (a row of ``sessions.tsv``); ``date`` as XNAT
    lists it (``YYYY-MM-DD``, empty if XNAT has none)."""

    n_scans: int
    bytes: int
    date: str = ""


@dataclass(frozen=True)
class FileRow:
    """One file of a selected scan's resource (a row of ``files/{p}/{s}/{session}.tsv``)."""

    scan_id: str
    resource: str
    path: str
    size: int
    md5: str
    uri: str


@dataclass(frozen=True)
class ErrorRow:
    """A discovery problem for one subject or session (a row of ``errors.tsv``)."""

    project: str
    subject: str
    session: str
    message: str


@dataclass(frozen=True)
class SkippedRow(SessionIdentity):
    """A scan discovery did not select, and why (a row of ``skipped.tsv``: the plan's inventory)."""

    scan_id: str
    scan_type: str
    series_description: str
    reason: str


@dataclass(frozen=True)
class DicomRow:
    """A DICOM header value read for the scans.dicom criteria (a row of ``dicom.tsv``: the cache
    that spares a rerun's discovery the dump requests)."""

    session_id: str
    scan_id: str
    keyword: str
    value: str


_CR = re.compile(r"\r\n?")

Row = TypeVar("Row", ScanRow, SessionRow, FileRow, ErrorRow, SkippedRow, DicomRow)


def columns(row_type: type) -> list[str]:
    """The TSV header of a row type (its field names, in order)."""
    return [f.name for f in dataclasses.fields(row_type)]


def render_tsv(rows: Iterable[Any], row_type: type) -> str:
    """The TSV text of ``rows`` (header first). Tabs/newlines inside values are csv-quoted.

    A carriage return becomes a newline: ``csv`` would not quote a lone ``\\r`` and reading the
    file back would split the row there.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(columns(row_type))
    for row in rows:
        writer.writerow([_CR.sub("\n", str(v)) for v in dataclasses.astuple(row)])
    return buf.getvalue()


def write_tsv(path: str | Path, rows: Sequence[Any], row_type: type | None = None) -> bool:
    """Write ``rows`` atomically, only if the content differs; returns whether it wrote.

    ``row_type`` is needed only when ``rows`` may be empty (the header still names the columns).
    """
    row_type = row_type or type(rows[0])
    text = render_tsv(rows, row_type)
    path = Path(path)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except FileNotFoundError:
        pass
    atomic_write(path, text, fsync=False)  # rebuilt by discovery when lost
    return True


def read_tsv(path: str | Path, row_type: type[Row]) -> list[Row]:
    """Read a manifest TSV into rows; int fields are converted, a wrong header is a ValueError."""
    # Read at every workflow parse (also by every cluster job): 100,000 scans must stay cheap, so
    # positional rows from csv.reader, not a dict per row (4x less CPU than csv.DictReader).
    fields = dataclasses.fields(row_type)
    names = [f.name for f in fields]
    ints = [i for i, f in enumerate(fields) if f.type in (int, "int")]
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader, None)
        if header != names:
            raise ValueError(f"{path}: columns {header} are not {names}")
        rows = []
        for rec in reader:
            if not rec:  # a blank line
                continue
            if len(rec) != len(names):
                raise ValueError(f"{path}: line {reader.line_num} has {len(rec)} columns, not {len(names)}")
            for i in ints:
                rec[i] = int(rec[i])
            rows.append(row_type(*rec))
        return rows


def read_scans(path: str | Path) -> list[ScanRow]:
    """All rows of ``scans.tsv``."""
    return read_tsv(path, ScanRow)


def read_sessions(path: str | Path) -> list[SessionRow]:
    """All rows of ``sessions.tsv``."""
    return read_tsv(path, SessionRow)


def read_errors(path: str | Path) -> list[ErrorRow]:
    """All rows of ``errors.tsv``."""
    return read_tsv(path, ErrorRow)


def read_skipped(path: str | Path) -> list[SkippedRow]:
    """All rows of ``skipped.tsv`` (none before a discovery that wrote it)."""
    return _read_if_there(path, SkippedRow)


def read_dicom(path: str | Path) -> list[DicomRow]:
    """All rows of ``dicom.tsv`` (none before a discovery with DICOM criteria)."""
    return _read_if_there(path, DicomRow)


def _read_if_there(path: str | Path, row_type: type[Row]) -> list[Row]:
    try:
        return read_tsv(path, row_type)
    except FileNotFoundError:
        return []


def read_session_files(path: str | Path) -> dict[str, list[FileRow]]:
    """A session's file list, grouped by scan ID (in file order)."""
    grouped: dict[str, list[FileRow]] = {}
    for row in read_tsv(path, FileRow):
        grouped.setdefault(row.scan_id, []).append(row)
    return grouped


def natural_key(text: str) -> list[tuple[int, int, str]]:
    """Sort key of the manifest's order: scan 2 before scan 10, whatever mixes digits and letters."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text) if p]
