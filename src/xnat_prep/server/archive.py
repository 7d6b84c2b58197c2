"""The project hierarchy REST API: Project > Subject > Experiment > Scan > Resource > File.

``handle`` resolves the path (``resolve.py``) and sends the request to what answers it: listings and
documents (``listings.py``), files (``files.py``) or writes (``writes.py``). Answers follow XNAT:
ResultSet listings (JSON, or CSV for pyxnat), ``items`` documents for objects, an XML catalog for a
resource, raw bytes or a streamed zip for files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xnat_prep.server import files, sharing
from xnat_prep.server.access import accessibility, check_delete, check_write
from xnat_prep.server.errors import HTTPError
from xnat_prep.server.listings import catalog_xml, items_doc, listing, values_row
from xnat_prep.server.resolve import Loc, resolve
from xnat_prep.server.store import Conflict, Obj
from xnat_prep.server.writes import create, project_users, resource_put, update
from xnat_prep.server.xmldoc import object_xml

if TYPE_CHECKING:
    from xnat_prep.server.http import Handler


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
    elif loc.collection == "accessibility":
        accessibility(h, loc)
    elif loc.collection == "projects" and loc.obj is not None:
        sharing.handle(h, loc)
    elif loc.collection == "files":
        {
            "GET": files.get_files,
            "PUT": files.put_file,
            "POST": files.put_file,
            "DELETE": files.delete_file,
        }.get(method, bad_method)(h, loc)
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
            get_object(h, obj)
        elif method == "PUT":
            check_write(h, loc)
            update(h, obj)
            h.send_text(obj.id if obj.kind not in ("scan", "reconstruction") else "")
        elif method == "DELETE":
            check_delete(h, loc)
            h.server.store.delete(obj)
            h.send_text("")
        else:
            bad_method(h, loc)


def bad_method(h: Handler, loc: Loc) -> None:
    raise HTTPError(405, f"{h.command} is not supported here")


def get_object(h: Handler, obj: Obj) -> None:
    """An object as its ``items`` document (JSON), its XML document, or one row of columns."""
    store = h.server.store
    if h.query.get("handler") == "values":
        h.send_result_set([values_row(store, obj, h.query.get("columns", "ID"))])
        return
    fmt = h.query.get("format", "json").lower()
    if fmt == "xml":
        h.send_text(object_xml(store, obj), content_type="text/xml")
    elif fmt == "json":
        h.send_json(items_doc(store, obj))
    else:  # XNAT also renders html; a client asking for it here should hear so
        raise HTTPError(400, f"format={fmt} is not supported for this object (json or xml)")
