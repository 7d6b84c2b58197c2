"""The JSON receipts every step leaves: what it did, with checksums and versions.

A receipt is usually the rule's declared output, so it is written last and atomically: a
crash leaves either the old receipt or none, never half a file that looks complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xnat_prep.errors import UserError
from xnat_prep.fsutil import atomic_write

LONG_LIST = 100  # items: a list longer than this (a scan's 14,000 files) stays on one line


def dumps(data: dict[str, Any]) -> str:
    """``data`` as JSON for people and programs: a line per key, a line per item of a short list.

    Not ``indent=2``: that selects json's pure-Python encoder, and a receipt listing a scan's
    files took 78 ms to write that way (a session of 14,000 files), 20 ms with the C encoder.
    So each value is encoded by the C encoder on its own line, and a long list (read by
    programs, not people) stays on one line."""
    lines = []
    for key, value in data.items():
        if not isinstance(key, str):  # json.dumps would make it a string; "1: ..." is not JSON
            raise TypeError(f"receipt keys are strings, not {key!r}")
        if isinstance(value, list) and 0 < len(value) <= LONG_LIST:
            items = ",\n    ".join(map(json.dumps, value))
            lines.append(f"  {json.dumps(key)}: [\n    {items}\n  ]")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n" if lines else "{}\n"


def write(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as JSON (:func:`dumps`) to ``path`` via a temporary file and rename."""
    return atomic_write(path, dumps(data))


def read(path: str | Path) -> dict[str, Any]:
    """Read a receipt; a missing or unreadable one is a UserError naming the file."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise UserError(f"{path}: receipt not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a valid receipt ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a valid receipt (expected a JSON object)")
    return data


def write_denied(path: str | Path, *, step: str, host: str, session_id: str, project: str) -> dict[str, Any]:
    """The receipt of a session write XNAT refused (HTTP 403): final, reported once per session.

    A read-only user's run still downloads and converts; a rerun after write access is granted
    needs ``-R upload_session set_variables`` (the report says so).
    """
    from xnat_prep import __version__

    data = {
        "step": step,
        "host": host,
        "session_id": session_id,
        "status": "denied",
        "reason": f"no write permission on project {project}" if project else "no write permission",
        "xnat_prep_version": __version__,
    }
    write(path, data)
    return data
