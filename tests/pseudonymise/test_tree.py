"""The command on folders and zips: determinism across processes and shards, the leak scan,
date intervals, the receipt and re-identification table, and bad input (one line, exit 2,
nothing half-written)."""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pydicom
import pytest
from conftest import KEY, write_key
from pseudo_helpers import PLANTED, files, identifying_values, leaks

from xnat_prep.cli import main
from xnat_prep.pseudonymise import KEY_FILE_ENV

SUBJECTS = {"SUB001": "XNAT_S00001", "SUB002": "XNAT_S00002"}


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xnat_prep.cli", *map(str, args)], capture_output=True, text=True, env=env
    )


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in files(root)}


def test_one_process_vs_four_shuffled_shards_vs_rerun(
    study: Path, key_file: Path, tmp_path: Path, clean_env
) -> None:
    session = study / "SUB001" / "SUB001_MR1"
    args = ["--subject-id", "XNAT_S00001", "--key-file", key_file]
    one = cli("pseudonymise", session, tmp_path / "one", *args, env=clean_env)
    assert one.returncode == 0, one.stderr
    inputs = files(session)
    random.Random(7).shuffle(inputs)
    shards = [tmp_path / f"shard{i}" for i in range(4)]
    for i, f in enumerate(inputs):  # shuffled and renamed: names must not matter
        shards[i % 4].mkdir(exist_ok=True)
        shutil.copy(f, shards[i % 4] / f"x{len(inputs) - i:05d}.dcm")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "xnat_prep.cli",
                "pseudonymise",
                str(s),
                str(tmp_path / f"out{i}"),
                *map(str, args),
            ],
            env=clean_env,
            stderr=subprocess.PIPE,
        )
        for i, s in enumerate(shards)
    ]
    assert all(p.wait() == 0 for p in procs)
    merged: dict[str, bytes] = {}
    for i in range(4):
        merged |= tree_bytes(tmp_path / f"out{i}")
    expected = tree_bytes(tmp_path / "one")
    assert merged == expected and len(expected) == len(inputs) - 2  # the SC and the SR are quarantined
    again = cli("pseudonymise", session, tmp_path / "one", *args, env=clean_env)
    assert again.returncode == 0 and tree_bytes(tmp_path / "one") == expected


def test_no_identifying_value_anywhere(study: Path, refs: Path, key_file: Path, tmp_path: Path) -> None:
    for label, subject_id in SUBJECTS.items():
        sessions = [study / label / f"{label}_MR1"] + ([refs] if label == "SUB001" else [])
        for i, session in enumerate(sessions):
            out = tmp_path / "out" / f"{label[-1]}{i}"  # the test's names must not carry labels either
            receipt, log = tmp_path / f"{label[-1]}{i}.json", tmp_path / f"{label[-1]}{i}.log"
            args = ["--log", log, "pseudonymise", session, out, "--subject-id", subject_id]
            assert main([str(a) for a in [*args, "--key-file", key_file, "--receipt", receipt]]) == 0
            values = identifying_values(session, (label, session.name, subject_id, KEY, *PLANTED.values()))
            assert len(values) > 50
            found = leaks(values, [out, receipt, log])
            assert not found, found[:10]


def _study_dates(folder: Path) -> set[str]:
    return {str(pydicom.dcmread(f, stop_before_pixels=True).StudyDate) for f in files(folder)}


def _day(d: str) -> dt.date:
    return dt.date(int(d[:4]), int(d[4:6]), int(d[6:]))


def test_date_intervals_kept_within_subject_and_offsets_differ(
    study: Path, key_file: Path, tmp_path: Path
) -> None:
    shifts, intervals = {}, {}
    for label, subject_id in SUBJECTS.items():
        before, after = [], []
        for session in sorted((study / label).iterdir())[: 2 if label == "SUB001" else 1]:
            out = tmp_path / session.name
            assert (
                main(
                    [
                        "pseudonymise",
                        str(session),
                        str(out),
                        "--subject-id",
                        subject_id,
                        "--key-file",
                        str(key_file),
                    ]
                )
                == 0
            )
            (b,), (a,) = _study_dates(session), _study_dates(out)  # one study date per session, shifted alike
            before.append(_day(b))
            after.append(_day(a))
        shifts[label] = {(x - y).days for x, y in zip(before, after, strict=True)}
        assert len(shifts[label]) == 1 and len(before) == (
            2 if label == "SUB001" else 1
        )  # the same whole-day offset for every session of the subject
        intervals[label] = ([x - before[0] for x in before], [y - after[0] for y in after])
        assert intervals[label][0] == intervals[label][1]
    assert shifts["SUB001"] != shifts["SUB002"]
    acquisition = pydicom.dcmread(files(tmp_path / "SUB001_MR1")[0])
    original = pydicom.dcmread(files(study / "SUB001" / "SUB001_MR1" / "1-localizer")[0])
    assert acquisition.StudyTime == original.StudyTime and acquisition.PatientAge == original.PatientAge


def test_zip_receipt_and_reid_table(study: Path, key_file: Path, tmp_path: Path) -> None:
    session = study / "SUB002" / "SUB002_MR1"
    archive = tmp_path / "scan.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in files(session):
            zf.write(f, f"SUB002_MR1/{f.relative_to(session)}")
    mapping = tmp_path / "map.csv"
    mapping.write_text("subject_id,pseudonym\nXNAT_S00002,P0002\nXNAT_S00001,P0001\n")
    reid, receipt = tmp_path / "private" / "reid.csv", tmp_path / "receipt.json"
    args = ["pseudonymise", archive, tmp_path / "out", "--subject-id", "XNAT_S00002", "--key-file", key_file]
    args += ["--mapping", mapping, "--reid-table", reid, "--receipt", receipt, "--layout", "flat"]
    assert main([str(a) for a in args]) == 0
    outs = files(tmp_path / "out")
    assert all(p.parent == tmp_path / "out" for p in outs)
    assert {str(pydicom.dcmread(p).PatientID) for p in outs} == {"P0002"}
    data = json.loads(receipt.read_text())
    assert data["n_input"] == len(files(session)) and data["n_written"] == len(outs)
    assert {q["reason"].split(" (")[0] for q in data["quarantined"]} == {
        "secondary capture",
        "structured report",
    }
    assert all(q["sop_instance_uid"].startswith("2.25.") for q in data["quarantined"])
    assert data["profile"]["edition"] == "2026c" and data["key_fingerprint"]
    assert stat.S_IMODE(reid.stat().st_mode) == 0o600
    rows = reid.read_text().splitlines()
    assert rows[1] == "subject,XNAT_S00002,P0002" and sum(r.startswith("uid,") for r in rows) > 100


def _one_line_error(capsys, code: int, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("xnat-prep pseudonymise: error: ")
    for n in needles:
        assert n in err, err


def _nothing_written(parent: Path, out: Path, before: dict[str, bytes] | None) -> None:
    if before is None:
        assert not out.exists()
    else:
        assert tree_bytes(out) == before
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{out.name}.")]


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ("text", "notes.txt: not a DICOM file"),
        ("truncated", "broken.dcm: unreadable DICOM (no SOP class or instance UID"),
        ("pixels", "0001.dcm: unreadable DICOM (pixel data truncated"),
        ("zip", "neither a folder nor a readable zip"),
        ("empty", "no files to pseudonymise"),
    ],
)
@pytest.mark.parametrize("existing", [False, True])
def test_bad_input_files(
    study: Path, key_file: Path, tmp_path: Path, capsys, bad: str, needle: str, existing: bool
) -> None:
    src = tmp_path / "in"
    shutil.copytree(study / "SUB002" / "SUB002_MR1" / "2-T1w_MPRAGE", src)
    if bad == "text":
        (src / "notes.txt").write_text("not DICOM")
    elif bad == "truncated":
        (src / "broken.dcm").write_bytes(files(src)[0].read_bytes()[:400])
    elif bad == "pixels":  # the demo data's broken series
        shutil.rmtree(src)
        shutil.copytree(study.parent / "SUB002_MR1-broken", src)
    elif bad == "zip":
        src = tmp_path / "in.zip"
        src.write_bytes(b"PK\x03\x04 not really")
    else:
        shutil.rmtree(src)
        src.mkdir()
    out = tmp_path / "out"
    before = None
    if existing:
        out.mkdir()
        (out / "old.dcm").write_bytes(b"previous run")
        before = tree_bytes(out)
    code = main(["pseudonymise", str(src), str(out), "--subject-id", "S1", "--key-file", str(key_file)])
    _one_line_error(capsys, code, needle)
    _nothing_written(tmp_path, out, before)


@pytest.mark.parametrize(
    ("csv_text", "needle"),
    [
        ("subject,pseudonym\nXNAT_S1,P1\n", "row 1: missing column 'subject_id'"),
        ("subject_id,pseudonym\nXNAT_S1,\n", "row 2, column 'pseudonym': blank"),
        ("subject_id,pseudonym\n,P1\n", "row 2, column 'subject_id': blank"),
        (
            "subject_id,pseudonym\nXNAT_S1,P1\nXNAT_S1,P2\n",
            "row 3, column 'subject_id': subject 'XNAT_S1' is listed twice",
        ),
        (
            "subject_id,pseudonym\nXNAT_S1,P1\nXNAT_S2,P1\n",
            "row 3, column 'pseudonym': 'P1' is another subject's",
        ),
        ("subject_id,pseudonym\nXNAT_S1,P 1\n", "row 2, column 'pseudonym': 'P 1' is not"),
        ("subject_id,pseudonym\nXNAT_S2,P2\n", "subject 'XNAT_S1' is not in the mapping CSV"),
        ("subject_id,pseudonym\n", "mapping CSV has no rows"),
    ],
)
def test_bad_mapping(study: Path, key_file: Path, tmp_path: Path, capsys, csv_text: str, needle: str) -> None:
    mapping = tmp_path / "map.csv"
    mapping.write_text(csv_text)
    src = study / "SUB002" / "SUB002_MR1" / "1-localizer"
    code = main(
        [
            "pseudonymise",
            str(src),
            str(tmp_path / "out"),
            "--subject-id",
            "XNAT_S1",
            "--key-file",
            str(key_file),
            "--mapping",
            str(mapping),
        ]
    )
    _one_line_error(capsys, code, "map.csv", needle)
    _nothing_written(tmp_path, tmp_path / "out", None)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--override", "PatientNmae=X"], "'PatientNmae': not a DICOM tag"),
        (["--override", "PatientAge"], "expected TAG=ACTION"),
        (["--profile-option", "retain_all"], "unknown profile option 'retain_all'"),
        (["--key-file", "{tmp}/absent.key"], "absent.key: key file not found"),
        (["--key-file", "{tmp}/open.key"], "open.key: key file is readable or writable by others (mode 644)"),
        ([], f"no pseudonymisation key: pass --key-file or set {KEY_FILE_ENV}"),
    ],
)
def test_bad_options_and_keys(study: Path, tmp_path: Path, capsys, extra: list[str], needle: str) -> None:
    write_key(tmp_path / "open.key", mode=0o644)
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    if not any(e == "--key-file" for e in extra):
        write_key(tmp_path / "good.key")
        extra += (
            ["--key-file", str(tmp_path / "good.key")]
            if "--override" in extra or "--profile-option" in extra
            else []
        )
    src = study / "SUB002" / "SUB002_MR1" / "1-localizer"
    code = main(["pseudonymise", str(src), str(tmp_path / "out"), "--subject-id", "XNAT_S1", *extra])
    _one_line_error(capsys, code, needle)
    _nothing_written(tmp_path, tmp_path / "out", None)
