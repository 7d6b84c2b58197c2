"""``convert-scan``: one scan's DICOM to NIfTI (+ BIDS sidecar) with dcm2niix, checked.

Non-image scans (secondary capture, structured reports, PDFs, raw data, presentation states,
files without pixel data) are ``skipped`` with the reason and dcm2niix is not run. A scan that
dcm2niix rejects, or of which it converts fewer files than were downloaded, is ``failed`` with
dcm2niix's own words; the job still succeeds so the other scans go on. A conversion that did not
get to judge the series (dcm2niix killed by a signal, e.g. the kernel's OOM killer; the disk
full; the output folder unusable) is no verdict on the data: nothing is recorded and the job
fails (``Interrupted``), so Snakemake's retry or the next run converts the scan. Outputs go in the folder
named like the receipt without ``.json`` (``paths.outputs_of``), written to a temporary directory
next to it and renamed into place only on success.

The input is the scan's folder, or its zip (``dicom.store: zip``): the zip is unpacked into
node-local temporary space (``dicomzip.dicoms``: ``--local-tmp``, ``$TMPDIR``), dcm2niix
runs there, and only the NIfTI results are written to the shared filesystem; the unpacked copy
is deleted whatever happens. Temporary space missing or full fails the job naming the folder.

The per-scan overhead is kept small on purpose (the benchmark allows 15% over plain dcm2niix):
the SOP class is read from the DICOM file meta by a few lines of ``struct`` (pydicom costs
~0.35 s to import and is only the fallback for unusual files), the NIfTI geometry from the
348-byte header (no nibabel import), and dcm2niix's version from its own output.
"""

from __future__ import annotations

import errno
import glob
import gzip
import hashlib
import importlib.util
import json
import logging
import mmap
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xnat_prep import __version__, dicomzip, paths, receipts
from xnat_prep.errors import UserError
from xnat_prep.fsutil import atomic_write, remove_stale_parts, replace_dir

log = logging.getLogger(__name__)

# SOP class UID prefixes that hold no image dcm2niix should convert, with the reason given.
NON_IMAGE_SOP_CLASSES = (
    ("1.2.840.10008.5.1.4.1.1.7", "secondary capture"),
    ("1.2.840.10008.5.1.4.1.1.7.", "secondary capture"),  # the multi-frame ones
    ("1.2.840.10008.5.1.4.1.1.88.", "structured report"),
    ("1.2.840.10008.5.1.4.1.1.104.", "encapsulated document"),
    ("1.2.840.10008.5.1.4.1.1.66", "raw data"),
    ("1.2.840.10008.5.1.4.1.1.11.", "presentation state"),
)
_PIXEL_TAGS = (b"\xe0\x7f\x10\x00", b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00")  # (7FE0,0010/0008/0009) LE
# Transfer syntaxes whose dataset bytes are not plain little endian: the tag search would miss.
_NOT_LITTLE_ENDIAN = ("1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99")
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
# not anchored: dcm2niix ends some warnings without a newline ("...fieldmapping.Convert 8 DICOM as")
_CONVERTED = re.compile(r"\bConvert (\d+) DICOM as ")
# dcm2niix exit statuses that blame the machine, not the DICOM (nii_dicom_batch.h): input folder
# invalid, output folder invalid, output folder read-only, rename error
_ENVIRONMENT_EXIT = {
    5: "input folder invalid",
    6: "output folder invalid",
    7: "output folder read-only",
    9: "cannot rename its output",
}
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class Interrupted(UserError):
    """The conversion was stopped by the machine, not judged by dcm2niix: the job fails, nothing is
    recorded, and the scan is converted again by the next attempt."""

    exit_code = 1


class Stopped(Interrupted):
    """dcm2niix was asked to stop (SIGTERM, SIGINT: a user, a scheduler): the session's remaining
    scans are not started either."""


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_VERSION = re.compile(r"dcm2niiX version (\S+)")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
# dcm2niix -z y's gzip level (dcm2niix's own default is 6): compressing is most of a large 3D
# series' conversion, and 3 is about 2.5x faster for a few percent larger files (bench/results,
# campus.dcm2niix_same); nibabel writes .nii.gz at 1.
GZ_LEVEL = 3


def convert_scan(
    *,
    dicom_dir: str | Path,
    receipt: str | Path,
    name: str,
    extra: str = "",
    compress: bool = True,
    scan_id: str = "",
    scan_type: str = "",
    scrub_sidecars: bool = False,
    local_tmp: str | None = None,
    gz_level: int = GZ_LEVEL,
    ram_tmp_mb: int | None = None,
) -> dict[str, Any]:
    """Convert ``dicom_dir`` (a folder, or a scan's zip: unpacked in RAM up to ``ram_tmp_mb``, else
    into ``local_tmp``, see ``dicomzip.unpack_root``) into the receipt's folder and write the
    receipt; returns its data.

    ``scan_id``/``scan_type`` are only recorded, for the derived variables.
    """
    started = time.monotonic()
    source = Path(dicom_dir)
    with dicomzip.dicoms(source, local_tmp, ram_tmp_mb) as found:
        return _convert_found(
            found,
            source,
            receipt,
            name,
            dcm2niix_options(compress, gz_level),
            extra,
            scan_id,
            scan_type,
            scrub_sidecars,
            started,
        )


def _convert_found(
    found: dicomzip.Dicoms,
    source: Path,
    receipt: str | Path,
    name: str,
    options: list[str],
    extra: str,
    scan_id: str,
    scan_type: str,
    scrub_sidecars: bool,
    started: float,
) -> dict[str, Any]:
    """``convert_scan`` of the DICOM ``found`` (``source``: what the user named, for messages);
    ``options``: :func:`dcm2niix_options`, ``extra``: the user's, after them."""
    out_dir = paths.outputs_of(receipt)
    dicoms = found.files
    data: dict[str, Any] = {
        "step": "convert_scan",
        "scan_id": scan_id,
        "scan_type": scan_type,
        "status": "",
        "reason": "",
        "n_dicom": len(dicoms),
        "n_converted": 0,
        "outputs": [],
        "dcm2niix_version": None,
    }
    reason = "no DICOM files" if not dicoms else non_image_reason(Path(dicoms[0]))
    try:
        if reason:
            data.update(status="skipped", reason=reason)
            replace_dir(None, out_dir)
        else:
            data.update(
                _run_dcm2niix(dicoms, found.folder, out_dir, name, options, extra, scrub_sidecars, source)
            )
        data.update(
            date=datetime.now(UTC).date().isoformat(),
            duration_s=round(time.monotonic() - started, 3),
            xnat_prep_version=__version__,
        )
        receipts.write(receipt, data)
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise Interrupted(f"{source}: {exc.strerror} writing {exc.filename or out_dir}") from None
        raise
    log.info("%s: %s%s", source, data["status"], f" ({data['reason']})" if data["reason"] else "")
    return data


def dcm2niix_options(compress: bool = True, gz_level: int = GZ_LEVEL) -> list[str]:
    """The options every conversion gives dcm2niix: BIDS sidecar, anonymised, gzip at ``gz_level``."""
    return ["-b", "y", "-ba", "y", "-z", *(["y", f"-{gz_level}"] if compress else ["n"])]


def _run_dcm2niix(
    dicoms: list[str],
    dicom_dir: Path,
    out_dir: Path,
    name: str,
    options: list[str],
    extra: str,
    scrub_sidecars: bool = False,
    source: Path | None = None,
) -> dict[str, Any]:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.*.tmp"):  # a killed run's
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        command = [dcm2niix_binary(), *options, "-f", name, "-o", str(tmp), *shlex.split(extra)]
        command.append(str(dicom_dir))
        proc = subprocess.run(command, capture_output=True, text=True, errors="replace", check=False)
        output = proc.stdout + proc.stderr
        log.info("dcm2niix output:\n%s", output.rstrip())
        n_converted = sum(int(n) for n in _CONVERTED.findall(output))
        version = _VERSION.search(output)
        result: dict[str, Any] = {
            "n_converted": n_converted,
            "dcm2niix_version": version.group(1) if version else None,
            "dcm2niix_args": [*options, *shlex.split(extra)],
        }
        _check_not_interrupted(proc.returncode, output, source or dicom_dir)
        produced = sorted(tmp.iterdir())
        if proc.returncode != 0 or not any(p.name.endswith(NIFTI_SUFFIXES) for p in produced):
            reason = f"dcm2niix exit status {proc.returncode}: {_last_errors(output)}"
            replace_dir(None, out_dir)
            return result | {"status": "failed", "reason": reason}
        if n_converted != len(dicoms):
            reason = f"dcm2niix converted {n_converted} of {len(dicoms)} DICOM files: {_last_errors(output)}"
            replace_dir(None, out_dir)
            return result | {"status": "failed", "reason": reason}
        if scrub_sidecars:  # pseudonymised input: the identifying keys dcm2niix copies into its JSON
            from xnat_prep.pseudonymise import scrub_sidecar_file

            for sidecar in (p for p in produced if p.suffix == ".json"):
                scrub_sidecar_file(sidecar)
        outputs = [describe_output(p) for p in produced]
        replace_dir(tmp, out_dir)
        return result | {"status": "converted", "outputs": outputs}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_not_interrupted(returncode: int, output: str, dicom_dir: Path) -> None:
    """Raise ``Interrupted`` when dcm2niix was stopped by the machine rather than by the data."""
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else -returncode
        hint = (
            " (out of memory? the kernel's OOM killer sends SIGKILL)" if returncode == -signal.SIGKILL else ""
        )
        stopped = -returncode in _STOP_SIGNALS
        raise (Stopped if stopped else Interrupted)(
            f"{dicom_dir}: dcm2niix was killed by {name}{hint}; not recorded, run again"
        )
    if returncode in _ENVIRONMENT_EXIT:
        raise Interrupted(
            f"{dicom_dir}: dcm2niix exit status {returncode} ({_ENVIRONMENT_EXIT[returncode]}): "
            f"{_last_errors(output)}; not recorded, run again"
        )
    if "No space left on device" in output or "Disk quota exceeded" in output:
        raise Interrupted(f"{dicom_dir}: dcm2niix ran out of disk space; not recorded, run again")


def _last_errors(output: str, keep: int = 3) -> str:
    """dcm2niix's own explanation: its Error lines, else its last lines."""
    lines = [
        ln.strip() for ln in output.splitlines() if ln.strip() and not ln.startswith("Conversion required")
    ]
    errors = [ln for ln in lines if ln.startswith("Error")]
    return " | ".join((errors or lines)[-keep:])


_binary: str | None = None


def dcm2niix_binary() -> str:
    """The dcm2niix executable on PATH; a Python wrapper of the PyPI wheel is bypassed.

    The wheel installs a console script (behind a pyenv shim here) that starts Python just to
    exec the binary it ships: ~0.14 s per scan for nothing. Same binary, called directly.
    """
    global _binary
    if _binary is None:
        found = shutil.which("dcm2niix")
        if found is None:
            raise UserError("dcm2niix not found on PATH: pip install dcm2niix (or load your site's module)")
        _binary = _unwrap(found)
    return _binary


def _unwrap(found: str) -> str:
    with open(found, "rb") as fh:
        head = fh.read(4096)
    spec = importlib.util.find_spec("dcm2niix")
    if head.startswith(b"#!") and (b"from dcm2niix import" in head or b"pyenv" in head) and spec:
        inner = Path(next(iter(spec.submodule_search_locations or []), "")) / "dcm2niix"
        if inner.is_file() and os.access(inner, os.X_OK):
            return str(inner)
    return found


def non_image_reason(path: Path) -> str:
    """Why the series of ``path`` is not an image dcm2niix should convert ("" if it is one)."""
    sop_class, has_pixels = _sniff(path)
    for prefix, what in NON_IMAGE_SOP_CLASSES:
        if sop_class == prefix or (prefix.endswith(".") and sop_class.startswith(prefix)):
            return f"non-image scan: {what} (SOP class {sop_class})"
    if not has_pixels:
        return f"non-image scan: no pixel data (SOP class {sop_class})"
    return ""


def _sniff(path: Path) -> tuple[str, bool]:
    """(SOP class UID, has pixel data) from the Part 10 file meta; pydicom for anything unusual.

    A file neither can identify gives ("", True): dcm2niix then judges it, and says why.
    """
    with open(path, "rb") as fh:
        head = fh.read(8192)
        meta = _file_meta(head)
        if meta is None or meta.get(0x0010, "") in _NOT_LITTLE_ENDIAN or 0x0002 not in meta:
            return _sniff_pydicom(path)
        if os.fstat(fh.fileno()).st_size == 0:
            return meta[0x0002], False
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return meta[0x0002], any(data.find(tag, 132) >= 0 for tag in _PIXEL_TAGS)


def _file_meta(head: bytes) -> dict[int, str] | None:
    """The string elements of the (explicit VR little endian) group 0002, or None if not Part 10."""
    if head[128:132] != b"DICM":
        return None
    values: dict[int, str] = {}
    pos = 132
    while pos + 8 <= len(head):
        group, element = struct.unpack_from("<HH", head, pos)
        if group != 0x0002:
            return values
        vr = head[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", head, pos + 8)
            pos += 12
        else:
            (length,) = struct.unpack_from("<H", head, pos + 6)
            pos += 8
        if vr == b"UI":
            values[element] = head[pos : pos + length].rstrip(b"\0 ").decode("ascii", "replace")
        pos += length
    return None  # meta longer than what was read: let pydicom decide


def _sniff_pydicom(path: Path) -> tuple[str, bool]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        # defer_size: skip over large values (pixel data) instead of reading them.
        ds = pydicom.dcmread(path, defer_size=1024)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return "", True
    sop_class = str(
        ds.get("SOPClassUID", "") or getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "")
    )
    if not sop_class:
        return "", True
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    return sop_class, has_pixels


def describe_output(path: Path) -> dict[str, Any]:
    """Name, size and md5 of an output; shape and voxel size too for a NIfTI image."""
    with open(path, "rb") as fh:
        entry: dict[str, Any] = {
            "name": path.name,
            "size": path.stat().st_size,
            "md5": hashlib.file_digest(fh, "md5").hexdigest(),
        }
    if path.name.endswith(NIFTI_SUFFIXES):
        entry.update(nifti_geometry(path))
    return entry


def nifti_geometry(path: Path) -> dict[str, list[float] | list[int]]:
    """``shape`` and ``voxel_size`` (spatial pixdim) from a NIfTI-1 or NIfTI-2 header."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(540)
    for endian in "<>":
        (sizeof_hdr,) = struct.unpack_from(endian + "i", head, 0)
        if sizeof_hdr == 348:
            dims = struct.unpack_from(endian + "8h", head, 40)
            pixdim = struct.unpack_from(endian + "8f", head, 76)
            break
        if sizeof_hdr == 540:
            dims = struct.unpack_from(endian + "8q", head, 16)
            pixdim = struct.unpack_from(endian + "8d", head, 104)
            break
    else:
        raise ValueError(f"{path}: not a NIfTI-1/2 header")
    ndim = dims[0]
    return {
        "shape": [int(d) for d in dims[1 : ndim + 1]],
        "voxel_size": [round(float(p), 6) for p in pixdim[1 : min(ndim, 3) + 1]],
    }


# -- convert_session: the workflow's step (one job per session, convert_scan per scan) -------------


@dataclass(frozen=True)
class SessionScan:
    """One scan of a ``convert_session`` job."""

    scan: str  # the {scan} wildcard: its folder and receipt name in the session folders
    scan_id: str = ""
    scan_type: str = ""


def convert_session(
    *,
    source_dir: str | Path,
    receipt: str | Path,
    scans: list[SessionScan],
    name_prefix: str = "",
    extra: str = "",
    compress: bool = True,
    scrub_sidecars: bool = False,
    store: str = "files",
    gz_level: int = GZ_LEVEL,
) -> dict[str, Any]:
    """Convert a session's scans one after another (:func:`convert_scan` each), then write the
    session receipt (the rule's only declared output); returns its data.

    ``source_dir`` holds each scan's DICOM in ``<scan>/`` (``store="zip"``: ``<scan>.zip``) beside
    its receipt ``<scan>.json`` (the download's or the pseudonymisation's). Each scan's own convert
    receipt and NIfTI folder go in the session receipt's folder, as ``paths.convert_receipt`` and
    ``paths.nifti_dir`` name them.
    ``convert_scan`` stays the unit of work, untouched: this only decides which scans need it.

    Restart granularity is the scan: a scan whose convert receipt is newer than its source receipt
    and than the session's conversion settings (``paths.CONVERT_SETTINGS``, rewritten only when they
    change) was converted from this DICOM with these settings and is kept; the others are converted
    again. So a job killed half-way, or retried by Slurm, converts only the scans it had not
    finished. A scan interrupted by the machine (:class:`Interrupted`: OOM kill, disk full) does not
    stop the others; the job fails at the end naming them, with no session receipt.
    """
    started = time.monotonic()
    source_dir, out_dir = Path(source_dir), paths.outputs_of(receipt)
    settings: dict[str, Any] = {
        "name_prefix": name_prefix,
        "extra": extra,
        "compress": compress,
        "scrub_sidecars": scrub_sidecars,
    }  # no path: the NIfTI tree of a pseudonymised run must not name the session
    if compress and gz_level != GZ_LEVEL:  # recorded only off the default: results made before it stay
        settings["gz_level"] = gz_level
    # left by a job killed writing it (the session receipt's, --receipt, the CLI deletes for every step)
    remove_stale_parts(out_dir / paths.CONVERT_SETTINGS_NAME)
    settings_mtime = _settings_mtime(out_dir / paths.CONVERT_SETTINGS_NAME, settings)
    results: dict[str, dict[str, Any]] = {}
    interrupted: list[str] = []
    for scan in scans:
        scan_receipt = paths.receipt_of(out_dir / scan.scan)
        remove_stale_parts(scan_receipt)
        folder = source_dir / scan.scan
        source = paths.zip_of(folder) if store == "zip" else folder
        kept = _converted_already(scan_receipt, paths.receipt_of(folder), settings_mtime, scan.scan_id)
        if kept is not None:
            log.info("%s: %s already (%s), kept", scan.scan, kept["status"], scan_receipt)
            results[scan.scan] = {"status": kept["status"], "converted_now": False}
            continue
        for stale in out_dir.glob(f".{scan.scan}.*.tmp"):  # left by a killed attempt
            shutil.rmtree(stale, ignore_errors=True)
        try:
            data = convert_scan(
                dicom_dir=source,
                receipt=scan_receipt,
                name=f"{name_prefix}{scan.scan}",
                extra=extra,
                compress=compress,
                gz_level=gz_level,
                scan_id=scan.scan_id,
                scan_type=scan.scan_type,
                scrub_sidecars=scrub_sidecars,
            )
        except Stopped:
            raise  # asked to stop: no further scan, no session receipt
        except Interrupted as exc:  # e.g. the OOM killer took this scan's dcm2niix: try the others
            log.error("%s", exc)
            interrupted.append(f"{scan.scan} ({exc})")
            continue
        results[scan.scan] = {"status": data["status"], "converted_now": True}
    if interrupted:
        raise Interrupted(
            f"{receipt}: {len(interrupted)} of {len(scans)} scan(s) not converted: {'; '.join(interrupted)}"
        )
    summary: dict[str, Any] = {
        "step": "convert_session",
        "scans": results,
        "n_scans": len(scans),
        "n_converted_now": sum(r["converted_now"] for r in results.values()),
        "date": datetime.now(UTC).date().isoformat(),
        "duration_s": round(time.monotonic() - started, 3),
        "xnat_prep_version": __version__,
    }
    receipts.write(receipt, summary)
    return summary


def _settings_mtime(path: Path, settings: dict[str, Any]) -> int:
    """The mtime (ns) of the session's recorded conversion settings, written anew (so: now) when
    they differ from ``settings``: every scan converted before that is then out of date."""
    try:
        if json.loads(path.read_text(encoding="utf-8")) == settings:
            return path.stat().st_mtime_ns
    except (OSError, ValueError):
        pass
    atomic_write(path, json.dumps(settings, sort_keys=True) + "\n")
    return path.stat().st_mtime_ns


def _converted_already(
    scan_receipt: Path, source_receipt: Path, settings_mtime: int, scan_id: str
) -> dict[str, Any] | None:
    """The scan's convert receipt if it is a verdict on this scan's current DICOM with the current
    settings (newer than both), else None. A receipt is written last and atomically, so one that
    is there is complete; equal times count as older (a coarse clock must not keep a stale result)."""
    try:
        mtime = scan_receipt.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    try:
        source_mtime = source_receipt.stat().st_mtime_ns
    except FileNotFoundError:
        source_mtime = 0  # not downloaded: converting finds no DICOM and says so
    if mtime <= settings_mtime or mtime <= source_mtime:
        return None
    try:
        data = receipts.read(scan_receipt)
    except UserError:
        return None
    if data.get("scan_id", "") != scan_id or data.get("status") not in ("converted", "skipped", "failed"):
        return None
    return data


def scan_receipts(convert_receipts: list[str | Path] | tuple[str | Path, ...]) -> list[Path]:
    """The per-scan convert receipts behind ``convert_receipts``: a session receipt
    (``convert_session``) stands for its scans' receipts, in its order; a scan's receipt for itself."""
    found: list[Path] = []
    for path in map(Path, convert_receipts):
        data = receipts.read(path)
        if data.get("step") == "convert_session":
            found += [paths.receipt_of(paths.outputs_of(path) / scan) for scan in data.get("scans", {})]
        else:
            found.append(path)
    return found
