"""Routing and the small endpoints of the bundled server (login, tokens, schemas, search elements,
build info, faults); ``XNATServer`` ties them to the HTTP plumbing in ``http.py``.

The XNAT resources themselves live in ``archive.py`` (project hierarchy), ``importer.py`` /
``prearchive.py`` (import service, prearchive) and ``dicomdump.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from urllib.parse import parse_qsl

from xnat_prep import __version__
from xnat_prep.server import archive, dicomdump, prearchive
from xnat_prep.server.errors import HTTPError
from xnat_prep.server.faults import FAULTS_PATH, parse_spec
from xnat_prep.server.http import Handler, Server
from xnat_prep.server.model import STATS_PATH
from xnat_prep.server.schema import schema_text

XNAT_VERSION = "1.8.10"
LOGIN_FAILED = "<html><body><h3>Login attempt failed. Please try again.</h3></body></html>"


# ---- routing ---------------------------------------------------------------------------------


def route(h: Handler) -> None:
    path, method = h.route, h.command
    parts = [p for p in path.split("/") if p]
    if path == "/":
        h.send_text(
            "<html><head><title>XNAT</title></head><body>xnat-prep: an XNAT-compatible server</body></html>",
            content_type="text/html",
        )
        return
    simple = SIMPLE_ROUTES.get((method, path)) or (
        SIMPLE_ROUTES.get(("GET", path)) if method == "HEAD" else None
    )
    if simple is not None:
        simple(h)
        return
    if parts[0] == "data" and len(parts) > 1:
        head = parts[1]
        if head in ("projects", "subjects", "experiments"):
            archive.handle(h, parts[1:])
            return
        if head == "prearchive":
            prearchive.handle(h, parts[2:])
            return
        if parts[1:3] == ["services", "tokens"]:
            tokens(h, parts[3:])
            return
        if parts[1:3] == ["services", "dicomdump"] and method in ("GET", "HEAD"):
            dicomdump.handle(h)
            return
        if parts[1:3] == ["search", "elements"] and len(parts) == 4:
            search_fields(h, parts[3])
            return
    if parts[:2] == ["xapi", "schemas"] and len(parts) == 3 and method in ("GET", "HEAD"):
        schema(h, parts[2])
        return
    raise HTTPError(404, f"no such resource: {path}")


def login(h: Handler) -> None:
    """PUT /data/services/auth with a form body: the token answer xnatpy expects."""
    form = dict(parse_qsl(h.body.read_all(64 << 10).decode("utf-8", "replace")))
    user = h.server.auth.check_password(form.get("username", ""), form.get("password", ""))
    if user is None:
        raise HTTPError(401, LOGIN_FAILED)
    h.user = user
    h.new_cookie = h.server.auth.new_session(user)
    h.send_text(h.new_cookie)


def auth_check(h: Handler) -> None:
    h.send_text(f"User '{h.require_user()}' is logged in")


def jsession(h: Handler) -> None:
    h.require_user()
    h.send_text(h.session_token)


def logout(h: Handler) -> None:
    token = h.cookie("JSESSIONID")
    if token:
        h.server.auth.end_session(token)
    if getattr(h, "session_token", None):
        h.server.auth.end_session(h.session_token)
    h.new_cookie = None
    h.send_text("")


def not_found(h: Handler) -> None:
    raise HTTPError(404, "not found")


def build_info(h: Handler) -> None:
    h.send_json(
        {
            "version": XNAT_VERSION,
            "buildNumber": "xnat-prep",
            "commit": __version__,
            "sha": __version__,
            "branch": "release",
        }
    )


def uptime(h: Handler) -> None:
    seconds = int(time.time() - h.server.started)
    h.send_json(
        {
            "days": seconds // 86400,
            "hours": seconds // 3600 % 24,
            "minutes": seconds // 60 % 60,
            "seconds": seconds % 60,
        }
    )


def schema_list(h: Handler) -> None:
    h.send_json(["xdat", "xnat"])


def schema(h: Handler, name: str) -> None:
    if name not in ("xdat", "xnat"):
        raise HTTPError(404, f"no schema {name}")
    h.send_text(schema_text(name), content_type="application/xml")


# Element names offered for search, with XNAT's upper-case display field IDs.
SEARCH_ELEMENTS = {
    "xnat:projectData": ("Project", "Projects", ["ID", "NAME", "DESCRIPTION", "SECONDARY_ID"]),
    "xnat:subjectData": ("Subject", "Subjects", ["SUBJECT_ID", "SUBJECT_LABEL", "PROJECT", "INSERT_DATE"]),
    "xnat:mrSessionData": (
        "MR Session",
        "MR Sessions",
        ["SESSION_ID", "LABEL", "SUBJECT_ID", "PROJECT", "DATE"],
    ),
    "xnat:ctSessionData": (
        "CT Session",
        "CT Sessions",
        ["SESSION_ID", "LABEL", "SUBJECT_ID", "PROJECT", "DATE"],
    ),
    "xnat:petSessionData": (
        "PET Session",
        "PET Sessions",
        ["SESSION_ID", "LABEL", "SUBJECT_ID", "PROJECT", "DATE"],
    ),
}


def search_elements(h: Handler) -> None:
    h.require_user()
    h.send_result_set(
        [
            {"ELEMENT_NAME": name, "SINGULAR": singular, "PLURAL": plural, "SECURED": "true", "COUNT": ""}
            for name, (singular, plural, _) in SEARCH_ELEMENTS.items()
        ]
    )


def search_fields(h: Handler, element: str) -> None:
    h.require_user()
    if element not in SEARCH_ELEMENTS:
        raise HTTPError(404, f"unknown element {element}")
    h.send_result_set(
        [
            {
                "FIELD_ID": f,
                "HEADER": f.replace("_", " ").title(),
                "SUMMARY": "",
                "TYPE": "string",
                "REQUIRES_VALUE": "false",
                "DESC": "",
                "ELEMENT_NAME": element,
            }
            for f in SEARCH_ELEMENTS[element][2]
        ]
    )


def access_projects(h: Handler) -> None:
    user = h.require_user()
    auth = h.server.auth
    rows = []
    for project in h.server.store.projects():
        role = auth.role(user, project.id)
        if role is not None:
            rows.append(
                {
                    "ID": project.id,
                    "name": project.extra.get("name", project.id),
                    "role": role,
                    "description": project.extra.get("description", ""),
                }
            )
    h.send_json(rows)


def users(h: Handler) -> None:
    """GET /data/users: every account (pyxnat manage.users). The server keeps no names or e-mail
    addresses, so those columns are empty; xdat_user_id numbers the accounts in login order."""
    h.require_user()
    h.send_result_set(
        [
            {
                "login": login,
                "firstname": "",
                "lastname": "",
                "email": "",
                "xdat_user_id": str(number),
                "enabled": "true",
            }
            for number, login in enumerate(sorted(h.server.auth.users), start=1)
        ]
    )


def tokens(h: Handler, parts: list[str]) -> None:
    """Alias tokens: issue[/user/LOGIN], validate/ALIAS/SECRET, invalidate/ALIAS/SECRET."""
    auth = h.server.auth
    if parts[:1] == ["issue"] and h.command in ("GET", "PUT", "POST"):
        login_ = h.require_user()
        if len(parts) == 3 and parts[1] == "user":
            h.require_admin()
            if parts[2] not in auth.users:
                raise HTTPError(404, f"no user {parts[2]}")
            login_ = parts[2]
        elif len(parts) != 1:
            raise HTTPError(404, "unknown token request")
        h.send_json(auth.issue_token(login_))
    elif len(parts) == 3 and parts[0] in ("validate", "invalidate"):
        h.require_user()
        owner = h.server.store.token_login(parts[1], parts[2])
        if owner is None:
            raise HTTPError(404 if parts[0] == "validate" else 400, "no such valid token")
        if parts[0] == "validate":
            h.send_json({"valid": owner})
        else:
            if owner != h.user:
                h.require_admin()
            auth.invalidate_token(parts[1], parts[2])
            h.send_text("")
    else:
        raise HTTPError(404, "unknown token request")


def faults_endpoint(h: Handler) -> None:
    h.require_admin()
    faults = h.server.faults
    if h.command == "PUT":
        try:
            doc = json.loads(h.body.read_all() or b"{}")
        except ValueError as exc:
            raise HTTPError(400, f"faults: body is not JSON: {exc}") from exc
        from xnat_prep.errors import UserError

        try:
            faults.set_plan(parse_spec(doc["spec"] if isinstance(doc, dict) and "spec" in doc else doc))
        except (UserError, TypeError) as exc:
            raise HTTPError(400, str(exc)) from exc
    elif h.command == "DELETE":
        faults.set_plan(None)
    plan = faults.plan
    h.send_json({"enabled": plan is not None, **(plan.as_dict() if plan else {})})


def stats_endpoint(h: Handler) -> None:
    """Connections open and requests in flight, now and at most (model.Stats); DELETE resets the
    maxima; plus the server model in force. Admin only."""
    h.require_admin()
    if h.command == "DELETE":
        # the reset's own connection closes after this answer and is not counted: otherwise a
        # client's next connection could meet it still open and count 2 where it holds 1
        h.close_connection = True
        h.uncount()
        h.server.stats.reset()
    h.send_json({**h.server.stats.as_dict(), "model": h.server.model.as_dict()})


SIMPLE_ROUTES: dict[tuple[str, str], Callable[[Handler], None]] = {
    ("PUT", "/data/services/auth"): login,
    ("POST", "/data/services/auth"): login,
    ("GET", "/data/auth"): auth_check,
    ("GET", "/data/JSESSION"): jsession,
    ("POST", "/data/JSESSION"): jsession,
    ("DELETE", "/data/JSESSION"): logout,
    ("GET", "/data/version"): not_found,
    ("GET", "/xapi/siteConfig/buildInfo"): build_info,
    ("GET", "/xapi/siteConfig/buildInfo/version"): lambda h: h.send_text(XNAT_VERSION),
    ("GET", "/xapi/siteConfig/uptime"): uptime,
    ("GET", "/xapi/schemas"): schema_list,
    ("GET", "/data/search/elements"): search_elements,
    ("GET", "/xapi/access/projects"): access_projects,
    ("GET", "/data/users"): users,
    ("GET", "/xapi/users"): lambda h: (h.require_user(), h.send_json(sorted(h.server.auth.users))),
    ("GET", FAULTS_PATH): faults_endpoint,
    ("PUT", FAULTS_PATH): faults_endpoint,
    ("DELETE", FAULTS_PATH): faults_endpoint,
    ("GET", STATS_PATH): stats_endpoint,
    ("DELETE", STATS_PATH): stats_endpoint,
    ("POST", "/data/services/import"): prearchive.import_service,
    ("POST", "/data/services/archive"): prearchive.archive_service,
    ("POST", "/data/services/prearchive/delete"): prearchive.delete_service,
}


class XNATServer(Server):
    """The bundled XNAT server: ``http.Server`` routing every request through ``route``."""

    route = staticmethod(route)
