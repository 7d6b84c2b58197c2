"""Writes to the project hierarchy: creating and updating projects, subjects, experiments, scans and
resources from XNAT's query-string forms, and project roles."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xnat_prep.server.auth import ROLE_GROUPS
from xnat_prep.server.errors import HTTPError
from xnat_prep.server.listings import family, find_project
from xnat_prep.server.schema import FIELD_KEY, UnknownPath, local, schema, typed
from xnat_prep.server.store import Obj

if TYPE_CHECKING:
    from xnat_prep.server.http import Handler
    from xnat_prep.server.resolve import Loc


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
RECONSTRUCTION = "xnat:reconstructedImageData"

# values a PUT names that the server keeps outside the data fields (or takes from the URI)
IDENTITY = {"ID", "label", "project", "subject_ID", "image_session_ID", "imageSession_ID"}


@dataclass
class Updates:
    """What a PUT's query asks to set (schema.py turns xpaths and shortcuts into storage keys)."""

    values: dict[str, str | None] = field(default_factory=dict)  # None: remove
    custom: dict[str, str | None] = field(default_factory=dict)  # lower-cased names; None: remove
    identity: dict[str, str] = field(default_factory=dict)  # ID, label, project, subject_ID, ...


def parse_updates(h: Handler, xsi: str, family: str) -> Updates:
    """Read a PUT's query. An xpath the schema does not define, or a value its type refuses, is a
    400 naming it (XNAT stores a value or refuses the request; it never drops one). Plain names that
    are neither one of XNAT's shortcuts nor an xpath are request options and are left alone, as XNAT
    does (``xsiType``, ``req_format``, ``event_reason``, ...)."""
    updates = Updates()
    for key, value in h.query_list:
        match = FIELD_KEY.match(key)
        if match:
            name = match.group("name").lower()
            if match.group("part").lower() == "field":
                updates.custom[name] = None if value == "NULL" else value
            elif value == "NULL":  # xnatpy deletes with .../field[name=X]/field=NULL&.../X=NULL
                updates.custom.setdefault(name, None)
            else:
                raise HTTPError(400, f"cannot set {key}: a custom field's value is .../field")
            continue
        if key == "label":
            updates.identity["label"] = value
            continue
        try:
            target = schema().resolve(xsi, key, family)
        except UnknownPath as exc:
            if "/" in key or ":" in key:
                raise HTTPError(400, f"cannot set {key}: {exc}") from exc
            continue  # an option, not a value
        if target.key in IDENTITY:
            updates.identity[target.key] = value
        elif value == "NULL":
            updates.values[target.key] = None
        else:
            try:
                updates.values[target.key] = typed(value, target.type, key)
            except UnknownPath as exc:
                raise HTTPError(400, str(exc)) from exc
    return updates


def update(h: Handler, obj: Obj) -> None:
    store = h.server.store
    xsi = h.query.get("xsiType")
    if xsi and xsi != obj.xsi_type:
        raise HTTPError(400, f"{obj.kind} {obj.id} is a {obj.xsi_type}, not {xsi}")
    updates = parse_updates(h, obj.xsi_type, family(obj))
    given = updates.identity
    if given.get("ID", obj.id) != obj.id:
        raise HTTPError(400, f"ID cannot be modified ({obj.id}, not {given['ID']})")
    if given.get("project", obj.project) != obj.project and obj.kind in ("subject", "experiment"):
        raise HTTPError(
            409, "the project of an object is changed by sharing it (.../projects/P), not by a PUT"
        )
    label = given.get("label")
    if label is not None and label != obj.label:
        check_label(label, obj.kind)
        clash = (
            store.subject(label, obj.project)
            if obj.kind == "subject"
            else store.experiment(label, obj.project)
            if obj.kind == "experiment"
            else None
        )
        if clash is not None and clash.id != obj.id:
            raise HTTPError(409, f"label {label} is already used in project {obj.project}")
    if obj.kind == "project":
        check_aliases(h, obj.id, updates.values)
    store.update(obj, updates.values, label if obj.kind in ("subject", "experiment") else None)
    if updates.custom:
        store.set_fields(obj.key, updates.custom)


def check_label(label: str, what: str) -> None:
    if not LABEL_OK.match(label):
        raise HTTPError(400, f"invalid {what} label {label!r}")


def check_aliases(h: Handler, project: str, values: dict[str, str | None]) -> None:
    """A project alias must not be another project's ID or alias (XNAT resolves URIs by either)."""
    for key, alias in values.items():
        if key.startswith("aliases/alias[") and alias is not None:
            other = find_project(h.server.store, alias)
            if other is not None and other.id != project:
                raise HTTPError(409, f"{alias} is already the ID or an alias of project {other.id}")


def created(values: dict[str, str | None]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def new_id(h: Handler, given: dict[str, str], exists: Callable[[str], Obj | None]) -> str | None:
    """An accession ID the creating request chose (``ID=``, ``xnat:subjectData/ID=``), checked."""
    wanted = given.get("ID")
    if wanted is None:
        return None
    if not LABEL_OK.match(wanted):
        raise HTTPError(400, f"invalid ID {wanted!r}")
    if exists(wanted) is not None:
        raise HTTPError(409, f"ID {wanted} is already used")
    return wanted


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
        updates = parse_updates(h, "xnat:projectData", "project")
        check_aliases(h, name, updates.values)
        store.create_project(name, user, created(updates.values))
        store.set_role(name, user, "owner")
        store.set_fields(f"project:{name}", updates.custom)
        h.send_text(name, 201)
        return
    assert loc.project is not None
    project = loc.project.id
    if loc.missing_subject is not None:
        check_label(loc.missing_subject, "subject")
        loc.subject = store.subject(store.create_subject(project, loc.missing_subject, user, {}))
    if coll == "subjects":
        updates = parse_updates(h, "xnat:subjectData", "subject")
        label = updates.identity.get("label") or name
        assert label is not None
        check_label(label, "subject")
        existing = store.subject(label, project)
        if existing is not None:
            update(h, existing)
            h.send_text(existing.id)
            return
        check_project(updates, project)
        subject_id = store.create_subject(
            project, label, user, created(updates.values), new_id(h, updates.identity, store.subject)
        )
        store.set_fields(f"subject:{subject_id}", updates.custom)
        h.send_text(subject_id, 201)
    elif coll == "experiments":
        if xsi not in SESSION_TYPES:
            raise HTTPError(400, f"creating an experiment needs xsiType, one of {', '.join(SESSION_TYPES)}")
        updates = parse_updates(h, xsi, "experiment")
        label = updates.identity.get("label") or name
        assert label is not None
        check_label(label, "experiment")
        check_project(updates, project)
        subject = loc.subject
        if subject is None:
            ref = updates.identity.get("subject_ID")
            subject = store.subject(ref, project) if ref else None
            if subject is None:
                raise HTTPError(400, "creating an experiment here needs an existing subject (subject_ID)")
        if store.experiment(label, project) is not None:
            raise HTTPError(409, f"experiment {label} already exists in project {project}")
        experiment_id = store.create_experiment(
            project,
            subject.id,
            label,
            xsi,
            user,
            created(updates.values),
            new_id(h, updates.identity, store.experiment),
        )
        store.set_fields(f"experiment:{experiment_id}", updates.custom)
        h.send_text(experiment_id, 201)
    elif coll == "assessors":
        create_assessor(h, loc, xsi)
    elif coll == "reconstructions":
        assert loc.experiment is not None and name is not None
        xsi = xsi or RECONSTRUCTION
        if xsi != RECONSTRUCTION:
            raise HTTPError(400, f"a reconstruction's xsiType is {RECONSTRUCTION}")
        updates = parse_updates(h, xsi, "reconstruction")
        recon_id = updates.identity.get("ID") or name
        if not LABEL_OK.match(recon_id):
            raise HTTPError(400, f"invalid reconstruction ID {recon_id!r}")
        store.create_scan(loc.experiment.id, recon_id, xsi, created(updates.values), "reconstruction")
        h.send_text(recon_id, 201)
    elif coll == "scans":
        assert loc.experiment is not None and name is not None
        xsi = xsi or SCAN_DEFAULT_TYPES.get(loc.experiment.xsi_type, "xnat:otherDicomScanData")
        if xsi not in SCAN_TYPES:
            raise HTTPError(400, f"scan xsiType must be one of {', '.join(SCAN_TYPES)}")
        updates = parse_updates(h, xsi, "scan")
        # XNAT's ScanResource: an ID given in the query wins over the one in the URI
        scan_id = updates.identity.get("ID") or name
        if not LABEL_OK.match(scan_id):
            raise HTTPError(400, f"invalid scan ID {scan_id!r}")
        if scan_id != name and store.scan(loc.experiment.id, scan_id) is not None:
            raise HTTPError(409, f"scan {scan_id} already exists in {loc.experiment.label}")
        store.create_scan(loc.experiment.id, scan_id, xsi, created(updates.values))
        h.send_text(scan_id, 201)
    else:
        raise HTTPError(405, f"cannot create {coll}")


def create_assessor(h: Handler, loc: Loc, xsi: str) -> None:
    """PUT .../experiments/E/assessors/LABEL?xsiType=...: an image assessor of session E, kept as an
    experiment of E's project and subject (its own accession ID; labels unique in the project)."""
    store = h.server.store
    session, label = loc.experiment, loc.missing
    assert session is not None and label is not None
    if not schema().is_a(xsi or "-", "imageAssessorData") or local(xsi) not in schema().types:
        raise HTTPError(
            400, "creating an assessor needs the xsiType of an image assessor, e.g. xnat:mrAssessorData"
        )
    if not schema().is_a(session.xsi_type, "imageSessionData"):
        raise HTTPError(400, f"{session.label} is not an image session")
    updates = parse_updates(h, xsi, "assessor")
    label = updates.identity.get("label") or label
    check_label(label, "assessor")
    check_project(updates, session.project)
    if store.experiment(label, session.project) is not None:
        raise HTTPError(409, f"experiment {label} already exists in project {session.project}")
    values = {**created(updates.values), "imageSession_ID": session.id}
    assessor_id = store.create_experiment(
        session.project,
        session.subject_id,
        label,
        xsi,
        h.require_user(),
        values,
        new_id(h, updates.identity, store.experiment),
    )
    store.set_fields(f"experiment:{assessor_id}", updates.custom)
    h.send_text(assessor_id, 201)


def check_project(updates: Updates, project: str) -> None:
    given = updates.identity.get("project", project)
    if given != project:
        raise HTTPError(400, f"project={given} differs from the project in the URI ({project})")


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
    h.server.store.create_resource(loc.owner_key, label, pick("format"), pick("content"), pick("tags"))
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
