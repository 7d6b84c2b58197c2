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
import lzma
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
_ENCRYPTED = 0x1  # general purpose flag bit 0


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


class _EntryPaths:
    """Each zip entry's manifest key and its path's parts in the scan folder, as :func:`entry_key`
    and ``paths.safe_relparts`` give them (None for an entry :func:`skipped_entry` leaves out), for
    one zip's entries in turn. The usual scan zip names every file ``<...>/resources/<label>/files/``
    + a plain file name: once one entry has shown that prefix, an entry with it and a plain name
    needs one check instead of four (a scan has thousands)."""

    def __init__(self) -> None:
        self.prefix: str | None = None

    def __call__(self, name: str) -> tuple[str, list[str]] | None:
        if self.prefix is not None and name.startswith(self.prefix):
            rest = name[len(self.prefix) :]
            if paths.plain_name(rest):
                return rest, [rest]
        if skipped_entry(name):
            return None
        key = entry_key(name)
        parts = paths.safe_relparts(key)
        if self.prefix is None and paths.plain_name(key) and name.endswith(f"/{key}"):
            self.prefix = name[: -len(key)]  # what entry_key cut off: the same for the others
        return key, parts


def _after_header(header: bytes, entry: zipread.Central) -> int:
    """The length of the entry's local header (its name and extra field included; the extra field
    may differ from the directory's), read from ``header``, which starts with it."""
    if len(header) < _LOCAL_HEADER.size:
        raise EOFError(f"{entry.name!r} is cut off")
    signature, name_len, extra_len = _LOCAL_HEADER.unpack_from(header)
    if signature != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"no local header for {entry.name!r}")
    return _LOCAL_HEADER.size + name_len + extra_len


def _entry_bytes(fd: int, entry: zipread.Central) -> memoryview:
    """A DICOM-sized entry's bytes, length and CRC checked, read with its local header in one
    ``pread`` (a longer local extra field than the directory's: a second read). Unpacking is one
    small file created per entry: zipfile's per-entry seeks and reader objects were a third of its
    time, a second read per entry a tenth."""
    # the local header repeats the name and usually the directory's extra field: read them with the bytes
    guess = _LOCAL_HEADER.size + entry.name_len + entry.extra_len + HEADER_SLACK
    chunk = os.pread(fd, max(guess, _LOCAL_HEADER.size) + entry.compressed_size, entry.offset)
    start = _after_header(chunk, entry)
    raw = memoryview(chunk)[start : start + entry.compressed_size]
    if len(raw) != entry.compressed_size:  # a longer extra field than allowed for, or cut off
        raw = memoryview(os.pread(fd, entry.compressed_size, entry.offset + start))
        if len(raw) != entry.compressed_size:
            raise EOFError(f"{entry.name!r} is cut off")
    data = raw if entry.method == zipfile.ZIP_STORED else memoryview(zlib.decompress(raw, -15))
    if len(data) != entry.size or zlib.crc32(data) != entry.crc:
        raise zipfile.BadZipFile(f"Bad CRC-32 for file {entry.name!r}")
    return data


def _copy_by_zipfile(zip_path: Path, entry: zipread.Central, target: str) -> None:
    """An entry compressed another way than XNAT's (bzip2, LZMA) through ``zipfile``, as the
    download checked it."""
    info = zipfile.ZipInfo(entry.name)
    info.header_offset, info.compress_type, info.flag_bits = entry.offset, entry.method, entry.flags
    info.compress_size, info.file_size, info.CRC = entry.compressed_size, entry.size, entry.crc
    with zipfile.ZipFile(zip_path) as archive, archive.open(info) as src, open(target, "wb") as out:
        while True:
            try:
                piece = src.read(CHUNK)
            except (OSError, EOFError, ValueError, lzma.LZMAError) as exc:  # bz2: OSError, lzma: LZMAError
                raise zipfile.BadZipFile(f"{entry.name!r}: {exc}") from None
            if not piece:
                break
            out.write(piece)


def _copy_entry(fd: int, entry: zipread.Central, target: str) -> None:
    """A large entry into the file ``target`` piece by piece (bounded memory), CRC checked."""
    at = entry.offset + _after_header(os.pread(fd, _LOCAL_HEADER.size, entry.offset), entry)
    left = entry.compressed_size
    inflate = zlib.decompressobj(-15) if entry.method == zipfile.ZIP_DEFLATED else None
    crc = size = 0
    with open(target, "wb") as out:
        while left:
            piece = os.pread(fd, min(CHUNK, left), at)
            if not piece:
                raise EOFError(f"{entry.name!r} is cut off")
            at, left = at + len(piece), left - len(piece)
            data = inflate.decompress(piece) if inflate else piece
            crc, size = zlib.crc32(data, crc), size + len(data)
            out.write(data)
        if inflate:
            tail = inflate.flush()
            crc, size = zlib.crc32(tail, crc), size + len(tail)
            out.write(tail)
    if size != entry.size or crc != entry.crc:
        raise zipfile.BadZipFile(f"Bad CRC-32 for file {entry.name!r}")


def check_entries(zip_path: str | Path, expected: Mapping[str, tuple[int, str]]) -> list[str]:
    """Compare the zip's entries with ``expected`` (manifest path -> (size, md5)) in one read of the
    archive, extracting nothing; returns the problems ([] when the zip holds exactly those files).

    zipfile also checks each entry's CRC-32 as it reads it.
    """
    problems: list[str] = []
    seen: set[str] = set()
    try:
        with zipfile.ZipFile(zip_path) as archive:
            mapped = _EntryPaths()
            for info in archive.infolist():
                found = mapped(info.filename)
                if found is None:
                    continue
                key = found[0]
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
    mapped = _EntryPaths()
    for entry, data in archive.entries():
        try:
            found = mapped(entry.name)
        except ValueError as exc:
            checked.problems.append(f"unreadable zip: {exc}")
            return checked
        if found is None:
            continue
        key = found[0]
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
    listed = checked.directory
    if len(listed) != len(checked.layout):  # folder entries or hidden files: the layout has none
        listed = [item for item in listed if not skipped_entry(item[0])]
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
        _remove(unpacked)


def _remove(unpacked: Dicoms) -> None:
    """Delete an unpacked scan: the files it wrote by name (``rmtree`` would list the folder and
    check each entry first: a quarter of the deleting), then whatever is left."""
    for path in unpacked.files:
        with contextlib.suppress(OSError):  # gone already: rmtree deals with the rest
            os.unlink(path)
    shutil.rmtree(unpacked.folder, ignore_errors=True)


class _ScanZip:
    """A scan's zip, open, its central directory read once (what to unpack and how much)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "rb", buffering=0)  # noqa: SIM115 -- closed by __exit__
        try:
            listed = zipread.read_directory(self.file.fileno(), os.fstat(self.file.fileno()).st_size)
            if listed is None:  # ZIP64 end records, a comment, data before the zip: zipfile reads those
                listed = zipread.zipfile_directory(path)
            mapped = _EntryPaths()
            self.members = [  # (entry, its path's parts in the scan folder)
                (entry, found[1]) for entry in listed if (found := mapped(entry.name)) is not None
            ]
        except (zipfile.BadZipFile, EOFError, ValueError) as exc:
            self.file.close()
            raise _damaged(path, exc) from None
        except BaseException:
            self.file.close()
            raise
        self.size = sum(entry.size for entry, _ in self.members)

    def __enter__(self) -> _ScanZip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


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
            fd = scan.file.fileno()
            for entry, parts in scan.members:
                if len(parts) == 1:  # the usual flat scan folder: no path joining per file
                    target = f"{base}/{parts[0]}"
                else:
                    parent = "/".join((base, *parts[:-1]))
                    if parent not in made:
                        os.makedirs(parent, exist_ok=True)
                        made.add(parent)
                    target = f"{parent}/{parts[-1]}"
                if entry.flags & _ENCRYPTED:
                    raise zipfile.BadZipFile(f"{entry.name!r} is encrypted")
                if entry.method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):  # not XNAT's
                    _copy_by_zipfile(scan.path, entry, target)
                elif entry.compressed_size <= WHOLE_ENTRY_MAX:
                    _write_new(target, _entry_bytes(fd, entry))
                else:
                    _copy_entry(fd, entry, target)
                written.append(target)
    except (zipfile.BadZipFile, EOFError, ValueError, zlib.error, NotImplementedError) as exc:
        raise _damaged(zip_path, exc) from None
    return written
