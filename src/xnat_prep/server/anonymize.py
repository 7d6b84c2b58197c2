"""DICOM anonymization on import, as an XNAT with its site-wide anonymization script enabled does it.

Off by default (``xnat-prep server --anonymize`` turns on XNAT's supplied default script,
``--anonymize-script FILE`` runs another). When on, every DICOM file an import receives is rewritten
by the script once the import knows its project, subject and session labels, before it is stored
(archive or prearchive). Files are then named from the rewritten header, session values
(dcmPatientName, ...) read from it. The prearchive's archive step does not run it again: this is the
site-wide script, applied on receipt; XNAT's per-project scripts (applied on archiving) are not
modelled.

A DicomEdit 6 subset, one statement per line (``//`` comments)::

    version "6.1"                               optional first statement
    (0010,0010) := subject                      set an element: to a variable, "text" or (gggg,eeee)
    - (0008,0081)                               remove an element
    project != "Unassigned" ? (0008,1030) := project
                                                only if: OPERAND (= | != | ~ regex) OPERAND
    variables: project, subject, session (the import's labels; project is "Unassigned" without one)

Anything else in a script is refused when the server starts, naming the line: a script that does
less than it says would pass data through unchanged, which is the silent failure this exists to
expose.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xnat_prep.errors import UserError

if TYPE_CHECKING:
    import pydicom

# XNAT's default anonymization script (DicomEdit 6), as supplied with XNAT
DEFAULT_SCRIPT = """\
version "6.1"
project != "Unassigned" ? (0008,1030) := project
(0010,0010) := subject
(0010,0020) := session
"""
VARIABLES = ("project", "subject", "session")
TAG = r"\(\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)"
OPERAND = rf'"[^"]*"|{TAG}|[A-Za-z_]\w*'
REMOVE = re.compile(rf"^-\s*{TAG}$")
ASSIGN = re.compile(rf"^{TAG}\s*:=\s*(?P<value>{OPERAND})$")
CONDITION = re.compile(
    rf"^(?P<left>{OPERAND})\s*(?P<op>!=|=|~)\s*(?P<right>{OPERAND})\s*\?\s*(?P<action>.+)$"
)


@dataclass(frozen=True)
class Statement:
    tag: int
    value: str | None  # None: remove the element; else an operand
    condition: tuple[str, str, str] | None  # (left operand, operator, right operand)


@dataclass(frozen=True)
class Script:
    name: str
    statements: tuple[Statement, ...]

    def apply(self, ds: pydicom.Dataset, variables: dict[str, str]) -> None:
        for statement in self.statements:
            if statement.condition and not holds(statement.condition, ds, variables):
                continue
            if statement.value is None:
                if statement.tag in ds:
                    del ds[statement.tag]
            else:
                set_element(ds, statement.tag, evaluate(statement.value, ds, variables))


def parse(text: str, name: str = "script") -> Script:
    """A script's statements; UserError naming the line of anything outside the subset."""
    statements = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.match(r'(?:"[^"]*"|[^"/]|/(?!/))*', raw)[0].strip()  # up to a // outside quotes
        if not line:
            continue
        if re.fullmatch(r'version\s+"[^"]*"', line):
            if statements:
                raise UserError(f"{name}:{number}: version must come first")
            continue
        condition = None
        match = CONDITION.match(line)
        if match:
            condition = (match["left"], match["op"], match["right"])
            line = match["action"].strip()
        action = REMOVE.match(line) or ASSIGN.match(line)
        if action is None:
            raise UserError(f"{name}:{number}: not in the DicomEdit subset this server runs: {raw.strip()!r}")
        tag = int(action[1] + action[2], 16)
        value = action.groupdict().get("value")
        for operand in [value, *(condition[::2] if condition else ())]:
            if operand and re.fullmatch(r"[A-Za-z_]\w*", operand) and operand not in VARIABLES:
                raise UserError(
                    f"{name}:{number}: unknown variable {operand!r} (known: {', '.join(VARIABLES)})"
                )
        if value is not None:
            check_settable(tag, f"{name}:{number}")
        statements.append(Statement(tag, value, condition))
    return Script(name, tuple(statements))


def load(path: Path | None) -> Script:
    """XNAT's default script, or the one in ``path``."""
    if path is None:
        return parse(DEFAULT_SCRIPT, "XNAT's default anonymization script")
    try:
        return parse(path.read_text(), str(path))
    except OSError as exc:
        raise UserError(f"{path}: cannot read the anonymization script: {exc}") from exc


def check_settable(tag: int, where: str) -> None:
    from pydicom.datadict import dictionary_has_tag

    if not dictionary_has_tag(tag):
        raise UserError(f"{where}: ({tag >> 16:04X},{tag & 0xFFFF:04X}) is not in the DICOM dictionary")


def evaluate(operand: str, ds: pydicom.Dataset, variables: dict[str, str]) -> str:
    if operand.startswith('"'):
        return operand[1:-1]
    tag = re.fullmatch(TAG, operand)
    if tag:
        element = ds.get(int(tag[1] + tag[2], 16))
        return "" if element is None or element.value is None else str(element.value)
    return variables[operand]


def holds(condition: tuple[str, str, str], ds: pydicom.Dataset, variables: dict[str, str]) -> bool:
    left, op, right = (
        evaluate(condition[0], ds, variables),
        condition[1],
        evaluate(condition[2], ds, variables),
    )
    if op == "~":
        return re.fullmatch(right, left) is not None
    return (left == right) == (op == "=")


def set_element(ds: pydicom.Dataset, tag: int, value: str) -> None:
    from pydicom.datadict import dictionary_VR

    if tag in ds:
        ds[tag].value = value
    else:
        ds.add_new(tag, dictionary_VR(tag), value)


def rewrite(data: bytes, script: Script, variables: dict[str, str]) -> tuple[bytes, Any]:
    """A DICOM file's bytes rewritten by ``script``, and its rewritten dataset."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    script.apply(ds, variables)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)  # keep the file's own preamble, meta and encoding
    return out.getvalue(), ds
