"""The one HTTP policy for every request the product sends to XNAT.

Retries: 429/5xx (``Retry-After`` honoured), connection resets, truncated bodies and anything a
response handler flags as ``Corrupt`` (a size or md5 mismatch) are retried with full-jitter
exponential backoff within a number of attempts and a time budget. A ``POST`` is not idempotent:
it is repeated only when XNAT cannot have acted on it (no connection was made, or 429/503).

Authentication: HTTP Basic on the first request, then the ``JSESSIONID`` cookie the server
returns; a 401 on the cookie means the session expired, so the cookie is dropped and the request
sent again with Basic (transparent re-login). A 401 to Basic is final: the credentials are wrong.
An alias token is just another user/password pair here.

TLS: verification on unless the connection says otherwise, a CA bundle passed on every request
(requests lets ``REQUESTS_CA_BUNDLE`` override a session-level setting), and a loud one-line
warning on stderr when it is off.

Circuit breaker: when no connection can be made to a host (refused, DNS, connect timeout) for
``RetryPolicy.down_seconds`` in a row, every request of the process to that host fails at once
with ``Unreachable``, so a job stops trying its remaining work instead of paying the whole retry
budget per request. With ``XNAT_DOWN_FILE`` set (the workflow sets it for its jobs) the breaker
also leaves that file behind: a job that starts while it exists gives up at its first failed
connection; the first connection that works removes it.

Every request is counted and logged at DEBUG level without credentials (alias-token secrets in
paths are masked).
"""

from __future__ import annotations

import email.utils
import hashlib
import http.cookiejar
import logging
import os
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import requests

from xnat_prep import credentials as creds_mod
from xnat_prep import slots
from xnat_prep.config import DOWN_FILE_ENV
from xnat_prep.errors import UserError

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # 1 MiB: memory stays flat whatever the file size
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
NOT_PROCESSED_STATUS = frozenset({429, 503})  # the server refused before acting: a POST may repeat
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
T = TypeVar("T")
Response = requests.Response  # for type hints of response handlers outside this package
_SECRET_IN_PATH = re.compile(r"(/tokens/invalidate/[^/]+/)[^/?]+")
_warned_insecure: set[str] = set()


class XnatError(UserError):
    """A request that failed for good (after retries, or on a final answer); one line."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class Unreachable(XnatError):
    """No answer at all: connection refused, DNS, TLS verification, or the retries ran out."""


class CredentialsRefused(XnatError):
    """HTTP 401 to fresh credentials (Basic auth), never to an expired session cookie."""


class AccessDenied(XnatError):
    """HTTP 403: the user may not do this; ``action`` is "read" or "write", ``project`` if known."""

    def __init__(self, message: str, status: int | None = None, *, action: str = "", project: str = ""):
        super().__init__(message, status)
        self.action = action
        self.project = project


class NotFound(XnatError):
    """HTTP 404."""


class Corrupt(Exception):
    """Raised by a response handler when the body is incomplete or wrong: retried."""


@dataclass(frozen=True)
class Connection:
    """Where XNAT is and how to trust it: ``verify`` is True, False, or a CA bundle path."""

    host: str
    verify: bool | str = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "host", public_url(self.host))

    @classmethod
    def from_settings(cls, host: str, verify_tls: bool = True, ca_bundle: str | None = None) -> Connection:
        """From the config's or the command line's three settings (a CA bundle implies verify)."""
        return cls(host, ca_bundle or bool(verify_tls))


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts per request, a time budget, and the backoff curve (seconds)."""

    attempts: int = 6
    total_seconds: float = 1800.0
    backoff: float = 1.0
    max_backoff: float = 60.0
    # no connection at all for this long: XNAT is down, give up on everything (the circuit breaker)
    down_seconds: float = 12.0

    def wait(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff, but never shorter than the server asked for."""
        wait = random.uniform(0.5, 1.0) * min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return max(wait, retry_after or 0.0)


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None, processed: bool = True):
        super().__init__(message)
        self.retry_after = retry_after
        self.processed = processed  # whether the server may have acted on the request


# SSLError is a ConnectionError too, but it is caught first: a bad certificate is not transient.
_TRANSIENT = (
    _Retryable,
    Corrupt,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    requests.Timeout,
)


class _Breaker:
    """Connection failures to one host, shared by every ``Session`` of the process (threads too)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.first_failure: float | None = None  # start of the current run of failed connections
        self.tripped: str | None = None  # the message every later request fails with
        marker = os.environ.get(DOWN_FILE_ENV)
        self.marker = Path(marker) if marker else None
        self.known_down = self.marker is not None and self.marker.exists()

    def connected(self) -> None:
        self.first_failure = None
        if self.known_down and self.marker is not None:
            self.known_down = False
            self.marker.unlink(missing_ok=True)

    def failed(self) -> float:
        """Record a failed connection; how long connections have been failing (inf: known down)."""
        now = time.monotonic()
        if self.first_failure is None:
            self.first_failure = now
        return float("inf") if self.known_down else now - self.first_failure

    def trip(self, message: str) -> Unreachable:
        self.tripped = message
        if self.marker is not None:
            try:
                self.marker.parent.mkdir(parents=True, exist_ok=True)
                self.marker.write_text(f"{self.host}\n", encoding="utf-8")
            except OSError as exc:
                log.warning("cannot write %s: %s", self.marker, exc)
        return Unreachable(message)


_breakers: dict[str, _Breaker] = {}


def _breaker(host: str) -> _Breaker:
    if host not in _breakers:
        _breakers[host] = _Breaker(host)
    return _breakers[host]


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Keep requests' jar empty: the session cookie is handled explicitly (see ``_send``)."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False


# A Path is opened again for every attempt and a stream rewound, so a retry sends the body whole.
Body = bytes | Path | IO[bytes] | None
# Query parameters: a mapping, or pairs where a key repeats (``field=A&field=B``).
Params = Mapping[str, str] | Sequence[tuple[str, str]]


class Session:
    """A connection to one XNAT under the policy above; ``requests`` counts what it sent."""

    def __init__(
        self,
        connection: Connection,
        credentials: creds_mod.Credentials | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (15.0, 300.0),
    ):
        self.connection = connection
        self.host = connection.host
        self._credentials = credentials
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.requests = 0
        self._jsession: str | None = None
        self._http = requests.Session()
        self._http.cookies.set_policy(_NoCookies())
        self._breaker = _breaker(self.host)
        if connection.verify is False:
            _warn_insecure(self.host)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def credentials(self) -> creds_mod.Credentials:
        """Resolved on first use: a job with nothing to fetch needs no credentials."""
        if self._credentials is None:
            self._credentials = creds_mod.resolve(self.host)
        return self._credentials

    def url(self, path: str) -> str:
        """An absolute URL for a server path (``/data/...``); absolute URLs pass through."""
        return path if "://" in path else self.host + "/" + path.lstrip("/")

    # -- requests under the policy ---------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: Body = None,
        headers: Mapping[str, str] | None = None,
        handle: Callable[[requests.Response], T] | None = None,
        stream: bool = False,
        check: bool = True,
    ) -> T | requests.Response:
        """Send one request, retrying what is transient; ``handle(response)`` if given (inside the
        retry loop, so a handler raising ``Corrupt`` is retried), else the response (body read
        unless ``stream``). Non-2xx answers raise the matching ``XnatError``; with ``check=False``
        only the retryable ones do, the others are returned (for xnatpy, which reads them itself)."""

        def attempt() -> T | requests.Response:
            response = self._send(method, path, params, body, headers, stream=stream or handle is not None)
            if handle is None:
                if check or response.status_code in RETRY_STATUS:
                    self._check(response, method, path)
                return response
            with response:
                self._check(response, method, path)
                return handle(response)

        return self.retrying(method, path, params, attempt)

    def retrying(self, method: str, path: str, params: Params | None, attempt: Callable[[], T]) -> T:
        """Run ``attempt()`` until it returns, a final error, or the retry budget is spent."""
        shown = _shown(self.url(path), params)
        start = time.monotonic()
        n = 0
        while True:
            n += 1
            if self._breaker.tripped:
                raise Unreachable(self._breaker.tripped)
            try:
                return attempt()
            except requests.exceptions.SSLError as exc:
                raise Unreachable(f"cannot reach XNAT at {self.host}: {_tls_problem(exc)}") from None
            except _TRANSIENT as exc:
                if method not in IDEMPOTENT and _maybe_processed(exc):
                    raise XnatError(
                        f"{method} {shown}: {_what(exc)}; not repeated (XNAT may have acted on it)"
                    ) from None
                self._pause(method, n, time.monotonic() - start, shown, exc)

    def get(self, path: str, handle: Callable[[requests.Response], T], params: Params | None = None) -> T:
        """GET ``path`` (streamed) and return ``handle(response)``."""
        return self.request("GET", path, params=params, handle=handle)

    def get_json(self, path: str, params: Params | None = None) -> Any:
        """GET a JSON answer (``format=json`` added); an HTML page instead says so in one line."""
        return self.request("GET", path, params=[("format", "json"), *_pairs(params or {})], handle=_json)

    def rows(
        self, path: str, params: Params | None = None, required: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """A ResultSet listing's rows; each must have the ``required`` columns."""
        data = self.get_json(path, params)
        try:
            rows = data["ResultSet"]["Result"]
        except (KeyError, TypeError):
            rows = None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise XnatError(f"GET {path}: XNAT answered JSON that is not a ResultSet listing")
        missing = [c for c in required if any(c not in r for r in rows)]
        if missing:
            raise XnatError(f"GET {path}: XNAT answered a listing without column(s) {', '.join(missing)}")
        return rows

    def put(self, path: str, params: Params | None = None, body: Body = None) -> requests.Response:
        return self.request("PUT", path, params=params, body=body)  # type: ignore[return-value]

    def post(self, path: str, params: Params | None = None, body: Body = None) -> requests.Response:
        return self.request("POST", path, params=params, body=body)  # type: ignore[return-value]

    def delete(self, path: str, params: Params | None = None) -> requests.Response:
        return self.request("DELETE", path, params=params)  # type: ignore[return-value]

    # -- one attempt -----------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        params: Params | None,
        body: Body,
        headers: Mapping[str, str] | None,
        *,
        stream: bool,
        relogin: bool = True,
    ) -> requests.Response:
        """One request (Basic auth or the session cookie); a 401 on the cookie logs in again."""
        slots.before_request(self.host)  # a workflow job's first request waits for its connection slots
        cookie = self._jsession
        all_headers = dict(headers or {})
        if cookie:
            all_headers["Cookie"] = f"JSESSIONID={cookie}"
        started = time.monotonic()
        fh = open(body, "rb") if isinstance(body, Path) else None  # noqa: SIM115 - closed below
        if hasattr(body, "seek"):
            body.seek(0)  # type: ignore[union-attr]
        try:
            response = self._http.request(
                method,
                self.url(path),
                params=(dict(params) if isinstance(params, Mapping) else list(params)) if params else None,
                data=fh if fh is not None else body,
                headers=all_headers,
                auth=None if cookie else (self.credentials.user, self.credentials.password),
                stream=stream,
                timeout=self.timeout,
                verify=self.connection.verify,
            )
        except requests.RequestException as exc:
            self.requests += 1
            log.debug("%s %s: %s", method, _redact(path), _short(exc))
            raise
        finally:
            if fh is not None:
                fh.close()
        self.requests += 1
        self._breaker.connected()
        log.debug(
            "%s %s%s -> %d (%.0f ms)",
            method,
            _redact(path),
            f" {_pairs(params)}" if params else "",
            response.status_code,
            1000 * (time.monotonic() - started),
        )
        if response.status_code == 401 and cookie and relogin:
            response.close()
            log.info("XNAT session expired; logging in again")
            self._jsession = None
            return self._send(method, path, params, body, headers, stream=stream, relogin=False)
        self._jsession = response.cookies.get("JSESSIONID") or self._jsession
        return response

    def _check(self, response: requests.Response, method: str, path: str) -> None:
        status = response.status_code
        if status < 400:
            return
        response.close()
        if status in RETRY_STATUS:
            raise _Retryable(
                f"HTTP {status}",
                _retry_after(response.headers.get("Retry-After")),
                processed=status not in NOT_PROCESSED_STATUS,
            )
        what = f"{method} {_redact(path)}"
        if status == 401:
            raise CredentialsRefused(
                f"XNAT at {self.host} refused the credentials from {self.credentials.source}", status
            )
        if status == 403:
            action = "read" if method in ("GET", "HEAD") else "write"
            project = _project_of(urlsplit(self.url(path)).path)
            target = f"project {project}" if project else what
            raise AccessDenied(
                f"no {action} permission on {target} for XNAT user {self.credentials.user} "
                f"(HTTP 403 to {what})",
                status,
                action=action,
                project=project,
            )
        if status == 404:
            raise NotFound(f"{what}: not found (HTTP 404)", status)
        raise XnatError(f"{what}: HTTP {status}", status)

    def _pause(self, method: str, attempt: int, elapsed: float, shown: str, exc: Exception) -> None:
        """Sleep before the next attempt, or raise when the budget is spent."""
        wait = self.retry.wait(attempt, getattr(exc, "retry_after", None))
        if _no_connection(exc):
            down = self._breaker.failed()
            if down + wait > self.retry.down_seconds:
                for_how_long = "" if down == float("inf") else f" for {down:.0f} s"
                raise self._breaker.trip(
                    f"cannot reach XNAT at {self.host}: {_short(exc)}{for_how_long}; "
                    "stopped trying (is it down? run again once it answers)"
                ) from None
        if attempt >= self.retry.attempts or elapsed + wait > self.retry.total_seconds:
            if isinstance(exc, requests.ConnectionError | requests.Timeout):
                raise Unreachable(
                    f"cannot reach XNAT at {self.host}: {_short(exc)} ({method} {shown}, {attempt} attempts)"
                ) from None
            raise XnatError(f"{method} {shown} failed after {attempt} attempts: {_what(exc)}") from None
        log.warning(
            "%s %s: %s; retry %d/%d in %.1f s",
            method,
            shown,
            _what(exc),
            attempt,
            self.retry.attempts - 1,
            wait,
        )
        time.sleep(wait)


def _no_connection(exc: Exception) -> bool:
    """Whether the request failed before any connection was made (refused, DNS, connect timeout)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.exceptions.SSLError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return "NewConnectionError" in type(reason).__name__ or "NameResolution" in type(reason).__name__
    return False


def _maybe_processed(exc: Exception) -> bool:
    """Whether XNAT may have acted on a request that failed this way (so repeating is unsafe)."""
    if isinstance(exc, _Retryable):
        return exc.processed
    return not _no_connection(exc)


def _project_of(path: str) -> str:
    """The project a request path names (``/data/projects/P/...``), else ""."""
    match = re.match(r"/data/(?:archive/)?projects/([^/]+)", path)
    return unquote(match.group(1)) if match else ""


def refuse_html(response: requests.Response, expected: str, body: bytes = b"") -> None:
    """An HTML page where ``expected`` (JSON, a zip) was asked for is final, not a glitch to retry:
    a login page (expired SSO session) or a proxy's page answers every retry the same way."""
    html = "html" in response.headers.get("Content-Type", "").lower() or body.lstrip()[:1] == b"<"
    if html:
        raise XnatError(
            f"GET {response.url.split('?')[0]}: XNAT answered an HTML page, not {expected} "
            "(a login page or a proxy?)"
        )


def _json(response: requests.Response) -> Any:
    refuse_html(response, "JSON")
    try:
        return response.json()
    except ValueError:
        refuse_html(response, "JSON", response.content)  # HTML sent as something else
        raise Corrupt(f"{response.url.split('?')[0]}: the JSON answer is cut off or malformed") from None


def _warn_insecure(host: str) -> None:
    if host in _warned_insecure:
        return
    _warned_insecure.add(host)
    import urllib3

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # one warning, not one per request
    message = f"TLS certificate verification is OFF for {host}: anyone on the network path can read and alter"
    message += " the data and the credentials"
    log.warning("%s", message)
    print(f"xnat-prep: WARNING: {message}", file=sys.stderr)


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


def stream_to(response: requests.Response, out: IO[bytes], *, md5: bool = True) -> tuple[int, str]:
    """Copy a streamed body to ``out`` in 1 MiB chunks; returns (bytes, md5 hex; "" with
    ``md5=False``, for a body whose parts are checked afterwards).

    A body shorter than its ``Content-Length`` raises ``Corrupt`` (urllib3 usually notices
    first; this also covers servers that close the connection cleanly mid-body).
    """
    if md5:
        size, digest = copy_hashing(response.iter_content(CHUNK), out)
    else:
        size, digest = 0, ""
        for chunk in response.iter_content(CHUNK):
            out.write(chunk)
            size += len(chunk)
    check_length(response, size)
    return size, digest


def check_length(response: requests.Response, size: int) -> None:
    """``Corrupt`` if ``size`` bytes of a body are fewer than its ``Content-Length`` says."""
    expected = response.headers.get("Content-Length")
    if expected is not None and "Content-Encoding" not in response.headers and int(expected) != size:
        raise Corrupt(f"body truncated: {size} of {expected} bytes")


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


def _redact(path: str) -> str:
    return _SECRET_IN_PATH.sub(r"\1***", path)


def _pairs(params: Params) -> list[tuple[str, str]]:
    return list(params.items()) if isinstance(params, Mapping) else list(params)


def _shown(url: str, params: Params | None) -> str:
    return _redact(url) + ("?" + "&".join(f"{k}={v}" for k, v in _pairs(params)) if params else "")


def _tls_problem(exc: BaseException) -> str:
    """What went wrong in a TLS handshake, with what to do about an untrusted certificate."""
    whole = str(exc)
    verify = re.search(r"certificate verify failed: ([^(')\]]+)", whole)
    if verify:
        return (
            f"TLS certificate not trusted ({verify.group(1).strip()}); give your site's CA file "
            "in xnat.ca_bundle (or --ca-bundle / XNAT_CA_BUNDLE)"
        )
    ssl_error = re.search(r"\[SSL: [A-Z_]+\][^(')\]]+", whole)
    return f"TLS handshake failed ({ssl_error.group(0).strip() if ssl_error else _short(exc)})"


def _what(exc: BaseException) -> str:
    """What a retried failure was: our own messages as they are, others shortened."""
    if isinstance(exc, _Retryable):
        status = str(exc)
        return (
            f"XNAT answered {status} (a server error)"
            if status != "HTTP 429"
            else "XNAT answered HTTP 429 (too many requests)"
        )
    if isinstance(exc, Corrupt):
        return str(exc)
    return _short(exc)


def _short(exc: BaseException) -> str:
    """One line for an exception: the OS error of a failed connection, else its first line."""
    whole = str(exc)
    os_error = re.search(r"\[Errno -?\d+\] [^'\")\]]+", whole)
    if os_error:
        return os_error.group(0).strip()
    text = _redact(whole.strip()).splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
