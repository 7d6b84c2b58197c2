"""Find the XNAT user and password without ever prompting or putting them on argv.

Order: ``XNAT_USER``/``XNAT_PASS`` (or ``XNATPY_USER``/``XNATPY_PASS``) environment →
netrc (``NETRC`` or ``~/.netrc``; ``machine host:port``, then ``machine host``) → YAML file
(``XNAT_CREDENTIALS_FILE`` or ``~/.xnat``; refused when group/other can read it). No prompt:
a batch job waiting on ``getpass`` hangs until its wall time runs out.
"""

from __future__ import annotations

import argparse
import netrc
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from xnat_prep.errors import UserError

_ENV_PAIRS = (("XNAT_USER", "XNAT_PASS"), ("XNATPY_USER", "XNATPY_PASS"))
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


def _from_env(host: str) -> Credentials | None:
    for user_var, pass_var in _ENV_PAIRS:
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
    try:
        entries = netrc.netrc(str(path))
    except (netrc.NetrcParseError, OSError) as exc:
        raise UserError(f"cannot read netrc file {path}: {exc}") from None
    url = urlsplit(host)
    for machine in dict.fromkeys((url.netloc.rpartition("@")[2], url.hostname or "")):
        auth = entries.authenticators(machine) if machine else None
        if auth and auth[0] and auth[2]:
            return Credentials(auth[0], auth[2], f"netrc file {path} (machine {machine})")
    return None


def _from_yaml(host: str) -> Credentials | None:
    explicit = os.environ.get("XNAT_CREDENTIALS_FILE")
    path = Path(explicit) if explicit else Path.home() / ".xnat"
    if not path.is_file():
        if explicit:
            raise UserError(f"XNAT_CREDENTIALS_FILE names {path}, which is not a file")
        return None
    if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        raise UserError(f"credentials file {path} is readable by other users; fix with: chmod 600 {path}")
    import yaml  # only here: most runs take credentials from the environment

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, OSError) as exc:
        raise UserError(f"cannot read credentials file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"credentials file {path}: expected a mapping with username: and password:")
    per_host = data.get("hosts") or {}
    if not isinstance(per_host, dict):
        raise UserError(f"credentials file {path}: 'hosts' must map server URLs to username/password")
    entry = per_host.get(host) or per_host.get(host.rstrip("/")) or per_host.get(host.rstrip("/") + "/")
    where = f"credentials file {path}" + (f" (hosts: {host})" if entry else "")
    entry = entry or data
    user, password = entry.get("username"), entry.get("password")
    if user is None and password is None:
        return None
    if not user or not password:
        raise UserError(f"{where}: needs both username: and password:")
    return Credentials(str(user), str(password), where)


def mint_token(host: str, creds: Credentials, verify: bool | str = True) -> Credentials:
    """Issue an alias token (``GET /data/services/tokens/issue``): a revocable stand-in password."""
    import requests

    url = host.rstrip("/") + "/data/services/tokens/issue"
    try:
        response = requests.get(url, auth=(creds.user, creds.password), verify=verify, timeout=60)
    except requests.RequestException as exc:
        raise UserError(f"cannot reach XNAT at {host}: {exc}") from None
    if response.status_code == 401:
        raise UserError(f"XNAT at {host} refused the credentials from {creds.source}")
    if response.status_code != 200:
        raise UserError(f"XNAT at {host} did not issue a token: HTTP {response.status_code}")
    try:
        token = response.json()
        return Credentials(token["alias"], token["secret"], f"alias token issued by {host}")
    except (ValueError, KeyError, TypeError):
        raise UserError(f"XNAT at {host} answered the token request without alias/secret") from None


def invalidate_token(host: str, token: Credentials, verify: bool | str = True) -> None:
    """Revoke an alias token (``GET /data/services/tokens/invalidate/{alias}/{secret}``)."""
    import requests

    url = f"{host.rstrip('/')}/data/services/tokens/invalidate/{token.user}/{token.password}"
    try:
        response = requests.get(url, auth=(token.user, token.password), verify=verify, timeout=60)
    except requests.RequestException:
        # The exception text holds the URL, which holds the secret.
        raise UserError(f"cannot reach XNAT at {host} to invalidate the token") from None
    if response.status_code not in (200, 204):
        raise UserError(f"XNAT at {host} did not invalidate the token: HTTP {response.status_code}")


CA_BUNDLE_ENV = "XNAT_CA_BUNDLE"
INSECURE_ENV = "XNAT_INSECURE"


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--host``/TLS options every networked subcommand takes (never a password).

    Each has an environment default (XNAT_HOST, XNAT_CA_BUNDLE, XNAT_INSECURE=1): the workflow
    hands its config's connection settings to its ``shell:`` steps that way (see
    ``config.export_for_jobs``).
    """
    parser.add_argument("--host", help="XNAT server URL (default: $XNAT_HOST)")
    parser.add_argument(
        "--ca-bundle",
        default=os.environ.get(CA_BUNDLE_ENV) or None,
        help=f"PEM file of CAs to trust for the server's TLS certificate (default: ${CA_BUNDLE_ENV})",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=os.environ.get(INSECURE_ENV) == "1",
        help=f"skip TLS certificate verification (test servers only; default: on if ${INSECURE_ENV} is 1)",
    )


def host_from(args: argparse.Namespace) -> str:
    """The server URL from ``--host`` or ``XNAT_HOST``."""
    host = args.host or os.environ.get("XNAT_HOST")
    if not host:
        raise UserError("no XNAT server given: pass --host URL or set XNAT_HOST")
    return host.rstrip("/")
