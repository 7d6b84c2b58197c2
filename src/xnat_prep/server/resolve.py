"""URI resolution: what a path under ``/data`` addresses (``Loc``).

Paths arrive normalised (``/REST`` and ``/data/archive`` mapped to ``/data``) and split, e.g.
``["projects", "P", "subjects", "S", "experiments", "E", "scans", "1", "resources", "DICOM",
"files", "a.dcm"]``. Subjects and experiments are found by accession ID or, inside a project, by
label; resources by label or numeric ID; ``scans/ALL``, ``scans/1,2`` and scan types select several
scans for ``/files``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xnat_prep.server.access import check_read
from xnat_prep.server.errors import HTTPError
from xnat_prep.server.listings import family, find_project
from xnat_prep.server.store import Obj, Resource, Store

if TYPE_CHECKING:
    from xnat_prep.server.http import Handler

# what may follow an object of each family (listings.family); "projects" below an object is its
# sharing, "in"/"out" select an assessor's or reconstruction's input or output resources
CHILDREN = {
    None: ("projects", "subjects", "experiments"),
    "project": ("subjects", "experiments", "resources", "users", "files", "accessibility"),
    "subject": ("experiments", "resources", "files", "projects"),
    "experiment": ("scans", "reconstructions", "assessors", "resources", "files", "projects"),
    "assessor": ("resources", "files", "in", "out", "projects"),
    "scan": ("resources", "files"),
    "reconstruction": ("resources", "files", "in", "out"),
}
TAILS = ("files", "users", "accessibility")  # the rest of the path belongs to the handler


@dataclass
class Loc:
    """What a path addresses."""

    project: Obj | None = None
    subject: Obj | None = None
    experiment: Obj | None = None
    assessor: Obj | None = None
    scan: Obj | None = None
    reconstruction: Obj | None = None
    side: str | None = None  # "in" or "out": an assessor's or reconstruction's input or output resources
    scan_selection: list[Obj] | None = None
    resource: Resource | None = None
    collection: str | None = None  # a trailing collection name: list it / create in it
    missing: str | None = None  # the trailing item of `collection` that does not exist yet
    missing_subject: str | None = None  # PUT .../subjects/NEW/experiments/NEW creates both
    rest: list[str] = field(default_factory=list)  # after a TAILS collection, or a sharing "projects"

    @property
    def obj(self) -> Obj | None:
        return (
            self.scan
            or self.reconstruction
            or self.assessor
            or self.experiment
            or self.subject
            or self.project
        )

    @property
    def owner_key(self) -> str:
        """The key resources are kept under: the object's, or its inputs' (``.../in/resources``)."""
        assert self.obj is not None
        return self.obj.key + ("/in" if self.side == "in" else "")


def safe_path(parts: list[str]) -> str:
    """A file path inside a resource; refuses empty, absolute and parent parts."""
    clean = [p for p in parts if p not in ("", ".")]
    if not clean or any(p == ".." for p in clean):
        raise HTTPError(400, f"bad file path {'/'.join(parts)!r}")
    return "/".join(clean)


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
        allowed = CHILDREN.get(family(loc.obj) if loc.obj else None, ())
        if coll not in allowed or (loc.side and coll not in ("resources", "files")):
            raise HTTPError(404, f"no such resource: /{'/'.join(parts)}")
        if coll in ("in", "out"):
            loc.side = coll
            i += 1
            continue
        if coll in TAILS or (coll == "projects" and loc.obj is not None):
            loc.collection, loc.rest = coll, parts[i + 1 :]
            return loc
        if item is None:
            loc.collection = coll
            return loc
        last = i + 2 == len(parts)
        if coll == "resources":
            owner = loc.obj
            assert owner is not None
            loc.resource = store.resource(loc.owner_key, item)
            if loc.resource is None:
                if last:
                    loc.collection, loc.missing = coll, item
                    return loc
                if parts[i + 2] == "files":
                    # uploading into a resource that does not exist yet creates it, and listing its
                    # files answers an empty list, as in XNAT (files.py decides per method)
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
            # through a project's path, the project grants access (also to what is shared into it)
            check_read(h, loc.project.id if loc.project else found.project or found.id)
        role = family(found)
        setattr(loc, role, found)
        if found.kind == "subject" and loc.project is None:
            loc.project = store.project(found.project)
        if found.kind == "experiment":
            loc.project = loc.project or store.project(found.project)
            loc.subject = loc.subject or store.subject(found.subject_id)
        if role == "assessor":
            loc.experiment = loc.experiment or store.experiment(found.extra.get("imageSession_ID", ""))
        i += 2
    return loc


def lookup(h: Handler, loc: Loc, coll: str, item: str) -> Obj | None:
    store = h.server.store
    if coll == "projects":
        return find_project(store, item)
    if coll == "subjects":
        return store.subject(item, loc.project.id if loc.project else None)
    if coll == "assessors":
        assert loc.experiment is not None
        found = store.experiment(item, loc.experiment.project)
        if found is None or found.extra.get("imageSession_ID") != loc.experiment.id:
            return None
        return found
    if coll == "reconstructions":
        assert loc.experiment is not None
        return store.scan(loc.experiment.id, item, "reconstruction")
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
