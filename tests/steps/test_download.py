"""download_session and the transfer client: offline checks, then against the real server process."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time

import pytest
import requests
from step_helpers import ADMIN, FAST_RETRY, import_session

from xnat_prep import download, receipts
from xnat_prep.manifest import FileRow
from xnat_prep.server.testing import running_server
from xnat_prep.xnat_api import Connection, Session, XnatError

FILES_PATH = "/resources/DICOM/files"


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def fetch(session, scan_id, dest, **kwargs):
    """A session job of just scan ``scan_id`` into ``dest/scan_id``; the scan's line of the session
    receipt (which goes beside ``dest``)."""
    result = download.download_session(
        Connection(session.url),
        session_id=session.session_id,
        scans=[download.ScanTask(scan_id, "DICOM", scan_id)],
        files=session.files,
        receipt=dest.with_name(dest.name + ".json"),
        **{"retry": FAST_RETRY, **kwargs},
    )
    return result["scans"][0]


def transfer_requests(server, since=0):
    """Requests of the transfer path (file listing/zip/file GETs) logged after ``since``."""
    return [r for r in server.requests()[since:] if "/files" in r["path"]]


@pytest.mark.parametrize("name", ["/etc/passwd", "E1/scans/1/resources/DICOM/files/../../../../x", "..\\x"])
def test_zip_slip_entries_are_refused(name):
    if "\\" in name:  # a backslash is an ordinary character in a zip name on POSIX: kept, not a path
        assert download._manifest_key(name, "u") == name
        return
    with pytest.raises(XnatError, match="refusing entry"):
        download._manifest_key(name, "u")


def test_zip_entry_maps_to_manifest_path_after_files():
    name = "E1/scans/1-T1w/resources/DICOM/files/sub/dir/0001.dcm"
    assert download._manifest_key(name, "u") == "sub/dir/0001.dcm"


def test_nothing_missing_means_no_request_and_no_credentials(tmp_path, monkeypatch):
    """All files verified on disk: the (unreachable) server is never contacted."""
    for var in ("XNAT_USER", "XNAT_PASS", "XNATPY_USER", "XNATPY_PASS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    scan = tmp_path / "E" / "d"
    scan.mkdir(parents=True)
    (scan / "a.dcm").write_bytes(b"abc")
    (scan / ".b.dcm.part").write_bytes(b"crash leftover")
    (scan / "stale.dcm").write_bytes(b"no longer in the manifest")
    files = [FileRow("1", "DICOM", "a.dcm", 3, hashlib.md5(b"abc").hexdigest(), "/nowhere")]
    result = download.download_session(
        Connection("http://127.0.0.1:9"),
        session_id="E",
        scans=[download.ScanTask("1", "DICOM", "d")],
        files={"1": files},
        receipt=tmp_path / "E.json",
    )
    assert result["http_requests"] == 0
    assert [(s["http_requests"], s["reused"], s["fetched"]) for s in result["scans"]] == [(0, 1, 0)]
    assert sorted(p.name for p in scan.iterdir()) == ["a.dcm"]


def test_download_one_request_per_scan_then_none(tmp_path, admin_env):
    with running_server(tmp_path / "xnat") as server:
        session = import_session(server.url, tmp_path / "dicom", "E1", [{"n_slices": 6}, {"n_slices": 3}])
        start = len(server.requests())
        for scan_id in ("1", "2"):
            result = fetch(session, scan_id, tmp_path / "out")
            assert result["http_requests"] == 1 and result["method"] == "zip"
            for row in session.files[scan_id]:
                assert md5(tmp_path / "out" / scan_id / row.path) == row.md5
            listing = "".join(f"{r.path}\t{r.size}\t{r.md5}\n" for r in session.files[scan_id])
            scan_receipt = receipts.read(tmp_path / "out" / f"{scan_id}.json")
            assert scan_receipt["listing_md5"] == hashlib.md5(listing.encode()).hexdigest()
            assert "files" not in scan_receipt  # the manifest has the list; the receipt its digest
        logged = transfer_requests(server, start)
        assert len(logged) == 2 and all(r["query"] == "format=zip" for r in logged)

        mark = len(server.requests())
        stale = tmp_path / "out" / ".1.json.k1ll3d.part"  # a run killed while writing the receipt
        stale.write_text('{"half": ')
        again = fetch(session, "1", tmp_path / "out")
        assert (again["http_requests"], again["reused"], again["method"]) == (0, 6, "none")
        assert len(server.requests()) == mark
        assert not stale.exists()


@pytest.mark.parametrize("store", ["files", "zip"])
def test_receipt_of_an_earlier_version_listing_its_files_is_still_trusted(tmp_path, admin_env, store):
    """Receipts used to list every file instead of the listing's md5: an upgrade must not fetch
    every scan again. A listing that changed since is noticed either way."""
    with running_server(tmp_path / "xnat") as server:
        session = import_session(server.url, tmp_path / "dicom", "E1", [{"n_slices": 4}])
        fetch(session, "1", tmp_path / "out", store=store)
        receipt = tmp_path / "out" / "1.json"
        data = receipts.read(receipt)
        del data["listing_md5"]
        data["files"] = [{"path": r.path, "size": r.size, "md5": r.md5} for r in session.files["1"]]
        receipts.write(receipt, data)
        if store == "zip":  # the zip's size and mtime, as that receipt recorded them, still hold
            assert download.verified_locally(receipt, session.files["1"], store)
        mark = len(server.requests())
        again = fetch(session, "1", tmp_path / "out", store=store)
        assert (again["http_requests"], again["method"]) == (0, "none")
        assert len(server.requests()) == mark
        assert download.verified_locally(receipt, session.files["1"], store)

        changed = [dataclasses.replace(session.files["1"][0], md5="0" * 32), *session.files["1"][1:]]
        assert not download.verified_locally(receipt, changed, store)
        data["files"][0]["md5"] = "0" * 32  # an old receipt for another listing: not trusted either
        receipts.write(receipt, data)
        assert not download.verified_locally(receipt, session.files["1"], store)


def test_resume_keeps_good_files_and_refetches_bad_ones_one_by_one(tmp_path, admin_env):
    with running_server(tmp_path / "xnat") as server:
        session = import_session(server.url, tmp_path / "dicom", "E1", [{"n_slices": 8}])
        fetch(session, "1", tmp_path / "out")
        scan_dir = tmp_path / "out" / "1"
        rows = session.files["1"]
        (scan_dir / rows[0].path).unlink()
        (scan_dir / rows[1].path).write_bytes(b"corrupted" * 100)
        kept = {r.path: (scan_dir / r.path).stat().st_ino for r in rows[2:]}
        mark = len(server.requests())
        result = fetch(session, "1", tmp_path / "out")
        assert (result["method"], result["fetched"], result["reused"], result["http_requests"]) == (
            "files",
            2,
            6,
            2,
        )
        assert all(md5(scan_dir / r.path) == r.md5 for r in rows)
        assert {p: (scan_dir / p).stat().st_ino for p in kept} == kept  # untouched
        assert sorted(r["path"].rsplit("/", 1)[1] for r in transfer_requests(server, mark)) == sorted(
            r.path for r in rows[:2]
        )


PATIENT_RETRY = dataclasses.replace(FAST_RETRY, attempts=16)


def test_download_survives_injected_faults(tmp_path, admin_env, caplog):
    """Zip and per-file downloads under errors, 429s, resets and truncated bodies: same md5s."""
    faults = "seed=8,error=0.3,statuses=500:503:429,reset=0.1,truncate=0.15,path=/files"
    with running_server(tmp_path / "xnat") as server:
        # 96x96 slices: zips above the 64 KiB at which the server cuts a truncated stream.
        series = [{"n_slices": n, "size": 96} for n in (5, 4, 6, 3, 4, 5)]
        session = import_session(server.url, tmp_path / "dicom", "E1", series)
        # Faults on only after seeding: the fixture's own listing requests are not retried.
        requests.put(
            f"{server.url}/xapi/xnatprep/faults", json={"spec": faults}, auth=server.admin, timeout=30
        ).raise_for_status()
        for method in ("zip", "files"):
            for scan_id, rows in session.files.items():
                if method == "files":  # resume: two files lost
                    for row in rows[:2]:
                        (tmp_path / "out" / scan_id / row.path).unlink()
                # about half of all attempts fail here: 8 attempts ran out for some request in about 1
                # run in 15 (which requests are hit depends on the files' random UIDs); 16 do not
                result = fetch(session, scan_id, tmp_path / "out", retry=PATIENT_RETRY)
                assert result["method"] == method
                assert all(md5(tmp_path / "out" / scan_id / r.path) == r.md5 for r in rows)
        injected = {kind for r in transfer_requests(server) for kind in r.get("faults", [])}
        statuses = {r["status"] for r in transfer_requests(server)}
    assert {"reset", "error", "truncate"} <= injected
    assert {429, 503} <= statuses
    retried = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert any("format=zip" in m and "ChunkedEncodingError" in m for m in retried)  # a cut zip stream
    # every single file the server cut was retried (file names carry random UIDs, so which requests
    # the seeded plan cuts differs from run to run, and a run may cut no single file at all)
    cut_files = {r["path"] for r in transfer_requests(server) if "truncate" in r.get("faults", [])}
    cut_files = {path for path in cut_files if not path.endswith("/files")}
    for path in cut_files:
        assert any(path in m and ("IncompleteRead" in m or "truncated" in m) for m in retried), path
    assert not list(tmp_path.rglob("*.part"))


def test_expired_session_logs_in_again(tmp_path):
    with running_server(tmp_path / "xnat", session_timeout=0.5) as server:
        session = import_session(server.url, tmp_path / "dicom", "E1", [{"n_slices": 2}])
        uris = [r.uri for r in session.files["1"]]
        with Session(Connection(server.url), ADMIN, retry=FAST_RETRY) as transfer:
            assert transfer.get(uris[0], lambda r: r.content)
            time.sleep(1.0)
            assert transfer.get(uris[1], lambda r: r.content)
            assert transfer.requests == 3  # Basic, cookie (401: expired), Basic again
        logged = [r for r in server.requests() if "/files/" in r["path"]]
        assert [r["status"] for r in logged] == [200, 401, 200]


def test_wrong_password_is_one_clear_error(tmp_path):
    from xnat_prep.credentials import Credentials

    with (
        running_server(tmp_path / "xnat") as server,
        Session(Connection(server.url), Credentials("admin", "wrong", "test source")) as transfer,
        pytest.raises(XnatError, match="refused the credentials from test source"),
    ):
        transfer.get("/data/projects", lambda r: r.content)


def test_stale_manifest_fails_naming_the_file(tmp_path, admin_env):
    """A file the zip lacks is retried alone, then the job fails naming it; nothing half-done stays."""
    with running_server(tmp_path / "xnat") as server:
        session = import_session(server.url, tmp_path / "dicom", "E1", [{"n_slices": 4}])
        rows = session.files["1"]
        gone = FileRow("1", "DICOM", "9999.dcm", 10, "0" * 32, rows[0].uri.replace(rows[0].path, "9999.dcm"))
        session.files["1"] = [*rows, gone]
        with pytest.raises(XnatError, match=r"9999\.dcm: not found \(HTTP 404\) \(is the manifest stale"):
            fetch(session, "1", tmp_path / "out")
        work = download.work_dir(tmp_path / "out" / "1")
        assert sorted(p.name for p in work.iterdir()) == sorted(r.path for r in rows)  # kept for a rerun
        assert all(md5(work / r.path) == r.md5 for r in rows)
        assert not (tmp_path / "out" / "1").exists()  # nothing under the final name
        assert not (tmp_path / "out" / "1.json").exists()

        wrong = FileRow("1", "DICOM", rows[0].path, rows[0].size, "0" * 32, rows[0].uri)
        session.files["1"] = [wrong, *rows[1:]]
        with pytest.raises(XnatError, match=re.escape(rows[0].path) + ".*size or md5 differs"):
            fetch(session, "1", tmp_path / "out")
        assert sorted(p.name for p in work.iterdir()) == sorted(
            r.path for r in rows[1:]
        )  # the bad one is gone
        assert not (tmp_path / "out" / "1").exists()
        assert [p.name for p in (tmp_path / "out").iterdir()] == [work.name]  # no zip left behind


def test_session_fetches_every_scan_on_one_connection_and_resumes_what_failed(tmp_path, admin_env):
    """One scan failing does not stop the others; the rerun fetches only the failed scan."""
    with running_server(tmp_path / "xnat") as server:
        session = import_session(server.url, tmp_path / "dicom", "E1", [{"n_slices": n} for n in (4, 3, 5)])
        good = dict(session.files)
        rows = session.files["2"]
        gone = FileRow("2", "DICOM", "9999.dcm", 10, "0" * 32, rows[0].uri.replace(rows[0].path, "9999.dcm"))
        stale = {**good, "2": [*rows, gone]}
        tasks = [download.ScanTask(n, "DICOM", f"{n}-T") for n in ("1", "2", "3")]
        out = tmp_path / "out" / "E1"

        def session_download(files):
            return download.download_session(
                Connection(server.url),
                session_id=session.session_id,
                scans=tasks,
                files=files,
                receipt=tmp_path / "out" / "E1.json",
                retry=FAST_RETRY,
            )

        mark = len(server.requests())
        with pytest.raises(XnatError, match=r"session .*: 1 of 3 scan\(s\) failed: .*9999\.dcm"):
            session_download(stale)
        assert sorted(p.name for p in out.iterdir()) == [".2-T.part", "1-T", "1-T.json", "3-T", "3-T.json"]
        assert not (tmp_path / "out" / "E1.json").exists()
        logins = [r for r in server.requests()[mark:] if r["path"] == "/data/JSESSION"]
        assert logins == []  # Basic on the first request, then the session cookie: no extra login

        (out / ".2-T.part" / rows[0].path).unlink()  # the verified files of scan 2 are kept, but one is lost
        mark = len(server.requests())
        result = session_download(good)
        assert [(s["fetched"], s["reused"], s["method"]) for s in result["scans"]] == [
            (0, 4, "none"),
            (1, 2, "files"),
            (0, 5, "none"),
        ]
        assert result["http_requests"] == len(transfer_requests(server, mark)) == 1
        for scan_id, scan_rows in good.items():
            assert all(md5(out / f"{scan_id}-T" / r.path) == r.md5 for r in scan_rows)
        assert sorted(p.name for p in out.iterdir()) == [
            "1-T",
            "1-T.json",
            "2-T",
            "2-T.json",
            "3-T",
            "3-T.json",
        ]
        assert receipts.read(tmp_path / "out" / "E1.json")["n_files"] == 12


TIMING_KEYS = {"duration_s", "finished"}


def without_timing(data):
    if isinstance(data, dict):
        return {k: without_timing(v) for k, v in data.items() if k not in TIMING_KEYS}
    if isinstance(data, list):
        return [without_timing(v) for v in data]
    return data


def test_parallel_scans_same_files_and_receipts_and_at_most_k_connections(tmp_path, admin_env):
    """k = 3 fetches a 5-scan session over at most 3 connections at once (all 3 used: each zip
    waits 0.5 s on the server), into the same files and receipts as k = 1, scans in the given
    order; the per-scan unit keeps its resume: a rerun with k = 3 sends nothing."""
    with running_server(tmp_path / "xnat") as server:
        session = import_session(
            server.url, tmp_path / "dicom", "E1", [{"n_slices": n} for n in (3, 4, 2, 5, 3)]
        )
        tasks = [download.ScanTask(n, "DICOM", f"{n}-T") for n in ("5", "3", "1", "4", "2")]
        stats = f"{server.url}/xapi/xnatprep/stats"
        auth = (ADMIN.user, ADMIN.password)
        requests.put(
            f"{server.url}/xapi/xnatprep/faults",
            json={"spec": "latency_ms=500,path=/files$"},
            auth=auth,
            timeout=30,
        ).raise_for_status()

        def run(k, where):
            requests.delete(stats, auth=auth, timeout=30).raise_for_status()
            started = time.monotonic()
            result = download.download_session(
                Connection(server.url),
                session_id=session.session_id,
                scans=tasks,
                files=session.files,
                receipt=tmp_path / where / "E1.json",
                retry=FAST_RETRY,
                parallel=k,
            )
            seconds = time.monotonic() - started
            return result, seconds, requests.get(stats, auth=auth, timeout=30).json()

        one, one_s, one_stats = run(1, "k1")
        three, three_s, three_stats = run(3, "k3")
        assert one_stats["max_in_flight"] == 1 and one_stats["max_connections"] == 1
        assert three_stats["max_in_flight"] == 3 and three_stats["max_connections"] == 3
        assert three_s < one_s * 0.7, (one_s, three_s)
        assert [s["scan_id"] for s in three["scans"]] == ["5", "3", "1", "4", "2"]
        assert without_timing(one) == without_timing(three)
        for task in tasks:
            a, b = tmp_path / "k1" / "E1" / task.scan, tmp_path / "k3" / "E1" / task.scan
            assert {p.name: md5(p) for p in a.iterdir()} == {p.name: md5(p) for p in b.iterdir()}
            assert without_timing(receipts.read(a.with_name(a.name + ".json"))) == without_timing(
                receipts.read(b.with_name(b.name + ".json"))
            )
        again, _, _ = run(3, "k3")
        assert again["http_requests"] == 0
        assert {s["method"] for s in again["scans"]} == {"none"}
