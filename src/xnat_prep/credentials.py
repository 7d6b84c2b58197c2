"""Find the XNAT user and password without ever prompting or putting them on argv.

Order: ``XNAT_USER``/``XNAT_PASS`` (or ``XNATPY_USER``/``XNATPY_PASS``) environment →
netrc (``NETRC`` or ``~/.netrc``; ``machine host:port``, then ``machine host``) → YAML file
(``XNAT_CREDENTIALS_FILE`` or ``~/.xnat``). Either file is refused when group/other can read it,
and a file that does not parse is named with its line, never quoted (the parsers' messages
echo the text around the error, which may be the password). No prompt: a batch job waiting on
``getpass`` hangs until its wall time runs out.
"""

from __future__ import annotations

import netrc
import os
import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from xnat_prep.errors import UserError

_ENV_PAIRS = (("XNAT_USER", "XNAT_PASS"), ("XNATPY_USER", "XNATPY_PASS"))
_PUSH_ENV = (("XNAT_PUSH_USER", "XNAT_PUSH_PASS"),)
SOURCES = (
    "XNAT_USER/XNAT_PASS environment, a netrc entry (NETRC or ~/.netrc), ~/.xnat (XNAT_CREDENTIALS_FILE)"
)


@dataclass(frozen=True)
class Credentials:
    """A user/password pair and where it came from; ``repr``/``str`` never show the password."""

    user: str
    password: str = field(repr=False)
    source: str = ""


def resolve(host: str) -> Credentials:
    """The credentials for ``host`` (a URL), from the first source that has them."""
    for find in (_from_env, _from_netrc, _from_yaml):
        found = find(host)
        if found is not None:
            return found
    raise UserError(f"no XNAT credentials for {host}: set one of {SOURCES}")


def resolve_target(host: str, source_host: str | None) -> Credentials:
    """The credentials for a second server, the push target: ``XNAT_PUSH_USER``/``XNAT_PUSH_PASS``,
    then the target's own netrc entry or ``~/.xnat`` ``hosts:`` entry. The source's pair
    (``XNAT_USER``/``XNAT_PASS``, the file's top-level pair) only when the target is the source
    server: a password is never sent to another server unasked."""
    found = _from_env(host, _PUSH_ENV) or _from_netrc(host) or _from_yaml(host, per_host_only=True)
    if found is not None:
        return found
    if source_host and host.rstrip("/") == source_host.rstrip("/"):
        return resolve(host)
    raise UserError(
        f"no XNAT credentials for the push target {host}: set XNAT_PUSH_USER/XNAT_PUSH_PASS, a netrc entry "
        "for it, or a hosts: entry for it in ~/.xnat"
    )


def _from_env(host: str, pairs: tuple[tuple[str, str], ...] = _ENV_PAIRS) -> Credentials | None:
    for user_var, pass_var in pairs:
        user, password = os.environ.get(user_var), os.environ.get(pass_var)
        if user and password:
            return Credentials(user, password, f"environment ({user_var}/{pass_var})")
        if user or password:
            have, missing = (user_var, pass_var) if user else (pass_var, user_var)
            raise UserError(f"{have} is set but {missing} is not: set both or neither")
    return None


def _from_netrc(host: str) -> Credentials | None:
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    if not path.is_file():
        return None
    _check_private(path, "netrc file")
    try:
        entries = netrc.netrc(str(path))
    except netrc.NetrcParseError as exc:
        raise UserError(
            f"netrc file {path}, line {exc.lineno}: not valid netrc syntax (content not shown)"
        ) from None
    except OSError as exc:
        raise UserError(f"cannot read netrc file {path}: {exc.strerror}") from None
    url = urlsplit(host)
    for machine in dict.fromkeys((url.netloc.rpartition("@")[2], url.hostname or "")):
        auth = entries.authenticators(machine) if machine else None
        if auth and auth[0] and auth[2]:
            return Credentials(auth[0], auth[2], f"netrc file {path} (machine {machine})")
    return None


def _from_yaml(host: str, per_host_only: bool = False) -> Credentials | None:
    explicit = os.environ.get("XNAT_CREDENTIALS_FILE")
    path = Path(explicit) if explicit else Path.home() / ".xnat"
    if not path.is_file():
        if explicit:
            raise UserError(f"XNAT_CREDENTIALS_FILE names {path}, which is not a file")
        return None
    _check_private(path, "credentials file")
    import yaml  # only here: most runs take credentials from the environment

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark else ""
        raise UserError(f"credentials file {path}{line}: not valid YAML (content not shown)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"cannot read credentials file {path}: {getattr(exc, 'strerror', None) or 'not UTF-8'}"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"credentials file {path}: expected a mapping with username: and password:")
    per_host = data.get("hosts") or {}
    if not isinstance(per_host, dict):
        raise UserError(f"credentials file {path}: 'hosts' must map server URLs to username/password")
    entry = per_host.get(host) or per_host.get(host.rstrip("/")) or per_host.get(host.rstrip("/") + "/")
    where = f"credentials file {path}" + (f" (hosts: {host})" if entry else "")
    entry = entry or ({} if per_host_only else data)
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected username: and password: under the server URL")
    user, password = entry.get("username"), entry.get("password")
    if user is None and password is None:
        return None
    if not user or not password:
        raise UserError(f"{where}: needs both username: and password:")
    return Credentials(str(user), str(password), where)


def _check_private(path: Path, what: str) -> None:
    """Refuse a file of passwords that group or others can read (like ssh and curl do)."""
    if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        raise UserError(f"{what} {path} is readable by other users; fix with: chmod 600 {path}")


def export_lines(token: Credentials) -> str:
    """Shell lines that put a token where :func:`resolve` looks first (``xnat-prep token issue``)."""
    return f"export XNAT_USER={shlex.quote(token.user)}\nexport XNAT_PASS={shlex.quote(token.password)}\n"


def read_exports(path: Path) -> Credentials:
    """The token from a file written by ``xnat-prep token issue``."""
    found: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None
    for line in lines:
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, _, value = words[1].partition("=")
            found[key] = value
    if not found.get("XNAT_USER") or not found.get("XNAT_PASS"):
        raise UserError(f"{path}: no 'export XNAT_USER=...' and 'export XNAT_PASS=...' lines")
    return Credentials(found["XNAT_USER"], found["XNAT_PASS"], f"token file {path}")
