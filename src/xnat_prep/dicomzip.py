"""``dicom.store: zip``: one verified zip per scan instead of one file per DICOM instance.

A cluster's shared filesystem pays per file (metadata servers, inode quotas of ~1 M on scratch),
and a study has hundreds of thousands of DICOM files. In zip mode the download keeps the scan's
zip as XNAT sent it (entries STORED: DICOM barely compresses), after checking every entry's size
and md5 against the manifest without extracting anything; conversion unpacks it into node-local
temporary space (``$TMPDIR``), runs dcm2niix there and writes only the NIfTI back.

Entry names map to the scan folder's relative paths exactly as the files mode writes them
(:func:`entry_key` then ``paths.safe_relpath``), so dcm2niix sees the same names in both modes and
writes the same NIfTI.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from xnat_prep import paths, zipread
from xnat_prep.errors import UserError

log = logging.getLogger(__name__)

STORES = ("files", "zip")
LOCAL_TMP_ENV = "XNAT_PREP_LOCAL_TMP"  # dicom.local_tmp, unexpanded (the workflow exports it)
CHUNK = 1 << 20
_AFTER_FILES = re.compile(r"(?:^|/)resources/[^/]+/files/(.+)$")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class LocalTempError(UserError):
    """Node-local temporary space missing, unwritable or full: the machine, not the data. The job
    fails with the folder named, nothing is recorded, and a rerun (or Snakemake's retry) converts."""

    exit_code = 1


def is_zip(source: str | Path) -> bool:
    """Whether ``source`` is a scan's zip (zip mode) rather than its folder."""
    return str(source).endswith(".zip") and not Path(source).is_dir()


def entry_key(name: str) -> str:
    """The manifest path of a zip entry: the text after ``resources/<label>/files/``.

    Raises ValueError for a name that is absolute or climbs out (``..``): such an archive is not
    trustworthy even though nothing is written under an entry's own name.
    """
    paths.safe_relpath(name)
    match = _AFTER_FILES.search(name)
    return match.group(1) if match else name.partition("/files/")[2] or name


def _skipped(name: str) -> bool:
    """A folder, a hidden file or macOS metadata: not a DICOM file of the scan."""
    return name.endswith("/") or name.rsplit("/", 1)[-1].startswith(".") or name.startswith("__MACOSX/")


def _members(archive: zipfile.ZipFile) -> Iterator[tuple[zipfile.ZipInfo, str]]:
    for info in archive.infolist():
        if not _skipped(info.filename):
            yield info, entry_key(info.filename)


def check_entries(zip_path: str | Path, expected: Mapping[str, tuple[int, str]]) -> list[str]:
    """Compare the zip's entries with ``expected`` (manifest path -> (size, md5)) in one read of the
    archive, extracting nothing; returns the problems ([] when the zip holds exactly those files).

    zipfile also checks each entry's CRC-32 as it reads it.
    """
    problems: list[str] = []
    seen: set[str] = set()
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for info, key in _members(archive):
                if key not in expected:
                    problems.append(f"{key}: in the zip, not in the manifest")
                    continue
                if key in seen:
                    problems.append(f"{key}: twice in the zip")
                    continue
                seen.add(key)
                size, md5 = expected[key]
                if info.file_size != size:
                    problems.append(f"{key}: {info.file_size} bytes, manifest says {size}")
                    continue
                digest = hashlib.md5()
                with archive.open(info) as fh:
                    while chunk := fh.read(CHUNK):
                        digest.update(chunk)
                if digest.hexdigest() != md5:
                    problems.append(f"{key}: md5 {digest.hexdigest()}, manifest says {md5}")
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:  # ValueError: unsafe entry name
        problems.append(f"unreadable zip: {exc}")
        return problems
    problems += [f"{key}: in the manifest, not in the zip" for key in sorted(set(expected) - seen)]
    return problems


def check_stream(chunks: Iterable[bytes], expected: Mapping[str, tuple[int, str]]) -> Checked:
    """:func:`check_entries` on a zip as it arrives (the download writes the same chunks to its
    file meanwhile): each entry's size and md5 against ``expected``, read once. Also returns where
    each entry was, for :func:`same_directory`. Raises ``zipread.NotStreamable`` for a zip that
    must be checked from its file, ``zipread.StreamError`` for one that is cut off or malformed."""
    checked = Checked()
    seen: set[str] = set()
    for entry, data in zipread.StreamedZip(chunks).entries():
        if _skipped(entry.name):
            continue
        try:
            key = entry_key(entry.name)
        except ValueError as exc:
            checked.problems.append(f"unreadable zip: {exc}")
            return checked
        digest = hashlib.md5()
        size = 0
        for piece in data:
            digest.update(piece)
            size += len(piece)
        checked.layout.append((entry.name, size, entry.offset))
        if key not in expected:
            checked.problems.append(f"{key}: in the zip, not in the manifest")
        elif key in seen:
            checked.problems.append(f"{key}: twice in the zip")
        elif size != expected[key][0]:
            checked.problems.append(f"{key}: {size} bytes, manifest says {expected[key][0]}")
        elif digest.hexdigest() != expected[key][1]:
            checked.problems.append(f"{key}: md5 {digest.hexdigest()}, manifest says {expected[key][1]}")
        seen.add(key)
    checked.problems += [f"{key}: in the manifest, not in the zip" for key in sorted(set(expected) - seen)]
    return checked


@dataclass
class Checked:
    """What :func:`check_stream` found: the problems, and (name, size, offset) of each entry read."""

    problems: list[str] = field(default_factory=list)
    layout: list[tuple[str, int, int]] = field(default_factory=list)


def same_directory(zip_path: str | Path, layout: list[tuple[str, int, int]]) -> str | None:
    """None if the zip's central directory lists exactly the entries :func:`check_stream` read (name,
    size, offset); else the difference. Conversion reads entries through the directory: a zip whose
    directory points elsewhere than its entries would convert bytes nobody checked."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            listed = [
                (i.filename, i.file_size, i.header_offset)
                for i in archive.infolist()
                if not _skipped(i.filename)
            ]
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"unreadable zip: {exc}"
    if listed != layout:
        return "unreadable zip: its central directory does not list the entries it holds"
    return None


def local_tmp_root(setting: str | None = None) -> Path:
    """Where to unpack on this node: ``setting`` (``dicom.local_tmp``, ``$VARS`` expanded here),
    else ``XNAT_PREP_LOCAL_TMP`` (the workflow exports the config's value), else ``$TMPDIR``,
    else /tmp."""
    raw = setting or os.environ.get(LOCAL_TMP_ENV) or os.environ.get("TMPDIR") or "/tmp"  # noqa: S108
    return Path(os.path.expanduser(os.path.expandvars(raw)))


@contextmanager
def dicom_folder(source: str | Path, local_tmp: str | None = None) -> Iterator[Path]:
    """The scan's DICOM as a folder: ``source`` itself, or a zip unpacked into a fresh folder in
    node-local temporary space (deleted on leaving, whatever happens).

    Missing, unwritable or full temporary space raises :class:`LocalTempError` naming the folder.
    """
    source = Path(source)
    if not is_zip(source):
        yield source
        return
    root = local_tmp_root(local_tmp)
    where = f"node-local temp {root} (dicom.local_tmp / $TMPDIR)"
    if not root.is_dir():
        raise LocalTempError(f"{where}: no such folder; cannot unpack {source}")
    try:
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f"xnat-prep-{source.stem}-"))
    except OSError as exc:
        raise LocalTempError(f"{where}: {exc.strerror}; cannot unpack {source}") from None
    try:
        try:
            unpack(source, tmp)
        except OSError as exc:
            if exc.errno in _NO_SPACE or exc.errno in (errno.EACCES, errno.EROFS):
                raise LocalTempError(f"{where}: {exc.strerror} unpacking {source}") from None
            raise
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def unpack(zip_path: str | Path, folder: Path) -> int:
    """Write the zip's files into ``folder`` under their manifest paths (as the files mode lays them
    out); returns how many. A damaged archive (bad CRC, cut off) is a UserError naming it."""
    n = 0
    made: set[Path] = set()
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for info, key in _members(archive):
                target = folder / paths.safe_relpath(key)
                if target.parent not in made:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    made.add(target.parent)
                with archive.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                n += 1
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise UserError(
            f"{zip_path}: damaged zip ({exc}); delete it and its receipt (.json) and run again to fetch it"
        ) from None
    return n
