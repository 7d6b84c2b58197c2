"""xnatpy's object model on the product's HTTP policy, for the calls where it earns its place.

The import service (``session.services.import_``: the DICOM zip, its destination, overwrite and
the answer's URI handling) is where xnatpy's model saves real code. Every request xnatpy sends
here goes through ``http.Session`` (retries, re-login, TLS, counting): xnatpy gets a
``requests.Session`` whose ``request()`` is ours. xnatpy's own login, netrc lookup and
certificate handling are never used, so its ``verify=<path>`` limitation (0.8.x) does not apply.

Importing xnatpy and building its model costs ~0.5 s and a few requests, so the workflow's own
steps use ``client.Client`` instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import requests

from xnat_prep.xnat_api.http import Session

if TYPE_CHECKING:
    from xnat.session import XNATSession


class _PolicyInterface(requests.Session):
    """What xnatpy calls ``interface``: every request goes through ``session``'s policy."""

    def __init__(self, session: Session):
        super().__init__()
        self._policy = session

    def request(  # type: ignore[override]
        self,
        method: str | bytes,
        url: str | bytes,
        params: Any = None,
        data: Any = None,
        headers: Any = None,
        stream: bool | None = None,
        **_: Any,  # timeout, verify, auth: the policy's own apply
    ) -> requests.Response:
        return self._policy.request(  # type: ignore[return-value]
            method.decode() if isinstance(method, bytes) else method.upper(),
            url.decode() if isinstance(url, bytes) else url,
            params=params,
            body=data,
            headers=headers,
            stream=bool(stream),
            check=False,
        )


class _Logger(logging.LoggerAdapter):
    """xnatpy logs at a level of its own, ``verbose``, which its ``connect()`` adds to every Logger."""

    def verbose(self, message: str, *args: Any, **kwargs: Any) -> None:
        self.debug(message, *args, **kwargs)


@contextlib.contextmanager
def xnatpy_session(session: Session) -> Iterator[XNATSession]:
    """An xnatpy ``XNATSession`` whose every request goes through ``session``."""
    import xnat
    from xnat.session import XNATSession

    user = session.credentials.user
    connection_id = hashlib.sha256(f"{session.host}|{user}|{id(session)}".encode()).hexdigest()
    logger = _Logger(logging.getLogger("xnat_prep.xnat_api.xnatpy"))
    xs = XNATSession(
        server=session.host,
        logger=logger,
        interface=_PolicyInterface(session),
        logged_in_user=user,
        keepalive=False,  # a short-lived batch session; the policy logs in again on expiry
    )
    try:
        xnat.build_model(xs, extension_types=True, connection_id=connection_id)
        yield xs
    finally:
        xs.disconnect()
