"""Bad input: one clear line, a non-zero exit, no write to XNAT, nothing half-written.

Each case is run through `snakemake` itself, so what is checked is what the user sees.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from workflow_helpers import PASSWORD, RUNNER, Result, Study, all_files

from xnat_prep import manifest, paths

pytestmark = pytest.mark.workflow


@dataclass
class Case:
    message: str  # expected in the one error line
    csv: str | bytes | None = None  # subjects.csv content (None: the demo CSV)
    config: dict[str, Any] = field(default_factory=dict)  # merged into the demo config
    env: dict[str, str] = field(default_factory=dict)
    credentials: bool = True  # XNAT_USER/XNAT_PASS of the runner in the environment
    setup: Callable[[Path], None] | None = None
    rc: int = 2


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def world_readable_xnat_file(workdir: Path) -> None:
    path = workdir / "home" / ".xnat"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"username: {RUNNER}\npassword: {PASSWORD}\n")
    path.chmod(0o644)


def home_file(name: str, text: str, mode: int = 0o600) -> Callable[[Path], None]:
    """A setup writing ``~/name`` of the run (HOME is in the work dir)."""

    def setup(workdir: Path) -> None:
        path = workdir / "home" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)

    return setup


def values_csv(text: str) -> dict[str, Any]:
    return {"custom_variables": {"values_csv": "VALUES", "_text": text}}


HEADER = '"Project","Subject","M/F"\n'
CASES = {
    "csv-missing-file": Case("subjects.csv: file not found", config={"subjects": {"csv": "subjects.csv"}}),
    "csv-missing-column": Case("row 1: no 'Subject' column", csv='"Project","Label"\n"DEMO","001"\n'),
    "csv-empty-row": Case("row 3: empty row", csv=HEADER + '"DEMO","001","M"\n,,\n"DEMO","SUB002","F"\n'),
    "csv-duplicate": Case("row 3: duplicate of row 2", csv=HEADER + '"DEMO","001","M"\n"DEMO","001","M"\n'),
    "csv-bad-characters": Case(
        "row 2, column 'Subject': subject 'sub 1' contains ' '", csv=HEADER + '"DEMO","sub 1","M"\n'
    ),
    "csv-empty-label": Case("row 2, column 'Subject': empty subject", csv=HEADER + '"DEMO","","M"\n'),
    "csv-project-mismatch": Case(
        "project 'OTHER' differs from subjects.project 'DEMO'",
        csv=HEADER + '"OTHER","001","M"\n',
        config={"subjects": {"project": "DEMO"}},
    ),
    "csv-not-utf8": Case("row 2: not UTF-8 text", csv=HEADER.encode() + b'"DEMO","J\xf6rg","M"\n'),
    "config-unknown-key": Case("xnat: unknown key 'hots'", config={"xnat": {"hots": "x"}}),
    "config-wrong-type": Case(
        "xnat.max_connections: expected integer, got 'four'", config={"xnat": {"max_connections": "four"}}
    ),
    "config-bad-url": Case(
        "xnat.host: 'xnat.example.org' is not valid", config={"xnat": {"host": "xnat.example.org"}}
    ),
    "config-url-with-password": Case(
        "xnat.host: 'https://***@xnat.example.org' is not valid",
        config={"xnat": {"host": f"https://{RUNNER}:{PASSWORD}@xnat.example.org"}},
    ),
    "config-bad-regex": Case(
        "scans.series_description: not a valid regular expression",
        config={"scans": {"series_description": "(T1"}},
    ),
    "config-bad-measure": Case(
        "custom_variables.derived[0].measure",
        config={"custom_variables": {"derived": [{"name": "x", "measure": "volume"}]}},
    ),
    "credentials-yaml-world-readable": Case(
        "is readable by other users; fix with: chmod 600", credentials=False, setup=world_readable_xnat_file
    ),
    "credentials-missing": Case("no XNAT credentials for", credentials=False),
    "credentials-yaml-malformed": Case(
        ".xnat, line 2: not valid YAML (content not shown)",
        credentials=False,
        setup=home_file(".xnat", f"username: {RUNNER}\npassword: {PASSWORD}: oops\n"),
    ),
    "credentials-netrc-world-readable": Case(
        ".netrc is readable by other users; fix with: chmod 600",
        credentials=False,
        setup=home_file(".netrc", f"machine 127.0.0.1 login {RUNNER} password {PASSWORD}\n", 0o644),
    ),
    "credentials-netrc-malformed": Case(
        ".netrc, line 1: not valid netrc syntax (content not shown)",
        credentials=False,
        setup=home_file(".netrc", f"machine 127.0.0.1 login {RUNNER} password {PASSWORD} bogus {PASSWORD}\n"),
    ),
    "config-ca-bundle-missing": Case(
        "xnat.ca_bundle: /nonexistent/ca.pem: file not found",
        config={"xnat": {"ca_bundle": "/nonexistent/ca.pem"}},
    ),
    "values-csv-missing-column": Case(
        "values.csv, row 1: missing column(s) value", config=values_csv("session,field\n")
    ),
    "values-csv-bad-name": Case(
        "values.csv, row 2, column 'field': 'Bad Name' is not a variable name",
        config=values_csv("session,field,value\n001_MR1,Bad Name,1\n"),
    ),
    "values-csv-duplicate": Case(
        "values.csv, row 3, column 'field': 'group' for 001_MR1 already in row 2",
        config=values_csv("session,field,value\n001_MR1,group,a\n001_MR1,group,b\n"),
    ),
    "values-csv-empty-cell": Case(
        "values.csv, row 2, column 'value': empty", config=values_csv("session,field,value\n001_MR1,group,\n")
    ),
    "pseudonymise-key-readable-by-others": Case(
        "key file is readable or writable by others (mode 644)",
        config={"pseudonymise": {"enabled": True, "key_file": "home/pseudo.key"}},
        setup=home_file("pseudo.key", "ab" * 32 + "\n", 0o644),
    ),
    "pseudonymise-unknown-option": Case(
        "pseudonymise.options: unknown profile option 'retain_everything'",
        config={
            "pseudonymise": {"enabled": True, "key_file": "home/pseudo.key", "options": ["retain_everything"]}
        },
        setup=home_file("pseudo.key", "ab" * 32 + "\n"),
    ),
    "credentials-half": Case(
        "XNAT_USER is set but XNAT_PASS is not", credentials=False, env={"XNAT_USER": RUNNER}
    ),
    "credentials-wrong": Case("refused the credentials", env={"XNAT_PASS": "wrong"}, rc=1),
    "server-down": Case(
        "cannot reach XNAT at http://127.0.0.1:", config={"xnat": {"host": "SERVER_DOWN"}}, rc=1
    ),
}


def run_case(study: Study, case: Case, workdir: Path) -> Result:
    config = study.config(workdir)
    if case.csv is not None:
        csv = workdir / "subjects.csv"
        csv.write_bytes(case.csv if isinstance(case.csv, bytes) else case.csv.encode())
        config["subjects"]["csv"] = str(csv)
    for key, value in case.config.items():
        config[key] = {**config.get(key, {}), **value}
    variables = config.get("custom_variables", {})
    if "_text" in variables:
        (workdir / "values.csv").write_text(variables.pop("_text"))
        variables["values_csv"] = str(workdir / "values.csv")
    if config["xnat"].get("host") == "SERVER_DOWN":
        config["xnat"]["host"] = closed_port_url()
    if case.setup:
        case.setup(workdir)
    return study.snakemake(workdir, config, password=PASSWORD if case.credentials else None, env=case.env)


@pytest.fixture(scope="module")
def outcomes(study: Study, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Result]]:
    """Every case, two at a time (each is mostly Snakemake's start-up)."""
    workdirs = {name: tmp_path_factory.mktemp(name) for name in CASES}
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(run_case, study, CASES[name], workdirs[name]) for name in CASES}
    return {name: (workdirs[name], future.result()) for name, future in futures.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_clear_line(name: str, outcomes: dict[str, tuple[Path, Result]]) -> None:
    case = CASES[name]
    workdir, result = outcomes[name]
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("xnat-prep")]
    assert result.rc == case.rc, result.output[-3000:]
    assert len(errors) == 1 and case.message in errors[0], errors
    assert "Traceback" not in result.output and PASSWORD not in result.output
    # the request log of the cases running alongside is included: none may write either
    assert result.data_writes() == []
    assert all_files(workdir / "results") == []  # nothing half-written


def test_spreadsheet_habits_are_handled(study: Study, tmp_path: Path) -> None:
    """BOM, Excel's ="001", semicolons, a session column, blank lines at the end: all fine."""
    csv = tmp_path / "subjects.csv"
    csv.write_bytes('\ufeffProject;Subject;Experiment\nDEMO;="001";001_MR1\n\n;;\n'.encode())
    config = study.config(tmp_path, subjects={"csv": str(csv)}, scans={"include_types": ["localizer"]})
    result = study.snakemake(tmp_path, config, "results/manifest/scans.tsv")
    assert result.rc == 0, result.output[-3000:]
    [scan] = manifest.read_scans(tmp_path / "results" / paths.SCANS_TSV)
    assert (scan.project, scan.subject, scan.session) == ("DEMO", "001", "001_MR1")
