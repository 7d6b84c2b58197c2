"""Write the BIDS dataset under ``<output_root>/bids/`` from the converted scans.

Images, bval and bvec are placed by hard link from the conversion's folder (read through the
convert receipt: ``paths.convert_receipt``/``paths.outputs_of``), so no byte is copied; only when
the two folders are on different file systems is a file copied (counted in the receipt as
``copied``, and logged). Sidecars are written anew (IntendedFor, B0Field*, TaskName added), never
edited through a link. Every file is compared before it is written: a rerun changes nothing
(same inodes, same mtimes). The build manifest (``receipts/bids/build_manifest.json``) lists what
the last build wrote; files of a previous build that the new one does not make are removed, so a
mapping change renames exactly what it affects.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xnat_prep import __version__, manifest, paths, receipts
from xnat_prep.bids.layout import Layout, Planned
from xnat_prep.bids.mapping import Mapping_, Output
from xnat_prep.errors import UserError
from xnat_prep.fsutil import atomic_write

log = logging.getLogger(__name__)

BIDS_VERSION = "1.10.0"
_EXTENSIONS = (".nii.gz", ".nii", ".json", ".bval", ".bvec")
BIDSIGNORE = "sourcedata/\ncode/\n*__dup*\n"


@dataclass
class Placed:
    """One image of a scan in BIDS."""

    planned: Planned
    relstem: str  # sub-01/ses-1/func/sub-01_ses-1_task-rest_bold
    datatype: str
    source: dict[str, Path]  # extension -> converted file
    sidecar: dict[str, Any]
    output: Output | None = None


@dataclass
class Result:
    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    copied: int = 0
    files: dict[str, str] = field(default_factory=dict)  # relpath -> source ("" = generated)


def _split(name: str) -> tuple[str, str]:
    for ext in _EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)], ext
    return name, ""


def _images(p: Planned, root: Path) -> list[tuple[dict[str, Path], dict[str, Any]]]:
    """The converted images of a planned scan: (extension -> file, sidecar) per image."""
    s = p.scan
    receipt_path = paths.convert_receipt(root, s.project, s.subject, s.session, s.scan)
    try:
        receipt = receipts.read(receipt_path)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{receipt_path}: no convert receipt for mapped scan ({type(exc).__name__})"
        ) from None
    if receipt.get("status") != "converted":
        raise UserError(
            f"session {s.session} scan {s.scan_id} ({p.rule.describe()}): conversion {receipt.get('status')}"
            f" ({receipt.get('reason', '')}): map it with skip: true or exclude_scans to leave it out"
        )
    folder = paths.outputs_of(receipt_path)
    stems: dict[str, dict[str, Path]] = {}
    for out in receipt.get("outputs", []):
        stem, ext = _split(out["name"])
        if ext:
            stems.setdefault(stem, {})[ext] = folder / out["name"]
    images = []
    for stem in sorted(stems):
        files = stems[stem]
        if ".nii.gz" not in files and ".nii" not in files:
            continue
        sidecar: dict[str, Any] = {}
        if ".json" in files:
            sidecar = json.loads(files[".json"].read_text(encoding="utf-8"))
        images.append((files, sidecar))
    return images


def place(layout: Layout, root: Path) -> list[Placed]:
    """Every image's final name; UserError naming the scan for an image no output routes."""
    placed: list[Placed] = []
    names: dict[str, Placed] = {}
    for p in layout.planned:
        images = _images(p, root)
        if not p.rule.outputs and len(images) != 1 and not _auto_echoes(p, images):
            raise UserError(
                f"session {p.scan.session} scan {p.scan.scan_id} ({p.rule.describe()}): dcm2niix gave "
                f"{len(images)} images; route them with outputs: (sidecar keys, e.g. EchoNumber, ImageType)"
            )
        echoes = _auto_echoes(p, images)
        for files, sidecar in images:
            output: Output | None = None
            if echoes:
                output = Output((), "", "", (("echo", str(sidecar["EchoNumber"])),))
            elif p.rule.outputs:
                output = next((o for o in p.rule.outputs if o.routes(sidecar)), None)
                if output is None:
                    shown = {
                        k: sidecar.get(k) for k in ("EchoNumber", "ImageType", "EchoTime") if k in sidecar
                    }
                    raise UserError(
                        f"session {p.scan.session} scan {p.scan.scan_id} ({p.rule.describe()}): no output "
                        f"routes the image with sidecar {shown}"
                    )
            datatype, stem = p.name(output, sidecar)
            relstem = f"{p.folder(datatype)}/{stem}"
            if relstem in names:
                raise UserError(
                    f"session {p.scan.session} scan {p.scan.scan_id} ({p.rule.describe()}): {relstem} is "
                    f"also the name of an image of scan {names[relstem].planned.scan.scan_id}"
                )
            item = Placed(p, relstem, datatype, files, sidecar, output)
            names[relstem] = item
            placed.append(item)
    return placed


def _auto_echoes(p: Planned, images: list[tuple[dict[str, Path], dict[str, Any]]]) -> bool:
    """Several magnitude images that differ by echo only (multi-echo, no outputs: in the rule):
    each gets echo-<EchoNumber>, as heudiconv does."""
    if p.rule.outputs or len(images) < 2 or "echo" in p.entities:
        return False
    numbers = [sidecar.get("EchoNumber") for _, sidecar in images]
    phase = any("P" in (sidecar.get("ImageType") or []) for _, sidecar in images)
    return not phase and None not in numbers and len(set(numbers)) == len(numbers)


def _nifti_ext(item: Placed) -> str:
    return ".nii.gz" if ".nii.gz" in item.source else ".nii"


def _bids_uri(relpath: str) -> str:
    return f"bids::{relpath}"


def sidecars(placed: list[Placed]) -> dict[str, dict[str, Any]]:
    """relstem -> final sidecar (IntendedFor with final names, B0Field*, TaskName)."""
    by_scan: dict[tuple[str, str], list[Placed]] = {}
    for item in placed:
        by_scan.setdefault(item.planned.key, []).append(item)
    out: dict[str, dict[str, Any]] = {}
    for item in placed:
        p = item.planned
        data = dict(item.sidecar)
        data.update(p.rule.metadata)
        data.update(item.output.metadata if item.output else ())
        if item.datatype == "func" and "task" in p.entities:
            data.setdefault("TaskName", p.entities["task"])
        if p.b0_identifier:
            data["B0FieldIdentifier"] = p.b0_identifier
            targets = [
                _bids_uri(t.relstem + _nifti_ext(t))
                for key in p.intended_for
                for t in sorted(by_scan.get(key, []), key=lambda t: t.relstem)
            ]
            if targets:
                data["IntendedFor"] = targets
        if item.relstem.endswith("_phasediff") and not {"EchoTime1", "EchoTime2"} <= set(data):
            # a phase difference needs both echo times: take them from its magnitude images
            times = {t.relstem.rsplit("_", 1)[1]: t.sidecar.get("EchoTime") for t in by_scan.get(p.key, [])}
            if times.get("magnitude1") and times.get("magnitude2"):
                data.setdefault("EchoTime1", times["magnitude1"])
                data.setdefault("EchoTime2", times["magnitude2"])
        if p.b0_sources:
            data["B0FieldSource"] = p.b0_sources[0] if len(p.b0_sources) == 1 else list(p.b0_sources)
        out[item.relstem] = data
    return out


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


class _Writer:
    def __init__(self, bids: Path, result: Result) -> None:
        self.bids, self.result = bids, result

    def text(self, rel: str, text: str) -> None:
        self.result.files[rel] = ""
        path = self.bids / rel
        try:
            if path.read_text(encoding="utf-8") == text:
                self.result.unchanged += 1
                return
        except (FileNotFoundError, UnicodeDecodeError, IsADirectoryError):
            pass
        atomic_write(path, text, mode=0o644, fsync=False)
        self.result.written.append(rel)

    def link(self, rel: str, source: Path) -> None:
        self.result.files[rel] = str(source)
        path = self.bids / rel
        try:
            if os.path.samefile(path, source) or (
                path.stat().st_size == source.stat().st_size and _same_bytes(path, source)
            ):
                self.result.unchanged += 1
                return
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            log.warning("%s: cannot hard link (%s): copied", source, exc.strerror)
            shutil.copy2(source, tmp)
            self.result.copied += 1
        os.replace(tmp, path)
        self.result.written.append(rel)


def _same_bytes(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def _acq_time(sidecar: Mapping[str, Any]) -> str:
    stamp = sidecar.get("AcquisitionDateTime")
    if isinstance(stamp, str) and "T" in stamp:
        return stamp.split(".")[0]
    return "n/a"


def write(
    layout: Layout,
    mapping: Mapping_,
    root: str | Path,
    *,
    host: str = "",
    pseudonymised: bool = False,
) -> Result:
    """Build (or bring up to date) ``<root>/bids``; returns what was written and removed."""
    root = Path(root)
    bids = root / paths.BIDS_DIR
    result = Result()
    placed = place(layout, root)
    final = sidecars(placed)
    w = _Writer(bids, result)
    versions: set[str] = set()
    for item in placed:
        for ext, source in sorted(item.source.items()):
            if ext == ".json":
                continue
            w.link(item.relstem + ext, source)
        w.text(item.relstem + ".json", _dumps(final[item.relstem]))
        version = item.sidecar.get("ConversionSoftwareVersion")
        if version:
            versions.add(str(version))
    # per-session scans.tsv
    sessions: dict[str, list[Placed]] = {}
    for item in placed:
        sessions.setdefault(item.planned.folder(""), []).append(item)
    for folder, items in sorted(sessions.items()):
        p = items[0].planned
        lines = ["filename\tacq_time\txnat_session_id\txnat_scan_id"]
        for item in sorted(items, key=lambda i: i.relstem):
            rel = item.relstem.split("/", 2 if p.session else 1)[-1] + _nifti_ext(item)
            session_id = "n/a" if pseudonymised else item.planned.scan.session_id
            lines.append(f"{rel}\t{_acq_time(item.sidecar)}\t{session_id}\t{item.planned.scan.scan_id}")
        w.text(f"{folder.rstrip('/')}/{p.prefix()}_scans.tsv", "\n".join(lines) + "\n")
    w.text("scans.json", _dumps(SCANS_JSON))
    subjects = sorted({i.planned.subject for i in placed})
    w.text("participants.tsv", "participant_id\n" + "".join(f"sub-{s}\n" for s in subjects))
    w.text("participants.json", _dumps({"participant_id": {"Description": "Participant label (from XNAT)"}}))
    w.text("dataset_description.json", _dumps(description(mapping, layout, host, versions)))
    w.text("README", readme(mapping, layout))
    w.text(".bidsignore", BIDSIGNORE)
    result.removed = _remove_stale(root, bids, set(result.files))
    atomic_write(
        root / paths.BIDS_BUILD_MANIFEST,
        _dumps({"files": result.files, "mapping": mapping.path}),
        mode=0o644,
        fsync=False,
    )
    return result


SCANS_JSON = {
    "acq_time": {"Description": "Acquisition time of the first volume (from the dcm2niix sidecar)"},
    "xnat_session_id": {"Description": "XNAT experiment (session) accession ID; n/a when pseudonymised"},
    "xnat_scan_id": {"Description": "XNAT scan ID within the session"},
}


def description(mapping: Mapping_, layout: Layout, host: str, versions: set[str]) -> dict[str, Any]:
    dataset = mapping.dataset
    projects = sorted({p.scan.project for p in layout.planned})
    data: dict[str, Any] = {
        "Name": dataset.get("name") or " ".join(projects) or "xnat-prep dataset",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw",
    }
    if dataset.get("license"):
        data["License"] = dataset["license"]
    if dataset.get("authors"):
        data["Authors"] = list(dataset["authors"])
    if dataset.get("acknowledgements"):
        data["Acknowledgements"] = dataset["acknowledgements"]
    if dataset.get("funding"):
        data["Funding"] = list(dataset["funding"])
    data["GeneratedBy"] = [
        {"Name": "xnat-prep", "Version": __version__, "Description": "XNAT -> dcm2niix -> BIDS"}
    ] + [{"Name": "dcm2niix", "Version": v} for v in sorted(versions)]
    if host:
        data["SourceDatasets"] = [{"URL": f"{host}/data/projects/{p}"} for p in projects]
    return data


def readme(mapping: Mapping_, layout: Layout) -> str:
    projects = ", ".join(sorted({p.scan.project for p in layout.planned}))
    return (
        f"# {mapping.dataset.get('name') or projects}\n\n"
        f"Converted from XNAT project(s) {projects} by xnat-prep with dcm2niix, mapped by "
        f"{Path(mapping.path).name}.\n"
    )


def _remove_stale(root: Path, bids: Path, keep: set[str]) -> list[str]:
    """Remove what the previous build wrote and this one does not (and folders left empty)."""
    try:
        previous = json.loads((root / paths.BIDS_BUILD_MANIFEST).read_text(encoding="utf-8"))["files"]
    except (FileNotFoundError, ValueError, KeyError):
        return []
    removed = []
    for rel in sorted(set(previous) - keep):
        path = bids / rel
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(rel)
            parent = path.parent
            while parent != bids and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
    return removed


def plan_rows(layout: Layout) -> str:
    """``plan/bids_plan.tsv``: one row per scan -> its predicted BIDS names (or why left out)."""
    lines = ["session\tscan_id\tscan_type\tseries_description\trule\tbids\tb0_field"]
    rows = []
    for p in layout.planned:
        names = ", ".join(p.relpaths())
        b0 = p.b0_identifier or ",".join(p.b0_sources)
        rows.append((p.scan, p.rule.name, names, b0))
    for s, why in layout.skipped:
        rows.append((s, why, "(skipped)", ""))
    rows.sort(key=lambda r: (r[0].session, manifest.natural_key(r[0].scan_id)))
    for s, rule, names, b0 in rows:
        lines.append(
            f"{s.session}\t{s.scan_id}\t{s.scan_type}\t{s.series_description}\t{rule}\t{names}\t{b0}"
        )
    return "\n".join(lines) + "\n"
