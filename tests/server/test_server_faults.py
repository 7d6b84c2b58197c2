"""Fault injection: deterministic per seed, rates roughly honoured, each fault kind visible to clients."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from server_helpers import api

from xnat_prep.server.testing import ServerHandle, running_server

SPEC = "seed=7,error=0.3,statuses=500:503:429,path=^/data/projects$"
N = 60


def statuses(server: ServerHandle, parallel: int = 1) -> list[int]:
    def one(_: int) -> int:
        return api(server, "GET", "/data/projects", params={"format": "json"}).status_code

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, range(N)))


def test_same_seed_same_faults_on_fresh_servers(tmp_path: Path) -> None:
    with running_server(tmp_path / "a", faults=SPEC) as a:
        first = statuses(a)
        log = a.requests()
    with running_server(tmp_path / "b", faults=SPEC) as b:
        assert statuses(b) == first
    with running_server(tmp_path / "c", faults=SPEC) as c:
        assert Counter(statuses(c, parallel=6)) == Counter(first)  # independent of interleaving
    with running_server(tmp_path / "d", faults=SPEC.replace("seed=7", "seed=8")) as d:
        assert statuses(d) != first
    errors = [s for s in first if s != 200]
    assert set(errors) <= {500, 503, 429} and len(set(errors)) >= 2
    assert 0.1 * N <= len(errors) <= 0.5 * N  # rate 0.3, roughly
    assert [r["faults"] for r in log if "faults" in r] == [["error"]] * len(errors)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with running_server(tmp_path_factory.mktemp("faults") / "data") as srv:
        api(srv, "PUT", "/data/projects/F").raise_for_status()
        api(srv, "PUT", "/data/projects/F/resources/R/files/big.bin", data=b"z" * 500_000).raise_for_status()
        yield srv


def set_faults(server: ServerHandle, plan: dict | None) -> None:
    if plan is None:
        assert api(server, "DELETE", "/xapi/xnatprep/faults").json()["enabled"] is False
    else:
        assert api(server, "PUT", "/xapi/xnatprep/faults", json=plan).json()["enabled"] is True


FILE = "/data/projects/F/resources/R/files/big.bin"


def test_429_carries_retry_after_and_path_filter(server: ServerHandle) -> None:
    set_faults(server, {"spec": "error=1,statuses=429,path=/files/"})
    try:
        throttled = api(server, "GET", FILE)
        assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
        assert api(server, "GET", "/data/projects", params={"format": "json"}).status_code == 200
        assert api(server, "GET", "/xapi/xnatprep/faults").json()["statuses"] == [429]  # never faulted itself
    finally:
        set_faults(server, None)
    assert api(server, "GET", FILE).status_code == 200


def test_reset_and_truncate_break_the_transfer(server: ServerHandle) -> None:
    set_faults(server, {"reset": 1, "path": "/files/"})
    try:
        with pytest.raises(requests.ConnectionError):
            api(server, "GET", FILE)
        set_faults(server, {"truncate": 1, "path": "/files"})
        with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
            api(server, "GET", FILE)
        with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
            api(server, "GET", "/data/projects/F/resources/R/files", params={"format": "zip"})
    finally:
        set_faults(server, None)
    assert len(api(server, "GET", FILE).content) == 500_000


def test_latency_and_early_expiry(server: ServerHandle) -> None:
    login = api(
        server, "PUT", "/data/services/auth", auth=None, data={"username": "admin", "password": "admin"}
    )
    cookies = {"JSESSIONID": login.text}
    set_faults(server, {"latency_ms": 300, "expire": 1, "path": "^/data/projects$"})
    try:
        start = time.monotonic()
        expired = api(server, "GET", "/data/projects", auth=None, cookies=cookies)
        assert time.monotonic() - start >= 0.3
        assert expired.status_code == 401
        assert api(server, "GET", "/data/auth", auth=None, cookies=cookies).status_code == 401  # really gone
    finally:
        set_faults(server, None)


def test_faults_endpoint_validates_and_needs_login(server: ServerHandle) -> None:
    assert api(server, "PUT", "/xapi/xnatprep/faults", json={"bogus": 1}).status_code == 400
    assert api(server, "PUT", "/xapi/xnatprep/faults", json={"error": 2}).status_code == 400
    assert api(server, "GET", "/xapi/xnatprep/faults", auth=None).status_code == 401


# -- hostile answers (answer=KIND, server/hostile.py) -----------------------------------------------

LISTING = "/data/projects/F/resources/R/files"


def hostile(server: ServerHandle, kind: str, path: str) -> None:
    set_faults(server, {"answer": kind, "path": path})


def test_hostile_answers_change_only_what_they_name(server: ServerHandle) -> None:
    import hashlib
    import io
    import zipfile

    honest = api(server, "GET", LISTING, params={"format": "json"}).json()["ResultSet"]["Result"]
    [row] = honest
    data = api(server, "GET", FILE).content
    assert hashlib.md5(data).hexdigest() == row["digest"]
    try:
        hostile(server, "html", f"^{LISTING}$")
        page = api(server, "GET", LISTING, params={"format": "json"})
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        assert api(server, "GET", FILE).content == data  # path-scoped: the file itself is honest
        hostile(server, "wrong_digest", f"^{LISTING}$")
        [wrong] = api(server, "GET", LISTING, params={"format": "json"}).json()["ResultSet"]["Result"]
        assert wrong["digest"] != row["digest"] and {**wrong, "digest": row["digest"]} == row
        hostile(server, "unsafe_dotdot", f"^{LISTING}$")
        [climbing] = api(server, "GET", LISTING, params={"format": "json"}).json()["ResultSet"]["Result"]
        assert climbing["URI"].endswith("/files/../../big.bin")
        hostile(server, "corrupt_bytes", "/files")
        bad = api(server, "GET", FILE).content
        assert len(bad) == len(data) and bad != data
        archive = zipfile.ZipFile(io.BytesIO(api(server, "GET", LISTING, params={"format": "zip"}).content))
        [entry] = archive.infolist()
        assert (
            archive.read(entry) != data and archive.testzip() is None
        )  # its CRC agrees with the wrong bytes
        hostile(server, "zip_slip", "/files")
        names = zipfile.ZipFile(
            io.BytesIO(api(server, "GET", LISTING, params={"format": "zip"}).content)
        ).namelist()
        assert names == ["../../big.bin"]
        hostile(server, "zip_truncated", "/files")
        cut = api(server, "GET", LISTING, params={"format": "zip"})
        assert cut.status_code == 200 and int(cut.headers["Content-Length"]) == len(cut.content)
        assert not zipfile.is_zipfile(io.BytesIO(cut.content))
        assert server.requests()[-1]["faults"] == ["answer:zip_truncated"]
    finally:
        set_faults(server, None)


def test_unknown_hostile_answer_is_refused(server: ServerHandle) -> None:
    answer = api(server, "PUT", "/xapi/xnatprep/faults", json={"answer": "nonsense"})
    assert answer.status_code == 400 and "answer=nonsense is not one of html" in answer.text
