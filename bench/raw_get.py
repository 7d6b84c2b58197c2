"""The raw transfer limit: plain parallel HTTP GETs, nothing else.

A thread pool of N workers (N = the workflow's connection cap), one ``requests.Session`` per
worker (keep-alive, one login), each GET streamed to a file in 1 MiB chunks. No retries, no
checksums, no unpacking, no Snakemake: the least work that moves the same bytes over the same
number of connections. Reads one URL path per line; credentials from XNAT_USER/XNAT_PASS.

With ``--unzip`` each downloaded zip is then unpacked by the same worker (``zipfile.extractall``)
and deleted: the least work that leaves the same files on disk as the workflow.

With ``--md5`` each body's md5 is computed as it streams (hashlib, in the worker): the least work
that also verifies every byte, as the workflow must (it hashes each entry, which is the same
bytes but for the zip's headers).

    python -m bench.raw_get HOST URLS.txt DEST N [--unzip] [--md5]
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

_local = threading.local()


def _session() -> requests.Session:
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
        _local.session.auth = (os.environ["XNAT_USER"], os.environ["XNAT_PASS"])
    return _local.session


def fetch(host: str, path: str, target: Path, md5: bool = False) -> int:
    """GET ``host + path`` into ``target`` (``md5``: hashing it on the way); the number of bytes."""
    size = 0
    digest = hashlib.md5() if md5 else None
    with _session().get(host + path, stream=True, timeout=600) as resp, open(target, "wb") as out:
        resp.raise_for_status()
        for chunk in resp.iter_content(1 << 20):
            out.write(chunk)
            if digest is not None:
                digest.update(chunk)
            size += len(chunk)
    return size


def fetch_unzip(host: str, path: str, target: Path) -> int:
    """GET a zip into ``target``.zip, unpack it into ``target``, delete the zip; the zip's bytes."""
    archive = target.with_suffix(".zip")
    size = fetch(host, path, archive)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(target)
    archive.unlink()
    return size


def main(host: str, url_list: str, dest: str, workers: int, unzip: bool = False, md5: bool = False) -> int:
    paths = [line.strip() for line in Path(url_list).read_text().splitlines() if line.strip()]
    Path(dest).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(workers) as pool:
        sizes = pool.map(
            fetch_unzip if unzip else functools.partial(fetch, md5=md5),
            [host] * len(paths),
            paths,
            [Path(dest) / str(i) for i in range(len(paths))],
        )
        return sum(sizes)


if __name__ == "__main__":
    host, url_list, dest, workers, *flags = sys.argv[1:]
    total = main(host, url_list, dest, int(workers), "--unzip" in flags, "--md5" in flags)
    print(f"{total} bytes")
