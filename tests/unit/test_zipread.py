"""zipread.StreamedZip: a zip read entry by entry as it arrives, against zipfile's own reading."""

from __future__ import annotations

import hashlib
import io
import os
import struct
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
    assert checked.directory is not None  # read as it streamed past: the file is not read again
    assert dicomzip.directory_problem(path, checked) is None
    moved = [(n, s, o + 1) for n, s, o in checked.layout]
    assert "central directory" in dicomzip.same_directory(path, moved)


def zipfile_directory(body: bytes) -> list[tuple[str, int, int]]:
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        return [(i.filename, i.file_size, i.header_offset) for i in archive.infolist()]


def read_directory(body: bytes, piece: int = 777) -> list[tuple[str, int, int]] | None:
    archive = zipread.StreamedZip(body[i : i + piece] for i in range(0, len(body), piece))
    for _entry, _data in archive.entries():
        pass
    listed = archive.directory()
    assert archive.offset == len(body)
    return listed


@pytest.mark.parametrize("piece", [7, 777, 1 << 20])
@pytest.mark.parametrize(
    ("method", "seekable"),
    [(zipfile.ZIP_STORED, True), (zipfile.ZIP_DEFLATED, True), (zipfile.ZIP_DEFLATED, False)],
)
def test_directory_as_it_streams_is_what_zipfile_reads(method: int, seekable: bool, piece: int) -> None:
    body = make_zip(method, seekable=seekable)
    assert read_directory(body, piece) == zipfile_directory(body)


def test_directory_this_reader_does_not_vouch_for_is_none() -> None:
    """A comment or ZIP64 end records: None, and the caller reads the directory from the file.
    Data before the zip (zipfile would shift every offset by it) is not even read as entries."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("a.dcm", b"x" * 100)
        archive.comment = b"made by hand"
    assert read_directory(out.getvalue()) is None
    body = make_zip(zipfile.ZIP_STORED)
    with pytest.raises(zipread.StreamError, match="no entry header"):
        read_directory(b"junk" + body)
    zip64 = io.BytesIO()
    with zipfile.ZipFile(zip64, "w") as archive:
        archive.writestr("a.dcm", b"x" * 100)
    zip64_end = patch_end_to_zip64(zip64.getvalue())
    assert zipfile_directory(zip64_end) == zipfile_directory(zip64.getvalue())  # still a valid zip
    assert read_directory(zip64_end) is None


def patch_end_to_zip64(body: bytes) -> bytes:
    """The same zip with ZIP64 end records (what a writer adds past 65,535 entries or 4 GB)."""
    end = body.rindex(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack("<LL", body[end + 12 : end + 20])
    n = struct.unpack("<H", body[end + 10 : end + 12])[0]
    end64 = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, cd_size, cd_offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, end, 1)
    end_record = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return body[:end] + end64 + locator + end_record


def test_directory_pointing_elsewhere_is_found_from_the_stream_and_from_the_file(tmp_path) -> None:
    """A directory whose offsets differ from where the entries are: conversion would read bytes
    nobody checked."""
    body = bytearray(make_zip(zipfile.ZIP_STORED))
    central = body.rindex(b"PK\x01\x02")
    body[central + 42] ^= 1  # the last entry's local header offset, off by one
    path = tmp_path / "scan.zip"
    path.write_bytes(body)
    expected = {dicomzip.entry_key(n): (len(d), hashlib.md5(d).hexdigest()) for n, d in FILES.items()}
    checked = dicomzip.check_stream([bytes(body)], expected)
    assert checked.problems == []
    assert "central directory" in dicomzip.directory_problem(path, checked)
    checked.directory = None  # as for a zip whose directory did not stream in a form zipread reads
    assert "central directory" in dicomzip.directory_problem(path, checked)


def file_directory(tmp_path, body: bytes) -> list[zipread.Central] | None:
    path = tmp_path / "scan.zip"
    path.write_bytes(body)
    with open(path, "rb") as fh:
        return zipread.read_directory(fh.fileno(), len(body))


@pytest.mark.parametrize(
    ("method", "seekable", "zip64"),
    [
        (zipfile.ZIP_STORED, True, False),
        (zipfile.ZIP_DEFLATED, True, False),
        (zipfile.ZIP_DEFLATED, False, False),
        (zipfile.ZIP_DEFLATED, False, True),
        (zipfile.ZIP_STORED, True, True),  # ZIP64 sizes in each entry's extra field
    ],
)
def test_directory_read_from_the_file_is_what_zipfile_reads(tmp_path, method, seekable, zip64) -> None:
    """Every field conversion reads an entry by: name, flags, method, CRC, sizes, header offset."""
    body = make_zip(method, seekable=seekable, force_zip64=zip64)
    assert file_directory(tmp_path, body) == zipread.zipfile_directory(io.BytesIO(body))


def test_directory_read_from_the_file_leaves_the_odd_ones_to_zipfile(tmp_path) -> None:
    """A comment, ZIP64 end records, data before the zip, a cut-off or missing directory: None,
    and conversion reads the directory with zipfile (which also shifts offsets past a prefix)."""
    with_comment = io.BytesIO()
    with zipfile.ZipFile(with_comment, "w") as archive:
        archive.writestr("a.dcm", b"x" * 100)
        archive.comment = b"made by hand"
    body = make_zip(zipfile.ZIP_STORED)
    end = body.rindex(b"PK\x05\x06")
    for odd in (with_comment.getvalue(), patch_end_to_zip64(body), b"junk" + body, body[:-30], body[:end]):
        assert file_directory(tmp_path, odd) is None
    assert zipread.parse_directory(body[body.index(b"PK\x01\x02") :], 0) is None  # placed elsewhere
