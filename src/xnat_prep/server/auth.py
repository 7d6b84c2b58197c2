"""Users, passwords, login sessions, alias tokens and project roles of the bundled server.

Users file (YAML, written by ``xnat-prep users``; passwords only ever stored hashed)::

    users:
      admin:
        password: "scrypt$16384$8$1$<salt, base64>$<hash, base64>"
        admin: true                 # site administrator: sees and may change everything
      alice:
        password: "scrypt$..."
        roles:                      # per-project role: owner | member | collaborator
          PROJ1: owner
          PROJ2: collaborator

Roles follow XNAT: owners and members may read and write a project's data, collaborators may only
read it; owners (and admins) may also change a project's roles. Roles set through XNAT's REST API
(``PUT``/``DELETE /data/projects/P/users/Members/alice``, or creating a project, which makes its
creator owner) are kept in the server's database and take precedence over the users file for that
(user, project) pair. Without a users file there is exactly one user, ``admin``/``admin`` (site
admin), as on a freshly installed XNAT.

Login sessions (``JSESSIONID``) live in memory and expire after ``timeout`` seconds without a
request, as XNAT's do (15 minutes by default); a restart logs everybody out. Alias tokens are kept in
the database (secret as SHA-256) and stay valid for 48 hours unless invalidated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xnat_prep.errors import UserError
from xnat_prep.server.store import Store

ROLES = ("owner", "member", "collaborator")
WRITE_ROLES = ("owner", "member")
# XNAT's group names in /data/projects/P/users/{Group}/{login}
ROLE_GROUPS = {"owners": "owner", "members": "member", "collaborators": "collaborator"}
TOKEN_LIFETIME = 48 * 3600.0
ACCESSIBILITY = ("private", "protected", "public")
ACCESS_KEY = "_accessibility"  # kept in the project's stored values, never shown as one
_SCRYPT = (2**14, 8, 1)


def hash_password(password: str) -> str:
    """Salted scrypt hash in the users file format ``scrypt$n$r$p$salt$hash``."""
    n, r, p = _SCRYPT
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p)
    return "$".join(
        ["scrypt", str(n), str(r), str(p), base64.b64encode(salt).decode(), base64.b64encode(digest).decode()]
    )


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    computed = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(computed, base64.b64decode(digest))


@dataclass
class User:
    login: str
    password_hash: str
    admin: bool = False
    roles: dict[str, str] = field(default_factory=dict)


def load_users_file(path: Path) -> dict[str, User]:
    """Parse and check a users file; raises UserError naming the file and the bad entry."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: cannot read users file: {exc}") from exc
    entries = data.get("users") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise UserError(f"{path}: expected a mapping 'users:' of login -> settings")
    users = {}
    for login, entry in entries.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("password"), str):
            raise UserError(f"{path}: user '{login}': needs a 'password' hash (use `xnat-prep users add`)")
        roles = entry.get("roles") or {}
        bad = {p: r for p, r in roles.items() if r not in ROLES}
        if bad:
            raise UserError(f"{path}: user '{login}': unknown role(s) {bad}; use one of {', '.join(ROLES)}")
        users[str(login)] = User(
            str(login),
            entry["password"],
            bool(entry.get("admin", False)),
            {str(p): r for p, r in roles.items()},
        )
    return users


def dump_users(users: dict[str, User]) -> str:
    doc: dict[str, Any] = {"users": {}}
    for user in users.values():
        entry: dict[str, Any] = {"password": user.password_hash}
        if user.admin:
            entry["admin"] = True
        if user.roles:
            entry["roles"] = dict(sorted(user.roles.items()))
        doc["users"][user.login] = entry
    return yaml.safe_dump(doc, sort_keys=False)


@dataclass
class LoginSession:
    login: str
    last_access: float


class Auth:
    """Credential checks, JSESSION bookkeeping and role lookups (thread-safe)."""

    def __init__(self, store: Store, users: dict[str, User], timeout: float) -> None:
        self.store = store
        self.users = users
        self.timeout = timeout
        self._sessions: dict[str, LoginSession] = {}
        self._lock = threading.Lock()
        # scrypt costs ~50 ms by design; clients sending Basic auth on every request (pyxnat)
        # must not pay it each time, so remember recent successes keyed by a keyed hash.
        self._pepper = secrets.token_bytes(16)
        self._verified: dict[tuple[str, bytes], str] = {}

    # ---- credentials -----------------------------------------------------------------------

    def check_password(self, login: str, password: str) -> str | None:
        """The login for a user/password or an alias/secret pair, or None."""
        key = (login, hmac.new(self._pepper, password.encode(), "sha256").digest())
        with self._lock:
            cached = self._verified.get(key)
        if cached is not None:
            return cached
        user = self.users.get(login)
        result = None
        if user is not None and verify_password(password, user.password_hash):
            result = login
        elif user is None and _looks_like_alias(login):
            result = self.store.token_login(login, password)
            if result is not None and result not in self.users:
                result = None
            if result is not None:
                return result  # tokens can be invalidated: never cache them
        if result is not None:
            with self._lock:
                if len(self._verified) > 1000:
                    self._verified.clear()
                self._verified[key] = result
        return result

    # ---- sessions --------------------------------------------------------------------------

    def new_session(self, login: str) -> str:
        token = uuid.uuid4().hex.upper()
        now = time.monotonic()
        with self._lock:
            if len(self._sessions) > 10000:
                self._sessions = {
                    k: s for k, s in self._sessions.items() if now - s.last_access < self.timeout
                }
            self._sessions[token] = LoginSession(login, now)
        return token

    def session_login(self, token: str) -> str | None:
        """The login of a live session (and mark it used), or None if unknown or expired."""
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if now - session.last_access > self.timeout:
                del self._sessions[token]
                return None
            session.last_access = now
            return session.login

    def end_session(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(token, None)

    # ---- tokens ----------------------------------------------------------------------------

    def issue_token(self, login: str) -> dict[str, Any]:
        alias = str(uuid.uuid4())
        secret = secrets.token_urlsafe(48)
        expires = self.store.add_token(alias, secret, login, TOKEN_LIFETIME)
        return {
            "alias": alias,
            "secret": secret,
            "xdatUserId": login,
            "singleUse": False,
            "estimatedExpirationTime": int(expires * 1000),
            "enabled": True,
        }

    def invalidate_token(self, alias: str, secret: str) -> bool:
        if self.store.token_login(alias, secret) is None:
            return False
        self.store.delete_token(alias)
        return True

    # ---- roles -----------------------------------------------------------------------------

    def is_admin(self, login: str) -> bool:
        user = self.users.get(login)
        return bool(user and user.admin)

    def roles(self, login: str) -> dict[str, str]:
        """The user's role per project: API-set roles (database) over the users file's."""
        user = self.users.get(login)
        merged = dict(user.roles) if user else {}
        merged.update({p: r for p, _, r in self.store.roles(login=login)})
        return {p: r for p, r in merged.items() if r}

    def role(self, login: str, project: str) -> str | None:
        """The user's role in a project (admins act as owners everywhere)."""
        if self.is_admin(login):
            return "owner"
        return self.roles(login).get(project)

    def members(self, project: str) -> dict[str, str]:
        """login -> role for one project."""
        return {login: role for login in self.users if (role := self.roles(login).get(project))}

    def accessibility(self, project: str) -> str:
        found = self.store.project(project)
        return found.extra.get(ACCESS_KEY, "private") if found else "private"

    def can_read(self, login: str, project: str) -> bool:
        return self.role(login, project) is not None or self.accessibility(project) == "public"

    def can_write(self, login: str, project: str) -> bool:
        return self.role(login, project) in WRITE_ROLES

    def readable_projects(self, login: str, listed: bool = False) -> set[str] | None:
        """Projects whose data the user may read (``listed``: that the user sees in the project
        listing, which adds protected ones), or None for all (admin)."""
        if self.is_admin(login):
            return None
        levels = ("public", "protected") if listed else ("public",)
        shown = {p.id for p in self.store.projects() if p.extra.get(ACCESS_KEY) in levels}
        return set(self.roles(login)) | shown


def _looks_like_alias(login: str) -> bool:
    try:
        uuid.UUID(login)
    except ValueError:
        return False
    return True
