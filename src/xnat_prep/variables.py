"""``set-variables``: custom variables on a session, derived from the convert receipts.

Always set: ``{prefix}status`` (``complete``: no scan failed, every scan converted or skipped
with a reason; ``partial``: some converted, some failed; ``failed``: none converted and some
failed), ``{prefix}nifti_count``, ``{prefix}version`` (xnat-prep), ``{prefix}date`` (the latest
conversion date, so reruns that convert nothing keep it). Configured measures (``n_volumes``,
``voxel_size``, ``shape``, ``n_scans``) are named as configured, over the converted scans whose
type matches one of the globs (case-insensitive), comma-joined in scan-ID order; a measure with
no matching scan is left unset (``n_scans`` is then ``0``).

User values come from a CSV ``session,field,value``. The file is validated as a whole (columns,
names, empty values, duplicates, clashes with the names above); a job takes the rows of its own
session (label or accession ID) and ignores the others, which belong to other jobs. Whether a
label names a session of the project at all is for discovery to check: only it lists the project.

Writing compares first: only variables whose value differs are sent, all in one PUT, then the
session is read back and every value verified. A second run sends no modifying request. A user
without write permission on the project gets a ``denied`` receipt (one problem in the report).
"""

from __future__ import annotations

import csv
import fnmatch
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from xnat_prep import __version__, receipts
from xnat_prep import credentials as creds_mod
from xnat_prep.errors import UserError, where
from xnat_prep.manifest import natural_key
from xnat_prep.xnat_api import AccessDenied, Client, Connection, RetryPolicy

log = logging.getLogger(__name__)

MEASURES = ("n_volumes", "voxel_size", "shape", "n_scans")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
VALUES_COLUMNS = ("session", "field", "value")


def derive(
    convert_receipts: Sequence[str | Path], prefix: str, derived: Sequence[Mapping[str, Any]]
) -> dict[str, str]:
    """The variables of one session from its scans' convert receipts."""
    scans = sorted(
        (receipts.read(p) for p in convert_receipts), key=lambda r: natural_key(r.get("scan_id", ""))
    )
    converted = [s for s in scans if s["status"] == "converted"]
    failed = any(s["status"] == "failed" for s in scans)
    status = ("partial" if converted else "failed") if failed else "complete"
    dates = [s["date"] for s in (converted or scans) if s.get("date")]
    values = {
        f"{prefix}status": status,
        f"{prefix}nifti_count": str(sum(len(_images(s)) for s in converted)),
        f"{prefix}version": __version__,
        f"{prefix}date": max(dates, default=""),
    }
    for item in derived:
        name, measure = item["name"].lower(), item["measure"]
        globs = [g.lower() for g in item["scan_types"]]
        matching = [
            s for s in converted if any(fnmatch.fnmatchcase(s.get("scan_type", "").lower(), g) for g in globs)
        ]
        if measure == "n_scans":
            values[name] = str(len(matching))
        elif matching:
            values[name] = ",".join(_measure(s, measure) for s in matching)
    return {k: v for k, v in values.items() if v != ""}


def _images(scan: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [o for o in scan.get("outputs", []) if "shape" in o]


def _measure(scan: Mapping[str, Any], measure: str) -> str:
    """One scan's measure, from its first NIfTI output (dcm2niix's main image sorts first)."""
    image = _images(scan)[0]
    shape = image["shape"]
    if measure == "n_volumes":
        return str(shape[3] if len(shape) > 3 else 1)
    if measure == "shape":
        return "x".join(str(d) for d in shape)
    if measure == "voxel_size":
        return "x".join(f"{v:g}" for v in image["voxel_size"])
    raise ValueError(f"unknown measure {measure!r}; expected one of {', '.join(MEASURES)}")


def check_derived(derived: Any, source: str) -> list[dict[str, Any]]:
    """Derived-variable definitions as the config gives them; a malformed one is a UserError."""
    out = []
    for i, item in enumerate(derived if isinstance(derived, list) else [None]):
        try:
            name, measure, globs = item["name"], item["measure"], item["scan_types"]
        except (KeyError, TypeError):
            raise UserError(f"{source}[{i}]: expected {{name, measure, scan_types}}") from None
        if not isinstance(name, str) or not NAME.match(name.lower()):
            raise UserError(f"{source}[{i}].name: {name!r} is not a variable name")
        if measure not in MEASURES:
            raise UserError(f"{source}[{i}].measure: {measure!r} is not one of {', '.join(MEASURES)}")
        if not isinstance(globs, list) or not globs or not all(isinstance(g, str) for g in globs):
            raise UserError(f"{source}[{i}].scan_types: expected a list of globs")
        out.append({"name": name, "measure": measure, "scan_types": globs})
    return out


def read_values_csv(path: str | Path, reserved: Iterable[str] = ()) -> dict[str, dict[str, str]]:
    """User values per session from a ``session,field,value`` CSV; field names lower-cased.

    Raises UserError naming file, row and column for a missing column, an empty cell, a bad or
    reserved name, or a field given twice for one session.
    """
    reserved = set(reserved)
    values: dict[str, dict[str, str]] = {}
    seen: dict[tuple[str, str], int] = {}
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in VALUES_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f"{where(path, 1)}: missing column(s) {', '.join(missing)}")
            for row_number, row in enumerate(reader, start=2):
                for column in VALUES_COLUMNS:
                    if not (row.get(column) or "").strip():
                        raise UserError(f"{where(path, row_number, column)}: empty")
                session, field = row["session"].strip(), row["field"].strip().lower()
                if not NAME.match(field):
                    raise UserError(
                        f"{where(path, row_number, 'field')}: {row['field']!r} is not a variable name "
                        "(a letter, then letters, digits, _)"
                    )
                if field in reserved:
                    raise UserError(f"{where(path, row_number, 'field')}: {field!r} is set by the workflow")
                if (session, field) in seen:
                    first = seen[session, field]
                    raise UserError(
                        f"{where(path, row_number, 'field')}: {field!r} for {session} already in row {first}"
                    )
                seen[session, field] = row_number
                values.setdefault(session, {})[field] = row["value"].strip()
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None
    return values


def session_values(
    convert_receipts: Sequence[str | Path],
    prefix: str,
    derived: Sequence[Mapping[str, Any]],
    values_csv: str | Path | None,
    session_keys: Iterable[str],
) -> dict[str, str]:
    """Everything to write on one session: derived values, then the user's CSV rows for it.

    ``session_keys`` are the session's label and accession ID (the CSV may use either); a CSV
    value may not reuse a name the workflow derives itself.
    """
    values = derive(convert_receipts, prefix, derived) if convert_receipts else {}
    if values_csv:
        table = read_values_csv(values_csv, reserved=values)
        for key in session_keys:
            values |= table.get(key, {})
    return values


def set_variables(
    connection: Connection,
    *,
    session_id: str,
    values: Mapping[str, str],
    receipt: str | Path,
    project: str = "",
    credentials: creds_mod.Credentials | None = None,
    retry: RetryPolicy | None = None,
) -> dict[str, Any]:
    """Write the variables that differ (one PUT), verify them all, write the receipt.

    ``project`` (the session's) names the project when XNAT refuses the write."""
    values = {k.lower(): str(v) for k, v in values.items()}
    with Client(connection, credentials, retry=retry) as client:
        xsi_type, before = client.experiment(session_id)
        changed = {k: v for k, v in values.items() if before.get(k) != v}
        if changed:
            try:
                client.set_fields(session_id, xsi_type, changed)
            except AccessDenied as exc:
                if exc.action != "write":
                    raise
                log.error("%s", exc)
                return receipts.write_denied(
                    receipt,
                    step="set_variables",
                    host=connection.host,
                    session_id=session_id,
                    project=project,
                )
            after = client.experiment(session_id)[1]
        else:
            after = before
    wrong = sorted(k for k, v in values.items() if after.get(k) != v)
    if wrong:
        raise UserError(f"session {session_id}: XNAT did not keep the value of {', '.join(wrong)}")
    data = {
        "step": "set_variables",
        "host": connection.host,
        "session_id": session_id,
        "uri": f"/data/experiments/{session_id}",
        "written": sorted(changed),
        "before": {k: before.get(k) for k in sorted(values)},
        "after": {k: after.get(k) for k in sorted(values)},
        "xnat_prep_version": __version__,
    }
    receipts.write(receipt, data)
    log.info(
        "session %s: %d variable(s) written, %d unchanged",
        session_id,
        len(changed),
        len(values) - len(changed),
    )
    return data
