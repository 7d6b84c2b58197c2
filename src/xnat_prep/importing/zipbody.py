"""A zip made while it is sent: the import request's body, never whole in memory or on disk.

``ZipBody`` is a file-like object that ``requests`` sends with chunked transfer encoding (it has no
length): each ``read()`` packs just enough of the next member (stored, not compressed: DICOM
pixel data hardly compresses and the server unpacks it at once). ``seek(0)`` starts the zip again,
which is what the HTTP policy does before it repeats a request that XNAT refused unprocessed.
Memory stays at about one chunk whatever the session's size; zip64 is used for members of 4 GiB
and more (``zipfile`` decides per member from its size).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Sequence

from xnat_prep.importing.local import CHUNK, Source

_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so the same members make the same bytes


class _Sink:
    """What ``zipfile`` writes into: collects bytes until the reader takes them."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


class ZipBody:
    """The zip of ``members`` (names in the source, with their sizes) of ``source``, streamed."""

    def __init__(self, source: Source, members: Sequence[tuple[str, int]]):
        self.source = source
        self.members = list(members)
        self.sent = 0  # bytes handed out since the last seek(0)
        self.seek(0)

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) != (0, 0):
            raise OSError("a streamed zip can only start again from the beginning")
        self._chunks = self._generate()
        self._chunk, self._pos = b"", 0
        self.sent = 0
        return 0

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (fewer at a chunk's end, b"" at the end; all that is left for -1)."""
        if size < 0:
            data = self._chunk[self._pos :] + b"".join(self._chunks)
            self._chunk, self._pos = b"", 0
        else:
            while self._pos >= len(self._chunk):
                chunk = next(self._chunks, None)
                if chunk is None:
                    return b""
                self._chunk, self._pos = chunk, 0
            data = self._chunk[self._pos : self._pos + size]
            self._pos += len(data)
        self.sent += len(data)
        return data

    def _generate(self) -> Iterator[bytes]:
        sink = _Sink()
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:  # type: ignore[arg-type]
            for name, size in self.members:
                info = zipfile.ZipInfo(name, _DATE)
                info.file_size = size
                with (
                    self.source.open(name) as src,
                    zf.open(info, "w", force_zip64=size >= zipfile.ZIP64_LIMIT) as dst,
                ):
                    while block := src.read(CHUNK):
                        dst.write(block)
                        yield sink.take()
                yield sink.take()
        yield sink.take()
