"""download_session with store="zip" against the bundled server: one verified zip per scan, one
request, nothing unpacked; reruns cost nothing; a changed zip is re-checked, a damaged one fetched
again; faults on the wire still end in the manifest's files."""

from __future__ import annotations

import os
import time
import zipfile

import requests
from step_helpers import FAST_RETRY, import_session

from xnat_prep import dicomzip, discover, download, manifest, paths, plan, receipts
from xnat_prep.server.testing import running_server
from xnat_prep.subjects import Subject
from xnat_prep.xnat_api import Connection

FILES_PATH = "/resources/DICOM/files"


def fetch(session, scan_ids, dest):
    return download.download_session(
        Connection(session.url),
        session_id=session.session_id,
        scans=[download.ScanTask(s, "DICOM", s) for s in scan_ids],
        files=session.files,
        receipt=dest.with_name(dest.name + ".json"),
        retry=FAST_RETRY,
        store="zip",
    )


def zip_gets(server, since):
    return [r["path"] for r in server.requests()[since:] if r["path"].endswith(FILES_PATH)]


def expected(session, scan_id):
    return {r.path: (r.size, r.md5) for r in session.files[scan_id]}


def damage(zipped):
    with zipfile.ZipFile(zipped) as archive:
        first = archive.read(archive.infolist()[0])
    data = bytearray(zipped.read_bytes())
    data[data.index(first[:4096]) + 200] ^= 0xFF
    zipped.write_bytes(bytes(data))


def test_zip_store_keeps_verified_zips_and_resumes(tmp_path, admin_env):
    with running_server(tmp_path / "xnat") as server:
        session = import_session(server.url, tmp_path / "dicom", "E1", [{"n_slices": 6}, {"n_slices": 4}])
        out = tmp_path / "out" / "E1"
        mark = len(server.requests())
        result = fetch(session, ["1", "2"], out)
        assert result["http_requests"] == 2 and len(zip_gets(server, mark)) == 2
        assert sorted(p.name for p in out.iterdir()) == ["1.json", "1.zip", "2.json", "2.zip"]
        for scan_id in ("1", "2"):
            assert dicomzip.check_entries(out / f"{scan_id}.zip", expected(session, scan_id)) == []
            receipt = receipts.read(out / f"{scan_id}.json")
            assert receipt["store"] == "zip" and receipt["method"] == "zip"
            assert receipt["zip"]["size"] == (out / f"{scan_id}.zip").stat().st_size
            assert download.verified_locally(out / f"{scan_id}.json", session.files[scan_id], "zip")
            assert not download.verified_locally(out / f"{scan_id}.json", session.files[scan_id])

        mark = len(server.requests())
        again = fetch(session, ["1", "2"], out)
        assert again["http_requests"] == 0 and zip_gets(server, mark) == []

        # scan 1 damaged in place, scan 2 only touched: 1 is fetched again, 2 is re-checked and kept
        damage(out / "1.zip")
        os.utime(out / "2.zip", ns=(time.time_ns(), time.time_ns() + 10**9))
        assert not download.verified_locally(out / "1.json", session.files["1"], "zip")
        mark = len(server.requests())
        redo = fetch(session, ["1", "2"], out)
        assert zip_gets(server, mark) == [f"/data/experiments/{session.session_id}/scans/1{FILES_PATH}"]
        assert [s["method"] for s in redo["scans"]] == ["zip", "none"]
        for scan_id in ("1", "2"):
            assert dicomzip.check_entries(out / f"{scan_id}.zip", expected(session, scan_id)) == []
            assert download.verified_locally(out / f"{scan_id}.json", session.files[scan_id], "zip")

        # a receipt lost after the rename (a crash between the two): the zip is checked, not fetched
        (out / "1.json").unlink()
        mark = len(server.requests())
        fetch(session, ["1"], out)
        assert zip_gets(server, mark) == []

        # a crashed run's temporary zip is removed; the plan counts 2 inodes per scan to fetch
        (out / ".2.zip.part").write_bytes(b"half")
        (out / "2.zip").unlink()
        fetch(session, ["2"], out)
        assert sorted(p.name for p in out.iterdir()) == ["1.json", "1.zip", "2.json", "2.zip"]


def test_zip_store_survives_faults_and_switches_from_files(tmp_path, admin_env):
    faults = "seed=3,error=0.3,statuses=500:503:429,reset=0.1,truncate=0.15,path=/files"
    with running_server(tmp_path / "xnat") as server:
        series = [{"n_slices": n, "size": 96} for n in (5, 4, 6)]
        session = import_session(server.url, tmp_path / "dicom", "E1", series)
        out = tmp_path / "out" / "E1"
        download.download_session(  # an earlier run in files mode
            Connection(session.url),
            session_id=session.session_id,
            scans=[download.ScanTask("1", "DICOM", "1")],
            files=session.files,
            receipt=out.with_name("E1.json"),
            retry=FAST_RETRY,
        )
        assert (out / "1").is_dir()
        requests.put(
            f"{server.url}/xapi/xnatprep/faults", json={"spec": faults}, auth=server.admin, timeout=30
        ).raise_for_status()
        fetch(session, ["1", "2", "3"], out)
        for scan_id in ("1", "2", "3"):
            assert dicomzip.check_entries(out / f"{scan_id}.zip", expected(session, scan_id)) == []
        assert not (out / "1").exists()  # the zip replaces the files-mode folder
        assert sorted(p.name for p in out.iterdir()) == sorted(
            f"{s}.{e}" for s in "123" for e in ("json", "zip")
        )


def test_plan_counts_inodes_and_verified_zips_for_either_store(tmp_path, admin_env):
    from xnat_prep.demodata import seed_server

    with running_server(tmp_path / "xnat") as server:
        seed_server(server.url, "admin", "admin", "DEMO", 1, 1, "tiny")
        root = tmp_path / "results"
        result = discover.run_discovery(
            Connection(server.url), [Subject("DEMO", "SUB001", (), 1)], discover.Selection(), root
        )
        n_files = sum(s.n_files for s in result.scans)
        as_files = plan.build(root, upload=False, variables=False)
        as_zip = plan.build(root, upload=False, variables=False, store="zip")
        assert as_files.value("inodes needed") - as_zip.value("inodes needed") == n_files
        assert as_zip.value("inodes needed") == 2 * len(result.scans) + 4 * len(result.scans)
        session = result.sessions[0]
        where = (session.project, session.subject, session.session)
        download.download_session(
            Connection(server.url),
            session_id=session.session_id,
            scans=[download.ScanTask(s.scan_id, s.resource, s.scan) for s in result.scans],
            files=manifest.read_session_files(paths.session_files(root, *where)),
            receipt=paths.session_download_receipt(root, *where),
            store="zip",
        )
        done = plan.build(root, upload=False, variables=False, store="zip")
        assert done.value("verified locally") == len(result.scans)
        assert done.value("scans to download") == 0
        assert plan.build(root, upload=False, variables=False).value("verified locally") == 0


def test_zips_shaped_as_xnat_and_python_stream_them_in_either_store(tmp_path, admin_env):
    """Real XNAT deflates and puts a data descriptor after each entry (its ZipOutputStream): both
    stores read that as it arrives, one request per scan. A STORED zip with data descriptors cannot
    be read that way: files mode fetches it again into a file, zip mode checks the file it wrote."""
    for kind, files_requests in (("zip_deflated", 2), ("zip_descriptor", 4)):
        with running_server(tmp_path / kind / "xnat", faults=f"answer={kind}") as server:
            session = import_session(
                server.url, tmp_path / kind / "dicom", "E1", [{"n_slices": 6}, {"n_slices": 4}]
            )
            head = requests.get(
                f"{server.url}/data/experiments/{session.session_id}/scans/1{FILES_PATH}",
                params={"format": "zip"}, auth=("admin", "admin"), timeout=30,
            ).content  # fmt: skip
            assert head[6] & 0x08 and head[8] == (8 if kind == "zip_deflated" else 0)  # descriptor; method
            for store in ("files", "zip"):
                out = tmp_path / kind / store / "E1"
                mark = len(server.requests())
                result = download.download_session(
                    Connection(session.url),
                    session_id=session.session_id,
                    scans=[download.ScanTask(s, "DICOM", s) for s in ("1", "2")],
                    files=session.files,
                    receipt=out.with_name("E1.json"),
                    retry=FAST_RETRY,
                    store=store,
                )
                gets = len(zip_gets(server, mark))
                want = files_requests if store == "files" else 2
                assert result["http_requests"] == gets == want, (kind, store)
                assert sum(s["http_requests"] for s in result["scans"]) == gets  # each scan's own count
                for scan_id in ("1", "2"):
                    if store == "zip":
                        assert (
                            dicomzip.check_entries(out / f"{scan_id}.zip", expected(session, scan_id)) == []
                        )
                    else:
                        assert download.verified_locally(out / f"{scan_id}.json", session.files[scan_id])
                        assert not list(out.glob(".*"))  # no zip or work folder left
