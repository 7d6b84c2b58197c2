"""Memory stays flat however big the scan: peak RSS of a download job far below the scan size.

The size is ``XNAT_PREP_BIG_SCAN_MB`` (default 256, ~10 s); the report's number comes from a run
with 2048. Buffering a body in memory anywhere would push RSS above the scan size.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import requests
from step_helpers import import_session

from xnat_prep.server.testing import running_server

SIZE_MB = int(os.environ.get("XNAT_PREP_BIG_SCAN_MB", "256"))
RSS_LIMIT_MB = 120

# Peak RSS from VmHWM: getrusage's ru_maxrss survives fork+execve on Linux, so a child started
# from a big pytest process would report the parent's size, not its own.
JOB = """
import json, re, sys
from pathlib import Path
from xnat_prep import download
from xnat_prep.manifest import FileRow
from xnat_prep.xnat_api import Connection
args = json.loads(sys.argv[1])
files = {"1": [FileRow(**f) for f in args.pop("files")]}
result = download.download_session(
    Connection(args.pop("host")), scans=[download.ScanTask("1", "BIG", "1")], files=files, **args
)
hwm_kb = int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
print(json.dumps({"rss_mb": hwm_kb / 1024,
                  "requests": result["http_requests"], "method": result["scans"][0]["method"],
                  "seconds": result["duration_s"]}))
"""


def put_file(url, session_id, name, chunks):
    """Upload a generated file into scan 1's BIG resource, streamed (chunked) from the generator."""
    md5, size = hashlib.md5(), 0

    def body():
        nonlocal size
        for chunk in chunks:
            md5.update(chunk)
            size += len(chunk)
            yield chunk

    uri = f"/data/experiments/{session_id}/scans/1/resources/BIG/files/{name}"
    requests.put(url + uri, data=body(), auth=("admin", "admin"), timeout=600).raise_for_status()
    return {"scan_id": "1", "resource": "BIG", "path": name, "size": size, "md5": md5.hexdigest(), "uri": uri}


@pytest.mark.slow
def test_download_memory_is_flat(tmp_path):
    block = os.urandom(1 << 20)
    with running_server(tmp_path / "xnat") as server:
        session = import_session(server.url, tmp_path / "dicom", "E1", [{"n_slices": 1}])
        files = [
            put_file(
                server.url, session.session_id, "big.bin", (block[i:] + block[:i] for i in range(SIZE_MB))
            ),
            put_file(server.url, session.session_id, "a.txt", [b"a" * 1000]),
            put_file(server.url, session.session_id, "b.txt", [b"b" * 1000]),
        ]
        job = {
            "host": server.url,
            "session_id": session.session_id,
            "files": files,
            "receipt": str(tmp_path / "out.json"),
        }
        env = os.environ | {"XNAT_USER": "admin", "XNAT_PASS": "admin"}
        runs = []
        for _ in ("zip", "files"):
            done = subprocess.run(
                [sys.executable, "-c", JOB, json.dumps(job)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            runs.append(json.loads(done.stdout))
            (tmp_path / "out" / "1" / "big.bin").unlink()  # the second run fetches it alone
    print(f"scan of {SIZE_MB} MiB: {runs}")
    assert [(r["method"], r["requests"]) for r in runs] == [("zip", 1), ("files", 1)]
    assert all(r["rss_mb"] < RSS_LIMIT_MB for r in runs), runs
