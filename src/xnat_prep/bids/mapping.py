"""The BIDS mapping file (``bids.yaml``): loading, checking and matching rules to scans.

Rules are ordered; a scan takes the first non-skip rule it matches, and the lint (``lint.py``)
reports a scan that matches a second one. Patterns are shell-style globs on the whole value
(case-insensitive, ``a|b`` = either) or ``re:`` and a regex searched in the value.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xnat_prep import schemas
from xnat_prep.errors import UserError

SCHEMA = "schemas/bids.schema.yaml"
# BIDS entity order in file names (BIDS 1.10 appendix "Entity table", MRI subset).
ENTITY_ORDER = ("task", "acq", "ce", "rec", "dir", "run", "echo", "flip", "inv", "mt", "part", "chunk")
_TEMPLATE = re.compile(r"^\{(series_description|scan_type|sidecar):(.*)\}$")


def schema() -> dict:
    return schemas.load(SCHEMA)


def compile_pattern(pattern: str, where: str) -> re.Pattern[str]:
    """One regex for a glob (``a|b`` alternatives, whole value, any case) or ``re:`` pattern."""
    if pattern.startswith("re:"):
        try:
            return re.compile(pattern[3:])
        except re.error as exc:
            raise UserError(f"{where}: not a valid regular expression ({exc})") from None
    alternatives = [fnmatch.translate(p) for p in pattern.split("|")]
    return re.compile("|".join(f"(?:{a})" for a in alternatives), re.IGNORECASE | re.DOTALL)


def pattern_matches(regex: re.Pattern[str], pattern: str, value: str) -> bool:
    return bool(regex.search(value) if pattern.startswith("re:") else regex.match(value))


def _count_range(text: str | int) -> tuple[int, int]:
    """``"2"``/``2`` -> (2, 2); ``"1-3"`` -> (1, 3)."""
    text = str(text)
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def _files_test(text: str | int) -> tuple[str, int, int]:
    text = str(text)
    m = re.match(r"^(<=?|>=?)?(\d+)(?:-(\d+))?$", text)
    assert m  # the schema's pattern
    op, a, b = m.group(1) or "", int(m.group(2)), m.group(3)
    if b is not None:
        return "range", a, int(b)
    return op or "==", a, a


@dataclass(frozen=True)
class Output:
    """One routed image of a multi-output series."""

    sidecar: tuple[tuple[str, str, re.Pattern[str]], ...]
    datatype: str
    suffix: str
    entities: tuple[tuple[str, str], ...]
    metadata: tuple[tuple[str, Any], ...] = ()

    def routes(self, sidecar: Mapping[str, Any]) -> bool:
        for key, pattern, regex in self.sidecar:
            if key not in sidecar:
                return False
            value = sidecar[key]
            text = "\\".join(map(str, value)) if isinstance(value, list) else str(value)
            if not pattern_matches(regex, pattern, text):
                return False
        return True


@dataclass(frozen=True)
class Rule:
    index: int  # 1-based position in the file
    name: str
    criteria: tuple[tuple[str, str, re.Pattern[str]], ...]  # (field, pattern, regex); field "dicom:K"
    n_files: tuple[str, int, int] | None
    skip: bool
    datatype: str
    suffix: str
    entities: tuple[tuple[str, str], ...]
    run: str
    expect: tuple[int, int] | None
    intended_for: tuple[str, ...]
    b0_group: str
    pick: str
    outputs: tuple[Output, ...]
    metadata: tuple[tuple[str, Any], ...] = ()

    @property
    def dicom_keywords(self) -> list[str]:
        return [f[6:] for f, _, _ in self.criteria if f.startswith("dicom:")]

    def matches(
        self, scan_type: str, description: str, n_files: int, dicom: Mapping[str, str]
    ) -> bool | None:
        """Whether the scan matches; None when a DICOM field it needs was not read."""
        undecided = False
        for where, pattern, regex in self.criteria:
            if where == "scan_type":
                value: str | None = scan_type
            elif where == "series_description":
                value = description
            else:
                value = dicom.get(where[6:])
            if value is None:
                undecided = True
                continue
            if not pattern_matches(regex, pattern, value):
                return False
        if self.n_files is not None:
            op, a, b = self.n_files
            ok = {
                "==": n_files == a,
                "<": n_files < a,
                "<=": n_files <= a,
                ">": n_files > a,
                ">=": n_files >= a,
                "range": a <= n_files <= b,
            }[op]
            if not ok:
                return False
        return None if undecided else True

    def describe(self) -> str:
        return f"rule {self.name!r} (#{self.index})"


@dataclass(frozen=True)
class Mapping_:
    """A loaded ``bids.yaml``."""

    path: str
    dataset: dict[str, Any]
    subject: str
    session: str
    run: str
    exclude_scans: frozenset[str]
    rules: tuple[Rule, ...]
    text: str = field(repr=False, default="")

    def rule(self, name: str) -> Rule:
        return next(r for r in self.rules if r.name == name)


def _entities(raw: Mapping[str, Any] | None, where: str) -> tuple[tuple[str, str], ...]:
    out = []
    for key, value in (raw or {}).items():
        value = str(value)
        m = _TEMPLATE.match(value)
        if m and m.group(1) != "sidecar":
            compile_pattern(m.group(2), f"{where}.{key}")
            if not m.group(2).startswith("re:"):
                raise UserError(f"{where}.{key}: a template takes 're:' and a regex with one group")
        out.append((key, value))
    return tuple(out)


def parse(data: Any, path: str) -> Mapping_:
    """Check ``data`` (the parsed YAML) against the schema and build the mapping."""
    import jsonschema

    from xnat_prep.config import _message, _with_defaults

    if not isinstance(data, dict):
        raise UserError(f"{path}: a BIDS mapping is a YAML mapping with version and rules")
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        raise UserError(f"{path}: {_message(error)}")
    rules: list[Rule] = []
    names: set[str] = set()
    for i, raw in enumerate(data["rules"], start=1):
        where = f"{path}: rules[{i - 1}]"
        name = raw.get("name", f"rule{i}")
        if name in names:
            raise UserError(f"{where}.name: {name!r} names another rule too")
        names.add(name)
        match = raw["match"]
        criteria = []
        for key in ("scan_type", "series_description"):
            if key in match:
                criteria.append((key, match[key], compile_pattern(match[key], f"{where}.match.{key}")))
        for keyword, pattern in (match.get("dicom") or {}).items():
            criteria.append((f"dicom:{keyword}", pattern, compile_pattern(pattern, f"{where}.match.dicom")))
        skip = raw["skip"]
        bids = raw.get("bids")
        if not skip and not bids and not all(o.get("bids") for o in raw.get("outputs") or [{}]):
            raise UserError(f"{where}: needs bids: datatype/suffix (or skip: true)")
        if skip and (bids or raw.get("outputs") or raw.get("intended_for")):
            raise UserError(f"{where}: a skip rule takes no bids, outputs or intended_for")
        datatype, _, suffix = (bids or "/").partition("/")
        outputs = []
        for j, out in enumerate(raw.get("outputs") or []):
            o_where = f"{where}.outputs[{j}]"
            o_type, _, o_suffix = (out.get("bids") or bids or "/").partition("/")
            outputs.append(
                Output(
                    sidecar=tuple(
                        (k, str(v), compile_pattern(str(v), f"{o_where}.sidecar.{k}"))
                        for k, v in out["sidecar"].items()
                    ),
                    datatype=o_type,
                    suffix=o_suffix,
                    entities=_entities(out.get("entities"), f"{o_where}.entities"),
                    metadata=tuple((out.get("metadata") or {}).items()),
                )
            )
        rules.append(
            Rule(
                index=i,
                name=name,
                criteria=tuple(criteria),
                n_files=_files_test(match["n_files"]) if "n_files" in match else None,
                skip=skip,
                datatype=datatype,
                suffix=suffix,
                entities=_entities(raw.get("entities"), f"{where}.entities"),
                run=raw.get("run") or data["run"],
                expect=_count_range(raw["expect"]) if "expect" in raw else None,
                intended_for=tuple(raw.get("intended_for") or ()),
                b0_group=raw.get("b0_group") or re.sub(r"[^A-Za-z0-9]", "", name),
                pick=raw["pick"],
                outputs=tuple(outputs),
                metadata=tuple((raw.get("metadata") or {}).items()),
            )
        )
    for rule in rules:
        for target in rule.intended_for:
            if target not in names:
                raise UserError(f"{path}: rule {rule.name!r}: intended_for names no rule {target!r}")
    for key in ("subject", "session"):
        value = data[key]
        if value.startswith("re:"):
            regex = compile_pattern(value, f"{path}: {key}")
            if regex.groups < 1:
                raise UserError(f"{path}: {key}: the regex needs one group (the label)")
        elif value not in ("auto", "none") or (key == "subject" and value == "none"):
            raise UserError(
                f"{path}: {key}: {value!r} is not auto{', none' if key == 'session' else ''} or re:REGEX"
            )
    return Mapping_(
        path=path,
        dataset=data["dataset"],
        subject=data["subject"],
        session=data["session"],
        run=data["run"],
        exclude_scans=frozenset(data["exclude_scans"]),
        rules=tuple(rules),
    )


def load(path: str | Path) -> Mapping_:
    """Read and check a ``bids.yaml``; UserError naming the file and key on a problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except FileNotFoundError:
        raise UserError(f"{path}: BIDS mapping not found (config key bids.mapping)") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: cannot read the BIDS mapping ({type(exc).__name__}: {exc})") from None
    mapping = parse(data, str(path))
    return Mapping_(**{**mapping.__dict__, "text": text})


def fill_template(value: str, scan_type: str, description: str, sidecar: Mapping[str, Any] | None) -> str:
    """An entity label with its template filled in ("" when a regex finds nothing)."""
    m = _TEMPLATE.match(value)
    if not m:
        return value
    source, pattern = m.groups()
    if source == "sidecar":
        if sidecar is None:
            return "X"  # before conversion: a placeholder label for the name checks
        found = sidecar.get(pattern)
        return "" if found is None else str(found)
    found_re = re.search(pattern[3:], scan_type if source == "scan_type" else description)
    return (found_re.group(1) or "") if found_re and found_re.groups else ""
