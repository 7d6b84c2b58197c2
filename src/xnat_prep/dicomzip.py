"""``dicom.store: zip``: one verified zip per scan instead of one file per DICOM instance.

A cluster's shared filesystem pays per file (metadata servers, inode quotas of ~1 M on scratch),
and a study has hundreds of thousands of DICOM files. In zip mode the download keeps the scan's
zip as XNAT sent it (entries STORED: DICOM barely compresses), after checking every entry's size
and md5 against the manifest without extracting anything; conversion unpacks it into node-local
temporary space, runs dcm2niix there and writes only the NIfTI back. That space is RAM (``/dev/shm``)
for a scan up to ``dicom.ram_tmp_mb``, else ``dicom.local_tmp`` (``$TMPDIR``): creating and then
deleting thousands of small files is what unpacking costs on a disk, most of all on one that
discards deleted blocks at once (docs/slurm.md has the measurement).

Entry names map to the scan folder's relative paths exactly as the files mode writes them
(:func:`entry_key` then ``paths.safe_relpath``), so dcm2niix sees the same names in both modes and
writes the same NIfTI.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from xnat_prep import paths, zipread
from xnat_prep.errors import UserError

log = logging.getLogger(__name__)

STORES = ("files", "zip")
LOCAL_TMP_ENV = "XNAT_PREP_LOCAL_TMP"  # dicom.local_tmp, unexpanded (the workflow exports it)
RAM_TMP_MB_ENV = "XNAT_PREP_RAM_TMP_MB"  # dicom.ram_tmp_mb (the workflow exports it)
RAM_TMP_MB = 1024  # its default: with dcm2niix's own copy of the series, within a 4 GB job
RAM_TMP = Path("/dev/shm")  # noqa: S108 -- node-local RAM (tmpfs) on Linux; tests point it elsewhere
RAM_RESERVE = 256 << 20  # left free in RAM_TMP: other jobs on the node use it too
_TMP_PREFIX = "xnat-prep-"
CHUNK = 1 << 20
WHOLE_ENTRY_MAX = 64 << 20  # entries up to this are read in one piece when unpacking
HEADER_SLACK = 64  # bytes read beyond the expected local header: its extra field may be longer
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # a zip entry's local header: signature .. name and extra lengths
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
    paths.safe_relparts(name)  # the check only: no path object per entry
    match = _AFTER_FILES.search(name)
    return match.group(1) if match else name.partition("/files/")[2] or name


def skipped_entry(name: str) -> bool:
    """A zip entry that is a folder, a hidden file or macOS metadata: not a DICOM file of the scan."""
    return name.endswith("/") or name.rsplit("/", 1)[-1].startswith(".") or name.startswith("__MACOSX/")


def _entry_bytes(fd: int, info: zipfile.ZipInfo) -> memoryview | None:
    """A DICOM-sized entry's bytes, length and CRC checked, read with its local header in one
    ``pread``; None for an entry to read through ``zipfile`` (large, encrypted, or compressed
    another way). Unpacking is one small file created per entry: zipfile's per-entry seeks and
    reader objects were a third of its time, a second read per entry a tenth."""
    if (
        info.flag_bits & 0x1
        or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
        or info.compress_size > WHOLE_ENTRY_MAX
    ):
        return None
    # the local header repeats the name (2 bytes a character: room for UTF-8 without encoding it)
    # and usually the extra field: read them with the bytes
    guess = _LOCAL_HEADER.size + 2 * len(info.filename) + len(info.extra) + HEADER_SLACK
    chunk = os.pread(fd, max(guess, _LOCAL_HEADER.size) + info.compress_size, info.header_offset)
    if len(chunk) < _LOCAL_HEADER.size:
        raise EOFError(f"{info.filename!r} is cut off")
    signature, name_len, extra_len = _LOCAL_HEADER.unpack_from(chunk)
    if signature != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"no local header for {info.filename!r}")
    start = _LOCAL_HEADER.size + name_len + extra_len
    raw = memoryview(chunk)[start : start + info.compress_size]
    if len(raw) != info.compress_size:  # a longer extra field than allowed for, or cut off
        raw = memoryview(os.pread(fd, info.compress_size, info.header_offset + start))
        if len(raw) != info.compress_size:
            raise EOFError(f"{info.filename!r} is cut off")
    data = raw if info.compress_type == zipfile.ZIP_STORED else memoryview(zlib.decompress(raw, -15))
    if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
        raise zipfile.BadZipFile(f"Bad CRC-32 for file {info.filename!r}")
    return data


def _members(archive: zipfile.ZipFile) -> Iterator[tuple[zipfile.ZipInfo, str]]:
    for info in archive.infolist():
        if not skipped_entry(info.filename):
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
    each entry was and what the central directory lists, for :func:`directory_problem`. Raises
    ``zipread.NotStreamable`` for a zip that must be checked from its file,
    ``zipread.StreamError`` for one that is cut off or malformed."""
    checked = Checked()
    seen: set[str] = set()
    archive = zipread.StreamedZip(chunks)
    for entry, data in archive.entries():
        if skipped_entry(entry.name):
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
        want = expected.get(key)
        if want is None:
            checked.problems.append(f"{key}: in the zip, not in the manifest")
        elif key in seen:
            checked.problems.append(f"{key}: twice in the zip")
        elif size != want[0]:
            checked.problems.append(f"{key}: {size} bytes, manifest says {want[0]}")
        elif (md5 := digest.hexdigest()) != want[1]:
            checked.problems.append(f"{key}: md5 {md5}, manifest says {want[1]}")
        seen.add(key)
    checked.directory = archive.directory()
    checked.problems += [f"{key}: in the manifest, not in the zip" for key in sorted(set(expected) - seen)]
    return checked


@dataclass
class Checked:
    """What :func:`check_stream` found: the problems, (name, size, offset) of each entry read, and
    what the central directory lists (None: not read from the stream, see ``zipread``)."""

    problems: list[str] = field(default_factory=list)
    layout: list[tuple[str, int, int]] = field(default_factory=list)
    directory: list[tuple[str, int, int]] | None = None


_MOVED = "unreadable zip: its central directory does not list the entries it holds"


def directory_problem(zip_path: str | Path, checked: Checked) -> str | None:
    """None if the zip's central directory lists exactly the entries :func:`check_stream` read
    (name, size, offset); else the difference. Conversion reads entries through the directory: a
    zip whose directory points elsewhere than its entries would convert bytes nobody checked.
    The directory as it streamed past, or read from ``zip_path`` when the stream's was not one
    ``zipread`` vouches for."""
    if checked.directory is None:
        return same_directory(zip_path, checked.layout)
    listed = [item for item in checked.directory if not skipped_entry(item[0])]
    return None if listed == checked.layout else _MOVED


def same_directory(zip_path: str | Path, layout: list[tuple[str, int, int]]) -> str | None:
    """:func:`directory_problem`, reading the directory from ``zip_path`` with ``zipfile``."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            listed = [
                (i.filename, i.file_size, i.header_offset)
                for i in archive.infolist()
                if not skipped_entry(i.filename)
            ]
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"unreadable zip: {exc}"
    return None if listed == layout else _MOVED


def local_tmp_root(setting: str | None = None) -> Path:
    """Where to unpack on this node: ``setting`` (``dicom.local_tmp``, ``$VARS`` expanded here),
    else ``XNAT_PREP_LOCAL_TMP`` (the workflow exports the config's value), else ``$TMPDIR``,
    else /tmp."""
    raw = setting or os.environ.get(LOCAL_TMP_ENV) or os.environ.get("TMPDIR") or "/tmp"  # noqa: S108
    return Path(os.path.expanduser(os.path.expandvars(raw)))


def ram_tmp_limit(setting: int | None = None) -> int:
    """The largest scan (bytes unpacked) to unpack in RAM: ``setting`` (``dicom.ram_tmp_mb``), else
    ``XNAT_PREP_RAM_TMP_MB`` (the workflow exports the config's value), else 1024 MB; 0 = never."""
    if setting is None:
        raw = os.environ.get(RAM_TMP_MB_ENV, "")
        setting = int(raw) if raw.strip().isdigit() else RAM_TMP_MB
    return max(setting, 0) << 20


def unpack_root(size: int, local_tmp: str | None = None, ram_tmp_mb: int | None = None) -> Path:
    """Where a scan's zip of ``size`` bytes unpacked goes: RAM (``/dev/shm``) if the scan is at most
    ``ram_tmp_mb`` and RAM has room for it and a reserve, else :func:`local_tmp_root`."""
    if size <= ram_tmp_limit(ram_tmp_mb) and os.access(RAM_TMP, os.W_OK | os.X_OK):
        fs = os.statvfs(RAM_TMP)
        if fs.f_bavail * fs.f_frsize >= size + RAM_RESERVE:
            return RAM_TMP
    return local_tmp_root(local_tmp)


def _owner_tag() -> str:
    """This process's tag in its temp folders' names: host and pid, so a later job on the same node
    can tell a folder whose process is gone (killed outright: ``scancel``, OOM) from a live one,
    also when the folder is on a filesystem other nodes share."""
    return f"{_host()}.{os.getpid()}"


def _host() -> str:
    return paths.safe_component(os.uname().nodename).replace("-", "_")  # "-" ends the tag


def sweep_stale(root: Path) -> int:
    """Delete the ``xnat-prep-*`` unpack folders in ``root`` left by processes of this host that no
    longer run (in RAM they would hold memory until the node reboots); returns how many."""
    host = _host()
    n = 0
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(_TMP_PREFIX):
            continue
        tag_host, _, pid = entry.name[len(_TMP_PREFIX) :].split("-", 1)[0].rpartition(".")
        if tag_host != host or not pid.isdigit():
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
            log.info("deleted %s, left by a process that no longer runs", entry.path)
            n += 1
        except OSError:
            continue  # alive under another user (PermissionError), or gone meanwhile
    return n


@dataclass(frozen=True)
class Dicoms:
    """A scan's DICOM as dcm2niix reads them: the folder and its files' paths, sorted (strings: a
    scan has thousands, and a ``Path`` each cost more than listing them)."""

    folder: Path
    files: list[str]


def folder_files(folder: Path) -> list[str]:
    """The files under ``folder`` (hidden ones left out), sorted. ``os.walk`` reads the file type
    from the directory entries: no ``stat`` per file (an fMRI scan has thousands)."""
    return sorted(
        os.path.join(top, name)
        for top, _, names in os.walk(folder)
        for name in names
        if not name.startswith(".")
    )


@contextmanager
def dicoms(
    source: str | Path, local_tmp: str | None = None, ram_tmp_mb: int | None = None
) -> Iterator[Dicoms]:
    """The scan's DICOM: ``source`` itself if it is a folder, or its zip unpacked into a fresh folder
    in node-local temporary space (:func:`unpack_root`; deleted on leaving, whatever happens).

    Missing, unwritable or full temporary space raises :class:`LocalTempError` naming the folder.
    RAM that fills up meanwhile (other jobs on the node unpack too) is not an error: the scan is
    unpacked in ``local_tmp`` instead.
    """
    source = Path(source)
    if not is_zip(source):
        yield Dicoms(source, folder_files(source))
        return
    with _ScanZip(source) as scan:
        unpacked = _unpack_in_temp(scan, local_tmp, ram_tmp_mb)
    try:
        yield unpacked
    finally:
        shutil.rmtree(unpacked.folder, ignore_errors=True)


class _ScanZip:
    """A scan's zip, its central directory read once (what to unpack and how much)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.archive = zipfile.ZipFile(path)
            try:  # (entry, its path's parts in the scan folder)
                self.members = [(info, paths.safe_relparts(key)) for info, key in _members(self.archive)]
            except BaseException:
                self.archive.close()
                raise
        except (zipfile.BadZipFile, EOFError, ValueError) as exc:
            raise _damaged(path, exc) from None
        self.size = sum(info.file_size for info, _ in self.members)

    def __enter__(self) -> _ScanZip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.archive.close()


def _damaged(zip_path: str | Path, exc: BaseException) -> UserError:
    return UserError(
        f"{zip_path}: damaged zip ({exc}); delete it and its receipt (.json) and run again to fetch it"
    )


def _unpack_in_temp(scan: _ScanZip, local_tmp: str | None, ram_tmp_mb: int | None) -> Dicoms:
    """:func:`dicoms` of a zip: unpacked in RAM or ``local_tmp`` (RAM full meanwhile: ``local_tmp``)."""
    root = unpack_root(scan.size, local_tmp, ram_tmp_mb)
    try:
        return _unpacked(scan, root)
    except LocalTempError as exc:
        if root != RAM_TMP:
            raise
        log.warning("%s; unpacking it in dicom.local_tmp instead", exc)
        return _unpacked(scan, local_tmp_root(local_tmp))


def _unpacked(scan: _ScanZip, root: Path) -> Dicoms:
    """``scan`` unpacked into a fresh folder in ``root``; a failure leaves nothing behind."""
    source = scan.path
    setting = "RAM, dicom.ram_tmp_mb" if root == RAM_TMP else "dicom.local_tmp / $TMPDIR"
    where = f"node-local temp {root} ({setting})"
    if not root.is_dir():
        raise LocalTempError(f"{where}: no such folder; cannot unpack {source}")
    sweep_stale(root)
    try:
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f"{_TMP_PREFIX}{_owner_tag()}-{source.stem}-"))
    except OSError as exc:
        raise LocalTempError(f"{where}: {exc.strerror}; cannot unpack {source}") from None
    try:
        written = unpack(source, tmp, opened=scan)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in (*_NO_SPACE, errno.EACCES, errno.EROFS):
            raise LocalTempError(f"{where}: {exc.strerror} unpacking {source}") from None
        raise
    log.info("%s: %d files unpacked in %s (%s)", source.name, len(written), tmp, setting)
    return Dicoms(tmp, sorted(written))


def _write_new(path: str, data: bytes | memoryview) -> None:
    """``data`` into the file ``path``, without a Python file object: unpacking makes one file per
    DICOM instance (tens of thousands a session), and the object's setup costs as much as the
    write's system calls."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def unpack(zip_path: str | Path, folder: Path, *, opened: _ScanZip | None = None) -> list[str]:
    """Write the zip's files into ``folder`` under their manifest paths (as the files mode lays them
    out); returns their paths. A damaged archive (bad CRC, cut off) is a UserError naming it.
    ``opened``: the zip with its directory read already."""
    written: list[str] = []
    base = os.fspath(folder)
    made = {base}
    try:
        os.makedirs(base, exist_ok=True)
        with contextlib.ExitStack() as stack:
            scan = opened or stack.enter_context(_ScanZip(Path(zip_path)))
            fd = stack.enter_context(open(zip_path, "rb", buffering=0)).fileno()
            for info, parts in scan.members:
                if len(parts) == 1:  # the usual flat scan folder: no path joining per file
                    target = f"{base}/{parts[0]}"
                else:
                    parent = "/".join((base, *parts[:-1]))
                    if parent not in made:
                        os.makedirs(parent, exist_ok=True)
                        made.add(parent)
                    target = f"{parent}/{parts[-1]}"
                data = _entry_bytes(fd, info)
                if data is None:
                    with scan.archive.open(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
                else:
                    _write_new(target, data)
                written.append(target)
    except (zipfile.BadZipFile, EOFError, ValueError, zlib.error) as exc:
        raise _damaged(zip_path, exc) from None
    return written
