"""The official BIDS validator on the dataset: ``bids-validator-deno`` (PyPI; it brings its own
Deno runtime and the BIDS schema, so nothing is downloaded at run time).

The validator's issues are kept in the receipt (code, severity, files); errors fail the step with
one line per issue code.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from xnat_prep import __version__, receipts
from xnat_prep.errors import UserError

EXECUTABLE = "bids-validator-deno"


def executable() -> str:
    found = shutil.which(EXECUTABLE)
    if found is None:
        raise UserError(
            f"{EXECUTABLE} not found on PATH: pip install bids-validator-deno (or turn bids.validate off)"
        )
    return found


def run(dataset: str | Path, config: str | Path | None = None) -> dict[str, Any]:
    """Validate ``dataset``; returns {errors, warnings, issues: [...], validator_version}."""
    dataset = Path(dataset)
    if not (dataset / "dataset_description.json").is_file():
        raise UserError(f"{dataset}: no dataset_description.json: not a BIDS dataset")
    command = [executable(), str(dataset), "--format", "json"]
    if config:
        command += ["--config", str(config)]
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, errors="replace", check=False)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise UserError(f"{EXECUTABLE} exit status {proc.returncode}: {' | '.join(tail)}") from None
    issues = []
    for issue in report.get("issues", {}).get("issues", []):
        issues.append(
            {
                "code": issue.get("code", ""),
                "severity": issue.get("severity", ""),
                "location": issue.get("location", ""),
                "message": issue.get("issueMessage") or issue.get("subCode") or "",
            }
        )
    counts = Counter(i["severity"] for i in issues)
    return {
        "step": "bids_validate",
        "dataset": str(dataset),
        "errors": counts.get("error", 0),
        "warnings": counts.get("warning", 0),
        "issues": issues,
        "validator": EXECUTABLE,
        "validator_version": _version(),
        "duration_s": round(time.monotonic() - started, 3),
        "xnat_prep_version": __version__,
    }


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("bids-validator-deno")
    except metadata.PackageNotFoundError:
        return "unknown"


def summary_lines(result: dict[str, Any]) -> list[str]:
    """One line per (severity, code): how many files and the first few."""
    by_code: dict[tuple[str, str], list[str]] = {}
    for issue in result["issues"]:
        by_code.setdefault((issue["severity"], issue["code"]), []).append(issue["location"])
    lines = []
    for (severity, code), where in sorted(by_code.items()):
        shown = ", ".join(w for w in where[:3] if w) or "(dataset)"
        more = f" and {len(where) - 3} more" if len(where) > 3 else ""
        lines.append(f"{severity}: {code}: {shown}{more}")
    return lines


def validate_to(dataset: str | Path, receipt: str | Path, config: str | Path | None = None) -> dict[str, Any]:
    """Validate, write the receipt, raise UserError when the validator finds errors."""
    result = run(dataset, config)
    if result["errors"]:
        lines = [line for line in summary_lines(result) if line.startswith("error")]
        raise UserError(
            f"{dataset}: the BIDS validator found {result['errors']} error(s):\n" + "\n".join(lines)
        )
    receipts.write(receipt, result)
    return result
