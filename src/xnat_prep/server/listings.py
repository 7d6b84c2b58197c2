"""What the archive answers when read: listing rows (ResultSets), ``items`` documents, resource
catalogs, and the listing endpoint itself. Row shapes follow XNAT (see docs/server.md)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

from xnat_prep.server.schema import FIELD_KEY, UnknownPath, schema
from xnat_prep.server.store import FileEntry, Obj, Resource, Store

if TYPE_CHECKING:
    from xnat_prep.server.http import Handler
    from xnat_prep.server.resolve import Loc

MODALITIES = {
    "xnat:mrSessionData": "MR",
    "xnat:ctSessionData": "CT",
    "xnat:petSessionData": "PT",
    "xnat:otherDicomSessionData": "OT",
}


def obj_uri(obj: Obj) -> str:
    if obj.kind == "project":
        return f"/data/projects/{obj.id}"
    if obj.kind == "scan":
        return f"/data/experiments/{obj.experiment_id}/scans/{obj.id}"
    if obj.kind == "reconstruction":
        return f"/data/experiments/{obj.experiment_id}/reconstructions/{obj.id}"
    return f"/data/{obj.kind}s/{obj.id}"  # an assessor is an experiment: /data/experiments/{ID}


def find_project(store: Store, ref: str) -> Obj | None:
    """A project by ID or by one of its aliases (as XNAT's getProjectByIDorAlias)."""
    found = store.project(ref)
    if found is None:
        aliases = (p for p in store.projects() if ref in alias_values(p))
        found = next(aliases, None)
    return found


def alias_values(project: Obj) -> list[str]:
    return [v for k, v in project.extra.items() if k.startswith("aliases/alias[")]


def family(obj: Obj) -> str:
    """What an object is in the REST hierarchy: its kind, or "assessor" for a derived experiment
    (an image assessor, kept with the experiments). Also its schema.SHORTCUTS family."""
    if obj.kind == "experiment" and schema().is_a(obj.xsi_type, "derivedData"):
        return "assessor"
    return obj.kind


def data_fields(store: Store, obj: Obj) -> dict[str, Any]:
    """An object's top-level values, as the ``data_fields`` of its ``items`` document."""
    return {k: v for k, v in values(store, obj).items() if "/" not in k and "[" not in k}


def values(store: Store, obj: Obj) -> dict[str, Any]:
    """All of an object's values by storage key (schema.py), with XNAT's defaults."""
    return {k: v for k, v in _values(store, obj).items() if not k.startswith("_")}  # _: server's own


def _values(store: Store, obj: Obj) -> dict[str, Any]:
    if obj.kind == "project":
        return {
            "ID": obj.id,
            "secondary_ID": obj.extra.get("secondary_ID", obj.id),
            "name": obj.extra.get("name", obj.id),
            **obj.extra,
        }
    if obj.kind == "subject":
        return {"ID": obj.id, "label": obj.label, "project": obj.project, **obj.extra}
    if family(obj) == "assessor":
        return {"ID": obj.id, "label": obj.label, "project": obj.project, **obj.extra}
    if obj.kind == "reconstruction":
        return {"ID": obj.id, "image_session_ID": obj.experiment_id, "type": "", **obj.extra}
    if obj.kind == "experiment":
        return {
            "ID": obj.id,
            "label": obj.label,
            "project": obj.project,
            "subject_ID": obj.subject_id,
            "date": "",
            "modality": MODALITIES.get(obj.xsi_type, ""),
            **obj.extra,
        }
    experiment = store.experiment(obj.experiment_id)
    return {
        "ID": obj.id,
        "image_session_ID": obj.experiment_id,
        "project": experiment.project if experiment else "",
        "type": "",
        "series_description": "",
        "frames": "",
        "quality": "usable",
        **obj.extra,
    }


def items_doc(store: Store, obj: Obj) -> dict[str, Any]:
    children = []
    custom = store.fields(obj.key) if obj.kind != "scan" else {}
    if custom:
        base = {"project": "projectData", "subject": "subjectData"}.get(obj.kind, "experimentData")
        children.append(
            {
                "field": "fields/field",
                "items": [
                    {
                        "children": [],
                        "meta": {"xsi:type": f"xnat:{base}_field", "isHistory": False},
                        "data_fields": {"name": name, "field": value},
                    }
                    for name, value in custom.items()
                ],
            }
        )
    meta: dict[str, Any] = {"xsi:type": obj.xsi_type, "isHistory": False}
    if obj.insert_date:
        meta["start_date"] = obj.insert_date
    return {"items": [{"meta": meta, "data_fields": data_fields(store, obj), "children": children}]}


def listing_row(store: Store, obj: Obj) -> dict[str, Any]:
    d = data_fields(store, obj)
    uri = obj_uri(obj)
    if obj.kind == "project":
        return {
            "ID": obj.id,
            "secondary_ID": d["secondary_ID"],
            "name": d["name"],
            "description": d.get("description", ""),
            "pi_firstname": "",
            "pi_lastname": "",
            "URI": uri,
        }
    if obj.kind == "subject":
        return {
            "ID": obj.id,
            "project": obj.project,
            "label": obj.label,
            "insert_date": obj.insert_date,
            "insert_user": obj.insert_user,
            "URI": uri,
        }
    if family(obj) == "assessor":
        return {
            "ID": obj.id,
            "project": obj.project,
            "label": obj.label,
            "xsiType": obj.xsi_type,
            "session_ID": obj.extra.get("imageSession_ID", ""),
            "date": d.get("date", ""),
            "insert_date": obj.insert_date,
            "URI": uri,
        }
    if obj.kind == "reconstruction":
        return {
            "xnat_reconstructedimagedata_id": f"{obj.experiment_id}/{obj.id}",
            "ID": obj.id,
            "type": d["type"],
            "baseScanType": d.get("baseScanType", ""),
            "xsiType": obj.xsi_type,
            "URI": uri,
        }
    if obj.kind == "experiment":
        subject = store.subject(obj.subject_id)
        return {
            "ID": obj.id,
            "project": obj.project,
            "label": obj.label,
            "date": d.get("date", ""),
            "xsiType": obj.xsi_type,
            "xnat:subjectassessordata/id": obj.subject_id,
            "subject_ID": obj.subject_id,
            "subject_label": subject.label if subject else "",
            "insert_date": obj.insert_date,
            "modality": d.get("modality", ""),
            "URI": uri,
        }
    return {
        "xnat_imagescandata_id": f"{obj.experiment_id}/{obj.id}",
        "ID": obj.id,
        "type": d["type"],
        "quality": d["quality"],
        "xsiType": obj.xsi_type,
        "note": d.get("note", ""),
        "series_description": d["series_description"],
        "frames": d["frames"],
        "URI": uri,
    }


def with_columns(store: Store, obj: Obj, row: dict[str, Any], columns: str) -> dict[str, Any]:
    """Add requested columns (xpaths, shortcuts, custom fields) that the default row lacks (pyxnat)."""
    known: dict[str, Any] = {}
    for column in filter(None, columns.split(",")):
        if column not in row and column != "DEFAULT":
            row[column] = column_value(store, obj, column, known)
    return row


META = ("insert_date", "insert_user", "last_modified")


def column_value(store: Store, obj: Obj, column: str, known: dict[str, Any]) -> Any:
    """One column of an object's row; ``known`` caches its values and fields between columns."""
    match = FIELD_KEY.match(column)
    if match:
        if "fields" not in known:
            known["fields"] = store.fields(obj.key)
        return known["fields"].get(match.group("name").lower(), "")
    name = column.rsplit("/", 1)[-1]
    if name in META and (column == name or "/meta/" in column):
        return getattr(obj, name) or ""
    if "values" not in known:
        known["values"] = values(store, obj)
    try:
        return known["values"].get(schema().resolve(obj.xsi_type, column, family(obj)).key, "")
    except UnknownPath:
        return known["values"].get(name, "")  # a column XNAT lists but this server does not store


def values_row(store: Store, obj: Obj, columns: str) -> dict[str, Any]:
    """``GET <object>?handler=values&columns=...``: one row with the requested columns (xnat-tools)."""
    row = listing_row(store, obj)
    known: dict[str, Any] = {}
    return {c: row[c] if c in row else column_value(store, obj, c, known) for c in columns.split(",") if c}


def resource_row(res: Resource, category: str) -> dict[str, Any]:
    """XNAT's resource row: deliberately without ID and URI (xnatpy fills them in itself)."""
    return {
        "xnat_abstractresource_id": str(res.id),
        "label": res.label,
        "element_name": "xnat:resourceCatalog",
        "category": category,
        "cat_id": "",
        "cat_desc": "",
        "format": res.format,
        "content": res.content,
        "tags": res.tags,
        "file_count": str(res.file_count),
        "file_size": str(res.file_size),
    }


def file_row(res: Resource, entry: FileEntry, owner_uri: str) -> dict[str, Any]:
    """XNAT's file row: no ID; URI ends in /resources/{id}/files/{path}."""
    return {
        "Name": PurePosixPath(entry.path).name,
        "Size": str(entry.size),
        "URI": f"{owner_uri}/resources/{res.id}/files/{entry.path}",
        "collection": res.label,
        "file_tags": entry.tags,
        "file_format": entry.format,
        "file_content": entry.content,
        "cat_ID": str(res.id),
        "digest": entry.md5,
    }


def catalog_xml(store: Store, res: Resource) -> str:
    """What XNAT answers for GET of a resource: its catalog (xnatpy then reads the listing)."""
    entries = "".join(
        f"\n<cat:entry URI={quoteattr(e.path)} ID={quoteattr(e.path)}"
        f" name={quoteattr(PurePosixPath(e.path).name)}"
        f' digest={quoteattr(e.md5)} size="{e.size}" xsi:type="cat:entry"/>'
        for e in store.files(res.id)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<cat:Catalog ID='
        + quoteattr(str(res.id))
        + ' xmlns:cat="http://nrg.wustl.edu/catalog" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        + f"\n<cat:entries>{entries}\n</cat:entries>\n</cat:Catalog>\n"
    )


def listing(h: Handler, loc: Loc) -> None:
    store = h.server.store
    user = h.require_user()
    coll = loc.collection
    columns = h.query.get("columns", "")
    if coll == "resources":
        owner = loc.obj
        assert owner is not None
        category = {"scan": "scans", "experiment": "resources"}.get(owner.kind, "resources")
        h.send_result_set([resource_row(r, category) for r in store.resources(loc.owner_key)])
        return
    objs: list[Obj]
    if coll == "projects":
        objs = store.projects()
    elif coll == "subjects":
        objs = store.subjects(loc.project.id if loc.project else None)
    elif coll == "experiments":
        # /data/experiments?project=P filters like /data/projects/P/experiments (XNAT's search)
        project = loc.project.id if loc.project else h.query.get("project") or None
        objs = store.experiments(project, loc.subject.id if loc.subject else None)
        if project is not None:  # assessors are listed with their session, not as the subject's
            objs = [o for o in objs if family(o) != "assessor"]
        if h.query.get("xsiType", "").lower() == "xnat:imagesessiondata":
            objs = [o for o in objs if o.xsi_type.endswith("SessionData")]
    elif coll == "assessors":
        assert loc.experiment is not None
        objs = store.assessors(loc.experiment.id)
    else:
        assert loc.experiment is not None
        objs = store.scans(loc.experiment.id, "reconstruction" if coll == "reconstructions" else "scan")
    visible = h.server.auth.readable_projects(user, listed=coll == "projects")
    if visible is not None and loc.project is None and coll in ("projects", "subjects", "experiments"):
        objs = [o for o in objs if (o.project or o.id) in visible]  # a project's path was checked
    rows = [with_columns(store, o, listing_row(store, o), columns) for o in objs]
    if coll == "experiments" and SCAN_COLUMN.search(columns):
        rows = [r for o, row in zip(objs, rows, strict=True) for r in scan_rows(store, o, row, columns)]
    h.send_result_set(rows)


SCAN_COLUMN = re.compile(r"(^|,)xnat:imagescandata/", re.I)


def scan_rows(store: Store, experiment: Obj, row: dict[str, Any], columns: str) -> list[dict[str, Any]]:
    """XNAT's search join: asked for ``xnat:imagescandata/...`` columns, an experiment listing has
    one row per scan (DAX lists a whole project's scans this way), each with the session's own
    columns. The join is a left join from the session: a session without scans is one row whose
    scan columns are empty. Scan column names come back lower-cased, as XNAT answers them."""
    wanted = [c for c in columns.split(",") if SCAN_COLUMN.search(c)]
    base = {k: v for k, v in row.items() if not SCAN_COLUMN.search(k)}
    out = []
    for scan in store.scans(experiment.id):
        values = {"id": scan.id, **{k.lower(): str(v) for k, v in scan.extra.items()}}
        out.append(base | {c.lower(): values.get(c.rsplit("/", 1)[1].lower(), "") for c in wanted})
    return out or [base | {c.lower(): "" for c in wanted}]
