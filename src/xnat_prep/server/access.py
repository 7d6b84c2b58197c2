"""Who may read, write and delete what: XNAT's project roles applied to a request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xnat_prep.server.errors import HTTPError

if TYPE_CHECKING:
    from xnat_prep.server.http import Handler
    from xnat_prep.server.resolve import Loc


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
