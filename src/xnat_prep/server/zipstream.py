"""Archives in and out.

In: uploaded zip/tar(.gz) bodies, read member by member (``iter_members``).

Out: zip downloads laid out in advance (``zip_layout``): entries are STORED (DICOM barely
compresses, and deflating would make the server the bottleneck) and every file's size and CRC-32
are known from the database (computed while the upload was received), so the whole archive is a
list of small header byte strings and file ranges with an exact total length. The server then
answers with a Content-Length and copies file contents with sendfile: no buffering, no CRC pass,
memory use independent of the archive size. ZIP64 records are added where sizes or offsets need them.
"""

from __future__ import annotations

import re
import stat
import struct
import tarfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

CHUNK = 1 << 20
U32 = 0xFFFFFFFF
UTF8_NAMES = 0x0800


class NotAnArchive(Exception):
    """The upload is neither a zip nor a tar(.gz)."""


def iter_members(fh: IO[bytes], links: list[str] | None = None) -> Iterator[tuple[str, IO[bytes]]]:
    """(name, stream) of every regular file in a seekable zip or tar(.gz) file object.

    Symbolic links are not files: they are skipped, and their names added to ``links``.
    """
    fh.seek(0)
    links = [] if links is None else links
    if zipfile.is_zipfile(fh):
        fh.seek(0)
        with zipfile.ZipFile(fh) as zf:
            for info in zf.infolist():
                if stat.S_ISLNK(info.external_attr >> 16):
                    links.append(info.filename)
                elif not info.is_dir():
                    with zf.open(info) as stream:
                        yield info.filename, stream
        return
    fh.seek(0)
    try:
        tf = tarfile.open(fileobj=fh)  # noqa: SIM115 - closed by the with below; open errors differ
    except tarfile.TarError as exc:
        raise NotAnArchive("the upload is neither a zip nor a tar(.gz) archive") from exc
    with tf:
        for info in tf:
            if info.issym():
                links.append(info.name)
            stream = tf.extractfile(info) if info.isfile() else None
            if stream is not None:
                with stream:
                    yield info.name, stream


@dataclass
class ZipEntry:
    name: str
    path: Path
    size: int
    crc32: int | None  # None: computed here by reading the file (rows stored before CRCs were kept)


# A part of a response body: bytes, or (file, offset, count) to send from disk.
Part = bytes | tuple[Path, int, int]


def file_crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def _dos_time(path: Path) -> tuple[int, int]:
    # entry times are the files' modification times, so the same files give the same bytes;
    # zip cannot store dates before 1980
    t = time.localtime(max(path.stat().st_mtime, 315532800))
    return (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2), ((t.tm_year - 1980) << 9) | (
        t.tm_mon << 5
    ) | t.tm_mday


def zip_layout(entries: list[ZipEntry]) -> tuple[list[Part], int]:
    """The parts of a STORED zip of ``entries`` and its total length."""
    parts: list[Part] = []
    central: list[bytes] = []
    offset = 0
    for entry in entries:
        name = entry.name.encode()
        crc = entry.crc32 if entry.crc32 is not None else file_crc32(entry.path)
        dos_time, dos_date = _dos_time(entry.path)
        big = entry.size >= U32
        size32 = U32 if big else entry.size
        extra = struct.pack("<HHQQ", 1, 16, entry.size, entry.size) if big else b""
        version = 45 if big else 20
        local = struct.pack(
            "<IHHHHHIIIHH",
            0x04034B50,
            version,
            UTF8_NAMES,
            0,
            dos_time,
            dos_date,
            crc,
            size32,
            size32,
            len(name),
            len(extra),
        )
        parts += [local + name + extra, (entry.path, 0, entry.size)]
        zip64 = [entry.size, entry.size] if big else []
        if offset >= U32:
            zip64.append(offset)
        cextra = struct.pack(f"<HH{len(zip64)}Q", 1, 8 * len(zip64), *zip64) if zip64 else b""
        cversion = 45 if zip64 else 20
        central.append(
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                (3 << 8) | cversion,
                cversion,
                UTF8_NAMES,
                0,
                dos_time,
                dos_date,
                crc,
                size32,
                size32,
                len(name),
                len(cextra),
                0,
                0,
                0,
                0o100644 << 16,
                min(offset, U32),
            )
            + name
            + cextra
        )
        offset += len(local) + len(name) + len(extra) + entry.size
    directory = b"".join(central)
    count, cd_size, cd_offset = len(entries), len(directory), offset
    tail = b""
    if count >= 0xFFFF or cd_size >= U32 or cd_offset >= U32:
        tail = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, cd_size, cd_offset)
        tail += struct.pack("<IIQI", 0x07064B50, 0, cd_offset + cd_size, 1)
    tail += struct.pack(
        "<IHHHHIIH",
        0x06054B50,
        0,
        0,
        min(count, 0xFFFF),
        min(count, 0xFFFF),
        min(cd_size, U32),
        min(cd_offset, U32),
        0,
    )
    parts.append(directory + tail)
    return parts, offset + len(directory) + len(tail)


def sanitise(text: str) -> str:
    """XNAT's zip path cleaning of scan types: anything but letters and digits becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9]", "_", text)


def scan_zip_name(session: str, scan_id: str, scan_type: str, resource: str, path: str) -> str:
    """XNAT's zip layout: {session}/scans/{id}-{type}/resources/{label}/files/{path}."""
    return f"{session}/scans/{scan_id}-{sanitise(scan_type)}/resources/{resource}/files/{path}"
