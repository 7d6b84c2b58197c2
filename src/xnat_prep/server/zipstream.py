"""Zip archives written on the fly to a non-seekable stream (the HTTP response).

Entries are STORED (DICOM barely compresses, and deflate would make the server the bottleneck of
a download), sizes are taken from the archive's metadata so no entry is buffered, and ZIP64 is used
per entry when needed. Memory use does not grow with the archive size.
"""

from __future__ import annotations

import shutil
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Protocol

CHUNK = 1 << 20


class Writable(Protocol):
    def write(self, data: bytes, /) -> int | None: ...

    def flush(self) -> None: ...


def write_zip(out: Writable, entries: Iterable[tuple[str, Path, int]]) -> None:
    """Write (archive name, file on disk, size) entries as a zip to ``out``."""
    stamp = time.localtime()[:6]
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:  # type: ignore[arg-type]
        for name, path, size in entries:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = size
            with open(path, "rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, CHUNK)


class ChunkedWriter:
    """File-like adapter that sends HTTP/1.1 chunked transfer encoding in large chunks.

    ``limit`` (fault injection) stops the body after that many bytes: the caller then closes the
    connection without the final chunk, as a server dying mid-response would.
    """

    def __init__(self, raw: IO[bytes], buffer_size: int = CHUNK, limit: int | None = None) -> None:
        self.raw = raw
        self.buffer = bytearray()
        self.buffer_size = buffer_size
        self.sent = 0
        self.limit = limit

    def write(self, data: bytes) -> int:
        self.buffer += data
        if len(self.buffer) >= self.buffer_size:
            self._emit()
        return len(data)

    def _emit(self) -> None:
        if not self.buffer:
            return
        data = bytes(self.buffer)
        self.buffer.clear()
        if self.limit is not None:
            data = data[: max(0, self.limit - self.sent)]
            if not data:
                raise TruncatedResponse
        self.raw.write(b"%x\r\n" % len(data) + data + b"\r\n")
        self.sent += len(data)
        if self.limit is not None and self.sent >= self.limit:
            raise TruncatedResponse

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Send what is buffered and the terminating chunk."""
        self._emit()
        self.raw.write(b"0\r\n\r\n")


class TruncatedResponse(Exception):
    """Raised inside a streamed response when an injected truncation fault is reached."""
