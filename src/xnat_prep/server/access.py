"""Who may read, write and delete what: XNAT's project roles applied to a request, and a project's
accessibility (``GET/PUT /data/projects/P/accessibility[/public|protected|private]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xnat_prep.server.auth import ACCESS_KEY, ACCESSIBILITY
from xnat_prep.server.errors import HTTPError

if TYPE_CHECKING:
    from xnat_prep.server.http import Handler
    from xnat_prep.server.resolve import Loc


def check_read(h: Handler, project: str) -> None:
    if not h.server.auth.can_read(h.require_user(), project):
        raise HTTPError(403, f"user '{h.user}' has no access to project {project}")


def owning_project(loc: Loc) -> str:
    """The project whose data a write changes. A subject or experiment shared into the project in
    the path still belongs to its own project: changing it needs rights there. A new subject or
    experiment belongs to the project in the path."""
    assert loc.project is not None
    if loc.collection in ("subjects", "experiments") and loc.missing is not None:
        return loc.project.id
    holder = loc.assessor or loc.experiment or loc.subject
    return holder.project if holder is not None else loc.project.id


def check_write(h: Handler, loc: Loc) -> None:
    user = h.require_user()
    if loc.project is None:
        if not h.server.auth.is_admin(user):
            raise HTTPError(403, "only site administrators may create projects")
        return
    project = owning_project(loc)
    if not h.server.auth.can_write(user, project):
        raise HTTPError(403, f"user '{user}' may not modify project {project}")


def check_delete(h: Handler, loc: Loc) -> None:
    user = h.require_user()
    obj = loc.obj
    assert obj is not None and loc.project is not None
    project = owning_project(loc)
    allowed = (
        h.server.auth.role(user, project) == "owner"
        if obj.kind == "project"
        else h.server.auth.can_write(user, project)
    )
    if not allowed:
        raise HTTPError(403, f"user '{user}' may not delete in project {project}")


def accessibility(h: Handler, loc: Loc) -> None:
    """XNAT's project accessibility: ``private`` (members only; the default here, *unverified* for
    REST-created projects), ``protected`` (listed to everyone, data for members), ``public`` (readable
    by every user). Only owners change it."""
    project = loc.project
    assert project is not None
    store, auth = h.server.store, h.server.auth
    if h.command in ("GET", "HEAD") and not loc.rest:
        h.send_text(auth.accessibility(project.id))
        return
    if h.command != "PUT" or len(loc.rest) != 1:
        raise HTTPError(
            405 if len(loc.rest) == 1 else 404, "PUT .../accessibility/{public|protected|private}"
        )
    level = loc.rest[0].lower()
    if level not in ACCESSIBILITY:
        raise HTTPError(400, f"accessibility is one of {', '.join(ACCESSIBILITY)}, not {level}")
    user = h.require_user()
    if auth.role(user, project.id) != "owner":
        raise HTTPError(403, f"only owners of {project.id} may change its accessibility")
    store.update(project, {ACCESS_KEY: level})
    h.send_text("")
