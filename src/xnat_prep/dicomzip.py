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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from xnat_prep import paths
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


def _members(archive: zipfile.ZipFile) -> Iterator[tuple[zipfile.ZipInfo, str]]:
    for info in archive.infolist():
        base = info.filename.rsplit("/", 1)[-1]
        if info.is_dir() or base.startswith(".") or info.filename.startswith("__MACOSX/"):
            continue
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
