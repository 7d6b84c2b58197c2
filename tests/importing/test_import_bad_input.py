"""`xnat-prep import` on bad input: one line naming the row, exit 2, no modifying request."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from import_helpers import make_project, synthetic, write_csv, writes

from xnat_prep import cli
from xnat_prep.server.auth import User, dump_users, hash_password
from xnat_prep.server.testing import running_server


@pytest.fixture(scope="module")
def sessions_on_disk(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dicom")
    return {label: synthetic(root, subject, label) for subject, label in (("S1", "E1"), ("S2", "E2"))}


def fails(argv: list[str], capsys: pytest.CaptureFixture[str], log: Path) -> str:
    """Run the command (logging into ``log``, as a workflow job); it must fail with exit 2 and
    one line on stderr, which is returned."""
    code = cli.main(["--log", str(log), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_rows_are_one_line_each_and_send_no_write(
    xnat_server, sessions_on_disk, tmp_path: Path, capsys, admin_env
) -> None:
    make_project(xnat_server.url, "P")
    e1, e2 = sessions_on_disk["E1"], sessions_on_disk["E2"]
    mixed = tmp_path / "mixed"
    shutil.copytree(e1, mixed)
    shutil.copytree(next(e2.iterdir()), mixed / "from-E2")
    junk = tmp_path / "junk"
    shutil.copytree(e1, junk)
    (junk / "notes.txt").write_text("not DICOM")
    cases = {
        "two studies": ([["P", "S1", "E1", str(mixed)]], r"row 2, column 'source': 2 studies in one session"),
        "unparsable": (
            [["P", "S1", "E1", str(junk)]],
            r"row 2, column 'source': 1 file\(s\) are not DICOM: notes.txt",
        ),
        "duplicate row": (
            [["P", "S1", "E1", str(e1)], ["P", "S1", "E1", str(e1)]],
            r"row 3: duplicate of row 2",
        ),
        "missing source": (
            [["P", "S1", "E1", str(tmp_path / "nowhere")]],
            r"nowhere: no such folder or file",
        ),
        "same study twice": (
            [["P", "S1", "E1", str(e1)], ["P", "S1", "E3", str(e1)]],
            r"row 3: study [0-9.]+ is also row 2's",
        ),
        "bad dest": ([["P", "S1", "E1", str(e1), "attic"]], r"row 2, column 'dest': 'attic' is not one of"),
    }
    before = len(xnat_server.requests())
    for name, (rows, message) in cases.items():
        csv = write_csv(tmp_path / f"{name}.csv", rows)
        err = fails(
            ["import", "--csv", str(csv), "--host", xnat_server.url, "--output-root", str(tmp_path)],
            capsys,
            tmp_path / "import.log",
        )
        assert re.search(message, err), f"{name}: {err}"
    assert writes(xnat_server, before) == []


def test_a_read_only_member_is_refused_before_any_write(
    sessions_on_disk, tmp_path: Path, capsys, monkeypatch
) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(
        dump_users(
            {
                "admin": User("admin", hash_password("admin"), admin=True),
                "reader": User("reader", hash_password("secret"), roles={"P": "collaborator"}),
            }
        )
    )
    monkeypatch.setenv("XNAT_USER", "reader")
    monkeypatch.setenv("XNAT_PASS", "secret")
    with running_server(tmp_path / "xnat", users_file=users) as server:
        make_project(server.url, "P")
        csv = write_csv(tmp_path / "import.csv", [["P", "S1", "E1", str(sessions_on_disk["E1"])]])
        before = len(server.requests())

        err = fails(
            ["import", "--csv", str(csv), "--host", server.url, "--output-root", str(tmp_path)],
            capsys,
            tmp_path / "import.log",
        )

        assert "row 2 (P/S1/E1): denied: you may not add data to project P" in err
        assert writes(server, before) == []
