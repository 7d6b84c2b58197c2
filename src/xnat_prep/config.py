"""Load and validate the workflow config against ``workflow/schemas/config.schema.yaml``.

The Snakefile validates with ``snakemake.utils.validate`` too; this module gives the same check to
``xnat-prep validate`` and turns the first problem into one line that names the file and the key
(jsonschema's own message dumps the schema). Defaults from the schema are filled in.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import yaml

from xnat_prep.errors import UserError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
HOST_ENV = "XNAT_HOST"
_USERINFO = re.compile(r"(://)[^/@\s]*@")
# What the schema's patterns mean, for error messages.
PATTERN_HINTS = {
    "^https?://[^\\s/?#@]+(/[^\\s?#]*)?$": "expected an http(s) URL like https://xnat.example.org "
    "(no user:password@, no query)",
    "^[A-Za-z0-9_-]+$": "XNAT IDs and labels hold only letters, digits, '_' and '-'",
    "^[a-z][a-z0-9_]*$": "lower-case letters, digits and '_', starting with a letter",
}


@functools.cache
def schema() -> dict:
    """The config schema (parsed once per process)."""
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _with_defaults(validator_class: Any) -> Any:
    """A jsonschema validator class that also fills in ``default`` values (copies, not shared)."""
    import jsonschema.validators

    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for name, prop in properties.items():
                if "default" in prop:
                    instance.setdefault(name, copy.deepcopy(prop["default"]))
        yield from validate_properties(validator, properties, instance, subschema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _location(path: Iterable[Any]) -> str:
    """``xnat.max_connections`` / ``custom_variables.derived[0].name`` from a jsonschema path."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _shown(value: Any) -> str:
    """A config value for a message, with any ``user:password@`` of a URL masked."""
    return _USERINFO.sub(r"\1***@", repr(value))


def _message(error: Any) -> str:
    """One readable line for a jsonschema error."""
    where = _location(error.absolute_path)
    if error.validator == "additionalProperties":
        known = ", ".join(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return f"{where}: unknown key {', '.join(map(repr, extra))} (known keys: {known})"
    if error.validator == "required":
        return f"{where}: {error.message.replace('is a required property', 'is missing')}"
    if error.validator == "pattern":
        hint = PATTERN_HINTS.get(error.validator_value, f"must match {error.validator_value}")
        return f"{where}: {_shown(error.instance)} is not valid: {hint}"
    if error.validator == "type":
        wanted = error.validator_value
        wanted = " or ".join(wanted) if isinstance(wanted, list) else wanted
        return f"{where}: expected {wanted}, got {_shown(error.instance)}"
    return f"{where}: {error.message}"


def validate(config: dict, source: str = "config") -> dict:
    """Validate ``config`` in place (defaults filled in) and return it; UserError on a problem.

    ``source`` names the config file(s) in messages.
    """
    import jsonschema

    if not isinstance(config, dict):
        raise UserError(f"{source}: the config must be a mapping of keys to values")
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise UserError(f"{source}: {_message(error)}")
    pattern = config["scans"]["series_description"]
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise UserError(
                f"{source}: scans.series_description: not a valid regular expression ({exc})"
            ) from None
    names = [d["name"] for d in config["custom_variables"]["derived"]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"{source}: custom_variables.derived: name {dupes[0]!r} is used twice")
    return config


def merge(base: dict, update: Mapping) -> dict:
    """Recursive dict update, as Snakemake merges several ``--configfile`` files."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def read_yaml(path: str | Path) -> dict:
    """One config file as a dict; UserError for a missing file or bad YAML (with its line)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        raise UserError(f"{path}: {line}not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: the config must be a mapping of keys to values")
    return data


def load(paths: Iterable[str | Path]) -> dict:
    """Read, merge (later files win) and validate config files."""
    paths = list(paths)
    config: dict = {}
    for path in paths:
        merge(config, read_yaml(path))
    return validate(config, source=", ".join(map(str, paths)) or "config")


def xnat_host(config: Mapping) -> str:
    """The server URL: ``xnat.host``, else the XNAT_HOST environment variable (checked alike)."""
    host = config["xnat"]["host"]
    if host:
        return host.rstrip("/")
    host = os.environ.get(HOST_ENV, "").strip()
    if not host:
        raise UserError(f"no XNAT server given: set xnat.host in the config or the {HOST_ENV} variable")
    url_pattern = schema()["properties"]["xnat"]["properties"]["host"]["pattern"]
    if not re.match(url_pattern, host):
        raise UserError(f"{HOST_ENV}: {_shown(host)} is not valid: {PATTERN_HINTS[url_pattern]}")
    return host.rstrip("/")


def connection(config: Mapping) -> dict[str, Any]:
    """Keyword arguments every XNAT-facing step takes: host, verify_tls, ca_bundle.

    Read from the config by the rule adapters, never passed as ``params:`` (no rerun trigger).
    """
    return {
        "host": xnat_host(config),
        "verify_tls": config["xnat"]["verify_tls"],
        "ca_bundle": config["xnat"]["ca_bundle"],
    }


def export_for_jobs(
    config: Mapping, environ: MutableMapping[str, str] = os.environ, python: str = sys.executable
) -> None:
    """Prepare the environment the workflow's ``shell:`` steps inherit from the Snakemake process.

    ``xnat-prep`` of ``python`` comes first on PATH (under ``--sdm conda`` the environment's own
    comes before it), and the config's server and TLS settings go where the CLI looks for them by
    default (``XNAT_HOST``, ``XNAT_CA_BUNDLE``, ``XNAT_INSECURE``). Not ``params:``, so no rerun
    trigger, and no password: that comes from the environment, ~/.netrc or ~/.xnat as always.
    """
    from xnat_prep.credentials import CA_BUNDLE_ENV, INSECURE_ENV

    bindir = os.path.dirname(python)
    if environ.get("PATH", "").split(os.pathsep)[0] != bindir:
        environ["PATH"] = os.pathsep.join([bindir, environ.get("PATH", "")])
    settings = connection(config)
    environ[HOST_ENV] = settings["host"]
    environ.pop(CA_BUNDLE_ENV, None)
    environ.pop(INSECURE_ENV, None)
    if settings["ca_bundle"]:
        environ[CA_BUNDLE_ENV] = settings["ca_bundle"]
    elif not settings["verify_tls"]:
        environ[INSECURE_ENV] = "1"


def check_files(config: Mapping) -> None:
    """Offline checks of the files the config names (the subject CSV is checked by ``subjects``)."""
    ca_bundle = config["xnat"]["ca_bundle"]
    if ca_bundle and not os.path.isfile(ca_bundle):
        raise UserError(f"xnat.ca_bundle: {ca_bundle}: file not found")
