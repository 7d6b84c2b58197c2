"""HTTP plumbing of the bundled server: request bodies, the request log, authentication, fault
injection and response helpers (JSON/CSV ResultSets, files with Range, zips, chunked streams).

``Handler`` parses a request, authenticates it and hands it to the server's ``route`` function
(``app.route``); the endpoints answer through the ``send_*`` helpers or by raising ``HTTPError``.
"""

from __future__ import annotations

import base64
import csv
import email.utils
import io
import json
import mimetypes
import re
import socket
import ssl
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from xnat_prep import __version__
from xnat_prep.server import hostile
from xnat_prep.server.auth import Auth
from xnat_prep.server.errors import HTTPError
from xnat_prep.server.faults import FAULTS_PATH, Decision, Faults
from xnat_prep.server.model import PACE_CHUNK, STATS_PATH, Pacer, Stats, sleep_until
from xnat_prep.server.options import Options
from xnat_prep.server.store import Store
from xnat_prep.server.zipstream import Part, ZipEntry, zip_layout

# Requests that need no login (as on XNAT: the login endpoints and the front page).
PUBLIC = {
    ("GET", "/"),
    ("HEAD", "/"),
    ("PUT", "/data/services/auth"),
    ("POST", "/data/services/auth"),
    ("GET", "/data/version"),
    ("GET", "/xapi/siteConfig/buildInfo"),
}
DRAIN_LIMIT = 1 << 20


class Body:
    """The request body as a stream: honours Content-Length or chunked encoding, counts bytes."""

    def __init__(self, rfile: Any, headers: Any) -> None:
        self.rfile = rfile
        self.chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        length = headers.get("Content-Length") or "0"
        self.invalid = not self.chunked and not length.isdigit()  # answered with 400, then closed
        self.left = 0 if self.chunked or self.invalid else int(length)
        self.chunk_left = 0
        self.done = not self.chunked and self.left == 0
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        if self.done:
            return b""
        if self.chunked:
            if self.chunk_left == 0:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    self.done = True
                    return b""
                self.chunk_left = size
            want = self.chunk_left if n < 0 else min(n, self.chunk_left)
            data = self.rfile.read(want)
            self.chunk_left -= len(data)
            if self.chunk_left == 0:
                self.rfile.readline()
        else:
            want = self.left if n < 0 else min(n, self.left)
            data = self.rfile.read(want)
            self.left -= len(data)
            if not data and want:
                raise HTTPError(400, "request body ended early")
            self.done = self.left == 0
        self.count += len(data)
        return data

    def read_all(self, limit: int = 16 << 20) -> bytes:
        data = bytearray()
        while chunk := self.read(1 << 16):
            data += chunk
            if len(data) > limit:
                raise HTTPError(413, "request body too large for this endpoint")
        return bytes(data)

    def drain(self) -> bool:
        """Discard a small unread remainder; False if the connection should be closed instead."""
        if self.invalid:
            return False
        if self.done:
            return True
        if not self.chunked and self.left > DRAIN_LIMIT:
            return False
        start = self.count
        try:
            while self.read(1 << 16):
                if self.count - start > DRAIN_LIMIT:
                    return False
        except (OSError, ValueError, HTTPError):
            return False
        return True


class RequestLog:
    """``requests.jsonl``: one flushed JSON line per request, never credentials.

    Fields: time (when the response completed, ``%Y-%m-%dT%H:%M:%S%z``), user, method, path,
    query, status, bytes_in, bytes_out, duration_ms, ``connections`` (connections open when the
    request started, its own included), ``in_flight`` (requests being answered then, itself
    included), and ``faults`` (the injected fault kinds) when there were any. Paths and query
    values that carry secrets (token secrets, password-like parameters) are replaced by ``***``.
    """

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the server
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            if not self._fh.closed:  # a request still running while the server shuts down
                self._fh.write(line)
                self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.close()


SECRET_QUERY = re.compile(r"pass|secret|token|auth", re.IGNORECASE)


def redacted_path(path: str) -> str:
    return re.sub(r"(/services/tokens/(?:invalidate|validate)/[^/]+/)[^/?]+", r"\1***", path)


def redacted_query(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{k}={'***' if SECRET_QUERY.search(k) else v}" for k, v in pairs)


class Server(ThreadingHTTPServer):
    """A threading HTTP(S) server; a subclass sets ``route``, which answers every request
    (``app.XNATServer``)."""

    route: Callable[[Handler], None]
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        store: Store,
        auth: Auth,
        faults: Faults,
        ssl_context: ssl.SSLContext | None = None,
        options: Options | None = None,
    ) -> None:
        super().__init__(address, Handler)
        self.options = options or Options()
        self.model = self.options.model
        # one token bucket for every response body: the server's uplink (model.server_mb_s)
        self.uplink = Pacer(self.model.server_mb_s) if self.model.server_mb_s else None
        self.stats = Stats()
        self.store = store
        self.auth = auth
        self.faults = faults
        self.log = RequestLog(store.data_dir / "requests.jsonl")
        self.started = time.time()
        self.scheme = "https" if ssl_context else "http"
        if ssl_context is not None:
            # Handshake in the request thread (Handler.setup), not in the accept loop.
            self.socket = ssl_context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    def server_close(self) -> None:
        super().server_close()
        self.log.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Print server bugs to stderr; client disconnects and TLS failures are routine."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError | ssl.SSLError | TimeoutError):
            traceback.print_exc()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = f"xnat-prep/{__version__}"
    sys_version = ""
    timeout = 300  # seconds a socket may stay silent (idle keep-alive connections end)
    server: Server

    # ---- plumbing ----------------------------------------------------------------------------

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(30)
            self.request.do_handshake()
        super().setup()
        model = self.server.model
        self.link = Pacer(model.conn_mb_s) if model.conn_mb_s else None  # this connection's share
        self.zip_pacer: Pacer | None = None  # while a zip is being built and sent (model.zip_mb_s)
        self.open_connections = self.server.stats.opened()
        self.counted = True

    def finish(self) -> None:
        self.uncount()
        super().finish()

    def uncount(self) -> None:
        """No longer count this connection as open (it closes after this answer)."""
        if self.counted:
            self.counted = False
            self.server.stats.closed()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.dispatch()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    def dispatch(self) -> None:
        self.started = time.perf_counter()
        self.bytes_out = 0
        self.status = 0
        self.logged = False
        self.user: str | None = None
        self.new_cookie: str | None = None
        raw_path, _, raw_query = self.path.partition("?")
        self.query_list = parse_qsl(raw_query, keep_blank_values=True)
        self.query = dict(self.query_list)
        self.route = normalise(raw_path)
        self.body = Body(self.rfile, self.headers)
        self.fault = Decision()
        self.in_flight = self.server.stats.started()
        try:
            if self.body.invalid:
                raise HTTPError(400, "bad Content-Length")
            if self.route not in (FAULTS_PATH, STATS_PATH):
                self.fault = self.server.faults.decide(self.command, self.route)
                # the modelled server's answer time (model.latency_ms), then any injected delay
                if self.server.model.latency_ms:
                    time.sleep(self.server.model.latency_ms / 1000.0)
            if self.fault.delay_s:
                time.sleep(self.fault.delay_s)
            if self.fault.reset:
                self.reset_connection()
                return
            self.authenticate()
            if self.fault.status is not None:
                retry = {"Retry-After": "1"} if self.fault.status == 429 else {}
                raise HTTPError(self.fault.status, "injected fault", retry)
            whole = hostile.whole_answer(self.fault.answer, self.command)
            if whole is not None:  # a hostile answer replacing the server's (faults: answer=...)
                self.send_bytes(whole[0], 200, whole[1])
                return
            self.server.route(self)
        except HTTPError as exc:
            if not self.status:
                self.send_text(exc.message + ("\n" if exc.message else ""), exc.status, headers=exc.headers)
        except TruncatedResponse:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # a bug must not kill the connection silently
            if not self.status:
                self.send_text(f"internal error: {type(exc).__name__}: {exc}\n", 500)
            else:
                self.close_connection = True
            raise
        finally:
            self.server.stats.ended()
            self.write_log()
            if not self.body.drain():
                self.close_connection = True

    def write_log(self) -> None:
        """Append this request's line to requests.jsonl (once).

        Called just before the last bytes of a streamed response go out, and before any byte of
        one held in memory (``send_bytes``), so a client that has received a whole response, or
        acted on its status line, always finds its line in the log (tests count requests with it).
        """
        if self.logged:
            return
        self.logged = True
        self.server.log.write(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "user": self.user,
                "method": self.command,
                "path": redacted_path(self.route),
                "query": redacted_query(self.query_list),
                "status": self.status,
                "bytes_in": self.body.count,
                "bytes_out": self.bytes_out,
                "duration_ms": round((time.perf_counter() - self.started) * 1000, 3),
                "connections": self.open_connections,
                "in_flight": self.in_flight,
                **({"faults": self.fault.kinds} if self.fault.kinds else {}),
            }
        )

    def reset_connection(self) -> None:
        """Close with RST and no response, as a crashing proxy would."""
        self.close_connection = True
        self.write_log()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    # ---- authentication ----------------------------------------------------------------------

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("Cookie", "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
        return None

    def basic_credentials(self) -> tuple[str, str] | None:
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            login, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return login, password

    def authenticate(self) -> None:
        """Cookie first (a live JSESSION), then HTTP Basic (which opens a session, as XNAT does)."""
        auth = self.server.auth
        token = self.cookie("JSESSIONID")
        if token and self.fault.expire:
            auth.end_session(token)
        if token:
            self.user = auth.session_login(token)
            if self.user is not None:
                self.session_token = token
                return
        credentials = self.basic_credentials()
        if credentials is not None:
            self.user = auth.check_password(*credentials)
            if self.user is None:
                raise HTTPError(
                    401, "Login attempt failed. Please try again.", {"WWW-Authenticate": 'Basic realm="XNAT"'}
                )
            self.session_token = self.new_cookie = auth.new_session(self.user)
            return
        if (self.command, self.route) not in PUBLIC:
            raise HTTPError(401, "Authentication required", {"WWW-Authenticate": 'Basic realm="XNAT"'})

    def require_user(self) -> str:
        if self.user is None:
            raise HTTPError(401, "Authentication required")
        return self.user

    def require_admin(self) -> str:
        user = self.require_user()
        if not self.server.auth.is_admin(user):
            raise HTTPError(403, f"user '{user}' is not a site administrator")
        return user

    # ---- responses ---------------------------------------------------------------------------

    def start_response(
        self, status: int, content_type: str, length: int | None, headers: dict[str, str] | None = None
    ) -> None:
        self.status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        if self.new_cookie:
            self.send_header("Set-Cookie", f"JSESSIONID={self.new_cookie}; Path=/; HttpOnly")
            millis = int(time.time() * 1000)
            timeout_ms = int(self.server.auth.timeout * 1000)
            self.send_header("Set-Cookie", f'SESSION_EXPIRATION_TIME="{millis},{timeout_ms}"; Path=/')
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        if self.command == "HEAD" or length == 0:
            self.write_log()  # the headers are the whole response
        self.end_headers()

    def send_last(self, data: bytes) -> None:
        """Log the request, then send the response's final bytes (see write_log)."""
        self.pace(len(data))
        self.bytes_out += len(data)
        self.write_log()
        self.wfile.write(data)

    @property
    def paced(self) -> bool:
        return self.server.model.paced

    def pace(self, n: int) -> None:
        """Wait until ``n`` more bytes may go out under the server model (model.py): this
        connection's rate, the zip being built, then the server's uplink shared by all."""
        if not n or not self.paced:
            return
        now = time.monotonic()
        when = now
        for pacer in (self.link, self.zip_pacer):
            if pacer is not None:
                when = max(when, pacer.reserve(n, now))
        if self.server.uplink is not None:
            when = self.server.uplink.reserve(n, when)
        sleep_until(when)

    def write_paced(self, data: bytes | memoryview) -> None:
        """``wfile.write``, in paced steps when a model is on."""
        if not self.paced:
            self.wfile.write(data)
            return
        view = memoryview(data)
        for start in range(0, len(view), PACE_CHUNK):
            piece = view[start : start + PACE_CHUNK]
            self.pace(len(piece))
            self.wfile.write(piece)

    def sendfile_paced(self, fh: Any, offset: int, count: int) -> int:
        """``socket.sendfile``, in paced steps when a model is on; bytes sent."""
        if not self.paced:
            return self.connection.sendfile(fh, offset=offset, count=count)
        sent = 0
        while sent < count:
            step = min(PACE_CHUNK, count - sent)
            self.pace(step)
            n = self.connection.sendfile(fh, offset=offset + sent, count=step)
            if n == 0:
                break
            sent += n
        return sent

    def send_bytes(
        self,
        body: bytes,
        status: int = 200,
        content_type: str = "text/plain",
        headers: dict[str, str] | None = None,
    ) -> None:
        """A body held in memory. Its request is logged before any byte goes out (``write_log``):
        a client may act on the status line alone (a 404 raises at once, its body unread)."""
        sent = b"" if self.command == "HEAD" else body
        if self.fault.truncate and sent:
            sent = sent[: len(sent) // 2]
            self.close_connection = True
        self.status = status
        self.bytes_out += len(sent)
        self.write_log()
        self.start_response(status, content_type, len(body), headers)
        self.write_paced(sent)

    def send_text(
        self,
        text: str,
        status: int = 200,
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_bytes(text.encode(), status, content_type, headers)

    def send_json(self, obj: Any, status: int = 200) -> None:
        if status < 300:
            obj = hostile.json_doc(self.fault.answer, obj)
        self.send_bytes(json.dumps(obj).encode(), status, "application/json")

    def send_result_set(self, rows: list[dict[str, Any]], title: str = "Results") -> None:
        """XNAT's listing answer: JSON ResultSet, or CSV with ``format=csv`` (pyxnat)."""
        if self.query.get("format", "json").lower() == "csv":
            columns: list[str] = []
            for row in rows:
                columns += [c for c in row if c not in columns]
            out = io.StringIO()
            writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            self.send_bytes(out.getvalue().encode(), content_type="text/csv")
            return
        rows = [{k: "" if v is None else str(v) for k, v in row.items()} for row in rows]
        self.send_json({"ResultSet": {"Result": rows, "totalRecords": str(len(rows)), "title": title}})

    def send_file(self, path: Path, size: int, name: str, headers: dict[str, str] | None = None) -> None:
        """A stored file with Range support (one range), sent with sendfile."""
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if self.fault.answer is not None and self.command == "GET":
            wrong = hostile.file_bytes(self.fault.answer, path.read_bytes())
            if wrong is not None:
                self.send_bytes(wrong, 200, content_type, headers)
                return
        # stored files never change (a new version is a new blob), so the blob's mtime is the upload time
        modified = email.utils.formatdate(path.stat().st_mtime, usegmt=True)
        headers = {"Accept-Ranges": "bytes", "Last-Modified": modified, **(headers or {})}
        start, end, status = 0, size - 1, 200
        spec = self.headers.get("Range")
        if spec and self.command == "GET":
            match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", spec)
            if match and (match.group(1) or match.group(2)):
                first, last = match.groups()
                if first:
                    start, end = int(first), min(int(last), size - 1) if last else size - 1
                else:
                    start, end = max(0, size - int(last)), size - 1
                if start >= size or start > end:
                    raise HTTPError(
                        416, f"range not satisfiable (size {size})", {"Content-Range": f"bytes */{size}"}
                    )
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1
        if length == 0:
            self.send_parts([b""], 0, content_type, status, headers)
            return
        with open(path, "rb") as fh:  # the last byte goes separately, after the log line
            fh.seek(end)
            last = fh.read(1)
        self.send_parts([(path, start, length - 1), last], length, content_type, status, headers)

    def send_parts(
        self,
        parts: list[Part],
        length: int,
        content_type: str,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        """A body of byte strings and file ranges (sent with sendfile); the last part must be bytes.

        An injected truncation stops after half the promised length and drops the connection.
        """
        self.start_response(status, content_type, length, headers)
        if self.command == "HEAD" or length == 0:
            return
        budget = length // 2 if self.fault.truncate else length
        sent = 0
        for part in parts[:-1]:
            room = budget - sent
            if room <= 0:
                break
            if isinstance(part, bytes):
                self.write_paced(part[:room])
                count = min(len(part), room)
            else:
                path, offset, size = part
                count = 0
                if min(size, room) > 0:  # sendfile refuses count=0
                    with open(path, "rb") as fh:
                        count = self.sendfile_paced(fh, offset, min(size, room))
            sent += count
            self.bytes_out += count
        if self.fault.truncate:
            self.write_log()
            raise TruncatedResponse
        last = parts[-1]
        assert isinstance(last, bytes)
        self.send_last(last)

    def send_zip(self, entries: list[ZipEntry], name: str) -> None:
        hostile_zip = hostile.zip_body(self.fault.answer, entries) if self.command == "GET" else None
        if hostile_zip is not None:
            disposition = {"Content-Disposition": f'attachment; filename="{name}.zip"'}
            self.send_bytes(hostile_zip, 200, "application/zip", disposition)
            return
        parts, length = zip_layout(entries)
        zip_mb_s = self.server.model.zip_mb_s
        self.zip_pacer = Pacer(zip_mb_s) if zip_mb_s else None  # XNAT builds it while it streams
        try:
            self.send_parts(
                parts,
                length,
                "application/zip",
                200,
                {"Content-Disposition": f'attachment; filename="{name}.zip"'},
            )
        finally:
            self.zip_pacer = None


class TruncatedResponse(Exception):
    """An injected truncation fault cut the response short; the connection must close."""


def normalise(raw_path: str) -> str:
    """Decode and map XNAT's path aliases: ``/REST`` = ``/data``, ``/data/archive/X`` = ``/data/X``."""
    path = "/" + "/".join(unquote(p) for p in raw_path.split("/") if p)
    if path == "/REST" or path.startswith("/REST/"):
        path = "/data" + path[5:]
    if path.startswith("/data/archive/") or path == "/data/archive":
        path = "/data" + path[13:]
    return path
