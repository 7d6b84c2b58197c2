"""zipread.StreamedZip: a zip read entry by entry as it arrives, against zipfile's own reading."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile

import pytest

from xnat_prep import dicomzip, zipread

FILES = {
    "S/scans/1/resources/DICOM/files/a.dcm": os.urandom(3000),
    "S/scans/1/resources/DICOM/files/sub/b.dcm": b"DICM" * 5000,  # compresses
    "S/scans/1/resources/DICOM/files/empty.dcm": b"",
}


class Unseekable(io.RawIOBase):
    """A write-only stream without tell/seek: zipfile then writes data descriptors (as a server
    streaming a zip does)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self.data += b
        return len(b)


def make_zip(method: int, *, seekable: bool = True, force_zip64: bool = False) -> bytes:
    out: io.BytesIO | Unseekable = io.BytesIO() if seekable else Unseekable()
    with zipfile.ZipFile(out, "w", method) as archive:
        archive.writestr("S/scans/1/resources/DICOM/files/", b"")  # a folder entry
        for name, data in FILES.items():
            if force_zip64:
                with archive.open(name, "w", force_zip64=True) as fh:
                    fh.write(data)
            else:
                archive.writestr(name, data)
    return bytes(out.getvalue() if isinstance(out, io.BytesIO) else out.data)


def read_all(body: bytes, piece: int = 777) -> dict[str, bytes]:
    chunks = (body[i : i + piece] for i in range(0, len(body), piece))
    got = {}
    archive = zipread.StreamedZip(chunks)
    for entry, data in archive.entries():
        if not entry.is_dir:
            got[entry.name] = b"".join(data)
    archive.drain()
    assert archive.offset == len(body)
    return got


@pytest.mark.parametrize(
    ("method", "seekable", "zip64"),
    [
        (zipfile.ZIP_STORED, True, False),  # the bundled server's zips: sizes in the local header
        (zipfile.ZIP_DEFLATED, True, False),
        (zipfile.ZIP_DEFLATED, False, False),  # XNAT's ZipOutputStream: deflate + data descriptor
        (zipfile.ZIP_DEFLATED, False, True),  # ... with ZIP64 sizes
        (zipfile.ZIP_STORED, True, True),
    ],
)
def test_entries_match_zipfile(method: int, seekable: bool, zip64: bool) -> None:
    body = make_zip(method, seekable=seekable, force_zip64=zip64)
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        expected = {i.filename: archive.read(i) for i in archive.infolist() if not i.is_dir()}
    assert read_all(body) == expected == FILES
    assert read_all(body, piece=1 << 20) == FILES  # whole body in one chunk


def test_stored_with_a_data_descriptor_is_not_streamable() -> None:
    body = make_zip(zipfile.ZIP_STORED, seekable=False)
    with pytest.raises(zipread.NotStreamable, match="data descriptor"):
        read_all(body)


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.9])
def test_zip_cut_off_among_its_entries_is_a_stream_error(method: int, fraction: float) -> None:
    """(Cut inside the central directory, every entry has been read: the body's length and, in
    zip mode, ``same_directory`` catch that.)"""
    body = make_zip(method, seekable=method == zipfile.ZIP_STORED)
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        directory_at = min(i.header_offset for i in archive.infolist()) + sum(
            i.compress_size + 30 + len(i.filename) for i in archive.infolist()
        )
    with pytest.raises(zipread.StreamError):
        read_all(body[: int(directory_at * fraction)])


def test_not_a_zip() -> None:
    with pytest.raises(zipread.StreamError, match="no entry header"):
        read_all(b"<html>login</html>" * 10)


def test_check_stream_finds_what_check_entries_finds(tmp_path) -> None:
    body = make_zip(zipfile.ZIP_DEFLATED, seekable=False)
    path = tmp_path / "scan.zip"
    path.write_bytes(body)
    expected = {dicomzip.entry_key(n): (len(d), hashlib.md5(d).hexdigest()) for n, d in FILES.items()}
    expected["sub/b.dcm"] = (20000, "0" * 32)  # a wrong md5
    expected["missing.dcm"] = (1, "0" * 32)
    del expected["empty.dcm"]
    checked = dicomzip.check_stream([body], expected)
    assert sorted(checked.problems) == sorted(dicomzip.check_entries(path, expected))
    assert len(checked.problems) == 3
    assert dicomzip.same_directory(path, checked.layout) is None
    moved = [(n, s, o + 1) for n, s, o in checked.layout]
    assert "central directory" in dicomzip.same_directory(path, moved)
