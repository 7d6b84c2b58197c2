"""The server model (``--model campus``, ``--latency-ms``, ``--conn-mb-s``, ``--server-mb-s``,
``--zip-mb-s``): each cost is honoured, costs no CPU, and the connection counts are right."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from server_helpers import ADMIN, api

from xnat_prep.server.testing import ServerHandle, running_server

MB = 1_000_000
SCAN = "/data/experiments/{sid}/scans/1"


def seed_scan(srv: ServerHandle, n_files: int, size: int) -> str:
    """A session with scan 1 of ``n_files`` random files of ``size`` bytes; its ID."""
    api(srv, "PUT", "/data/projects/M").raise_for_status()
    resp = api(
        srv,
        "PUT",
        "/data/projects/M/subjects/S1/experiments/S1_MR1",
        params={"xsiType": "xnat:mrSessionData"},
    )
    resp.raise_for_status()
    sid = resp.text.strip()
    api(srv, "PUT", SCAN.format(sid=sid), params={"xsiType": "xnat:mrScanData"}).raise_for_status()
    for i in range(n_files):
        api(
            srv, "PUT", f"{SCAN.format(sid=sid)}/resources/DICOM/files/f{i}.dcm", data=os.urandom(size)
        ).raise_for_status()
    return sid


def timed_get(url: str, **params: str) -> tuple[float, int]:
    started = time.monotonic()
    resp = requests.get(url, auth=ADMIN, params=params, timeout=60)
    resp.raise_for_status()
    return time.monotonic() - started, len(resp.content)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parallel(n: int, fn, *args) -> list:
    results: list = [None] * n

    def run(i: int) -> None:
        results[i] = fn(*args)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_connection_rate_latency_and_no_cpu_burnt(tmp_path: Path) -> None:
    """4 MB at 10 MB/s per connection takes >= 0.4 s (+50 ms latency); two connections get 10 MB/s
    each (not shared); the server sleeps instead of spinning while it paces."""
    with running_server(tmp_path / "d", extra_args=["--conn-mb-s", "10", "--latency-ms", "50"]) as srv:
        sid = seed_scan(srv, 1, 4 * MB)
        url = f"{srv.url}{SCAN.format(sid=sid)}/resources/DICOM/files/f0.dcm"
        cpu_before = cpu_seconds(srv.process.pid)
        seconds, size = timed_get(url)
        cpu = cpu_seconds(srv.process.pid) - cpu_before
        assert size == 4 * MB
        assert seconds >= 0.4 + 0.05 - 0.06  # the pacer allows a 50 ms burst
        assert seconds < 2.0
        assert cpu < 0.2 * seconds, f"server used {cpu:.2f} s CPU for a {seconds:.2f} s paced transfer"
        started = time.monotonic()
        results = parallel(2, timed_get, url)
        both = time.monotonic() - started
        assert all(s == 4 * MB for _, s in results)
        assert 0.35 <= both < 0.75, f"two connections at 10 MB/s each took {both:.2f} s for 4 MB each"
        # a small JSON answer still pays the latency
        assert timed_get(f"{srv.url}/data/projects", format="json")[0] >= 0.05


def test_server_wide_cap_is_shared(tmp_path: Path) -> None:
    """Three connections of 3 MB each under a 10 MB/s server-wide cap: >= 0.9 s for all."""
    with running_server(tmp_path / "d", extra_args=["--server-mb-s", "10"]) as srv:
        sid = seed_scan(srv, 1, 3 * MB)
        url = f"{srv.url}{SCAN.format(sid=sid)}/resources/DICOM/files/f0.dcm"
        started = time.monotonic()
        parallel(3, timed_get, url)
        seconds = time.monotonic() - started
        assert 0.85 <= seconds < 2.5, seconds
        stats = api(srv, "GET", "/xapi/xnatprep/stats").json()
        assert stats["max_in_flight"] >= 3 and stats["max_connections"] >= 3
        assert stats["model"]["server_mb_s"] == 10


def test_zip_building_rate(tmp_path: Path) -> None:
    """A scan zip of 2 x 2 MB at 8 MB/s takes >= 0.5 s; the files one by one do not pay it."""
    with running_server(tmp_path / "d", extra_args=["--zip-mb-s", "8"]) as srv:
        sid = seed_scan(srv, 2, 2 * MB)
        seconds, size = timed_get(f"{srv.url}{SCAN.format(sid=sid)}/resources/DICOM/files", format="zip")
        assert size > 4 * MB
        assert seconds >= 0.5 - 0.05, seconds
        single, _ = timed_get(f"{srv.url}{SCAN.format(sid=sid)}/resources/DICOM/files/f0.dcm")
        assert single < 0.2


def test_campus_preset_and_connection_counts(tmp_path: Path) -> None:
    """--model campus sets the documented values (one can be replaced); the log and the stats
    endpoint count connections and requests in flight; DELETE resets the maxima."""
    with running_server(tmp_path / "d", extra_args=["--model", "campus", "--latency-ms", "5"]) as srv:
        stats = api(srv, "GET", "/xapi/xnatprep/stats").json()
        assert stats["model"] == {
            "latency_ms": 5.0,
            "conn_mb_s": 40.0,
            "server_mb_s": 125.0,
            "zip_mb_s": 30.0,
        }
        sid = seed_scan(srv, 1, 1 * MB)
        barrier = threading.Barrier(3)

        def hold() -> None:
            with requests.Session() as http:
                http.auth = ADMIN
                http.get(f"{srv.url}/data/projects", timeout=30).raise_for_status()
                barrier.wait(timeout=30)  # three connections open at once
                http.get(f"{srv.url}{SCAN.format(sid=sid)}/resources/DICOM/files", timeout=30)
                barrier.wait(timeout=30)

        api(srv, "DELETE", "/xapi/xnatprep/stats").raise_for_status()
        parallel(3, hold)
        stats = api(srv, "GET", "/xapi/xnatprep/stats").json()
        assert stats["max_connections"] == 3, stats
        log = srv.requests()
        assert max(r["connections"] for r in log) >= 3
        assert all(r["in_flight"] >= 1 for r in log)
        assert api(srv, "GET", "/xapi/xnatprep/stats", auth=None).status_code == 401


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--model", "lan"], "invalid choice: 'lan'"), (["--conn-mb-s", "-1"], "--conn-mb-s: must be 0")],
)
def test_bad_model_options(tmp_path: Path, args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "xnat_prep.cli", "server", "--data-dir", str(tmp_path), "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert message in result.stderr


def test_an_error_is_logged_before_its_status_line_goes_out(tmp_path: Path) -> None:
    """A client raises on a 404's status line without reading its body, and a test counting
    requests may read the log right then. At 200 bytes/s the body of the 404 takes a while: the
    line must be in the log as soon as the status line arrives, not after the body."""
    import socket

    with running_server(tmp_path / "d", extra_args=["--conn-mb-s", "0.0002"]) as srv:
        host, port = srv.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            basic = b"Authorization: Basic YWRtaW46YWRtaW4=\r\n"  # admin:admin
            sock.sendall(b"GET /data/projects/NOPE HTTP/1.1\r\nHost: x\r\n" + basic + b"\r\n")
            status_line = b""
            while not status_line.endswith(b"\r\n"):
                status_line += sock.recv(1)
            logged = [r for r in srv.requests() if r["path"] == "/data/projects/NOPE"]
        assert status_line.split()[1] == b"404"
        assert [r["status"] for r in logged] == [404]
