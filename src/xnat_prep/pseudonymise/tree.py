"""Pseudonymise a folder or zip of one subject's DICOM into a new folder (or zip), atomically.

An output named ``*.zip`` (``dicom.store: zip``) is one zip of STORED entries instead of a folder,
written under a temporary name beside it and renamed at the end: the same form the download keeps.

Everything is written into a temporary folder next to the output and renamed into place at the
end: an error leaves the previous output (or none), never half of a new one. Output files are
named by pseudonymised UIDs (``<SeriesInstanceUID>/<SOPInstanceUID>.dcm``), never by input
names, which often carry labels or names. Files at risk of burned-in text are not written; the
result lists them, by pseudonymised UIDs, with the reason.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pydicom
from pydicom.errors import InvalidDicomError

from xnat_prep import __version__, dicomzip
from xnat_prep.errors import UserError
from xnat_prep.fsutil import replace_dir
from xnat_prep.pseudonymise.dataset import Pseudonymiser, first_value, quarantine_reason
from xnat_prep.pseudonymise.keys import Key
from xnat_prep.pseudonymise.profile import Profile

log = logging.getLogger(__name__)

Layout = Literal["series", "flat"]
UID_METHOD = "HMAC-SHA256 -> UUIDv8 -> 2.25.<int> (xnat-prep uid-v1)"
DATE_METHOD = "whole-day offset per subject from HMAC-SHA256 of the XNAT subject ID (xnat-prep date-v1)"


def input_files(source: str | Path) -> Iterator[tuple[str, Callable[[], bytes | Path]]]:
    """(name, reader) of every file in a folder or zip, sorted by name; hidden files skipped."""
    source = Path(source)
    if source.is_dir():
        names = [os.path.relpath(f, source) for f in dicomzip.folder_files(source)]
        for name in names:
            yield name, (lambda p=source / name: p)
        return
    if not source.exists():
        raise UserError(f"{source}: not found")
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{source}: neither a folder nor a readable zip ({exc})") from None
    with zf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            if dicomzip.skipped_entry(info.filename):
                continue
            yield info.filename, (lambda i=info: zf.read(i))


def read_dicom(name: str, data: bytes | Path) -> pydicom.Dataset:
    """A whole DICOM file; anything else is a UserError naming it.

    pydicom reads a truncated file without complaint, so two checks stand in: a file cut in
    its header lacks the SOP instance UID, one cut in its pixels has fewer bytes than its
    rows, columns, samples, bits and frames say.
    """
    try:
        src = io.BytesIO(data) if isinstance(data, bytes) else data
        ds = pydicom.dcmread(src)
    except InvalidDicomError:
        raise UserError(f"{name}: not a DICOM file (no DICM preamble)") from None
    except (OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise UserError(f"{name}: unreadable DICOM ({type(exc).__name__}: {exc})") from None
    if not first_value(ds, 0x00080018) or not first_value(ds, 0x00080016):
        raise UserError(f"{name}: unreadable DICOM (no SOP class or instance UID: truncated?)")
    expected = _native_pixel_bytes(ds)
    if expected:
        got = len(ds.get_item(0x7FE00010).value or b"")
        if got < expected:
            raise UserError(f"{name}: unreadable DICOM (pixel data truncated: {got} of {expected} bytes)")
    return ds


def _native_pixel_bytes(ds: pydicom.Dataset) -> int:
    """Bytes an uncompressed PixelData must hold (0 if compressed, not an image, or unknown)."""
    meta = getattr(ds, "file_meta", None)
    if 0x7FE00010 not in ds or meta is None or meta.get("TransferSyntaxUID") is None:
        return 0
    if meta.TransferSyntaxUID.is_compressed:
        return 0
    try:
        bits, rows, cols = (_us(ds, t) for t in (0x00280100, 0x00280010, 0x00280011))
        samples = _us(ds, 0x00280002) if 0x00280002 in ds else 1
        frames = int(first_value(ds, 0x00280008) or 1) if 0x00280008 in ds else 1
    except (KeyError, ValueError):
        return 0
    return (rows * cols * samples * frames * bits + 7) // 8


def _us(ds: pydicom.Dataset, tag: int) -> int:
    """An US value, from its raw two bytes when it can (KeyError if absent)."""
    raw = ds.get_item(tag)
    if raw is None:
        raise KeyError(tag)
    if raw.is_raw and isinstance(raw.value, bytes) and len(raw.value) == 2:
        return int.from_bytes(raw.value, "little" if raw.is_little_endian else "big")
    return int(ds[tag].value)


def pseudonymise_tree(
    source: str | Path,
    out_dir: str | Path,
    *,
    key: Key,
    subject_id: str,
    pseudonym: str | None = None,
    profile: Profile | None = None,
    reid_table: str | Path | None = None,
    layout: Layout = "series",
    labels: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Pseudonymise every DICOM file of ``source`` into ``out_dir`` (replaced; a name ending in
    ``.zip`` makes it one zip); returns the receipt data (no key, no subject ID, no original value:
    only counts, pseudonymised UIDs, the key's fingerprint and the method). ``labels`` (the XNAT
    project, subject and session labels) are cleaned out of the text the profile keeps."""
    started = time.monotonic()
    out_dir = Path(out_dir)
    p = Pseudonymiser(key, subject_id, pseudonym, profile, labels)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    as_zip = out_dir.name.endswith(".zip")
    if as_zip:
        tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.part")
        archive: zipfile.ZipFile | None = zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED)
        names: set[str] = set()
    else:
        tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
        archive = None
    n_input = n_written = 0
    quarantined: list[dict[str, str]] = []
    try:
        for name, reader in input_files(source):
            n_input += 1
            ds = read_dicom(name, reader())
            reason = quarantine_reason(ds)
            if reason:
                quarantined.append(
                    {
                        "series_instance_uid": p.uid(str(ds.get("SeriesInstanceUID", ""))),
                        "sop_instance_uid": p.uid(str(ds.get("SOPInstanceUID", ""))),
                        "series_number": str(ds.get("SeriesNumber", "")),
                        "modality": str(ds.get("Modality", "")),
                        "reason": reason,
                    }
                )
                continue
            p.dataset(ds)
            sop = first_value(ds, 0x00080018)
            series = first_value(ds, 0x0020000E) or "unknown"
            relname = f"{series}/{sop}.dcm" if layout == "series" else f"{sop}.dcm"
            if archive is not None:
                if relname in names:
                    raise UserError(f"{name}: a second file with the same SOPInstanceUID as another input")
                names.add(relname)
                buffer = io.BytesIO()
                ds.save_as(buffer, enforce_file_format=True)
                archive.writestr(relname, buffer.getvalue())
                n_written += 1
                continue
            target = tmp / relname
            if target.exists():
                raise UserError(f"{name}: a second file with the same SOPInstanceUID as another input")
            target.parent.mkdir(exist_ok=True)
            ds.save_as(target, enforce_file_format=True)
            n_written += 1
        if n_input == 0:
            raise UserError(f"{source}: no files to pseudonymise")
        if reid_table:
            write_reid_table(reid_table, p)
        if archive is not None:
            archive.close()
            archive = None
            os.replace(tmp, out_dir)
        else:
            replace_dir(tmp, out_dir)
    finally:
        if archive is not None:
            archive.close()
        if as_zip:
            tmp.unlink(missing_ok=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    quarantined.sort(key=lambda q: (q["series_number"], q["sop_instance_uid"]))
    log.info(
        "pseudonymised %d of %d files (%d quarantined), key %s",
        n_written,
        n_input,
        len(quarantined),
        key.fingerprint,
    )
    return {
        "step": "pseudonymise",
        "n_input": n_input,
        "n_written": n_written,
        "n_quarantined": len(quarantined),
        "quarantined": quarantined,
        "pseudonym": p.pseudonym,
        "private_elements_kept": p.stats.private_kept,
        "private_elements_removed": p.stats.private_removed,
        "private_binary_dropped": p.stats.binary_dropped,
        "key_fingerprint": key.fingerprint,
        "profile": p.profile.describe(),
        "uid_method": UID_METHOD,
        "date_method": DATE_METHOD
        if p.profile.shifts_dates
        else "dates kept (retain_longitudinal_full_dates)",
        "layout": layout,
        "versions": {"xnat_prep": __version__, "pydicom": pydicom.__version__},
        "date": datetime.now(UTC).date().isoformat(),
        "duration_s": round(time.monotonic() - started, 3),
    }


def write_reid_table(path: str | Path, p: Pseudonymiser) -> Path:
    """The re-identification table (subject, pseudonym, date offset, every UID pair), mode 600,
    written atomically. It is an audit record, never an input."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["kind", "original", "pseudonymised"])
            w.writerow(["subject", p.subject_id, p.pseudonym])
            w.writerow(["date_offset_days", p.subject_id, str(p.offset_days)])
            w.writerow(["key_fingerprint", "", p.key.fingerprint])
            for original, new in sorted(p.stats.uids.items()):
                w.writerow(["uid", original, new])
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
