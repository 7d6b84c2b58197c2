"""Throughput and connect-time measurements of the bundled server (not a test; results in PERF.md).

    python tests/server/perf_server.py [--size-mb 1024] [--files 64]

Uploads one SIZE file and a scan of FILES files totalling SIZE (streamed PUTs), then downloads
each with ``requests`` (iter_content, 1 MiB chunks, discarded) and times xnatpy's connect. Uses a
temporary data directory; prints a Markdown table, the connect times and the server's peak memory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from xnat_prep.server.testing import running_server

ADMIN = ("admin", "admin")
MiB = 1 << 20


def zeros(total: int) -> Iterator[bytes]:
    block = os.urandom(MiB)
    for offset in range(0, total, MiB):
        yield block[: min(MiB, total - offset)]


def timed_get(session: requests.Session, url: str, **params: str) -> tuple[float, int]:
    start = time.perf_counter()
    size = 0
    with session.get(url, params=params, stream=True, timeout=600) as response:
        response.raise_for_status()
        for chunk in response.iter_content(MiB):
            size += len(chunk)
    return time.perf_counter() - start, size


def curl_seconds(url: str) -> float:
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-u", "admin:admin", "-w", "%{time_total}", url],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--files", type=int, default=64)
    args = parser.parse_args()
    total = args.size_mb * MiB
    rows = []
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp) / "data") as srv:
        session = requests.Session()
        session.auth = ADMIN
        session.put(f"{srv.url}/data/projects/PERF", timeout=60).raise_for_status()
        base = f"{srv.url}/data/projects/PERF/subjects/S/experiments/E"
        session.put(base, params={"xsiType": "xnat:mrSessionData"}, timeout=60).raise_for_status()
        session.put(f"{base}/scans/1", params={"xsiType": "xnat:mrScanData"}, timeout=60).raise_for_status()
        start = time.perf_counter()
        single = f"{base}/resources/BIG/files/big.bin"
        session.put(single, data=zeros(total), timeout=600).raise_for_status()
        rows.append(("upload 1 file (PUT, chunked)", total, time.perf_counter() - start))
        start = time.perf_counter()
        per_file = total // args.files
        for i in range(args.files):
            url = f"{base}/scans/1/resources/DICOM/files/f{i:04d}.dcm"
            session.put(url, data=zeros(per_file), timeout=600).raise_for_status()
        rows.append((f"upload {args.files} files (PUT)", per_file * args.files, time.perf_counter() - start))
        for label, url, params in (
            ("download 1 file", single, {}),
            (f"download scan zip ({args.files} files)", f"{base}/scans/1/files", {"format": "zip"}),
        ):
            timed_get(session, url, **params)  # warm the page cache
            seconds, size = min(timed_get(session, url, **params) for _ in range(3))
            rows.append((label, size, seconds))
            if shutil.which("curl"):  # a C client shows whether requests or the server is the limit
                query = "?format=zip" if params else ""
                seconds = min(curl_seconds(url + query) for _ in range(3))
                rows.append((f"{label} (curl)", size, seconds))
        import xnat

        connects = []
        for _ in range(10):
            start = time.perf_counter()
            xnat_session = xnat.connect(srv.url, user="admin", password="admin", loglevel="ERROR")
            connects.append(time.perf_counter() - start)
            xnat_session.disconnect()
        status = Path(f"/proc/{srv.process.pid}/status")
        peak = next(
            (line.split()[1] for line in status.read_text().splitlines() if line.startswith("VmHWM")), "?"
        )
    print("| measurement | bytes | seconds | MB/s |\n|---|---|---|---|")
    for label, size, seconds in rows:
        print(f"| {label} | {size} | {seconds:.2f} | {size / seconds / 1e6:.0f} |")
    print(
        f"\nxnat.connect: median {statistics.median(connects) * 1000:.0f} ms "
        f"(min {min(connects) * 1000:.0f}, max {max(connects) * 1000:.0f}, n=10)"
    )
    print(f"server peak RSS (VmHWM): {int(peak) // 1024 if peak.isdigit() else peak} MiB")


if __name__ == "__main__":
    main()
