"""The project hierarchy REST API: Project > Subject > Experiment > Scan > Resource > File.

Paths arrive normalised (``/REST`` and ``/data/archive`` mapped to ``/data``) and split, e.g.
``["projects", "P", "subjects", "S", "experiments", "E", "scans", "1", "resources", "DICOM",
"files", "a.dcm"]``. Subjects and experiments are found by accession ID or, inside a project, by
label; resources by label or numeric ID; ``scans/ALL``, ``scans/1,2`` and scan types select several
scans for ``/files``. Answers follow XNAT: ResultSet listings (JSON, or CSV for pyxnat), ``items``
documents for objects, an XML catalog for a resource, raw bytes or a streamed zip for files.
"""

from __future__ import annotations

import re
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

from xnat_prep.server.auth import ROLE_GROUPS
from xnat_prep.server.errors import HTTPError
from xnat_prep.server.store import Conflict, FileEntry, Obj, Resource, Store
from xnat_prep.server.zipstream import NotAnArchive, ZipEntry, iter_members

if TYPE_CHECKING:
    from xnat_prep.server.app import Handler

CHILDREN = {
    None: ("projects", "subjects", "experiments"),
    "project": ("subjects", "experiments", "resources", "users", "files"),
    "subject": ("experiments", "resources", "files"),
    "experiment": ("scans", "resources", "files"),
    "scan": ("resources", "files"),
}
FIELD_KEY = re.compile(r"^[\w.-]+:\w+/fields/field\[name=(?P<name>[^\]]+)\]/(?P<part>field|name)$", re.I)
ATTR_KEY = re.compile(r"^[\w.-]+:\w+/(?P<attr>\w+)$")
LABEL_OK = re.compile(r"^[A-Za-z0-9_.-]+$")
SCAN_DEFAULT_TYPES = {
    "xnat:mrSessionData": "xnat:mrScanData",
    "xnat:ctSessionData": "xnat:ctScanData",
    "xnat:petSessionData": "xnat:petScanData",
}
SESSION_TYPES = (
    "xnat:mrSessionData",
    "xnat:ctSessionData",
    "xnat:petSessionData",
    "xnat:otherDicomSessionData",
)
SCAN_TYPES = ("xnat:mrScanData", "xnat:ctScanData", "xnat:petScanData", "xnat:otherDicomScanData")
MODALITIES = {
    "xnat:mrSessionData": "MR",
    "xnat:ctSessionData": "CT",
    "xnat:petSessionData": "PT",
    "xnat:otherDicomSessionData": "OT",
}
# plain (non-xpath) query keys a project PUT may set
PROJECT_KEYS = ("name", "description", "keywords", "secondary_ID")


@dataclass
class Loc:
    """What a path addresses."""

    project: Obj | None = None
    subject: Obj | None = None
    experiment: Obj | None = None
    scan: Obj | None = None
    scan_selection: list[Obj] | None = None
    resource: Resource | None = None
    collection: str | None = None  # a trailing collection name: list it / create in it
    missing: str | None = None  # the trailing item of `collection` that does not exist yet
    missing_subject: str | None = None  # PUT .../subjects/NEW/experiments/NEW creates both
    rest: list[str] = field(default_factory=list)  # after "files" or "users"

    @property
    def obj(self) -> Obj | None:
        return self.scan or self.experiment or self.subject or self.project


# ---- URIs and row shapes -------------------------------------------------------------------------


def obj_uri(obj: Obj) -> str:
    if obj.kind == "project":
        return f"/data/projects/{obj.id}"
    if obj.kind == "scan":
        return f"/data/experiments/{obj.experiment_id}/scans/{obj.id}"
    return f"/data/{obj.kind}s/{obj.id}"


def data_fields(store: Store, obj: Obj) -> dict[str, Any]:
    if obj.kind == "project":
        return {
            "ID": obj.id,
            "secondary_ID": obj.extra.get("secondary_ID", obj.id),
            "name": obj.extra.get("name", obj.id),
            **obj.extra,
        }
    if obj.kind == "subject":
        return {"ID": obj.id, "label": obj.label, "project": obj.project, **obj.extra}
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
    values = store.fields(obj.key) if obj.kind != "scan" else {}
    if values:
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
                    for name, value in values.items()
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
    """Add requested xpath columns (custom fields, data fields) that the default row lacks (pyxnat)."""
    values: dict[str, str] | None = None
    for column in filter(None, columns.split(",")):
        if column in row or column in ("DEFAULT",):
            continue
        match = FIELD_KEY.match(column)
        if match:
            values = store.fields(obj.key) if values is None else values
            row[column] = values.get(match.group("name").lower(), "")
        else:
            attr = column.rsplit("/", 1)[-1]
            row[column] = data_fields(store, obj).get(attr, "")
    return row


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


def safe_path(parts: list[str]) -> str:
    """A file path inside a resource; refuses empty, absolute and parent parts."""
    clean = [p for p in parts if p not in ("", ".")]
    if not clean or any(p == ".." for p in clean):
        raise HTTPError(400, f"bad file path {'/'.join(parts)!r}")
    return "/".join(clean)


def sanitise(text: str) -> str:
    """XNAT's zip path cleaning of scan types: anything but letters and digits becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9]", "_", text)


# ---- resolution ------------------------------------------------------------------------------------


def resolve(h: Handler, parts: list[str]) -> Loc:
    store = h.server.store
    loc = Loc()
    i = 0
    while i < len(parts):
        coll = parts[i]
        item = parts[i + 1] if i + 1 < len(parts) else None
        if loc.resource is not None or loc.scan_selection is not None:
            if coll != "files":
                raise HTTPError(404, f"no such resource: /{'/'.join(parts)}")
            loc.collection, loc.rest = "files", parts[i + 1 :]
            return loc
        if coll not in CHILDREN.get(loc.obj.kind if loc.obj else None, ()):
            raise HTTPError(404, f"no such resource: /{'/'.join(parts)}")
        if coll == "files":
            loc.collection, loc.rest = "files", parts[i + 1 :]
            return loc
        if coll == "users":
            loc.collection, loc.rest = "users", parts[i + 1 :]
            return loc
        if item is None:
            loc.collection = coll
            return loc
        last = i + 2 == len(parts)
        if coll == "resources":
            owner = loc.obj
            assert owner is not None
            loc.resource = store.resource(owner.key, item)
            if loc.resource is None:
                if last:
                    loc.collection, loc.missing = coll, item
                    return loc
                if parts[i + 2] == "files" and h.command in ("PUT", "POST"):
                    # uploading into a resource that does not exist yet creates it, as in XNAT
                    loc.collection, loc.missing, loc.rest = "files", item, parts[i + 3 :]
                    return loc
                raise HTTPError(404, f"resource {item} not found")
            i += 2
            continue
        found = lookup(h, loc, coll, item)
        if found is None:
            if coll == "scans" and not last and parts[i + 2] == "files" and loc.experiment is not None:
                loc.scan_selection = select_scans(store, loc.experiment, item)
                if not loc.scan_selection:
                    raise HTTPError(404, f"no scans match {item}")
                i += 2
                continue
            if (
                coll == "subjects"
                and h.command == "PUT"
                and loc.project is not None
                and len(parts) == i + 4
                and parts[i + 2] == "experiments"
            ):
                loc.missing_subject = item
                i += 2
                continue
            if last:
                loc.collection, loc.missing = coll, item
                return loc
            raise HTTPError(404, f"{coll[:-1]} {item} not found")
        if found.kind in ("project", "subject", "experiment"):
            check_read(h, found.project or found.id)
        setattr(loc, found.kind, found)
        if found.kind == "subject" and loc.project is None:
            loc.project = store.project(found.project)
        if found.kind == "experiment":
            loc.project = loc.project or store.project(found.project)
            loc.subject = loc.subject or store.subject(found.subject_id)
        i += 2
    return loc


def lookup(h: Handler, loc: Loc, coll: str, item: str) -> Obj | None:
    store = h.server.store
    if coll == "projects":
        return store.project(item)
    if coll == "subjects":
        return store.subject(item, loc.project.id if loc.project else None)
    if coll == "experiments":
        if loc.project is None:
            return store.experiment(item)
        found = store.experiment(item, loc.project.id)
        if found is not None and loc.subject is not None and found.subject_id != loc.subject.id:
            return None
        if found is not None and loc.missing_subject is not None:
            raise HTTPError(409, f"experiment {item} already exists under another subject")
        return found
    if coll == "scans":
        assert loc.experiment is not None
        return store.scan(loc.experiment.id, item)
    return None


def select_scans(store: Store, experiment: Obj, spec: str) -> list[Obj]:
    """``ALL``, or a comma list of scan IDs and/or scan types."""
    scans = store.scans(experiment.id)
    if spec == "ALL":
        return scans
    wanted = set(spec.split(","))
    return [s for s in scans if s.id in wanted or s.extra.get("type", "") in wanted]


def check_read(h: Handler, project: str) -> None:
    if not h.server.auth.can_read(h.require_user(), project):
        raise HTTPError(403, f"user '{h.user}' has no access to project {project}")


def check_write(h: Handler, loc: Loc) -> None:
    user = h.require_user()
    if loc.project is None:
        if not h.server.auth.is_admin(user):
            raise HTTPError(403, "only site administrators may create projects")
        return
    if not h.server.auth.can_write(user, loc.project.id):
        raise HTTPError(403, f"user '{user}' may not modify project {loc.project.id}")


# ---- dispatch ------------------------------------------------------------------------------------


def handle(h: Handler, parts: list[str]) -> None:
    try:
        dispatch(h, parts)
    except Conflict as exc:  # a concurrent request created the same object first
        raise HTTPError(409, f"conflict with an existing object: {exc}") from exc


def dispatch(h: Handler, parts: list[str]) -> None:
    loc = resolve(h, parts)
    method = "GET" if h.command == "HEAD" else h.command
    if loc.collection == "users":
        project_users(h, loc)
    elif loc.collection == "files":
        {"GET": get_files, "PUT": put_file, "POST": put_file, "DELETE": delete_file}.get(method, bad_method)(
            h, loc
        )
    elif loc.missing is not None or loc.missing_subject is not None:
        if method == "PUT":
            check_write(h, loc)
            create(h, loc)
        else:
            raise HTTPError(
                404, f"{loc.collection[:-1] if loc.collection else 'object'} {loc.missing} not found"
            )
    elif loc.collection is not None:
        if method != "GET":
            bad_method(h, loc)
        listing(h, loc)
    elif loc.resource is not None:
        if method == "GET":
            h.send_text(catalog_xml(h.server.store, loc.resource), content_type="application/xml")
        elif method == "PUT":
            check_write(h, loc)
            resource_put(h, loc)
        elif method == "DELETE":
            check_write(h, loc)
            h.server.store.delete_resource(loc.resource.id)
            h.send_text("")
        else:
            bad_method(h, loc)
    else:
        obj = loc.obj
        assert obj is not None
        if method == "GET":
            h.send_json(items_doc(h.server.store, obj))
        elif method == "PUT":
            check_write(h, loc)
            update(h, obj)
            h.send_text(obj.id if obj.kind != "scan" else "")
        elif method == "DELETE":
            check_delete(h, loc)
            h.server.store.delete(obj)
            h.send_text("")
        else:
            bad_method(h, loc)


def bad_method(h: Handler, loc: Loc) -> None:
    raise HTTPError(405, f"{h.command} is not supported here")


def check_delete(h: Handler, loc: Loc) -> None:
    user = h.require_user()
    obj = loc.obj
    assert obj is not None and loc.project is not None
    allowed = (
        h.server.auth.role(user, loc.project.id) == "owner"
        if obj.kind == "project"
        else h.server.auth.can_write(user, loc.project.id)
    )
    if not allowed:
        raise HTTPError(403, f"user '{user}' may not delete in project {loc.project.id}")


def listing(h: Handler, loc: Loc) -> None:
    store = h.server.store
    user = h.require_user()
    coll = loc.collection
    columns = h.query.get("columns", "")
    if coll == "resources":
        owner = loc.obj
        assert owner is not None
        category = {"scan": "scans", "experiment": "resources"}.get(owner.kind, "resources")
        h.send_result_set([resource_row(r, category) for r in store.resources(owner.key)])
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
        if h.query.get("xsiType", "").lower() == "xnat:imagesessiondata":
            objs = [o for o in objs if o.xsi_type.endswith("SessionData")]
    else:
        assert loc.experiment is not None
        objs = store.scans(loc.experiment.id)
    visible = h.server.auth.readable_projects(user)
    if visible is not None and coll != "scans":
        objs = [o for o in objs if (o.project or o.id) in visible]
    rows = [with_columns(store, o, listing_row(store, o), columns) for o in objs]
    if coll == "experiments" and SCAN_COLUMN.search(columns):
        rows = [r for o, row in zip(objs, rows, strict=True) for r in scan_rows(store, o, row, columns)]
    h.send_result_set(rows)


SCAN_COLUMN = re.compile(r"(^|,)xnat:imagescandata/", re.I)


def scan_rows(store: Store, experiment: Obj, row: dict[str, Any], columns: str) -> list[dict[str, Any]]:
    """XNAT's search join: asked for ``xnat:imagescandata/...`` columns, an experiment listing has
    one row per scan (DAX lists a whole project's scans this way); a session without scans, none."""
    wanted = [c for c in columns.split(",") if SCAN_COLUMN.search(c)]
    out = []
    for scan in store.scans(experiment.id):
        values = {"id": scan.id, **{k.lower(): str(v) for k, v in scan.extra.items()}}
        base = {k: v for k, v in row.items() if not SCAN_COLUMN.search(k)}
        out.append(base | {c.lower(): values.get(c.rsplit("/", 1)[1].lower(), "") for c in wanted})
    return out


# ---- creation and update -------------------------------------------------------------------------


def parse_updates(h: Handler, obj_kind: str) -> tuple[dict[str, Any], dict[str, str | None], str | None]:
    """Data fields, custom fields (lower-cased names, None = delete) and a new label from the query."""
    attrs: dict[str, Any] = {}
    custom: dict[str, str | None] = {}
    label = h.query.get("label") or None
    for key, value in h.query_list:
        match = FIELD_KEY.match(key)
        if match:
            if match.group("part") == "field":
                custom[match.group("name").lower()] = None if value == "NULL" else value
            elif value == "NULL":
                custom.setdefault(match.group("name").lower(), None)
            continue
        match = ATTR_KEY.match(key)
        attr = (
            match.group("attr") if match else key if obj_kind == "project" and key in PROJECT_KEYS else None
        )
        if attr is None or attr in ("ID", "project", "subject_ID", "image_session_ID"):
            continue
        if attr == "label":
            label = value
        else:
            attrs[attr] = None if value == "NULL" else value
    return attrs, custom, label


def update(h: Handler, obj: Obj) -> None:
    store = h.server.store
    attrs, custom, label = parse_updates(h, obj.kind)
    if label is not None and label != obj.label:
        if not LABEL_OK.match(label):
            raise HTTPError(400, f"invalid label {label!r}")
        clash = (
            store.subject(label, obj.project)
            if obj.kind == "subject"
            else store.experiment(label, obj.project)
            if obj.kind == "experiment"
            else None
        )
        if clash is not None and clash.id != obj.id:
            raise HTTPError(409, f"label {label} is already used in project {obj.project}")
    xsi = h.query.get("xsiType")
    if obj.kind in ("experiment", "scan") and xsi and xsi != obj.xsi_type:
        raise HTTPError(400, f"{obj.kind} {obj.id} is a {obj.xsi_type}, not {xsi}")
    store.update(obj, attrs, label if obj.kind in ("subject", "experiment") else None)
    if custom:
        store.set_fields(obj.key, custom)


def create(h: Handler, loc: Loc) -> None:
    store = h.server.store
    user = h.require_user()
    coll, name = loc.collection, loc.missing
    if coll == "resources":
        resource_put(h, loc)
        return
    xsi = h.query.get("xsiType", "")
    if coll == "projects":
        assert name is not None
        if not LABEL_OK.match(name):
            raise HTTPError(400, f"invalid project ID {name!r}")
        attrs, custom, _ = parse_updates(h, "project")
        store.create_project(name, user, {k: v for k, v in attrs.items() if v is not None})
        store.set_role(name, user, "owner")
        store.set_fields(f"project:{name}", custom)
        h.send_text(name, 201)
        return
    assert loc.project is not None
    project = loc.project.id
    if loc.missing_subject is not None:
        if not LABEL_OK.match(loc.missing_subject):
            raise HTTPError(400, f"invalid subject label {loc.missing_subject!r}")
        loc.subject = store.subject(store.create_subject(project, loc.missing_subject, user, {}))
    if coll == "subjects":
        attrs, custom, label = parse_updates(h, "subject")
        label = label or name
        assert label is not None
        if not LABEL_OK.match(label):
            raise HTTPError(400, f"invalid subject label {label!r}")
        existing = store.subject(label, project)
        if existing is not None:
            update(h, existing)
            h.send_text(existing.id)
            return
        subject_id = store.create_subject(
            project, label, user, {k: v for k, v in attrs.items() if v is not None}
        )
        store.set_fields(f"subject:{subject_id}", custom)
        h.send_text(subject_id, 201)
    elif coll == "experiments":
        attrs, custom, label = parse_updates(h, "experiment")
        label = label or name
        assert label is not None
        if not LABEL_OK.match(label):
            raise HTTPError(400, f"invalid experiment label {label!r}")
        if xsi not in SESSION_TYPES:
            raise HTTPError(400, f"creating an experiment needs xsiType, one of {', '.join(SESSION_TYPES)}")
        subject = loc.subject
        if subject is None:
            ref = h.query.get(f"{xsi}/subject_ID") or h.query.get("subject_ID")
            subject = store.subject(ref, project) if ref else None
            if subject is None:
                raise HTTPError(400, "creating an experiment here needs an existing subject (subject_ID)")
        if store.experiment(label, project) is not None:
            raise HTTPError(409, f"experiment {label} already exists in project {project}")
        experiment_id = store.create_experiment(
            project, subject.id, label, xsi, user, {k: v for k, v in attrs.items() if v is not None}
        )
        store.set_fields(f"experiment:{experiment_id}", custom)
        h.send_text(experiment_id, 201)
    elif coll == "scans":
        assert loc.experiment is not None and name is not None
        xsi = xsi or SCAN_DEFAULT_TYPES.get(loc.experiment.xsi_type, "xnat:otherDicomScanData")
        if xsi not in SCAN_TYPES:
            raise HTTPError(400, f"scan xsiType must be one of {', '.join(SCAN_TYPES)}")
        if not LABEL_OK.match(name):
            raise HTTPError(400, f"invalid scan ID {name!r}")
        attrs, _, _ = parse_updates(h, "scan")
        store.create_scan(loc.experiment.id, name, xsi, {k: v for k, v in attrs.items() if v is not None})
        h.send_text(name, 201)
    else:
        raise HTTPError(405, f"cannot create {coll}")


def resource_put(h: Handler, loc: Loc) -> None:
    """Create (or update) a resource: plain query (format=, content=, tags=) or XNAT's xsiType form."""
    owner = loc.obj
    assert owner is not None
    label = loc.resource.label if loc.resource else loc.missing
    assert label is not None
    q = h.query

    def pick(key: str) -> str:
        return q.get(f"xnat:resourceCatalog/{key}") or q.get(key) or ""

    label = pick("label") or label
    if not LABEL_OK.match(label):
        raise HTTPError(400, f"invalid resource label {label!r}")
    h.server.store.create_resource(owner.key, label, pick("format"), pick("content"), pick("tags"))
    h.send_text("")


# ---- files ---------------------------------------------------------------------------------------


def resources_for(store: Store, loc: Loc) -> list[tuple[Obj, Resource]]:
    """The resources a ``.../files`` request covers, with their owners."""
    if loc.resource is not None:
        owner = loc.obj
        assert owner is not None
        return [(owner, loc.resource)]
    owners = loc.scan_selection if loc.scan_selection is not None else [loc.obj] if loc.obj else []
    return [(o, r) for o in owners if o is not None for r in store.resources(o.key)]


def scan_zip_name(session: str, scan_id: str, scan_type: str, resource: str, path: str) -> str:
    """XNAT's zip layout: {session}/scans/{id}-{type}/resources/{label}/files/{path}."""
    return f"{session}/scans/{scan_id}-{sanitise(scan_type)}/resources/{resource}/files/{path}"


def zip_name(owner: Obj, res: Resource, path: str, loc: Loc) -> str:
    if owner.kind == "scan":
        session = loc.experiment.label if loc.experiment else owner.experiment_id
        return scan_zip_name(session, owner.id, owner.extra.get("type", ""), res.label, path)
    return f"{owner.label}/resources/{res.label}/files/{path}"


def get_files(h: Handler, loc: Loc) -> None:
    store = h.server.store
    if loc.rest:
        if loc.resource is None:
            raise HTTPError(
                404, "a file is addressed through its resource: .../resources/{label}/files/{path}"
            )
        path = safe_path(loc.rest)
        entry = store.file(loc.resource.id, path)
        if entry is None:
            raise HTTPError(404, f"file {path} not found in resource {loc.resource.label}")
        h.send_file(store.blob_path(entry.blob), entry.size, path, {"ETag": f'"{entry.md5}"'})
        return
    pairs = resources_for(store, loc)
    if h.query.get("format", "").lower() == "zip":
        entries = [
            ZipEntry(zip_name(owner, res, e.path, loc), store.blob_path(e.blob), e.size, e.crc32)
            for owner, res in pairs
            for e in store.files(res.id)
        ]
        h.send_zip(
            entries, loc.experiment.label if loc.experiment else loc.obj.label if loc.obj else "download"
        )
        return
    h.send_result_set([file_row(res, e, obj_uri(owner)) for owner, res in pairs for e in store.files(res.id)])


def put_file(h: Handler, loc: Loc) -> None:
    """Upload a raw body to .../resources/{label}/files/{path}; extract=true unpacks zip/tar(.gz)."""
    check_write(h, loc)
    store = h.server.store
    owner = loc.obj
    if owner is None or loc.scan_selection is not None or (loc.resource is None and loc.missing is None):
        raise HTTPError(400, "upload to .../resources/{label}/files/{path}")
    overwrite = h.query.get("overwrite", "").lower() == "true"
    extract = h.query.get("extract", "").lower() == "true"
    path = safe_path(loc.rest)
    meta = {
        "format": h.query.get("format", ""),
        "content": h.query.get("content", ""),
        "tags": h.query.get("tags", ""),
    }
    if loc.resource is not None and not extract and not overwrite and store.file(loc.resource.id, path):
        h.close_connection = True  # do not read a body we refuse
        raise conflict(path, loc.resource.label)
    if extract and re.search(r"\.(zip|tar|tar\.gz|tgz)$", path, re.I):
        entries = receive_archive(h, store, meta)
    else:
        blob = store.receive(h.body)
        entries = [FileEntry(path, blob.size, blob.md5, blob.name, blob.crc32, **meta)]
    resource = loc.resource or store.create_resource(owner.key, loc.missing or "", h.query.get("format", ""))
    try:
        store.put_files(resource.id, entries, overwrite)
    except Conflict as exc:
        raise conflict(str(exc), resource.label) from exc
    h.send_text("", 200)


def conflict(path: str, label: str) -> HTTPError:
    return HTTPError(409, f"File {path} already exists in resource {label}; add overwrite=true to replace it")


def receive_archive(h: Handler, store: Store, meta: dict[str, str]) -> list[FileEntry]:
    """Store every regular member of an uploaded zip/tar(.gz) as a blob."""
    entries: list[FileEntry] = []
    with tempfile.TemporaryFile(dir=store.data_dir) as tmp:
        for chunk in iter(lambda: h.body.read(1 << 20), b""):
            tmp.write(chunk)
        tmp.seek(0)
        try:
            for name, stream in iter_members(tmp):
                member = safe_path(name.split("/"))
                blob = store.receive(stream)
                entries.append(FileEntry(member, blob.size, blob.md5, blob.name, blob.crc32, **meta))
        except (zipfile.BadZipFile, tarfile.TarError, NotAnArchive, OSError) as exc:
            store.discard_blobs([e.blob for e in entries])
            raise HTTPError(400, f"cannot extract the upload: {exc}") from exc
        except HTTPError:
            store.discard_blobs([e.blob for e in entries])
            raise
    return entries


def delete_file(h: Handler, loc: Loc) -> None:
    check_write(h, loc)
    if loc.resource is None or not loc.rest:
        raise HTTPError(400, "delete .../resources/{label}/files/{path}")
    path = safe_path(loc.rest)
    if not h.server.store.delete_file(loc.resource.id, path):
        raise HTTPError(404, f"file {path} not found")
    h.send_text("")


# ---- project roles -------------------------------------------------------------------------------


def project_users(h: Handler, loc: Loc) -> None:
    """GET .../users; PUT/DELETE /data/projects/P/users/{Owners|Members|Collaborators}/{login}."""
    assert loc.project is not None
    store, auth = h.server.store, h.server.auth
    project = loc.project.id
    if h.command in ("GET", "HEAD") and not loc.rest:
        h.send_result_set(
            [
                {
                    "login": login,
                    "GROUP_ID": f"{project}_{role}",
                    "displayname": f"{role.title()}s",
                    "role": role,
                }
                for login, role in sorted(auth.members(project).items())
            ]
        )
        return
    user = h.require_user()
    if auth.role(user, project) != "owner":
        raise HTTPError(403, f"only owners of {project} may change its users")
    if len(loc.rest) != 2 or loc.rest[0].lower() not in ROLE_GROUPS:
        raise HTTPError(404, "use .../users/{Owners|Members|Collaborators}/{login}")
    login = loc.rest[1]
    if login not in auth.users:
        raise HTTPError(404, f"no user {login}")
    if h.command == "PUT":
        store.set_role(project, login, ROLE_GROUPS[loc.rest[0].lower()])
    elif h.command == "DELETE":
        store.set_role(project, login, None)
    else:
        raise HTTPError(405, f"{h.command} is not supported here")
    h.send_text("")
