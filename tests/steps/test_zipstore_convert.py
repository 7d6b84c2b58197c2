"""dicom.store zip, conversion side: a scan's zip is unpacked in node-local temp space (RAM up to
dicom.ram_tmp_mb, else dicom.local_tmp), dcm2niix runs there, only the NIfTI comes back; temp space
missing or full is one clear error naming the folder."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from dicomfake import write_series

from xnat_prep import convert, dicomzip, paths, receipts
from xnat_prep.errors import UserError


def md5s(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def zip_of(folder: Path, zip_path: Path, prefix: str = "E1/scans/1-T1w/resources/DICOM/files/") -> Path:
    """The folder as XNAT zips a scan resource (STORED entries under .../files/)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return zip_path


@pytest.fixture
def series(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "dicom" / "1-T1w"
    write_series(folder, n_slices=6, size=16)
    return folder, zip_of(folder, tmp_path / "dicom" / "1-T1w.zip")


def convert_into(root: Path, source: Path, **kwargs) -> tuple[dict, Path]:
    receipt = root / "nifti" / "1-T1w.json"
    data = convert.convert_scan(dicom_dir=source, receipt=receipt, name="sub_T1w", **kwargs)
    return data, receipt.with_suffix("")


@pytest.fixture
def unpacked_in(monkeypatch) -> list[Path]:
    """The temp roots the conversions unpack in, in order (``dicomzip.unpack`` spied on)."""
    seen: list[Path] = []
    unpack = dicomzip.unpack

    def spy(zip_path, folder: Path, **kwargs) -> list[str]:
        seen.append(folder.parent)
        assert folder.name.startswith(f"xnat-prep-{dicomzip._owner_tag()}-")
        return unpack(zip_path, folder, **kwargs)

    monkeypatch.setattr(dicomzip, "unpack", spy)
    return seen


@pytest.fixture
def ram(tmp_path: Path, monkeypatch) -> Path:
    """A folder standing for /dev/shm."""
    where = tmp_path / "shm"
    where.mkdir()
    monkeypatch.setattr(dicomzip, "RAM_TMP", where)
    monkeypatch.delenv(dicomzip.RAM_TMP_MB_ENV, raising=False)
    return where


@pytest.mark.parametrize("ram_tmp_mb", [None, 0])
def test_zip_converts_to_the_same_nifti_as_the_folder(
    tmp_path: Path, series: tuple[Path, Path], ram: Path, unpacked_in: list[Path], ram_tmp_mb: int | None
) -> None:
    folder, zipped = series
    node = tmp_path / "node"
    node.mkdir()
    plain, plain_out = convert_into(tmp_path / "a", folder)
    from_zip, zip_out = convert_into(tmp_path / "b", zipped, local_tmp=str(node), ram_tmp_mb=ram_tmp_mb)
    assert from_zip["status"] == plain["status"] == "converted"
    assert from_zip["n_dicom"] == plain["n_dicom"] == 6
    assert md5s(zip_out) == md5s(plain_out)
    assert unpacked_in == [ram if ram_tmp_mb is None else node]  # a small scan in RAM by default; 0 = never
    assert list(node.iterdir()) == list(ram.iterdir()) == []  # the unpacked copy is gone


def test_ram_only_for_scans_within_the_limit_and_with_room(
    tmp_path: Path, ram: Path, monkeypatch, unpacked_in: list[Path]
) -> None:
    folder = tmp_path / "dicom" / "big"
    write_series(folder, n_slices=6, size=300)  # 6 x 180 KB: more than 1 MB
    zipped = zip_of(folder, tmp_path / "big.zip")
    node = tmp_path / "node"
    node.mkdir()
    with zipfile.ZipFile(zipped) as archive:
        size = sum(info.file_size for info in archive.infolist())
    assert size > 1 << 20
    assert dicomzip.unpack_root(size, str(node), ram_tmp_mb=2) == ram
    assert dicomzip.unpack_root(size, str(node), ram_tmp_mb=1) == node  # larger than the limit
    monkeypatch.setenv(dicomzip.RAM_TMP_MB_ENV, "1")  # as the workflow exports dicom.ram_tmp_mb
    assert dicomzip.unpack_root(size, str(node)) == node
    monkeypatch.setenv(dicomzip.RAM_TMP_MB_ENV, "2")
    assert dicomzip.unpack_root(size, str(node)) == ram
    monkeypatch.setattr(dicomzip, "RAM_RESERVE", 1 << 62)  # RAM without room for the scan
    assert dicomzip.unpack_root(size, str(node)) == node
    monkeypatch.setattr(dicomzip, "RAM_TMP", tmp_path / "no-shm-here")  # no /dev/shm on this node
    monkeypatch.setattr(dicomzip, "RAM_RESERVE", 0)
    assert dicomzip.unpack_root(size, str(node)) == node
    convert_into(tmp_path / "out", zipped, local_tmp=str(node))
    assert unpacked_in == [node]


def test_folders_of_killed_processes_are_swept(
    tmp_path: Path, series: tuple[Path, Path], ram: Path, unpacked_in: list[Path]
) -> None:
    _, zipped = series
    code = "import os; print(os.getpid())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    dead = int(child.stdout)  # a process that has ended: its pid is free (reuse within this test is unlikely)
    host = dicomzip._host()
    left = ram / f"xnat-prep-{host}.{dead}-1-T1w-abc"  # what a kill -9 during a conversion leaves
    live = ram / f"xnat-prep-{host}.{os.getpid()}-1-T1w-def"  # a conversion still running
    elsewhere = ram / f"xnat-prep-othernode.{dead}-1-T1w-ghi"  # another node's (a shared local_tmp)
    unrelated = ram / f"other-{host}.{dead}"
    for folder in (left, live, elsewhere, unrelated):
        (folder / "E1").mkdir(parents=True)
        (folder / "E1" / "1.dcm").write_bytes(b"x" * 100)
    convert_into(tmp_path / "out", zipped)
    assert unpacked_in == [ram]
    assert sorted(p.name for p in ram.iterdir()) == sorted(p.name for p in (live, elsewhere, unrelated))


def test_local_tmp_comes_from_the_environment(tmp_path: Path, series: tuple[Path, Path], monkeypatch) -> None:
    node = tmp_path / "node-$SLURM_JOB_ID"
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv(dicomzip.LOCAL_TMP_ENV, str(node))
    assert dicomzip.local_tmp_root() == tmp_path / "node-42"
    monkeypatch.delenv(dicomzip.LOCAL_TMP_ENV)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "slurm-tmp"))
    assert dicomzip.local_tmp_root() == tmp_path / "slurm-tmp"


def test_missing_local_tmp_fails_naming_it_and_writes_nothing(
    tmp_path: Path, series: tuple[Path, Path]
) -> None:
    _, zipped = series
    missing = tmp_path / "no-such-node-disk"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "xnat_prep.cli",
            "convert-scan",
            "--dicom",
            str(zipped),
            "--receipt",
            str(tmp_path / "out" / "1-T1w.json"),
            "--name",
            "x",
            "--local-tmp",
            str(missing),
            "--ram-tmp-mb",
            "0",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if str(missing) in ln]
    assert errors and "no such folder" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.fixture
def tiny_fs(tmp_path: Path):
    """A 64 KiB tmpfs: node-local temp space that fills up (needs root and mount)."""
    where = tmp_path / "tiny"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def test_full_local_tmp_fails_naming_it_and_keeps_the_old_result(tmp_path: Path, tiny_fs: Path) -> None:
    folder = tmp_path / "dicom" / "1-T1w"
    write_series(folder, n_slices=6, size=128)
    zipped = zip_of(folder, tmp_path / "dicom" / "1-T1w.zip")
    assert zipped.stat().st_size > 64 * 1024  # the scan cannot fit
    _, out = convert_into(tmp_path, folder)  # an earlier result, which must survive
    before = md5s(out)
    receipt = out.with_name("1-T1w.json")
    recorded = receipts.read(receipt)
    with pytest.raises(dicomzip.LocalTempError) as caught:
        convert_into(tmp_path, zipped, local_tmp=str(tiny_fs), ram_tmp_mb=0)
    assert str(tiny_fs) in str(caught.value) and "No space left" in str(caught.value)
    assert caught.value.exit_code == 1
    assert md5s(out) == before and receipts.read(receipt) == recorded
    assert list(tiny_fs.iterdir()) == []  # the partial unpack is removed
    assert sorted(p.name for p in out.parent.iterdir()) == ["1-T1w", "1-T1w.json"]


def test_ram_filling_up_meanwhile_unpacks_in_local_tmp(tmp_path: Path, tiny_fs: Path, monkeypatch) -> None:
    """RAM had room when asked, then other jobs took it: this scan goes to local_tmp, no error."""
    folder = tmp_path / "dicom" / "1-T1w"
    write_series(folder, n_slices=6, size=128)
    zipped = zip_of(folder, tmp_path / "dicom" / "1-T1w.zip")
    plain, plain_out = convert_into(tmp_path / "a", folder)
    node = tmp_path / "node"
    node.mkdir()
    monkeypatch.setattr(dicomzip, "RAM_TMP", tiny_fs)  # 64 KiB: the scan does not fit
    monkeypatch.setattr(dicomzip, "unpack_root", lambda *args, **kwargs: tiny_fs)  # as if it had
    data, out = convert_into(tmp_path / "b", zipped, local_tmp=str(node))
    assert data["status"] == plain["status"] == "converted"
    assert md5s(out) == md5s(plain_out)
    assert list(tiny_fs.iterdir()) == list(node.iterdir()) == []  # the partial unpack in RAM is gone


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("read", ["with its header", "header then bytes", "streamed"])
def test_unpack_checks_every_entry_read_in_one_piece_or_streamed(
    tmp_path: Path, series: tuple[Path, Path], monkeypatch, compression: int, read: str
) -> None:
    folder, _ = series
    zipped = tmp_path / "x.zip"
    with zipfile.ZipFile(zipped, "w", compression) as archive:  # the bundled server's and XNAT's kinds
        for path in sorted(folder.iterdir()):
            info = zipfile.ZipInfo.from_file(path, f"E1/scans/1/resources/DICOM/files/a dir/{path.name}")
            info.compress_type = compression
            info.extra = b"\xfe\xca\x2c\x01" + bytes(300)  # an unknown 300-byte extra field
            archive.writestr(info, path.read_bytes())
    if read == "header then bytes":  # a local extra field longer than the directory's
        monkeypatch.setattr(dicomzip, "HEADER_SLACK", -400)
    if read == "streamed":  # as an entry larger than WHOLE_ENTRY_MAX is read
        monkeypatch.setattr(dicomzip, "WHOLE_ENTRY_MAX", 0)
    assert len(dicomzip.unpack(zipped, tmp_path / "out")) == 6
    assert md5s(tmp_path / "out" / "a_dir") == md5s(folder)
    with zipfile.ZipFile(zipped) as archive:
        first = archive.infolist()[0]
    data = bytearray(zipped.read_bytes())
    data[first.header_offset + 30 + len(first.filename) + len(first.extra) + first.compress_size // 2] ^= 0xFF
    zipped.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"x\.zip: damaged zip"):
        dicomzip.unpack(zipped, tmp_path / "again")


def test_unpack_returns_the_files_it_wrote(tmp_path: Path, series: tuple[Path, Path]) -> None:
    """What conversion counts and sniffs without listing the folder again; the folder is made."""
    folder, zipped = series
    target = tmp_path / "not-yet" / "there"
    written = dicomzip.unpack(zipped, target)
    assert sorted(written) == dicomzip.folder_files(target) and len(written) == 6
    assert md5s(target) == md5s(folder)


def test_damaged_zip_is_one_clear_error(tmp_path: Path, series: tuple[Path, Path]) -> None:
    _, zipped = series
    data = bytearray(zipped.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside an entry's bytes: the CRC check catches it
    zipped.write_bytes(bytes(data))
    node = tmp_path / "node"
    node.mkdir()
    with pytest.raises(UserError, match=r"1-T1w\.zip: damaged zip .*run again to fetch it"):
        convert_into(tmp_path / "c", zipped, local_tmp=str(node), ram_tmp_mb=0)
    assert list(node.iterdir()) == []
    assert not (tmp_path / "c" / "nifti" / "1-T1w.json").exists()


def test_check_entries_against_the_manifest(tmp_path: Path, series: tuple[Path, Path]) -> None:
    folder, zipped = series
    expected = {
        p.name: (p.stat().st_size, hashlib.md5(p.read_bytes()).hexdigest()) for p in sorted(folder.iterdir())
    }
    assert dicomzip.check_entries(zipped, expected) == []
    name = next(iter(expected))
    wrong = {**expected, name: (expected[name][0], "0" * 32)}
    said = f"{name}: md5 {expected[name][1]}, manifest says {'0' * 32}"
    assert dicomzip.check_entries(zipped, wrong) == [said]
    fewer = dict(list(expected.items())[1:])
    assert dicomzip.check_entries(zipped, fewer) == [f"{name}: in the zip, not in the manifest"]
    more = {**expected, "extra.dcm": (1, "0" * 32)}
    assert dicomzip.check_entries(zipped, more) == ["extra.dcm: in the manifest, not in the zip"]
    zipped.write_bytes(zipped.read_bytes()[:-30])  # cut off
    assert dicomzip.check_entries(zipped, expected)[0].startswith("unreadable zip")


NAMES = [
    "E1/scans/1/resources/DICOM/files/1.2.3-1.dcm",  # sets the common prefix
    "E1/scans/1/resources/DICOM/files/1.2.3-2.dcm",
    "E1/scans/1/resources/DICOM/files/.hidden",  # skipped
    "E1/scans/1/resources/DICOM/files/sub/a.dcm",  # nested: parts of their own
    "E1/scans/1/resources/DICOM/files/na me (1).dcm",  # not plain: made safe
    "E1/scans/1/resources/DICOM/files/../../x.dcm",  # climbs out: refused
    "E1/scans/1/resources/DICOM/files/",  # a folder entry: skipped
    "E1/scans/1/resources/DICOM/files/résumé.dcm",
    "__MACOSX/E1/scans/1/resources/DICOM/files/._a.dcm",
    "E1/scans/1/resources/SECONDARY/files/b.dcm",  # another prefix
    "loose.dcm",
    "/abs/resources/DICOM/files/c.dcm",
]


def test_entry_paths_are_what_entry_key_and_safe_relparts_say() -> None:
    """The shortcut for entries under a known prefix gives exactly the long way's answer."""
    mapped = dicomzip._EntryPaths()
    for name in NAMES + NAMES[::-1]:
        try:
            expected = (
                None
                if dicomzip.skipped_entry(name)
                else (dicomzip.entry_key(name), paths.safe_relparts(dicomzip.entry_key(name)))
            )
        except ValueError:
            with pytest.raises(ValueError):
                mapped(name)
            continue
        assert mapped(name) == expected, name
    assert mapped.prefix == "E1/scans/1/resources/DICOM/files/"


def test_zip_whose_directory_zipfile_reads_unpacks_alike(tmp_path: Path, series: tuple[Path, Path]) -> None:
    """A comment after the directory or data before the zip: read through zipfile, same files."""
    folder, zipped = series
    commented = tmp_path / "c.zip"
    with zipfile.ZipFile(zipped) as source, zipfile.ZipFile(commented, "w") as archive:
        for info in source.infolist():
            archive.writestr(info, source.read(info))
        archive.comment = b"made by hand"
    prefixed = tmp_path / "p.zip"
    prefixed.write_bytes(b"#!/bin/sh\n" + zipped.read_bytes())
    for odd in (commented, prefixed):
        assert len(dicomzip.unpack(odd, tmp_path / odd.stem)) == 6
        assert md5s(tmp_path / odd.stem) == md5s(folder)


def test_entry_compressed_another_way_unpacks_through_zipfile(tmp_path: Path, series) -> None:
    """bzip2 and LZMA entries (not what XNAT sends, but what the download's zipfile check accepts)."""
    folder, _ = series
    for method in (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        zipped = tmp_path / f"{method}.zip"
        with zipfile.ZipFile(zipped, "w", method) as archive:
            for path in sorted(folder.iterdir()):
                archive.write(path, f"E1/scans/1/resources/DICOM/files/{path.name}")
        assert len(dicomzip.unpack(zipped, tmp_path / str(method))) == 6
        assert md5s(tmp_path / str(method)) == md5s(folder)
        data = bytearray(zipped.read_bytes())
        data[len(data) // 4] ^= 0xFF
        zipped.write_bytes(bytes(data))
        with pytest.raises(UserError, match=r"\.zip: damaged zip"):
            dicomzip.unpack(zipped, tmp_path / f"again{method}")
