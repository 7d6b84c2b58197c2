"""A network and server model: what a real XNAT on a campus network costs, on a loopback server.

The bundled server on loopback answers in about a millisecond and streams a zip at whatever the
shared CPU allows. A real XNAT differs in four ways that decide how a download should be shaped
(``xnat-prep server --model campus`` or the single options, docs/server.md):

    latency_ms       every request waits this long before its answer starts (authentication,
                     database, catalog lookups, the round trip)
    conn_mb_s        one TCP connection carries at most this many MB/s (1 MB = 10**6 bytes): a
                     single stream's share of a link, bounded by window size and round-trip time
    server_mb_s      all responses together carry at most this many MB/s (the server's uplink),
                     shared by the connections through one token bucket
    zip_mb_s         a zip (``?format=zip``) is built on the fly and comes out at most this fast
                     per request (XNAT writes it through java.util.zip while streaming)

All four are enforced with sleeps: a pacer per connection, per zip response and one for the
whole server hand out send times for chunks of ``PACE_CHUNK`` bytes, and the request thread
sleeps until its chunk's time. Nothing spins, so the model costs no CPU of the machine it is
meant to measure.

The ``campus`` preset: 50 ms per request, 40 MB/s per connection, 125 MB/s server-wide (a 1 Gbit/s
uplink), 30 MB/s per zip. Only the first three come from the issue's description of a campus
XNAT; the zip rate is an assumption: XNAT 1.8 streams the archive through ``ZipOutputStream``
(deflate, default level), and zlib's default level compresses DICOM at roughly 20-50 MB/s per
core, so a zip comes out slower than one connection could carry it.

The server also counts connections open and requests in flight (``Stats``): each request's log line
carries both, and ``GET /xapi/xnatprep/stats`` returns the current and the largest values
(``DELETE`` resets the largest), so a test can check a client's connection cap from the outside.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from xnat_prep.errors import UserError

MB = 1_000_000
PACE_CHUNK = 256 * 1024  # bytes sent per pacing step (5-7 ms at 40 MB/s)
STATS_PATH = "/xapi/xnatprep/stats"


@dataclass(frozen=True)
class Model:
    """The modelled costs; 0 means none (the loopback server as it is)."""

    latency_ms: float = 0.0
    conn_mb_s: float = 0.0
    server_mb_s: float = 0.0
    zip_mb_s: float = 0.0

    @property
    def paced(self) -> bool:
        return bool(self.conn_mb_s or self.server_mb_s or self.zip_mb_s)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


NO_MODEL = Model()
PRESETS = {
    "none": NO_MODEL,
    "campus": Model(latency_ms=50.0, conn_mb_s=40.0, server_mb_s=125.0, zip_mb_s=30.0),
}


def build(
    preset: str | None,
    latency_ms: float | None = None,
    conn_mb_s: float | None = None,
    server_mb_s: float | None = None,
    zip_mb_s: float | None = None,
) -> Model:
    """A preset with single values replaced; UserError for an unknown preset or a negative value."""
    if preset is not None and preset not in PRESETS:
        raise UserError(f"--model: unknown preset '{preset}' (known: {', '.join(PRESETS)})")
    base = asdict(PRESETS[preset or "none"])
    given = {
        "latency_ms": latency_ms,
        "conn_mb_s": conn_mb_s,
        "server_mb_s": server_mb_s,
        "zip_mb_s": zip_mb_s,
    }
    for key, value in given.items():
        if value is not None:
            if value < 0:
                raise UserError(f"--{key.replace('_', '-')}: must be 0 (off) or more, not {value}")
            base[key] = float(value)
    return Model(**base)


class Pacer:
    """A token bucket kept as the time the next byte may go (thread-safe, never spins).

    ``reserve(n)`` books ``n`` bytes at ``rate`` bytes/s and returns when they may be sent; the
    caller sleeps until then. Idle time builds no credit beyond ``burst_s`` seconds' worth.
    """

    def __init__(self, mb_s: float, burst_s: float = 0.05) -> None:
        self.rate = mb_s * MB
        self.burst_s = burst_s
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self, n: int, not_before: float) -> float:
        with self._lock:
            start = max(self._next, not_before - self.burst_s)
            self._next = start + n / self.rate
            return max(start, not_before)


def sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        time.sleep(delay)


class Stats:
    """Connections open and requests in flight, now and at most (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.connections = self.max_connections = 0
        self.in_flight = self.max_in_flight = 0
        self.total_connections = 0

    def opened(self) -> int:
        with self._lock:
            self.connections += 1
            self.total_connections += 1
            self.max_connections = max(self.max_connections, self.connections)
            return self.connections

    def closed(self) -> None:
        with self._lock:
            self.connections -= 1

    def started(self) -> int:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.in_flight

    def ended(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def reset(self) -> None:
        with self._lock:
            self.max_connections = self.connections
            self.max_in_flight = self.in_flight

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "connections": self.connections,
                "max_connections": self.max_connections,
                "total_connections": self.total_connections,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
            }
