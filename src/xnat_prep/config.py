"""Load and validate the workflow config against the schema shipped in the package
(``xnat_prep/schemas/config.schema.yaml``).

The workflow runs :func:`offline_check` on every parse and ``xnat-prep validate`` runs the same: the
first problem becomes one line naming the file and the key (jsonschema's own message dumps the
schema), defaults from the schema are filled in, and the files the config names are checked.
"""

from __future__ import annotations

import copy
import os
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xnat_prep import dicomzip, schemas, slots
from xnat_prep.errors import UserError

if TYPE_CHECKING:
    from xnat_prep.subjects import Subject
    from xnat_prep.xnat_api import Connection

SCHEMA = "schemas/config.schema.yaml"  # package data of xnat_prep
# Where the workflow's jobs find the connection settings (see export_for_jobs).
HOST_ENV = "XNAT_HOST"
CA_BUNDLE_ENV = "XNAT_CA_BUNDLE"
INSECURE_ENV = "XNAT_INSECURE"
MAX_CONNECTIONS_ENV = "XNAT_MAX_CONNECTIONS"
DOWN_FILE_ENV = "XNAT_DOWN_FILE"  # the access layer's circuit breaker, shared by a run's jobs
LOCAL_TMP_ENV = dicomzip.LOCAL_TMP_ENV  # dicom.local_tmp, unexpanded: the node expands it
RAM_TMP_MB_ENV = dicomzip.RAM_TMP_MB_ENV  # dicom.ram_tmp_mb
DOWN_FILE = ".snakemake/xnat-prep/xnat-down"  # relative to the workflow's working directory
_USERINFO = re.compile(r"(://)[^/@\s]*@")
# xnat.host's pattern in the schema (a unit test holds them equal): a job checks XNAT_HOST with
# it without parsing the schema (~20 ms of its start-up)
HOST_PATTERN = "^https?://[^\\s/?#@]+(/[^\\s?#]*)?$"
# What the schema's patterns mean, for error messages.
PATTERN_HINTS = {
    HOST_PATTERN: "expected an http(s) URL like https://xnat.example.org (no user:password@, no query)",
    "^[A-Za-z0-9_-]+$": "XNAT IDs and labels hold only letters, digits, '_' and '-'",
    "^[a-z][a-z0-9_]*$": "lower-case letters, digits and '_', starting with a letter",
}


def schema() -> dict:
    """The config schema (parsed once per process)."""
    return schemas.load(SCHEMA)


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
    criteria = config["scans"]["dicom"]
    if criteria:
        from pydicom.datadict import tag_for_keyword  # only when criteria are set: ~0.3 s to import

        for keyword, pattern in criteria.items():
            if tag_for_keyword(keyword) is None:
                raise UserError(f"{source}: scans.dicom.{keyword}: not a DICOM keyword (e.g. ImageType)")
            if pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as exc:
                    raise UserError(
                        f"{source}: scans.dicom.{keyword}: not a valid regular expression ({exc})"
                    ) from None
    push = config["push"]
    if push["enabled"] and not push["project"]:
        raise UserError(f"{source}: push.project: push.enabled needs the target project")
    if push["enabled"] and not (push["source_dir"] or config["pseudonymise"]["enabled"]):
        raise UserError(
            f"{source}: push: push.enabled needs pseudonymise.enabled (the pushed copies are its output) "
            "or push.source_dir (a folder already pseudonymised)"
        )
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
    import yaml  # here: the workflow's jobs import this module for its settings, not to read YAML

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


def check_host(host: str, source: str) -> str:
    """A server URL checked like the schema's ``xnat.host`` (``source`` names where it came from)."""
    if not re.match(HOST_PATTERN, host):
        raise UserError(f"{source}: {_shown(host)} is not valid: {PATTERN_HINTS[HOST_PATTERN]}")
    return host.rstrip("/")


def host_from_env() -> str:
    """The server URL from the XNAT_HOST environment variable."""
    host = os.environ.get(HOST_ENV, "").strip()
    if not host:
        raise UserError(f"no XNAT server given: set xnat.host in the config, pass --host or set {HOST_ENV}")
    return check_host(host, HOST_ENV)


def xnat_host(config: Mapping) -> str:
    """The server URL: ``xnat.host``, else the XNAT_HOST environment variable (checked alike)."""
    host = config["xnat"]["host"]
    return host.rstrip("/") if host else host_from_env()


def connection(config: Mapping) -> Connection:
    """The server and how to trust it, from a validated config."""
    from xnat_prep.xnat_api import Connection

    xnat = config["xnat"]
    return Connection.from_settings(xnat_host(config), xnat["verify_tls"], xnat["ca_bundle"])


def export_for_jobs(
    config: Mapping, environ: MutableMapping[str, str] = os.environ, python: str = sys.executable
) -> None:
    """Prepare the environment the workflow's jobs inherit from the Snakemake process.

    ``xnat-prep`` of ``python`` comes first on PATH, and the config's server, TLS and connection
    settings go where the commands look for them by default (``XNAT_HOST``, ``XNAT_CA_BUNDLE``,
    ``XNAT_INSECURE``, ``XNAT_MAX_CONNECTIONS``; ``dicom.local_tmp`` and ``dicom.ram_tmp_mb`` as
    ``XNAT_PREP_LOCAL_TMP`` and ``XNAT_PREP_RAM_TMP_MB``).
    Not ``params:``, so no rerun trigger, and no password: that comes from the environment,
    ~/.netrc or ~/.xnat as always. ``XNAT_DOWN_FILE`` lets a job that finds XNAT down tell the
    jobs after it (``xnat_api.http``'s circuit breaker).
    """
    bindir = os.path.dirname(python)
    if environ.get("PATH", "").split(os.pathsep)[0] != bindir:
        environ["PATH"] = os.pathsep.join([bindir, environ.get("PATH", "")])
    settings = connection(config)
    environ[HOST_ENV] = settings.host
    key_file = config["pseudonymise"]["key_file"]
    if key_file:  # a path, never the key: the pseudonymise jobs read the key from it
        environ["XNAT_PREP_PSEUDO_KEY_FILE"] = os.path.abspath(key_file)
    environ[MAX_CONNECTIONS_ENV] = str(config["xnat"]["max_connections"])
    environ.pop(slots.ENV, None)  # an outer run's; this run names its own at its start (run.start)
    environ[DOWN_FILE_ENV] = os.path.abspath(DOWN_FILE)
    environ.pop(LOCAL_TMP_ENV, None)
    if config["dicom"]["local_tmp"]:
        environ[LOCAL_TMP_ENV] = config["dicom"]["local_tmp"]
    environ[RAM_TMP_MB_ENV] = str(config["dicom"]["ram_tmp_mb"])
    environ.pop(CA_BUNDLE_ENV, None)
    environ.pop(INSECURE_ENV, None)
    if isinstance(settings.verify, str):
        environ[CA_BUNDLE_ENV] = settings.verify
    elif not settings.verify:
        environ[INSECURE_ENV] = "1"
    push = config["push"]
    if push["enabled"]:  # the push target, where `xnat-prep push` looks for it (never XNAT_HOST)
        from xnat_prep.xnat_api import Connection

        host = push["host"] or settings.host
        target = Connection.from_settings(host, push["verify_tls"], push["ca_bundle"])
        environ["XNAT_PUSH_HOST"] = target.host
        environ.pop("XNAT_PUSH_CA_BUNDLE", None)
        environ.pop("XNAT_PUSH_INSECURE", None)
        if isinstance(target.verify, str):
            environ["XNAT_PUSH_CA_BUNDLE"] = target.verify
        elif not target.verify:
            environ["XNAT_PUSH_INSECURE"] = "1"


def check_files(config: Mapping) -> None:
    """Offline checks of the files the config names (the subject CSV is checked by ``subjects``)."""
    ca_bundle = config["xnat"]["ca_bundle"]
    if ca_bundle and not os.path.isfile(ca_bundle):
        raise UserError(f"xnat.ca_bundle: {ca_bundle}: file not found")


def offline_check(config: dict, source: str) -> list[Subject]:
    """Validate ``config`` in place (defaults filled in) and the files it names; return the subjects.

    The workflow's parse-time check and ``xnat-prep validate``: the config against its schema, the
    server URL, the files the config names, the subject CSV and the custom-variable values CSV. No
    XNAT request, no file written. Relative paths are relative to the working directory.
    """
    from xnat_prep import subjects, variables

    if not config:
        raise UserError(
            "no config: pass --configfile FILE (start from config/config.yaml; keys in config/README.md)"
        )
    validate(config, source)
    xnat_host(config)
    check_files(config)
    # No subject CSV: an import-only run; the download direction's targets say so (require_subjects).
    csv = config["subjects"]["csv"]
    found = subjects.read(csv, config["subjects"]["project"]) if csv else []
    from xnat_prep.importing import sheet  # the upload direction's CSVs, when configured

    if config["import"]["csv"]:
        sheet.read_imports(config["import"]["csv"], config["import"]["columns"])
    if config["upload_resources"]["csv"]:
        sheet.read_resources(config["upload_resources"]["csv"], config["upload_resources"]["columns"])
    values_csv = config["custom_variables"]["values_csv"]
    if config["custom_variables"]["enabled"] and values_csv:
        variables.read_values_csv(values_csv)
    if config["bids"]["mapping"]:  # the BIDS mapping file against its schema (its lint needs the manifest)
        from xnat_prep.bids import mapping

        mapping.load(config["bids"]["mapping"])
    return found


NO_SUBJECTS = (
    "subjects.csv is not set: the download direction (discover, download, convert, `all`, push of "
    "pseudonymised copies) needs a subject CSV; only the import targets (import_all, upload_resources) "
    "run without one"
)


def require_subjects(config: Mapping) -> str:
    """The subject CSV, or a UserError saying the download direction needs one."""
    csv = config["subjects"]["csv"]
    if not csv:
        raise UserError(NO_SUBJECTS)
    return csv


def pseudonymisation(config: Mapping) -> dict[str, Any] | None:
    """The checked settings of the pseudonymise step, None when it is off: the options and
    overrides as the command takes them, and the key's fingerprint (the rerun trigger; the key
    itself stays in its file). Imports the pseudonymise package only when the step is on."""
    settings = config["pseudonymise"]
    if not settings["enabled"]:
        return None
    from xnat_prep import pseudonymise

    source = "pseudonymise"
    options = pseudonymise.validate_options(settings["options"], f"{source}.options")
    pseudonymise.validate_overrides(settings["overrides"], f"{source}.overrides")
    if settings["mapping_csv"]:
        pseudonymise.read_mapping(settings["mapping_csv"])
    key = pseudonymise.load_key(settings["key_file"], settings["namespace"])
    return {
        "fingerprint": key.fingerprint,
        "options": list(options) or ["basic"],
        "overrides": [f"{k}={v}" for k, v in sorted(settings["overrides"].items())],
        "namespace": settings["namespace"],
        "mapping_csv": settings["mapping_csv"] or "",
    }


def scans_in_parallel(setting: int | str, cap: int, sessions: int) -> int:
    """k, a download job's scans at once: ``setting``, or for ``auto`` the cap shared out over the
    sessions (rounded up). With more sessions than connections each job takes one and every
    connection streams whole sessions (no job waits on its last, largest scan while its other
    units idle); a single session gets them all. Downloads take no --cores slot (profiles/default),
    so as many jobs run as the cap allows."""
    if setting != "auto":
        return int(setting)
    return max(1, -(-cap // max(1, sessions)))
