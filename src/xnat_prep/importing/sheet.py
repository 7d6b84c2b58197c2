"""The two CSVs of the upload direction, read and checked offline.

``import.csv``: one row per DICOM session to import::

    project,subject,session,source,dest,on_conflict
    MYPROJ,S001,S001_MR1,/scratch/dicom/S001/visit1,archive,skip
    MYPROJ,S002,S002_MR1,/scratch/dicom/S002_visit1.zip,prearchive,skip

``resources.csv``: files (NIfTI or any) into scan or session resources::

    project,subject,session,scan,resource,path,on_conflict
    MYPROJ,S001,S001_MR1,1,NIFTI,/scratch/nii/S001/1/,skip
    MYPROJ,S001,S001_MR1,,QC,/scratch/qc/S001_MR1.pdf,skip

Headers are matched case-insensitively, with XNAT's "Download CSV" names accepted (``Project``,
``Subject``, ``Experiment``/``Label``); ``columns`` maps any other header onto a key
(``{"source": "DICOM folder"}``). Other columns are ignored. Spreadsheet habits are handled as for
the subject CSV (``subjects.py``). Relative ``source``/``path`` cells are relative to the working
directory. Every problem is a UserError naming the file, row and column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from xnat_prep.errors import UserError, where
from xnat_prep.subjects import _label, _padded, _table

DESTS = ("archive", "prearchive")
IMPORT_CONFLICT = ("skip", "append", "replace")
RESOURCE_CONFLICT = ("skip", "replace")
BOOLEAN = ("true", "false")

_IDS = {
    "project": ("project", "project id", "project_id"),
    "subject": ("subject", "subject label", "subject_label"),
    "session": ("session", "experiment", "experiment label", "experiment_label", "session_label", "label"),
}
IMPORT_COLUMNS = {
    **_IDS,
    "source": ("source", "path", "dicom", "folder", "file"),
    "dest": ("dest", "destination"),
    "on_conflict": ("on_conflict", "on conflict"),
    "ignore_unparsable": ("ignore_unparsable", "ignore unparsable"),
}
RESOURCE_COLUMNS = {
    **_IDS,
    "scan": ("scan", "scan id", "scan_id"),
    "resource": ("resource", "resource label"),
    "path": ("path", "file", "folder", "source"),
    "scan_type": ("scan_type", "type", "scan type"),
    "series_description": ("series_description", "series description"),
    "on_conflict": ("on_conflict", "on conflict"),
}


@dataclass(frozen=True)
class ImportRow:
    row: int  # as a spreadsheet numbers it: the header is row 1
    project: str
    subject: str
    session: str
    source: Path
    dest: str = "archive"
    on_conflict: str = "skip"
    ignore_unparsable: bool = False  # leave files that are not DICOM out instead of stopping

    @property
    def key(self) -> str:
        return f"{self.project}/{self.subject}/{self.session}"


@dataclass(frozen=True)
class ResourceRow:
    row: int
    project: str
    subject: str
    session: str
    scan: str  # "" = a session resource
    resource: str
    path: Path
    scan_type: str = ""
    series_description: str = ""
    on_conflict: str = "skip"


def _columns(
    columns: Mapping[str, str] | None, known: dict[str, tuple[str, ...]]
) -> dict[str, tuple[str, ...]]:
    """The header names per key, with the user's column map taking precedence."""
    out = dict(known)
    for key, header in (columns or {}).items():
        if header is None:  # the config's way of saying "the usual names"
            continue
        if key not in known:
            raise UserError(f"column map: unknown key {key!r} (known: {', '.join(known)})")
        out[key] = (header.strip().lower(),)
    return out


def _cells(path, columns, known, required):
    """(row number, {key: cell}, {key: header name}) for each data row."""
    index, rows, header = _table(path, _columns(columns, known), required)
    names = {key: header[i] for key, i in index.items()}
    for rownum, cells in rows:
        padded = _padded(cells, header)
        yield rownum, {key: padded[i] for key, i in index.items()}, names


def _choice(path, rownum, column, value, choices, default):
    value = (value or default).lower()
    if value not in choices:
        raise UserError(f"{where(path, rownum, column)}: {value!r} is not one of {', '.join(choices)}")
    return value


def read_imports(path: str | Path, columns: Mapping[str, str] | None = None) -> list[ImportRow]:
    """The rows of an import CSV; a session listed twice is an error naming both rows."""
    out: list[ImportRow] = []
    seen: dict[tuple[str, str], int] = {}
    required = {"project", "subject", "session", "source"}
    for rownum, cell, name in _cells(path, columns, IMPORT_COLUMNS, required):
        ids = {k: _label(path, rownum, name[k], cell[k], k) for k in ("project", "subject", "session")}
        if not cell["source"]:
            raise UserError(f"{where(path, rownum, name['source'])}: empty source")
        key = (ids["project"], ids["session"])
        if key in seen:
            raise UserError(f"{where(path, rownum)}: duplicate of row {seen[key]} (session {'/'.join(key)})")
        seen[key] = rownum
        out.append(
            ImportRow(
                rownum,
                **ids,
                source=Path(cell["source"]),
                dest=_choice(path, rownum, name.get("dest"), cell.get("dest"), DESTS, "archive"),
                on_conflict=_choice(
                    path, rownum, name.get("on_conflict"), cell.get("on_conflict"), IMPORT_CONFLICT, "skip"
                ),
                ignore_unparsable=_choice(
                    path,
                    rownum,
                    name.get("ignore_unparsable"),
                    cell.get("ignore_unparsable"),
                    BOOLEAN,
                    "false",
                )
                == "true",
            )
        )
    if not out:
        raise UserError(f"{path}: no sessions (only a header row)")
    return out


def read_resources(path: str | Path, columns: Mapping[str, str] | None = None) -> list[ResourceRow]:
    """The rows of a resources CSV; the same target file from two rows is an error."""
    out: list[ResourceRow] = []
    seen: dict[tuple[str, ...], int] = {}
    required = {"project", "subject", "session", "resource", "path"}
    for rownum, cell, name in _cells(path, columns, RESOURCE_COLUMNS, required):
        ids = {k: _label(path, rownum, name[k], cell[k], k) for k in ("project", "subject", "session")}
        resource = _label(path, rownum, name["resource"], cell["resource"], "resource label")
        scan = cell.get("scan", "")
        if scan:
            _label(path, rownum, name["scan"], scan, "scan ID")
        if not cell["path"]:
            raise UserError(f"{where(path, rownum, name['path'])}: empty path")
        key = (ids["project"], ids["session"], scan, resource, cell["path"])
        if key in seen:
            raise UserError(f"{where(path, rownum)}: duplicate of row {seen[key]}")
        seen[key] = rownum
        out.append(
            ResourceRow(
                rownum,
                **ids,
                scan=scan,
                resource=resource,
                path=Path(cell["path"]),
                scan_type=cell.get("scan_type", ""),
                series_description=cell.get("series_description", ""),
                on_conflict=_choice(
                    path, rownum, name.get("on_conflict"), cell.get("on_conflict"), RESOURCE_CONFLICT, "skip"
                ),
            )
        )
    if not out:
        raise UserError(f"{path}: no rows (only a header row)")
    return out
