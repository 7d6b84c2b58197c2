"""Lean HTTP client for the transfer path: streaming GETs with retries and re-login.

Not xnatpy: importing it and building its data model costs ~0.5 s and a dozen requests per
process, and every download job is its own process. This client sends HTTP Basic on the first
request, then the ``JSESSIONID`` cookie the server returns; a 401 on a cookie means the session
expired, so the cookie is dropped and the request repeated once with Basic.

Transient failures are retried with exponential backoff and jitter: 429/5xx (``Retry-After``
honoured), connection resets, truncated bodies, and anything the caller's handler flags as
``Corrupt`` (a size or md5 mismatch), within a bounded number of attempts and total time.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.cookiejar
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests

from xnat_prep import credentials as creds_mod
from xnat_prep.errors import UserError

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # 1 MiB: memory stays flat whatever the file size
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
T = TypeVar("T")


class TransferError(UserError):
    """A transfer that failed for good (after retries, or on a non-retryable answer)."""


class Corrupt(Exception):
    """Raised by a response handler when the body is incomplete or wrong: retried."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts per request, a time budget, and the backoff curve (seconds)."""

    attempts: int = 6
    total_seconds: float = 1800.0
    backoff: float = 1.0
    max_backoff: float = 60.0

    def wait(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff, but never shorter than the server asked for."""
        wait = random.uniform(0.5, 1.0) * min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return max(wait, retry_after or 0.0)


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


# SSLError is a ConnectionError too, but it is caught first: a bad certificate is not transient.
_TRANSIENT = (
    _Retryable,
    Corrupt,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    requests.Timeout,
)


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Keep requests' jar empty: the session cookie is handled explicitly (see ``_send``)."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False


class Transfer:
    """A ``requests.Session`` for one host; counts the HTTP requests it sends."""

    def __init__(
        self,
        host: str,
        credentials: creds_mod.Credentials | None = None,
        *,
        verify: bool | str = True,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (15.0, 300.0),
    ):
        self.host = public_url(host)
        self._credentials = credentials
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.requests = 0
        self._jsession: str | None = None
        # Passed on every request, not set on the session: requests lets REQUESTS_CA_BUNDLE in
        # the environment override a session-level ``verify`` (a private CA, or False).
        self.verify = verify
        self._session = requests.Session()
        self._session.cookies.set_policy(_NoCookies())

    def __enter__(self) -> Transfer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._session.close()

    @property
    def credentials(self) -> creds_mod.Credentials:
        """Resolved on first use: a job with nothing to fetch needs no credentials."""
        if self._credentials is None:
            self._credentials = creds_mod.resolve(self.host)
        return self._credentials

    def url(self, path: str) -> str:
        """An absolute URL for a server path (``/data/...``); absolute URLs pass through."""
        return path if "://" in path else self.host + "/" + path.lstrip("/")

    def get(
        self, path: str, handle: Callable[[requests.Response], T], params: dict[str, str] | None = None
    ) -> T:
        """GET ``path`` (streamed) and return ``handle(response)``, retrying transient failures."""
        url = self.url(path)
        shown = url + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                with self._send(url, params) as response:
                    self._check_status(response, shown)
                    return handle(response)
            except requests.exceptions.SSLError as exc:
                raise TransferError(f"cannot reach XNAT at {self.host}: {_short(exc)}") from None
            except _TRANSIENT as exc:
                self._pause(attempt, time.monotonic() - start, shown, exc)

    def _pause(self, attempt: int, elapsed: float, shown: str, exc: Exception) -> None:
        """Sleep before the next attempt, or raise TransferError when the budget is spent."""
        wait = self.retry.wait(attempt, getattr(exc, "retry_after", None))
        if attempt >= self.retry.attempts or elapsed + wait > self.retry.total_seconds:
            raise TransferError(f"GET {shown} failed after {attempt} attempts: {_short(exc)}") from None
        log.warning(
            "GET %s: %s; retry %d/%d in %.1f s", shown, _short(exc), attempt, self.retry.attempts - 1, wait
        )
        time.sleep(wait)

    def _send(self, url: str, params: dict[str, str] | None) -> requests.Response:
        """One request (Basic auth or the session cookie); a 401 on the cookie logs in again."""
        cookie = self._jsession
        response = self._session.get(
            url,
            params=params,
            headers={"Cookie": f"JSESSIONID={cookie}"} if cookie else None,
            auth=None if cookie else (self.credentials.user, self.credentials.password),
            stream=True,
            timeout=self.timeout,
            verify=self.verify,
        )
        self.requests += 1
        if response.status_code == 401 and cookie:
            response.close()
            log.info("XNAT session expired; logging in again")
            self._jsession = None
            return self._send(url, params)
        self._jsession = response.cookies.get("JSESSIONID") or self._jsession
        return response

    def _check_status(self, response: requests.Response, shown: str) -> None:
        status = response.status_code
        if status in RETRY_STATUS:
            raise _Retryable(f"HTTP {status}", _retry_after(response.headers.get("Retry-After")))
        if status == 401:
            raise TransferError(f"XNAT at {self.host} refused the credentials from {self.credentials.source}")
        if status >= 400:
            hint = " (is the manifest stale? rerun discovery)" if status == 404 else ""
            raise TransferError(f"GET {shown}: HTTP {status}{hint}")


def public_url(host: str) -> str:
    """``host`` without a trailing slash or a ``user:password@`` part (safe for logs and receipts)."""
    parts = urlsplit(host.rstrip("/"))
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def copy_hashing(chunks: Iterable[bytes], out: IO[bytes]) -> tuple[int, str]:
    """Write ``chunks`` to ``out``; returns (bytes, md5 hex) of what was written."""
    md5 = hashlib.md5()
    size = 0
    for chunk in chunks:
        md5.update(chunk)
        out.write(chunk)
        size += len(chunk)
    return size, md5.hexdigest()


def stream_to(response: requests.Response, out: IO[bytes]) -> tuple[int, str]:
    """Copy a streamed body to ``out`` in 1 MiB chunks; returns (bytes, md5 hex).

    A body shorter than its ``Content-Length`` raises ``Corrupt`` (urllib3 usually notices
    first; this also covers servers that close the connection cleanly mid-body).
    """
    size, md5 = copy_hashing(response.iter_content(CHUNK), out)
    expected = response.headers.get("Content-Length")
    if expected is not None and "Content-Encoding" not in response.headers and int(expected) != size:
        raise Corrupt(f"body truncated: {size} of {expected} bytes")
    return size, md5


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either a number or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
