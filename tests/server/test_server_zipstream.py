"""The precomputed zip layout read back with Python's zipfile, including ZIP64 (sparse files)."""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from pathlib import Path

from xnat_prep.server.zipstream import Part, ZipEntry, zip_layout


def materialise(parts: list[Part], target: Path) -> None:
    """Write the parts to a file; file ranges of all-zero sparse files become holes."""
    with open(target, "wb") as out:
        for part in parts:
            if isinstance(part, bytes):
                out.write(part)
            else:
                path, offset, count = part
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read(min(count, 1 << 20))
                if len(data) == count:
                    out.write(data)
                else:  # a big sparse file of zeros: leave a hole of the same size
                    out.seek(count, os.SEEK_CUR)
        out.truncate()


def test_small_entries_round_trip(tmp_path: Path) -> None:
    entries = []
    for i, size in enumerate([0, 1, 70_000, 13]):
        path = tmp_path / f"f{i}"
        data = os.urandom(size)
        path.write_bytes(data)
        entries.append(
            ZipEntry(f"sess/scans/{i}-T1/résumé{i}.dcm", path, size, zlib.crc32(data) if i % 2 else None)
        )
    parts, total = zip_layout(entries)
    target = tmp_path / "out.zip"
    materialise(parts, target)
    assert target.stat().st_size == total
    with zipfile.ZipFile(target) as zf:
        assert zf.testzip() is None
        assert [i.filename for i in zf.infolist()] == [e.name for e in entries]
        assert all(zf.read(e.name) == e.path.read_bytes() for e in entries)


def test_zip64_sizes_and_offsets(tmp_path: Path) -> None:
    big = tmp_path / "big"
    with open(big, "wb") as fh:  # 4.5 GB of zeros, sparse: no disk used
        fh.truncate(4_500_000_000)
    small = tmp_path / "small"
    small.write_bytes(b"after the big one")
    entries = [
        ZipEntry("big.bin", big, 4_500_000_000, 0x12345678),  # CRC not checked: data never read
        ZipEntry("small.txt", small, small.stat().st_size, zlib.crc32(b"after the big one")),
    ]
    parts, total = zip_layout(entries)
    target = tmp_path / "big.zip"
    materialise(parts, target)
    assert target.stat().st_size == total
    with zipfile.ZipFile(target) as zf:
        info = {i.filename: i for i in zf.infolist()}
        assert info["big.bin"].file_size == 4_500_000_000
        assert info["small.txt"].header_offset > 0xFFFFFFFF
        assert zf.read("small.txt") == b"after the big one"  # offset found through the ZIP64 extra


def test_empty_zip(tmp_path: Path) -> None:
    parts, total = zip_layout([])
    with zipfile.ZipFile(io.BytesIO(b"".join(p for p in parts if isinstance(p, bytes)))) as zf:
        assert zf.namelist() == [] and total == 22
