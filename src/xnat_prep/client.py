"""The xnatpy connection: the only module that imports ``xnat``.

Discovery, upload and custom variables go through here; the per-scan transfer path uses the
lean ``transfer`` client instead (xnatpy's import and model build cost ~0.5 s per process).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from xnat_prep import credentials as creds_mod
from xnat_prep.errors import UserError

if TYPE_CHECKING:
    from xnat.session import XNATSession


@contextlib.contextmanager
def connect(
    host: str,
    *,
    verify_tls: bool = True,
    ca_bundle: str | None = None,
    credentials: creds_mod.Credentials | None = None,
) -> Iterator[XNATSession]:
    """An xnatpy session to ``host`` that is always disconnected; failures become one-line UserErrors."""
    import requests
    import xnat
    from xnat import exceptions as xnat_errors

    creds = credentials or creds_mod.resolve(host)
    with _tls_environment(ca_bundle, verify_tls):
        try:
            # Server passed explicitly: an XNAT_HOST-only connect crashes in xnatpy 0.8.1.
            session = xnat.connect(
                host,
                user=creds.user,
                password=creds.password,
                verify=ca_bundle or verify_tls,
                loglevel="WARNING",
            )
        except (xnat_errors.XNATLoginFailedError, xnat_errors.XNATAuthError):
            raise UserError(f"XNAT at {host} refused the credentials from {creds.source}") from None
        except requests.exceptions.SSLError as exc:
            reason = f"TLS verification failed ({_first_line(exc)})"
            raise UserError(f"cannot reach XNAT at {host}: {reason}") from None
        except (requests.RequestException, xnat_errors.XNATError) as exc:
            raise UserError(f"cannot reach XNAT at {host}: {_first_line(exc)}") from None
        try:
            yield session
        finally:
            session.disconnect()


@contextlib.contextmanager
def _tls_environment(ca_bundle: str | None, verify_tls: bool) -> Iterator[None]:
    """Make requests verify with ``ca_bundle`` (or not at all) for the connection's lifetime.

    xnatpy 0.8.1 drops a ``verify=<path>``, and requests lets ``REQUESTS_CA_BUNDLE`` /
    ``CURL_CA_BUNDLE`` override the session's setting on every request (so even
    ``verify=False`` verifies when they are set). The environment is the one lever both obey.
    """
    names = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
    saved = {name: os.environ.get(name) for name in names}
    if ca_bundle:
        os.environ["REQUESTS_CA_BUNDLE"] = ca_bundle
    elif not verify_tls:
        for name in names:
            os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
