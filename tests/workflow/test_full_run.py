"""One full run on the demo study, checked from every side; then reruns that must do nothing."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel
import pytest
from workflow_helpers import ADMIN, PASSWORD, Run, Study, all_files, file_md5s, read_json

from xnat_prep import manifest, paths
from xnat_prep.demodata.protocols import session_protocol

pytestmark = pytest.mark.workflow

SPECS = {str(s.number): s for s in session_protocol("tiny", edge_cases=True)}
BROKEN = {n for n, s in SPECS.items() if s.defect}
NON_IMAGE = {n for n, s in SPECS.items() if s.kind in ("secondary_capture", "report")}


def test_run_ends_with_one_line_per_problem(main_run: Run) -> None:
    result = main_run.result
    assert result.rc == 1, result.output[-3000:]
    problems = result.lines("xnat-prep: problem: ")
    # exactly the series dcm2niix rejects, once per session
    assert len(problems) == len(BROKEN) * 2, problems
    for subject in ("001", "SUB002"):
        assert any(f"DEMO/{subject}/{subject}_MR1 scan {n} " in p for p in problems for n in BROKEN)
    assert "Traceback" not in result.output


def test_every_selected_scan_was_downloaded_verified(main_run: Run, study: Study) -> None:
    scans = main_run.scans()
    assert {s.scan_id for s in scans} == set(SPECS)  # all scans, both sessions
    assert len(scans) == 2 * len(SPECS)
    for scan in scans:
        listing = study.admin_get(
            f"/data/experiments/{scan.session_id}/scans/{scan.scan_id}/resources/DICOM/files"
        )
        on_server = {
            row["URI"].split("/files/", 1)[1]: row["digest"] for row in listing["ResultSet"]["Result"]
        }
        local = file_md5s(paths.dicom_dir(main_run.root, scan.project, scan.subject, scan.session, scan.scan))
        assert local == on_server, scan.scan
        receipt = read_json(
            paths.download_receipt(main_run.root, scan.project, scan.subject, scan.session, scan.scan)
        )
        assert receipt["n_files"] == len(on_server) == scan.n_files


def test_nifti_shapes_and_recorded_outcomes(main_run: Run) -> None:
    for scan in main_run.scans():
        spec = SPECS[scan.scan_id]
        where = main_run.where(scan)
        receipt = read_json(paths.convert_receipt(*where))
        images = sorted(paths.nifti_dir(*where).glob("*.nii.gz")) if paths.nifti_dir(*where).exists() else []
        if scan.scan_id in NON_IMAGE:
            assert receipt["status"] == "skipped" and receipt["reason"] and not images
        elif scan.scan_id in BROKEN:
            assert receipt["status"] == "failed" and "dcm2niix" in receipt["reason"] and not images
        elif spec.kind == "localizer":  # one single-slice image per orientation
            assert receipt["status"] == "converted"
            assert [nibabel.load(p).shape for p in images] == [(spec.rows, spec.cols, 1)] * spec.slices
        else:
            assert receipt["status"] == "converted"
            [image] = images
            shape = nibabel.load(image).shape
            assert sorted(shape[:3]) == sorted((spec.rows, spec.cols, spec.slices)), (scan.scan, shape)
            assert shape[3:] == ((spec.volumes,) if spec.volumes > 1 else ())
            assert image.with_name(image.name.replace(".nii.gz", ".json")).exists()  # BIDS sidecar


def test_nifti_uploaded_with_matching_md5(main_run: Run, study: Study) -> None:
    converted = 0
    for scan in main_run.scans():
        where = (main_run.root, scan.project, scan.subject, scan.session, scan.scan)
        if read_json(paths.convert_receipt(*where))["status"] != "converted":
            continue
        listing = study.admin_get(
            f"/data/experiments/{scan.session_id}/scans/{scan.scan_id}/resources/NIFTI/files"
        )
        on_server = {row["Name"]: row["digest"] for row in listing["ResultSet"]["Result"]}
        assert on_server == file_md5s(paths.nifti_dir(*where)), scan.scan
        converted += 1
    assert converted == 2 * (len(SPECS) - len(BROKEN) - len(NON_IMAGE))


def test_custom_variables_set(main_run: Run, study: Study) -> None:
    import xnat

    bold = next(s for s in SPECS.values() if s.description.lower().startswith("fmri"))
    groups = {"001_MR1": "control", "SUB002_MR1": "patient"}
    sessions = {s.session: s for s in main_run.scans()}
    with xnat.connect(study.url, user=ADMIN[0], password=ADMIN[1]) as xs:
        for label, scan in sessions.items():
            experiment = xs.create_object(f"/data/experiments/{scan.session_id}")
            fields = dict(experiment.fields)
            nifti = [
                p
                for p in all_files(main_run.root / "nifti" / "DEMO" / scan.subject / label)
                if ".nii" in p.name
            ]
            assert fields["xnatprep_status"] == "partial"  # one scan failed, the others converted
            assert fields["xnatprep_nifti_count"] == str(len(nifti))
            assert fields["bold_volumes"] == str(bold.volumes)
            assert fields["group"] == groups[label]


def test_edge_cases_selected_and_named(main_run: Run) -> None:
    scans = main_run.scans()
    t1 = [s for s in scans if s.subject == "001" and s.scan_type == "T1w_MPRAGE"]
    assert len(t1) == 2 and len({s.scan for s in t1}) == 2  # duplicate type: two folders
    untyped = [s for s in scans if s.scan_type == ""]
    assert {s.scan for s in untyped} == {f"{n}-unknown" for n, sp in SPECS.items() if sp.description == ""}
    assert (main_run.root / "nifti/DEMO/001/001_MR1").is_dir()  # label 001 kept as text


def test_report_files(main_run: Run) -> None:
    import csv

    with open(main_run.root / paths.SUMMARY_TSV) as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert len(rows) == len(main_run.scans())
    assert {r["state"] for r in rows if r["scan_id"] in BROKEN} == {"failed"}
    assert {r["state"] for r in rows if r["scan_id"] in NON_IMAGE} == {"skipped"}
    with open(main_run.root / paths.DATA_AMOUNT_TSV) as fh:
        [demo] = list(csv.DictReader(fh, delimiter="\t"))
    assert demo["project"] == "DEMO" and demo["sessions"] == "2"
    assert int(demo["dicom_bytes"]) == sum(s.bytes for s in main_run.scans())
    assert (main_run.root / paths.DATA_AMOUNT_PNG).read_bytes().startswith(b"\x89PNG")
    # xnat-prep summary's tables, from the manifest: the selected scans' files and bytes, no request
    with open(main_run.root / paths.REPORT_PROJECTS_TSV) as fh:
        [project] = list(csv.DictReader(fh, delimiter="\t"))
    skipped = manifest.read_skipped(main_run.root / paths.SKIPPED_TSV)
    assert (project["project"], project["sessions"], project["requests"]) == ("DEMO", "2", "0")
    assert int(project["scans"]) == len(main_run.scans()) + len(skipped)
    assert int(project["files"]) == sum(s.n_files for s in main_run.scans())
    assert int(project["bytes"]) == int(demo["dicom_bytes"])
    dates = sorted(s.date for s in manifest.read_sessions(main_run.root / paths.SESSIONS_TSV))
    assert all(dates) and (project["first_date"], project["last_date"]) == (dates[0], dates[-1])
    with open(main_run.root / paths.REPORT_SCAN_TYPES_TSV) as fh:
        types = list(csv.DictReader(fh, delimiter="\t"))
    assert sum(int(t["selected"]) for t in types) == len(main_run.scans())


def test_password_never_written_nor_on_a_command_line(main_run: Run, study: Study) -> None:
    report = study.snakemake(main_run.workdir, main_run.config, "--report", "report.html")
    assert report.rc == 0 and (main_run.workdir / "report.html").exists(), report.output[-2000:]
    secret = PASSWORD.encode()
    leaked = [p for p in all_files(main_run.workdir) if secret in p.read_bytes()]
    assert leaked == []
    assert main_run.watch.samples > 20 and main_run.watch.hits == []


def test_rerun_lists_the_standing_problems_and_sends_nothing(main_run: Run, study: Study) -> None:
    """The rejected series still stand: a rerun says so again and exits 1 (only the report is
    rebuilt; no request, no other file touched). Without problems a rerun is "Nothing to be done"
    (tests/workflow/test_reliability.py)."""
    report = main_run.root / "report"
    before = {p: p.stat().st_mtime_ns for p in all_files(main_run.root) if report not in p.parents}
    result = study.snakemake(main_run.workdir, main_run.config)
    assert result.rc == 1, result.output[-2000:]
    problems = result.lines("xnat-prep: problem: ")
    assert problems == main_run.result.lines("xnat-prep: problem: ") and problems
    assert result.requests == []
    assert {p: p.stat().st_mtime_ns for p in all_files(main_run.root) if report not in p.parents} == before


def test_connection_settings_are_not_rerun_triggers(main_run: Run, study: Study, tmp_path: Path) -> None:
    port = study.url.rsplit(":", 1)[1]
    config = {**main_run.config, "xnat": {"host": f"http://localhost:{port}", "max_connections": 1}}
    config_file = tmp_path / "moved.yaml"
    import yaml

    config_file.write_text(yaml.safe_dump(config))
    result = study.snakemake(main_run.workdir, None, "-n", "--configfile", str(config_file))
    # only the report, rebuilt while the rejected series stand (common.smk), would run
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.MULTILINE))
    assert result.rc == 0 and set(jobs) == {"report", "default", "total"}, result.output[-2000:]


def test_dry_run_and_lint(study: Study, tmp_path: Path) -> None:
    config = study.config(tmp_path)
    dry = study.snakemake(tmp_path, config, "-n")
    assert dry.rc == 0 and "discover" in dry.stdout and dry.requests == []
    assert not (tmp_path / "results").exists()
    lint = study.snakemake(tmp_path, config, "--lint")
    assert lints(lint.output) == LINT_ALLOWED, lint.output[-3000:]


# The library steps run the `xnat-prep` of the Python that runs Snakemake (its bin/ comes first on
# the jobs' PATH): a conda env would have to install this project to run them, so they declare
# none. convert_session declares its pinned dcm2niix env (dcm2niix is the one outside tool).
LINT_ALLOWED = {
    (f"rule {name}", "Specify a conda environment or container for each rule.")
    for name in (
        *("discover", "download_session", "upload_session", "set_variables", "report"),
        *("plan", "pseudonymise_scan", "bids_dataset", "bids_validate"),
        *("import_plan", "import_session", "upload_resources", "push"),
    )
}


def lints(output: str) -> set[tuple[str, str]]:
    """(what, lint title) pairs from `snakemake --lint` text output."""
    found, where = set(), ""
    for line in output.splitlines():
        if line.startswith("Lints for "):
            where = line.removeprefix("Lints for ").split(" (")[0].rstrip(":")
        elif line.startswith("    * "):
            found.add((where, line.removeprefix("    * ").removesuffix(":")))
    return found
