"""XNAT's DICOM dump service: ``GET /data/services/dicomdump?src=...&format=json[&field=...]``.

``src`` is ``/archive/projects/P[/subjects/S]/experiments/E[/scans/N]`` (E by ID or label) or
``/prearchive/projects/P/TIMESTAMP/NAME[/scans/N]``. The header of the scan's first DICOM file
(sorted by path; the session's first scan when no scan is given) comes back as a ResultSet of
``{"tag1": "(0008,0060)", "tag2": "", "vr": "CS", "value": "MR", "desc": "Modality"}`` rows;
elements inside a sequence item carry the sequence's tag in ``tag1`` and their own in ``tag2``.
``field`` (repeatable) keeps only the named elements, given as keyword or ``GGGGEEEE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from xnat_prep.server.access import check_read
from xnat_prep.server.errors import HTTPError

if TYPE_CHECKING:
    import pydicom

    from xnat_prep.server.http import Handler


def _tag(tag: Any) -> str:
    return f"({tag.group:04X},{tag.element:04X})"


def dump(ds: pydicom.Dataset, wanted: set[str]) -> list[dict[str, str]]:
    rows = []

    def keep(elem: Any) -> bool:
        return not wanted or elem.keyword in wanted or f"{elem.tag.group:04X}{elem.tag.element:04X}" in wanted

    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                for sub in item:
                    if keep(sub) or keep(elem):
                        rows.append(
                            {
                                "tag1": _tag(elem.tag),
                                "tag2": _tag(sub.tag),
                                "vr": sub.VR,
                                "value": _value(sub),
                                "desc": sub.name,
                            }
                        )
        elif keep(elem):
            rows.append(
                {"tag1": _tag(elem.tag), "tag2": "", "vr": elem.VR, "value": _value(elem), "desc": elem.name}
            )
    return rows


def _value(elem: Any) -> str:
    if elem.VR in ("OB", "OW", "OF", "OD", "OL", "UN"):
        return f"<{len(elem.value or b'')} bytes>"
    value = elem.value
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


def first_file(h: Handler, src: str) -> Path:
    store = h.server.store
    parts = [p for p in src.split("/") if p]
    if parts[:1] == ["data"]:
        parts = parts[1:]
    if parts[:2] == ["prearchive", "projects"] and len(parts) >= 5:
        check_read(h, parts[2])
        doc = next((d for p, s, n, d in store.prearchive(parts[2]) if (s, n) == (parts[3], parts[4])), None)
        if doc is None:
            raise HTTPError(404, f"no prearchive session {src}")
        scans = doc["scans"] if len(parts) < 7 else [s for s in doc["scans"] if s["id"] == parts[6]]
        files = sorted((f["path"], f["blob"]) for s in scans[:1] for f in s["files"])
        if not files:
            raise HTTPError(404, f"no DICOM files in {src}")
        return store.blob_path(files[0][1])
    if parts[:2] != ["archive", "projects"] or len(parts) < 3:
        raise HTTPError(
            400, "src must be /archive/projects/P/.../experiments/E[/scans/N] or a prearchive path"
        )
    project = parts[2]
    check_read(h, project)
    keys = dict(zip(parts[3::2], parts[4::2], strict=False))
    experiment = store.experiment(keys.get("experiments", ""), project)
    if experiment is None:
        raise HTTPError(404, f"no experiment in {src}")
    scans = store.scans(experiment.id)
    if "scans" in keys:
        scans = [s for s in scans if s.id == keys["scans"]]
    for scan in scans:
        resource = store.resource(scan.key, "DICOM")
        files = store.files(resource.id) if resource else []
        if files:
            return store.blob_path(files[0].blob)
    raise HTTPError(404, f"no DICOM files in {src}")


def handle(h: Handler) -> None:
    src = h.query.get("src")
    if not src:
        raise HTTPError(400, "dicomdump needs src=")
    import pydicom  # deferred: it costs a quarter second of server start-up

    wanted = {v for k, v in h.query_list if k == "field"}
    try:
        ds = pydicom.dcmread(first_file(h, src), stop_before_pixels=True)
    except pydicom.errors.InvalidDicomError as exc:
        raise HTTPError(500, f"stored file is not DICOM: {exc}") from exc
    h.send_result_set(dump(ds, wanted))
