"""Keys and derived values (UID form, injectivity, determinism, offsets) and the profile."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import KEY, write_key
from hypothesis import given, settings
from hypothesis import strategies as st
from pseudo_helpers import UID_FORM
from pydicom.uid import UID

from xnat_prep.errors import UserError
from xnat_prep.pseudonymise import KEY_FILE_ENV, Key, Profile, load_key, validate_options, validate_overrides
from xnat_prep.pseudonymise.profile import table

uids = st.from_regex(r"\A[1-9][0-9]{0,5}(\.(0|[1-9][0-9]{0,12})){1,8}\Z")


@settings(max_examples=100, deadline=None)
@given(uids)
def test_uid_form(uid: str) -> None:
    new = Key(KEY.encode()).uid(uid)
    assert UID_FORM.match(new) and len(new) <= 64 and UID(new).is_valid
    n = int(new.removeprefix("2.25."))
    assert new.startswith("2.25.") and n < 2**128
    assert (n >> 76) & 0xF == 8 and (n >> 62) & 0b11 == 0b10  # UUID version 8, RFC 9562 variant
    assert new != uid


@settings(max_examples=20, deadline=None)
@given(st.lists(uids, min_size=2, max_size=200, unique=True))
def test_uid_injective(originals: list[str]) -> None:
    k = Key(KEY.encode())
    assert len({k.uid(u) for u in originals}) == len(originals)


def test_keyed_and_namespaced() -> None:
    uid = "1.3.12.2.1107.5.2.32.35119.2010011420300180088599504.0"
    a, b, c = Key(KEY.encode()), Key((KEY + "0").encode()), Key(KEY.encode(), namespace="PROJ")
    assert a.uid(uid) == Key(KEY.encode()).uid(uid)
    assert len({a.uid(uid), b.uid(uid), c.uid(uid)}) == 3
    assert len({a.fingerprint, b.fingerprint, c.fingerprint}) == 3
    assert KEY not in repr(a) and a.fingerprint not in KEY


def test_date_offsets_whole_days_per_subject() -> None:
    k = Key(KEY.encode())
    offsets = {s: k.date_offset_days(s) for s in (f"XNAT_S{i:05d}" for i in range(200))}
    assert all(-3652 <= d <= -365 for d in offsets.values())
    assert len(set(offsets.values())) > 150  # different subjects, different offsets
    assert k.date_offset_days("XNAT_S00001") == offsets["XNAT_S00001"]
    assert len({k.pseudonym(s) for s in offsets}) == 200


def test_load_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_key(tmp_path / "k")
    assert load_key(path).master == KEY.encode()
    monkeypatch.setenv(KEY_FILE_ENV, str(path))
    assert load_key(None).fingerprint == load_key(path).fingerprint


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: write_key(p, mode=0o644), "readable or writable by others (mode 644): chmod 600"),
        (lambda p: write_key(p, mode=0o640), "mode 640"),
        (lambda p: write_key(p, text="short"), "need at least 16"),
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: None, "key file not found"),
    ],
)
def test_key_file_refused(tmp_path: Path, setup, message: str) -> None:
    path = tmp_path / "k"
    setup(path)
    with pytest.raises(UserError, match=re.escape(message)) as err:
        load_key(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_missing_key_names_the_variable() -> None:
    assert KEY_FILE_ENV not in os.environ
    with pytest.raises(UserError, match=f"--key-file or set {KEY_FILE_ENV}"):
        load_key(None)


def test_table_is_versioned_data() -> None:
    t = table()
    assert t["edition"] == "2026c" and "dicom-anonymizer 2.1.0" in t["sources"]["basic_profile"]
    a = t["attributes"]
    assert len(a) > 600
    assert a["(0010,0010)"]["basic"] == "Z" and a["(0008,0018)"]["basic"] == "U"
    assert a["(0008,0020)"]["options"]["retain_longitudinal_modified_dates"] == "C"
    assert a["(0018,1000)"]["options"]["retain_device_identity"] == "K"
    assert {v["basic"] for v in a.values()} <= {"D", "Z", "X", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}


def test_profile_options_and_overrides() -> None:
    basic = Profile(options=())
    assert basic.action(0x00081030) == "X"  # StudyDescription
    assert basic.action(0x00100030) == "Z" and basic.action(0x00181000) == "Z"  # birth date; serial X/Z/D
    assert basic.action(0x60003000) == "X" and basic.action(0x60023000) == "X"  # overlay data, any group
    assert basic.action(0x00280010) is None  # Rows: not in the table, kept
    p = Profile()
    assert p.action(0x00081030) == "C" and p.action(0x00101010) == "K"  # clean descriptors; age kept
    assert Profile(options=("retain_device_identity",)).action(0x00181000) == "K"
    assert Profile(overrides={0x00101010: "X"}).action(0x00101010) == "X"
    codes = dict(p.codes())
    assert codes["113100"] and codes["113107"] and codes["113105"] and "113109" not in codes


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"PatientNmae": "X"}, "'PatientNmae': not a DICOM tag or attribute keyword"),
        ({"(0010,0010)": "Q"}, "action 'Q' is not one of"),
        ({"(0029,1010)": "K"}, "private tags cannot be overridden"),
        ({"PatientName": "X", "(0010,0010)": "K"}, "the same tag is given twice"),
        ({"PatientAge": 3}, "action 3 is not one of"),
    ],
)
def test_invalid_overrides(mapping: dict, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)) as err:
        validate_overrides(mapping, "config.yaml")
    assert str(err.value).startswith("config.yaml: overrides:")


def test_override_forms() -> None:
    assert validate_overrides({"PatientAge": "x", "00181030": "K", "(0008,103e)": "C"}, "c") == {
        0x00101010: "X",
        0x00181030: "K",
        0x0008103E: "C",
    }
    with pytest.raises(UserError, match="unknown profile option 'retain_everything'"):
        validate_options(["retain_everything"], "config.yaml: options")
    with pytest.raises(UserError, match="exclude each other"):
        validate_options(["retain_longitudinal_full_dates", "retain_longitudinal_modified_dates"], "c")
