"""Hostile server answers: one clear line naming what was wrong, a non-zero exit, no write to XNAT,
nothing half-written.

Each case gives the bundled server one hostile answer kind (``answer=KIND`` of its fault SPEC,
``server/hostile.py``) on one kind of request (``path``) and runs the whole workflow through
`snakemake` for one subject (``001``, its localizer). Every case has a server of its own, started
on a copy of one seeded data folder, so the cases run side by side and each request log is the
case's own. CI runs a few (one per answer family); ``--full`` all.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from workflow_helpers import ADMIN, PASSWORD, Result, Study, all_files, users_file

from xnat_prep.server.testing import running_server

pytestmark = pytest.mark.workflow

# the paths of the requests each step makes (the server's route, as its request log shows it)
SUBJECTS = r"^/data/projects/DEMO/subjects$"
EXPERIMENTS = r"/subjects/[^/]+/experiments$"
SCANS = r"^/data/experiments/[^/]+/scans$"
FILES = r"/scans/ALL/files$"
ZIP = r"/resources/DICOM/files$"
EXPERIMENT = r"^/data/experiments/[^/]+$"  # the session document (custom variables)


@dataclass
class Case:
    answer: str  # the hostile answer kind
    path: str  # on which requests
    message: str  # expected in the one problem/error line
    names: str = "001"  # what that line must name besides (subject, session, scan, path)
    config: dict[str, Any] = field(default_factory=dict)
    ci: bool = False


NO_UPLOAD = {"upload": {"enabled": False}}
CASES = {
    "html-subjects": Case(
        "html", SUBJECTS, "answered an HTML page, not JSON (a login page or a proxy?)", ci=True
    ),
    "html-experiments": Case("html", EXPERIMENTS, "answered an HTML page, not JSON"),
    "html-scans": Case("html", SCANS, "answered an HTML page, not JSON"),
    "html-files": Case("html", FILES, "answered an HTML page, not JSON"),
    "html-zip": Case("html", ZIP, "answered an HTML page, not a zip", "scan 1"),
    "html-session-document": Case(
        "html", EXPERIMENT, "answered an HTML page, not JSON", "XNAT_E00001", config=NO_UPLOAD
    ),
    "html-as-json-subjects": Case("html_as_json", SUBJECTS, "answered an HTML page, not JSON"),
    "html-as-json-files": Case("html_as_json", FILES, "answered an HTML page, not JSON"),
    "not-json-scans": Case("not_json", SCANS, "the JSON answer is cut off or malformed"),
    "not-json-zip": Case("not_json", ZIP, "not a complete zip", "scan 1"),
    "empty-body-experiments": Case("empty_body", EXPERIMENTS, "the JSON answer is cut off or malformed"),
    "empty-body-zip": Case("empty_body", ZIP, "not a complete zip", "scan 1"),
    "wrong-shape-subjects": Case("wrong_shape", SUBJECTS, "not a ResultSet listing", ci=True),
    "wrong-shape-files": Case("wrong_shape", FILES, "not a ResultSet listing"),
    "wrong-shape-session-document": Case(
        "wrong_shape", EXPERIMENT, "not an XNAT experiment document", "XNAT_E00001", config=NO_UPLOAD
    ),
    "missing-columns-subjects": Case("missing_columns", SUBJECTS, "listing without column(s) ID, label"),
    "missing-columns-experiments": Case(
        "missing_columns", EXPERIMENTS, "listing without column(s) ID, label"
    ),
    "missing-columns-scans": Case("missing_columns", SCANS, "listing without column(s) ID"),
    "missing-columns-files": Case("missing_columns", FILES, "listing without column(s) URI, Size"),
    "wrong-digest": Case("wrong_digest", FILES, "still bad", "scan 1", ci=True),
    "corrupt-bytes-zip": Case("corrupt_bytes", ZIP, "still bad", "scan 1"),
    "corrupt-bytes-zip-and-files": Case("corrupt_bytes", r"/resources/DICOM/files", "still bad", "scan 1"),
    "huge-size": Case("huge_size", FILES, "free on", "scan 1", ci=True),
    "negative-size": Case("negative_size", FILES, "size '-1' is not a file size", "scan 1"),
    "bad-size": Case("bad_size", FILES, "size '12 kB' is not a file size", "scan 1"),
    "unsafe-dotdot": Case("unsafe_dotdot", FILES, "leaves its directory", "scan 1", ci=True),
    "unsafe-absolute": Case("unsafe_absolute", FILES, "absolute", "scan 1"),
    "unsafe-nul": Case("unsafe_nul", FILES, "NUL", "scan 1"),
    "zip-slip": Case("zip_slip", ZIP, "refusing entry '../../", "scan 1", ci=True),
    "zip-absolute": Case("zip_absolute", ZIP, "refusing entry '/absolute/", "scan 1"),
    "zip-mismatch": Case("zip_mismatch", ZIP, "still bad", "scan 1"),
    "zip-truncated": Case("zip_truncated", ZIP, "not a complete zip", "scan 1"),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """A seeded data folder (DEMO: one subject, one tiny session), the users file, the CSV."""
    from xnat_prep.demodata import seed_server

    base = tmp_path_factory.mktemp("hostile")
    users = users_file(base / "users.yaml")
    with running_server(base / "xnat", users_file=users) as server:
        seed_server(
            server.url, *ADMIN, "DEMO", 1, 1, "tiny", subject_labels=["001"], csv=base / "subjects.csv"
        )
    (base / "xnat" / "requests.jsonl").unlink()
    yield base / "xnat", users, base / "subjects.csv"


def run_case(template: tuple[Path, Path, Path], case: Case, workdir: Path) -> Result:
    data, users, csv = template
    shutil.copytree(data, workdir / "xnat")
    with running_server(workdir / "xnat", users_file=users) as server:
        study = Study(server, csv, workdir)
        config = study.config(workdir / "work", scans={"include_types": ["localizer"]}, **case.config)
        study.faults(f"answer={case.answer},path={case.path}")
        result = study.snakemake(workdir / "work", config, timeout=600)
    assert isinstance(result, Result)
    return result


@pytest.fixture(scope="module")
def outcomes(
    template: tuple[Path, Path, Path],
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Path, Result]]:
    """The cases this session runs, four at a time (mostly Snakemake's start-up and retry waits)."""
    selected = {
        item.callspec.params.get("name") for item in request.session.items if hasattr(item, "callspec")
    }
    full = request.config.getoption("--full")
    names = [n for n in CASES if n in selected and (CASES[n].ci or full)]
    workdirs = {name: tmp_path_factory.mktemp(name) for name in names}
    with ThreadPoolExecutor(4) as pool:
        futures = {name: pool.submit(run_case, template, CASES[name], workdirs[name]) for name in names}
    return {name: (workdirs[name], future.result()) for name, future in futures.items()}


@pytest.mark.timeout(3600)  # the first case's setup runs them all (four at a time)
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=() if c.ci else pytest.mark.reliability_full) for n, c in CASES.items()]
)
def test_hostile_answer_gives_one_clear_line(name: str, outcomes: dict[str, tuple[Path, Result]]) -> None:
    case = CASES[name]
    workdir, result = outcomes[name]
    answered = [r for r in result.requests if any(f.startswith("answer:") for f in r.get("faults", []))]
    assert answered, "the hostile answer was never asked for"
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("xnat-prep")]
    problems = [ln for ln in lines if ": problem: " in ln or ": error: " in ln]
    assert result.rc == 1, result.output[-3000:]
    print(f"\n{name}: {lines}")
    assert len(problems) == 1, lines
    assert case.message in problems[0] and case.names in problems[0], problems
    assert "Traceback" not in result.output and PASSWORD not in result.output
    assert result.data_writes() == []
    root = workdir / "work" / "results"
    files = [p.relative_to(root) for p in all_files(root)]
    visible = [p for p in files if not any(part.startswith(".") for part in p.parts)]
    # the manifest, plan and report; DICOM and NIfTI only when the hostile answer came after them;
    # never a receipt of a write
    allowed = ("manifest", "plan", "report", "logs", *(("dicom", "nifti") if case.config else ()))
    assert [p for p in visible if p.parts[0] not in allowed] == [], visible
