"""Reading a zip as it arrives: entry by entry, from the response's chunks, without a file to seek in.

A scan's zip used to be written to disk, read back and unpacked (files mode) or read back to check
its entries (zip mode): three passes over every byte, and the connection idle while the last two
ran. :class:`StreamedZip` reads the local file headers in order instead, so each entry's bytes go
straight to their file and digest as they come off the socket.

It reads what XNAT sends and what the bundled server sends: STORED entries whose sizes are in the
local header, and DEFLATED entries with or without a data descriptor (``java.util.zip``'s
``ZipOutputStream`` writes those: the deflate stream ends itself, the descriptor follows), ZIP64
sizes included. A STORED entry with a data descriptor (sizes unknown until after the data) cannot
be delimited without the central directory: :class:`NotStreamable`, and the caller falls back to
the file on disk. Anything else malformed is :class:`StreamError`.

The central directory is read by :func:`parse_directory`, from the stream's end or from a kept
zip (:func:`read_directory`, what conversion unpacks by), one ``unpack_from`` per entry;
``zipfile`` reads the directories it does not vouch for (:func:`zipfile_directory`).
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, NamedTuple

LOCAL = b"PK\x03\x04"
CENTRAL = b"PK\x01\x02"
END = b"PK\x05\x06"
END64 = b"PK\x06\x06"
DESCRIPTOR = b"PK\x07\x08"
STORED, DEFLATED = 0, 8
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL_HEADER = struct.Struct("<4s4B4HL2L5H2L")
_END = struct.Struct("<4s4H2LH")
_U32 = 0xFFFFFFFF
_DESCRIPTOR_FLAG = 0x08
_ENCRYPTED_FLAG = 0x01
_UTF8_FLAG = 0x800
_PIECE = 1 << 20


class StreamError(Exception):
    """Not a well-formed zip (or cut off): the body is not trustworthy, fetch it again."""


class NotStreamable(Exception):
    """A well-formed zip this reader cannot delimit entry by entry; read it from a file instead."""


@dataclass
class Entry:
    """One entry's local header: its name, method, and sizes when the header has them."""

    name: str
    method: int
    compressed_size: int | None  # None: given by a data descriptor after the data
    size: int | None
    offset: int  # of the local header in the archive

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")


class StreamedZip:
    """``entries()`` yields (Entry, data pieces) in archive order; consume (or skip) each entry's
    pieces before asking for the next. ``offset`` counts the archive bytes read so far.

    The pieces are memoryviews into the chunks as they came (no copy: a DICOM entry is often
    smaller than a chunk, and copying every byte into and out of a buffer cost more than the md5
    it feeds); only a header that straddles two chunks is joined into new bytes."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._cur = b""  # the chunk being read (joined with the next only for a header across them)
        self._pos = 0  # bytes of _cur already consumed
        self.offset = 0

    # -- bytes ---------------------------------------------------------------------------------

    def _ensure(self, n: int) -> bool:
        """At least ``n`` unread bytes in ``_cur``; False at the end of the body."""
        while len(self._cur) - self._pos < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                return False
            self._cur = self._cur[self._pos :] + bytes(chunk)
            self._pos = 0
        return True

    def _peek(self, n: int) -> bytes:
        return self._cur[self._pos : self._pos + n]

    def _take(self, n: int) -> bytes:
        if not self._ensure(n):
            raise StreamError(f"cut off: {self.offset + len(self._cur) - self._pos} bytes, wanted {n} more")
        out = self._cur[self._pos : self._pos + n]
        self._pos += n
        self.offset += n
        return out

    def _pieces(self, n: int) -> Iterator[memoryview | bytes]:
        """The next ``n`` bytes, in pieces as they arrive (at most _PIECE each)."""
        while n:
            if self._pos == len(self._cur) and not self._ensure(1):
                raise StreamError(f"cut off inside an entry: {n} bytes missing")
            take = min(n, len(self._cur) - self._pos, _PIECE)
            piece = memoryview(self._cur)[self._pos : self._pos + take]
            self._pos += take
            self.offset += take
            n -= take
            yield piece

    def _unread(self, data: bytes) -> None:
        """Give back bytes read past the end of a deflate stream."""
        if data:
            self._cur = bytes(data) + self._cur[self._pos :]
            self._pos = 0
            self.offset -= len(data)

    # -- entries -------------------------------------------------------------------------------

    def entries(self) -> Iterator[tuple[Entry, Iterator[memoryview | bytes]]]:
        while True:
            if not self._ensure(4):
                raise StreamError("cut off: no central directory")
            signature = self._peek(4)
            if signature != LOCAL:
                if signature in (CENTRAL, END, END64):
                    return
                raise StreamError(f"no entry header at byte {self.offset}")
            entry, zip64 = self._header()
            n = entry.compressed_size
            if entry.method == STORED and n is not None and len(self._cur) - self._pos >= n:
                # the usual DICOM entry, all in the chunk at hand: one piece, no generators
                data: Iterator[memoryview | bytes] = iter((memoryview(self._cur)[self._pos : self._pos + n],))
                self._pos += n
                self.offset += n
            else:
                data = self._data(entry, zip64)
            yield entry, data
            for _ in data:  # whatever the caller did not read
                pass

    def drain(self) -> None:
        """Read the rest of the body (the central directory): the connection can be reused."""
        self.offset += len(self._cur) - self._pos
        self._cur, self._pos = b"", 0
        for chunk in self._chunks:
            self.offset += len(chunk)

    def directory(self) -> list[tuple[str, int, int]] | None:
        """After :meth:`entries`: read the rest of the body and return what its central directory
        lists, (name, size, local header offset) per entry in its order; None for a directory this
        reader does not vouch for (:func:`parse_directory`: ZIP64 end records, an archive comment,
        an end record that places the directory elsewhere than where it was read): check that one
        from the file.

        What is returned is what ``zipfile`` (and so conversion) reads from the same archive:
        the directory starts where the entries end and its end record says so, so ``zipfile``
        shifts no offset."""
        start = self.offset
        rest = [self._cur[self._pos :], *self._chunks]
        self._cur, self._pos = b"", 0
        data = b"".join(rest)
        self.offset += len(data)
        listed = parse_directory(data, start)
        return None if listed is None else [(c.name, c.size, c.offset) for c in listed]

    def _header(self) -> tuple[Entry, bool]:
        offset = self.offset
        if not self._ensure(_LOCAL_HEADER.size):
            raise StreamError(f"cut off: a local header at byte {offset}")
        (_, _, flags, method, _, _, _, csize, size, name_len, extra_len) = _LOCAL_HEADER.unpack_from(
            self._cur, self._pos
        )
        variable = self._take(_LOCAL_HEADER.size + name_len + extra_len)[_LOCAL_HEADER.size :]
        name = variable[:name_len].decode("utf-8" if flags & _UTF8_FLAG else "cp437")
        extra = variable[name_len:]
        if flags & _ENCRYPTED_FLAG:
            raise NotStreamable(f"{name}: encrypted")
        if method not in (STORED, DEFLATED):
            raise NotStreamable(f"{name}: compression method {method}")
        zip64 = False
        if extra:  # a ZIP64 field (0x0001) holds the sizes that did not fit
            zip64, size, csize, _ = _zip64_sizes(extra, size, csize, 0)
        if flags & _DESCRIPTOR_FLAG:
            if method == STORED:
                raise NotStreamable(f"{name}: stored with a data descriptor")
            return Entry(name, method, None, None, offset), zip64
        return Entry(name, method, csize, size, offset), zip64

    def _data(self, entry: Entry, zip64: bool) -> Iterator[memoryview | bytes]:
        if entry.compressed_size is not None:
            pieces = self._pieces(entry.compressed_size)
            if entry.method == STORED:
                yield from pieces
                return
            inflate = zlib.decompressobj(-15)
            try:
                for piece in pieces:
                    yield inflate.decompress(piece)
                tail = inflate.flush()
            except zlib.error as exc:
                raise StreamError(f"{entry.name}: {exc}") from None
            if not inflate.eof:
                raise StreamError(f"{entry.name}: deflate stream incomplete")
            if tail:
                yield tail
            return
        # DEFLATED with a data descriptor: the deflate stream says where it ends
        inflate = zlib.decompressobj(-15)
        csize = size = 0
        while not inflate.eof:
            if self._pos == len(self._cur) and not self._ensure(1):
                raise StreamError(f"{entry.name}: cut off inside the entry")
            piece = self._take(min(len(self._cur) - self._pos, _PIECE))
            try:
                out = inflate.decompress(piece)
            except zlib.error as exc:
                raise StreamError(f"{entry.name}: {exc}") from None
            csize += len(piece) - len(inflate.unused_data)
            size += len(out)
            if out:
                yield out
        self._unread(inflate.unused_data)
        self._descriptor(entry, csize, size, zip64)
        entry.compressed_size, entry.size = csize, size

    def _descriptor(self, entry: Entry, csize: int, size: int, zip64: bool) -> None:
        """Skip the data descriptor after a deflated entry, checking its sizes."""
        if not self._ensure(4):
            raise StreamError(f"{entry.name}: cut off before its data descriptor")
        if self._peek(4) == DESCRIPTOR:
            self._take(4)
        self._take(4)  # CRC-32: the caller checks each entry's md5 against the manifest instead
        wide = zip64 or csize >= _U32 or size >= _U32
        fmt = "<QQ" if wide else "<II"
        got = struct.unpack(fmt, self._take(struct.calcsize(fmt)))
        if got != (csize, size):
            raise StreamError(f"{entry.name}: data descriptor says {got}, the data was {(csize, size)}")


class Central(NamedTuple):
    """One entry as the central directory lists it: what reading it from the file takes."""

    name: str
    flags: int
    method: int
    crc: int
    compressed_size: int
    size: int
    offset: int  # of the entry's local header in the archive
    name_len: int  # bytes of the name, which the local header repeats
    extra_len: int


def parse_directory(data: bytes, start: int) -> list[Central] | None:
    """The entries of a central directory that starts at byte ``start`` of its archive, ``data``
    being exactly that directory and the end record after it; None for anything else, which
    ``zipfile`` reads instead: ZIP64 end records (past 65,535 entries or 4 GB), an archive comment,
    more than one disk, or an end record whose directory size, place or count differs from what
    ``data`` holds. One ``unpack_from`` per entry: a scan has thousands, and ``zipfile`` builds a
    ``ZipInfo`` object for each."""
    end = len(data) - _END.size
    if end < 0 or data[end : end + 4] != END:
        return None
    listed: list[Central] = []
    unpack = _CENTRAL_HEADER.unpack_from
    pos = 0
    while pos < end and data[pos : pos + 4] == CENTRAL:
        at = pos + _CENTRAL_HEADER.size
        if at > end:
            return None
        fields = unpack(data, pos)
        flags, method, crc, csize, size, name_len, extra_len, comment_len = (*fields[5:7], *fields[9:15])
        offset = fields[18]
        pos = at + name_len + extra_len + comment_len
        if pos > end:
            return None
        name = data[at : at + name_len].decode("utf-8" if flags & _UTF8_FLAG else "cp437")
        if _U32 in (size, csize, offset):
            extra = data[at + name_len : at + name_len + extra_len]
            _, size, csize, offset = _zip64_sizes(extra, size, csize, offset)
        listed.append(Central(name, flags, method, crc, csize, size, offset, name_len, extra_len))
    (_, disk, cd_disk, n_here, n_all, cd_size, cd_offset, comment_len) = _END.unpack_from(data, end)
    plain = (disk, cd_disk, comment_len) == (0, 0, 0) and n_here == n_all == len(listed)
    return listed if plain and pos == end == cd_size and cd_offset == start else None


def read_directory(fd: int, size: int) -> list[Central] | None:
    """:func:`parse_directory` of the zip file open as ``fd`` (``size`` bytes): two reads, the end
    record then the directory. None when the last bytes are not a plain end record (an archive
    comment) or it places the directory elsewhere than just before it (data prepended)."""
    if size < _END.size:
        return None
    tail = os.pread(fd, _END.size, size - _END.size)
    if len(tail) != _END.size or tail[:4] != END:
        return None
    cd_size, cd_offset = _END.unpack(tail)[5:7]
    if cd_offset + cd_size != size - _END.size:
        return None
    return parse_directory(os.pread(fd, cd_size + _END.size, cd_offset), cd_offset)


def zipfile_directory(source: str | os.PathLike[str] | IO[bytes]) -> list[Central]:
    """The entries as ``zipfile`` reads the directory (any zip it reads: ZIP64 end records, a
    comment, data before the zip, whose offsets it shifts)."""
    with zipfile.ZipFile(source) as archive:
        return [
            Central(
                i.filename,
                i.flag_bits,
                i.compress_type,
                i.CRC,
                i.compress_size,
                i.file_size,
                i.header_offset,
                len(i.orig_filename.encode("utf-8")),
                len(i.extra),
            )
            for i in archive.infolist()
        ]


def _zip64_sizes(extra: bytes, size: int, csize: int, offset: int) -> tuple[bool, int, int, int]:
    """(whether ``extra`` has a ZIP64 field (tag 0x0001), size, compressed size, offset), each
    of the three that is 0xFFFFFFFF replaced by the field's value, in the order the format stores them."""
    zip64 = False
    while len(extra) >= 4:
        tag, length = struct.unpack("<HH", extra[:4])
        body, extra = extra[4 : 4 + length], extra[4 + length :]
        if tag == 1:
            zip64 = True
            values = list(struct.unpack(f"<{len(body) // 8}Q", body[: len(body) // 8 * 8]))
            if size == _U32 and values:
                size = values.pop(0)
            if csize == _U32 and values:
                csize = values.pop(0)
            if offset == _U32 and values:
                offset = values.pop(0)
    return zip64, size, csize, offset
