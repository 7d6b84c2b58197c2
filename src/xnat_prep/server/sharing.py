"""Sharing a subject or experiment into another project (XNAT's ``.../projects/{P}`` below an object).

* ``GET .../subjects/S/projects``: the projects the subject is in, its own first (pyxnat ``shares()``).
* ``PUT .../subjects/S/projects/P2?label=L``: share it into P2 under label L (default: its label).
  The object stays in its own project; in P2 it is listed, found by ID or by L, and readable by P2's
  users. Changing it still needs rights in its own project (``access.owning_project``).
* ``DELETE .../subjects/S/projects/P2``: unshare.

As XNAT's ``SubjectResource``/``ExperimentResource``: sharing needs create rights in P2 (403), a
second share into P2 is 409 "Already assigned", a label P2 already uses is 409. ``primary=true``
(moving the object to P2) is refused with 400: not supported here. Sharing an experiment into a
project its subject is not in also shares the subject (pyxnat's share test does exactly this;
what XNAT does is *unverified*). Unsharing a subject whose experiments are still shared there is
refused with 409 (*unverified*; XNAT's answer is not documented), rather than orphaning them; so
is unsharing one that has experiments of that project.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xnat_prep.server.errors import HTTPError
from xnat_prep.server.listings import find_project, listing_row
from xnat_prep.server.store import Conflict, Obj

if TYPE_CHECKING:
    from xnat_prep.server.http import Handler
    from xnat_prep.server.resolve import Loc


def handle(h: Handler, loc: Loc) -> None:
    store = h.server.store
    shared = loc.assessor or loc.experiment or loc.subject
    assert shared is not None
    obj = (store.subject if shared.kind == "subject" else store.experiment)(shared.id)
    assert obj is not None  # as in its own project, with its own label
    if not loc.rest:
        if h.command not in ("GET", "HEAD"):
            raise HTTPError(405, f"{h.command} is not supported here")
        own = store.project(obj.project)
        assert own is not None
        rows = [{**listing_row(store, own), "label": obj.label}]
        for project_id, label in store.shares(obj.kind, obj.id).items():
            project = store.project(project_id)
            if project is not None:
                rows.append({**listing_row(store, project), "label": label})
        h.send_result_set(rows)
        return
    if len(loc.rest) != 1:
        raise HTTPError(404, "use .../projects/{project}")
    target = find_project(store, loc.rest[0])
    if target is None:
        raise HTTPError(404, f"Unable to identify project: {loc.rest[0]}")
    user = h.require_user()
    if not h.server.auth.can_write(user, target.id):
        raise HTTPError(403, f"user '{user}' has insufficient create privileges in project {target.id}")
    if h.command == "PUT":
        if h.query.get("primary", "").lower() == "true":
            raise HTTPError(400, "primary=true (moving to another project) is not supported by this server")
        share(h, obj, target.id, h.query.get("label") or obj.label)
        h.send_text("")
    elif h.command == "DELETE":
        unshare(h, obj, target.id)
        h.send_text("")
    else:
        raise HTTPError(405, f"{h.command} is not supported here")


def share(h: Handler, obj: Obj, project: str, label: str) -> None:
    store = h.server.store
    if project == obj.project or project in store.shares(obj.kind, obj.id):
        raise HTTPError(409, f"Already assigned to project: {project}")
    find = store.subject if obj.kind == "subject" else store.experiment
    if find(label, project) is not None:
        raise HTTPError(409, f"Label already in use: {label}")
    if obj.kind == "experiment" and store.subject(obj.subject_id, project) is None:
        subject = store.subject(obj.subject_id)
        assert subject is not None
        share(h, subject, project, subject.label)
    try:
        store.share(obj, project, label)
    except Conflict as exc:  # a concurrent request took the label
        raise HTTPError(409, f"Label already in use: {label}") from exc


def unshare(h: Handler, obj: Obj, project: str) -> None:
    store = h.server.store
    if project == obj.project:
        raise HTTPError(400, f"{obj.label} belongs to {project}: it can be deleted, not unshared")
    if obj.kind == "subject":
        still = [e.label for e in store.experiments(project, obj.id)]
        if still:
            raise HTTPError(409, f"unshare its experiments from {project} first: {', '.join(still)}")
    if not store.unshare(obj, project):
        raise HTTPError(404, f"{obj.label} is not shared into {project}")
