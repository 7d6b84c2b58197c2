"""config: the schema itself, defaults, and one-line errors naming file and key."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml

from xnat_prep import config, schemas
from xnat_prep.errors import UserError


def minimal() -> dict:
    return {"subjects": {"csv": "subjects.csv"}}


def cfg(**sections: object) -> dict:
    """The minimal config with ``sections`` added or replaced."""
    return minimal() | sections


def error_of(data: dict) -> str:
    with pytest.raises(UserError) as info:
        config.validate(data, "my.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("my.yaml: ")
    return message


def walk(schema: dict, where: str = ""):
    """Every (location, subschema) of the config schema."""
    yield where, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{where}.{name}" if where else name)
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{where}[]")


@pytest.mark.parametrize("name", [config.SCHEMA, "schemas/bids.schema.yaml"])
def test_packaged_schemas_parse_as_the_pure_python_loader_reads_them(name: str) -> None:
    # schemas.load takes libyaml's C loader for speed: it must not read our files differently
    text = resources.files("xnat_prep").joinpath(name).read_text(encoding="utf-8")
    assert schemas.load(name) == yaml.load(text, Loader=yaml.SafeLoader)


def test_schema_every_object_closed_every_key_documented() -> None:
    for where, sub in walk(config.schema()):
        if sub.get("type") == "object":
            # closed, or a typed map whose keys config.validate checks (scans.dicom: DICOM keywords)
            typed_map = "properties" not in sub and isinstance(sub.get("additionalProperties"), dict)
            assert sub.get("additionalProperties") is False or typed_map, where
            required = set(sub.get("required", []))
            for name, prop in sub.get("properties", {}).items():
                assert prop.get("description"), f"{where}.{name}"
                assert "type" in prop or "enum" in prop, f"{where}.{name}"
                assert name in required or "default" in prop or where.endswith("[]"), f"{where}.{name}"


def test_defaults_filled_and_not_shared() -> None:
    first = config.validate(minimal())
    assert first["xnat"]["max_connections"] == 4
    assert first["scans"]["include_types"] == ["*"]
    assert first["output_root"] == "results"
    assert first["custom_variables"]["prefix"] == "xnatprep_"
    first["scans"]["include_types"].append("x")
    assert config.validate(minimal())["scans"]["include_types"] == ["*"]


def test_given_values_kept() -> None:
    data = cfg(**{"xnat": {"host": "https://x.org/xnat", "max_connections": 8}})
    assert config.validate(data)["xnat"] == {
        "host": "https://x.org/xnat",
        "verify_tls": True,
        "ca_bundle": None,
        "max_connections": 8,
        "scans_in_parallel": "auto",
        "alias_token": False,
    }


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (cfg(**{"xnat": {"hots": 1}}), "xnat: unknown key 'hots' (known keys: host,"),
        (cfg(**{"extra": 1}), "(top level): unknown key 'extra'"),
        ({"subjects": {"csv": ""}}, "subjects.csv: '' should be non-empty"),
        (cfg(**{"push": {"enabled": True}}), "push.project: push.enabled needs the target project"),
        (
            cfg(**{"push": {"enabled": True, "project": "B"}}),
            "push: push.enabled needs pseudonymise.enabled (the pushed copies are its output)",
        ),
        (cfg(**{"xnat": {"max_connections": "4"}}), "xnat.max_connections: expected integer, got '4'"),
        (
            cfg(**{"xnat": {"max_connections": 0}}),
            "xnat.max_connections: 0 is less than the minimum of 1",
        ),
        (
            cfg(**{"xnat": {"host": "xnat.org"}}),
            "xnat.host: 'xnat.org' is not valid: expected an http(s) URL",
        ),
        (
            cfg(**{"xnat": {"host": "https://me:pw@x.org"}}),
            "xnat.host: 'https://***@x.org' is not valid",
        ),
        (
            cfg(**{"subjects": {"csv": "s", "project": "a b"}}),
            "subjects.project: 'a b' is not valid: XNAT",
        ),
        (
            cfg(**{"scans": {"series_description": "(x"}}),
            "scans.series_description: not a valid regular",
        ),
        (
            cfg(**{"custom_variables": {"derived": [{"name": "Bad", "measure": "n_scans"}]}}),
            "custom_variables.derived[0].name: 'Bad' is not valid: lower-case",
        ),
        (
            cfg(**{"custom_variables": {"derived": [{"name": "a", "measure": "n_scans"}] * 2}}),
            "custom_variables.derived: name 'a' is used twice",
        ),
        ("not a mapping", "the config must be a mapping"),
    ],
)
def test_errors_are_one_clear_line(data, expected: str) -> None:
    assert expected in error_of(data)


def test_password_in_url_is_never_echoed() -> None:
    assert "pw" not in error_of(cfg(**{"xnat": {"host": "https://me:pw@x.org?a=1"}}))


def test_load_merges_files_later_wins(tmp_path) -> None:
    (tmp_path / "a.yaml").write_text("subjects: {csv: a.csv}\nxnat: {max_connections: 2, host: 'http://a'}\n")
    (tmp_path / "b.yaml").write_text("xnat: {max_connections: 3}\n")
    loaded = config.load([tmp_path / "a.yaml", tmp_path / "b.yaml"])
    assert loaded["xnat"]["max_connections"] == 3 and loaded["xnat"]["host"] == "http://a"


def test_load_file_errors(tmp_path) -> None:
    with pytest.raises(UserError, match="config file not found"):
        config.load([tmp_path / "missing.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("subjects:\n  csv: [unclosed\n")
    with pytest.raises(UserError, match=r"bad\.yaml: line \d+: not valid YAML"):
        config.load([bad])


def test_host_from_environment(monkeypatch) -> None:
    data = config.validate(minimal())
    monkeypatch.delenv("XNAT_HOST", raising=False)
    with pytest.raises(UserError, match=r"set xnat\.host in the config, pass --host or set XNAT_HOST"):
        config.xnat_host(data)
    monkeypatch.setenv("XNAT_HOST", "https://env.example.org/")
    assert config.xnat_host(data) == "https://env.example.org"
    monkeypatch.setenv("XNAT_HOST", "env.example.org")
    with pytest.raises(UserError, match=r"XNAT_HOST: 'env\.example\.org' is not valid"):
        config.xnat_host(data)
    assert config.connection(config.validate(cfg(**{"xnat": {"host": "http://h/"}}))).host == "http://h"


def test_the_host_check_without_the_schema_is_the_schemas_check() -> None:
    """A job checks XNAT_HOST with config.HOST_PATTERN, without parsing the schema: the
    schema's pattern for xnat.host, with its hint."""
    assert config.schema()["properties"]["xnat"]["properties"]["host"]["pattern"] == config.HOST_PATTERN
    assert config.HOST_PATTERN in config.PATTERN_HINTS


def test_ca_bundle_must_exist(tmp_path) -> None:
    data = config.validate(cfg(**{"xnat": {"ca_bundle": str(tmp_path / "ca.pem")}}))
    with pytest.raises(UserError, match=r"ca\.pem: file not found"):
        config.check_files(data)
    (tmp_path / "ca.pem").write_text("x")
    config.check_files(data)


def test_export_for_jobs_hands_connection_settings_to_the_cli(tmp_path) -> None:
    """What the workflow's `shell:` steps inherit: this Python's xnat-prep first, host and TLS."""
    import argparse

    from xnat_prep.commands import options

    environ = {"PATH": "/usr/bin", "XNAT_INSECURE": "1", "XNAT_USER": "u"}
    data = config.validate(cfg(**{"xnat": {"host": "https://h.example.org/", "ca_bundle": "/ca.pem"}}))
    config.export_for_jobs(data, environ, python="/venv/bin/python")
    assert environ == {
        "PATH": "/venv/bin:/usr/bin",
        "XNAT_HOST": "https://h.example.org",
        "XNAT_CA_BUNDLE": "/ca.pem",
        "XNAT_MAX_CONNECTIONS": "4",
        "XNAT_DOWN_FILE": str(Path.cwd() / ".snakemake/xnat-prep/xnat-down"),  # the circuit breaker's
        "XNAT_PREP_RAM_TMP_MB": "1024",  # dicom.ram_tmp_mb, for zip mode's conversions
        "XNAT_USER": "u",  # credentials are not the config's business
    }
    config.export_for_jobs(data, environ, python="/venv/bin/python")
    assert environ["PATH"] == "/venv/bin:/usr/bin"  # not prepended twice
    insecure = cfg(**{"xnat": {"host": "https://h.example.org", "verify_tls": False}})
    config.export_for_jobs(config.validate(insecure), environ, python="/p/python")
    assert environ["XNAT_INSECURE"] == "1" and "XNAT_CA_BUNDLE" not in environ
    cases = (({"XNAT_INSECURE": "1"}, (None, True)), ({"XNAT_CA_BUNDLE": "/ca.pem"}, ("/ca.pem", False)))
    for env, expected in cases:
        parser = argparse.ArgumentParser()
        with pytest.MonkeyPatch.context() as mp:
            for key in ("XNAT_INSECURE", "XNAT_CA_BUNDLE"):
                mp.delenv(key, raising=False)
            for key, value in env.items():
                mp.setenv(key, value)
            options.add_connection_arguments(parser)
            args = parser.parse_args([])
        assert (args.ca_bundle, args.insecure) == expected
