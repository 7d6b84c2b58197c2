"""Archives in and out: uploaded zip/tar(.gz) bodies read member by member, and zips written on
the fly to a non-seekable stream (the HTTP response).

Outgoing entries are STORED (DICOM barely compresses, and deflate would make the server the bottleneck of
a download), sizes are taken from the archive's metadata so no entry is buffered, and ZIP64 is used
per entry when needed. Memory use does not grow with the archive size.
"""

from __future__ import annotations

import shutil
import tarfile
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Protocol

CHUNK = 1 << 20


class NotAnArchive(Exception):
    """The upload is neither a zip nor a tar(.gz)."""


def iter_members(fh: IO[bytes]) -> Iterator[tuple[str, IO[bytes]]]:
    """(name, stream) of every regular file in a seekable zip or tar(.gz) file object."""
    fh.seek(0)
    if zipfile.is_zipfile(fh):
        fh.seek(0)
        with zipfile.ZipFile(fh) as zf:
            for info in zf.infolist():
                if not info.is_dir():
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
            stream = tf.extractfile(info) if info.isfile() else None
            if stream is not None:
                with stream:
                    yield info.name, stream


class Writable(Protocol):
    def write(self, data: bytes, /) -> int | None: ...

    def flush(self) -> None: ...


def write_zip(out: Writable, entries: Iterable[tuple[str, Path, int]]) -> None:
    """Write (archive name, file on disk, size) entries as a zip to ``out``.

    Entry times are the files' modification times, so the same files give the same bytes.
    """
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:  # type: ignore[arg-type]
        for name, path, size in entries:
            mtime = max(path.stat().st_mtime, 315532800)  # zip cannot store dates before 1980
            info = zipfile.ZipInfo(name, date_time=time.localtime(mtime)[:6])
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

    def flush_buffer(self) -> None:
        """Send what is buffered; the caller then sends the terminating ``0\\r\\n\\r\\n`` chunk."""
        self._emit()

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


class TruncatedResponse(Exception):
    """Raised inside a streamed response when an injected truncation fault is reached."""
