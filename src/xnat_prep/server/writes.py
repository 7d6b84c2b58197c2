"""Writes to the project hierarchy: creating and updating projects, subjects, experiments, scans and
resources from XNAT's query-string forms, and project roles."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from xnat_prep.server.auth import ROLE_GROUPS
from xnat_prep.server.errors import HTTPError
from xnat_prep.server.schema import FIELD_KEY
from xnat_prep.server.store import Obj

if TYPE_CHECKING:
    from xnat_prep.server.http import Handler
    from xnat_prep.server.resolve import Loc


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

# plain (non-xpath) query keys a project PUT may set
PROJECT_KEYS = ("name", "description", "keywords", "secondary_ID")


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
