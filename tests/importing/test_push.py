"""End to end: project A (identifiable) -> download -> pseudonymise -> push to project B on a
second server. A sees only reads after its data went in; B gets the copy through the import path;
a second push sends no write; B's files hold no name from A's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from import_helpers import (
    ADMIN,
    FAST_RETRY,
    client,
    downloaded_md5s,
    local_md5s,
    make_project,
    run_import,
    synthetic,
    write_csv,
    writes,
)

from xnat_prep import cli, download, paths
from xnat_prep.credentials import resolve_target
from xnat_prep.errors import UserError
from xnat_prep.importing import push
from xnat_prep.manifest import FileRow
from xnat_prep.server.testing import running_server
from xnat_prep.xnat_api import Connection


def download_from(url: str, project: str, subject: str, label: str, root: Path) -> Path:
    """The product's download of one session into ``root/dicom/...``; returns the session folder."""
    with client(url) as c:
        sid = next(str(e["ID"]) for e in c.project_experiments(project) if e["label"] == label)
        files: dict[str, list[FileRow]] = {}
        for row in c.session_files(sid):
            scan_id = row["URI"].split("/scans/", 1)[1].split("/", 1)[0]
            path = row["URI"].split("/files/", 1)[1]
            files.setdefault(scan_id, []).append(
                FileRow(scan_id, "DICOM", path, int(row["Size"]), row["digest"], row["URI"])
            )
    tasks = [download.ScanTask(scan_id, "DICOM", paths.scan_dir(scan_id, "")) for scan_id in files]
    receipt = paths.session_download_receipt(root, project, subject, label)
    download.download_session(
        Connection(url),
        session_id=sid,
        scans=tasks,
        files=files,
        receipt=receipt,
        credentials=ADMIN,
        retry=FAST_RETRY,
    )
    return paths.outputs_of(receipt)


def pseudonymise(session: Path, out: Path, key: Path) -> None:
    if not key.exists():
        key.write_bytes(b"k" * 32)
        key.chmod(0o600)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "xnat_prep.cli",
            "pseudonymise",
            str(session),
            str(out),
            "--subject-id",
            "XNAT_S00001",
            "--key-file",
            str(key),
        ],
        check=True,
    )


def test_a_to_b_through_download_and_push(tmp_path: Path) -> None:
    original = synthetic(tmp_path / "a", "S1", "E1", project="A")
    with running_server(tmp_path / "xnat-a") as a, running_server(tmp_path / "xnat-b") as b:
        make_project(a.url, "A")
        run_import(
            a.url, write_csv(tmp_path / "a.csv", [["A", "S1", "E1", str(original)]]), tmp_path / "seed"
        )
        make_project(b.url, "B")
        a_before = len(a.requests())
        tree = tmp_path / "to-push"

        def push_to_b() -> dict:
            return push.push(
                Connection(b.url),
                tree,
                project="B",
                output_root=tmp_path / "results",
                credentials=ADMIN,
                retry=FAST_RETRY,
            )

        downloaded = download_from(a.url, "A", "S1", "E1", tmp_path / "results")
        copy = tree / "PSEUDO01" / "PSEUDO01_MR1"
        for scan in sorted(p for p in downloaded.iterdir() if p.is_dir()):  # beside them: receipts
            pseudonymise(scan, copy / scan.name, tmp_path / "key")

        summary = push_to_b()

        assert summary["actions"] == {"import": 1}
        assert writes(a, a_before) == []
        assert downloaded_md5s(b.url, "B", "PSEUDO01_MR1") == local_md5s(copy, "*.dcm")
        assert (tmp_path / "results/receipts/push/B/PSEUDO01/PSEUDO01_MR1.json").is_file()
        source = pydicom.dcmread(next(original.rglob("*.dcm")))
        ids = [
            str(source.StudyInstanceUID).encode(),
            str(source.SeriesInstanceUID).encode(),
        ]  # long: no chance hits
        assert not [p for p in copy.rglob("*") if p.is_file() and any(i in p.read_bytes() for i in ids)]
        b_before = len(b.requests())

        again = push_to_b()

        assert again["actions"] == {"skip": 1}
        assert writes(b, b_before) == []
        assert writes(a, a_before) == []


def test_the_source_password_never_goes_to_another_server(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XNAT_USER", "alice")
    monkeypatch.setenv("XNAT_PASS", "source-secret")
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XNAT_CREDENTIALS_FILE", raising=False)
    source, target = "https://xnat.site.org", "https://xnat.other.org"

    with pytest.raises(UserError, match=r"no XNAT credentials for the push target https://xnat\.other\.org"):
        resolve_target(target, source)
    assert resolve_target(source, source).password == "source-secret"
    monkeypatch.setenv("XNAT_PUSH_USER", "bob")
    monkeypatch.setenv("XNAT_PUSH_PASS", "target-secret")
    assert resolve_target(target, source).user == "bob"


def test_push_needs_its_own_target(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setenv("XNAT_HOST", "https://xnat.site.org")
    monkeypatch.delenv("XNAT_PUSH_HOST", raising=False)
    (tmp_path / "S" / "E").mkdir(parents=True)

    assert cli.main(["push", "--source-dir", str(tmp_path), "--project", "B"]) == 2
    assert "no target server: pass --host or set XNAT_PUSH_HOST" in capsys.readouterr().err
