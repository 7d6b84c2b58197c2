"""The local half of the preflight: what each row's DICOM source holds, read before any request.

Headers only (pydicom, ``stop_before_pixels``, a handful of tags), an md5 per file, and the checks
that keep a bad upload from ever reaching XNAT: exactly one StudyInstanceUID per row (XNAT would
otherwise split or mislabel the upload: "Upload included files for multiple imaging sessions"),
every file parsable, one SeriesInstanceUID per SeriesNumber (XNAT makes scans by SeriesNumber, so
two series under one number would merge into one scan), and no study in two rows.

A source is a folder, a zip, or a tar (optionally compressed). Hidden files, ``DICOMDIR`` and
``__MACOSX`` entries are left out, as XNAT's importer leaves them out.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from xnat_prep.errors import UserError, where
from xnat_prep.importing.sheet import ImportRow

CHUNK = 1 << 20
SPOOL = 32 << 20  # archive members up to this size are hashed and parsed in memory
TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality")
SHOWN = 3  # file names shown in an error message


@dataclass(frozen=True)
class LocalFile:
    name: str  # path inside the source (posix)
    size: int
    md5: str
    series_uid: str


@dataclass
class Series:
    uid: str
    number: str
    description: str
    modality: str
    files: list[LocalFile] = field(default_factory=list)

    @property
    def md5s(self) -> list[str]:
        return sorted(f.md5 for f in self.files)


@dataclass
class LocalSession:
    row: ImportRow
    study_uid: str
    series: dict[str, Series]  # by SeriesInstanceUID
    ignored: list[str] = field(default_factory=list)  # not DICOM, left out (ignore_unparsable)

    @property
    def files(self) -> list[LocalFile]:
        return [f for s in self.series.values() for f in s.files]

    @property
    def n_files(self) -> int:
        return sum(len(s.files) for s in self.series.values())

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


def skipped(name: str) -> bool:
    """Entries XNAT's importer ignores (and so do we): hidden files, DICOMDIR, macOS zip debris."""
    base = PurePosixPath(name).name
    return base.startswith(".") or base.upper() == "DICOMDIR" or "__MACOSX" in name


class Source:
    """A row's DICOM: a folder, zip or tar. ``members()`` lists (name, size) in a stable order;
    ``open(name)`` reads one (the import body streams them from here)."""

    def __init__(self, path: Path, what: str):
        self.path = path
        if path.is_dir():
            self.kind = "folder"
        elif path.is_file() and zipfile.is_zipfile(path):
            self.kind = "zip"
        elif path.is_file() and tarfile.is_tarfile(path):
            self.kind = "tar"
        elif path.exists():
            raise UserError(f"{what}: {path} is neither a folder nor a zip or tar file")
        else:
            raise UserError(f"{what}: {path}: no such folder or file")
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None

    def __enter__(self) -> Source:
        if self.kind == "zip":
            self._zip = zipfile.ZipFile(self.path)
        elif self.kind == "tar":
            self._tar = tarfile.open(self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        for archive in (self._zip, self._tar):
            if archive is not None:
                archive.close()

    def members(self) -> list[tuple[str, int]]:
        if self._zip is not None:
            found = [(i.filename, i.file_size) for i in self._zip.infolist() if not i.is_dir()]
        elif self._tar is not None:
            found = [(m.name, m.size) for m in self._tar.getmembers() if m.isfile()]
        else:
            found = [
                (p.relative_to(self.path).as_posix(), p.stat().st_size)
                for p in self.path.rglob("*")
                if p.is_file()
            ]
        return sorted((name, size) for name, size in found if not skipped(name))

    def open(self, name: str) -> IO[bytes]:
        if self._zip is not None:
            return self._zip.open(name)
        if self._tar is not None:
            fh = self._tar.extractfile(name)
            assert fh is not None
            return fh
        return open(self.path / name, "rb")  # the caller closes it

    def local_path(self, name: str) -> Path | None:
        return self.path / name if self.kind == "folder" else None


def _header(source: IO[bytes] | Path):
    """The few tags we need, or None for a file that is not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(source, stop_before_pixels=True, specific_tags=list(TAGS))
    except (InvalidDicomError, ValueError, EOFError, OSError, TypeError, KeyError):
        return None


def _text(ds, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def _read_member(source: Source, name: str, size: int):
    """(md5, header) of one member, read once: in memory up to ``SPOOL`` bytes (parsing from
    memory is several times faster than from a file object), else through a spool file."""
    with source.open(name) as fh:
        if size <= SPOOL:
            data = fh.read()
            return hashlib.md5(data).hexdigest(), _header(io.BytesIO(data))
        with tempfile.SpooledTemporaryFile(SPOOL) as spool:
            digest = hashlib.md5()
            while block := fh.read(CHUNK):
                digest.update(block)
                spool.write(block)
            spool.seek(0)
            return digest.hexdigest(), _header(spool)


def read_session(row: ImportRow, csv: str | Path) -> LocalSession:
    """The row's source read and checked; any problem is one UserError naming the row."""
    what = where(csv, row.row, "source")
    with Source(row.source, what) as source:
        members = source.members()
        if not members:
            raise UserError(f"{what}: {row.source} holds no files")
        unparsable: list[str] = []
        no_uid: list[str] = []
        series: dict[str, Series] = {}
        studies: Counter[str] = Counter()
        for name, size in members:
            md5, ds = _read_member(source, name, size)
            if ds is None:
                unparsable.append(name)
                continue
            study, uid = _text(ds, "StudyInstanceUID"), _text(ds, "SeriesInstanceUID")
            if not study or not uid:
                no_uid.append(name)
                continue
            studies[study] += 1
            entry = series.get(uid)
            if entry is None:
                entry = series[uid] = Series(
                    uid, _text(ds, "SeriesNumber"), _text(ds, "SeriesDescription"), _text(ds, "Modality")
                )
            entry.files.append(LocalFile(name, size, md5, uid))
    if unparsable and not row.ignore_unparsable:
        raise UserError(f"{what}: {len(unparsable)} file(s) are not DICOM: {_names(unparsable)}")
    if no_uid:
        raise UserError(f"{what}: {len(no_uid)} file(s) lack a Study/SeriesInstanceUID: {_names(no_uid)}")
    if not studies:
        raise UserError(f"{what}: {row.source} holds no DICOM files")
    if len(studies) != 1:
        listed = "; ".join(f"{uid} ({n} files)" for uid, n in studies.most_common())
        raise UserError(
            f"{what}: {len(studies)} studies in one session (one StudyInstanceUID per row): {listed}"
        )
    by_number: dict[str, list[str]] = {}
    for s in series.values():
        by_number.setdefault(s.number, []).append(s.uid)
    for number, uids in sorted(by_number.items()):
        if len(uids) > 1:
            raise UserError(
                f"{what}: SeriesNumber {number or '(none)'} holds {len(uids)} series "
                f"({', '.join(sorted(uids))}); XNAT would merge them into one scan"
            )
    return LocalSession(row, next(iter(studies)), series, unparsable)


def _names(names: Sequence[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def check_across_rows(sessions: Sequence[LocalSession], csv: str | Path) -> None:
    """One study in two rows would be imported twice under two labels."""
    seen: dict[str, LocalSession] = {}
    for s in sessions:
        other = seen.get(s.study_uid)
        if other is not None:
            raise UserError(
                f"{where(csv, s.row.row)}: study {s.study_uid} is also row {other.row.row}'s "
                f"({other.row.key}); one study, one session"
            )
        seen[s.study_uid] = s
