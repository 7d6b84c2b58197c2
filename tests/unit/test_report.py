"""report: states from the manifest and receipts, per-project amounts, problem lines, plot."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from xnat_prep import manifest, paths, receipts, report
from xnat_prep.manifest import ErrorRow, ScanRow


def scan(project: str, scan_id: str, n_bytes: int = 100) -> ScanRow:
    return ScanRow(
        project,
        "S1",
        "XS1",
        "E1",
        "XE1",
        "xnat:mrSessionData",
        scan_id,
        f"T{scan_id}",
        "",
        f"{scan_id}-T",
        "DICOM",
        2,
        n_bytes,
    )


def build(root: Path) -> None:
    """Two projects: P has a converted, a skipped, a failed and an unconverted scan; Q one converted."""
    scans = [scan("P", "1"), scan("P", "2"), scan("P", "3"), scan("P", "4"), scan("Q", "1", 50)]
    manifest.write_tsv(root / paths.SCANS_TSV, scans)
    manifest.write_tsv(root / paths.ERRORS_TSV, [ErrorRow("P", "S9", "", "subject not found in project P")])
    outcomes = {("P", "1"): "converted", ("P", "2"): "skipped", ("P", "3"): "failed", ("Q", "1"): "converted"}
    for s in scans:
        where = (root, s.project, s.subject, s.session, s.scan)
        receipts.write(paths.download_receipt(*where), {"n_files": 2, "bytes": s.bytes})
        if (s.project, s.scan_id) in outcomes:
            status = outcomes[(s.project, s.scan_id)]
            outputs = (
                [{"name": "a.nii.gz", "size": 30}, {"name": "a.json", "size": 5}]
                if status == "converted"
                else []
            )
            receipts.write(
                paths.convert_receipt(*where),
                {
                    "status": status,
                    "reason": "" if status == "converted" else f"why {status}",
                    "outputs": outputs,
                },
            )
    for project in ("P", "Q"):
        receipts.write(
            paths.upload_receipt(root, project, "S1", "E1"),
            {"scans": {"1": {"status": "converted"}, "2": {"status": "skipped"}}},
        )
    receipts.write(paths.variables_receipt(root, "P", "S1", "E1"), {"written": []})


def test_summary_states_and_amounts(tmp_path: Path) -> None:
    build(tmp_path)
    rows = report.summarize(tmp_path)
    state = {(r.project, r.scan_id): (r.state, r.message) for r in rows}
    assert state[("P", "")] == ("error", "subject not found in project P")
    assert state[("P", "1")] == ("ok", "")
    assert state[("P", "2")] == ("skipped", "why skipped")
    assert state[("P", "3")] == ("failed", "why failed")
    assert state[("P", "4")] == ("missing", "not converted")
    assert state[("Q", "1")] == ("missing", "session variables not set")  # Q has no variables receipt
    totals = {t["project"]: t for t in report.amounts(rows)}
    assert totals["P"]["scans"] == 4 and totals["P"]["problems"] == 3 and totals["P"]["dicom_bytes"] == 400
    assert (
        totals["P"]["nifti_files"] == 2 and totals["P"]["nifti_bytes"] == 35 and totals["P"]["subjects"] == 2
    )
    assert totals["Q"]["ok"] == 0 and totals["Q"]["sessions"] == 1


def test_variables_and_upload_off(tmp_path: Path) -> None:
    build(tmp_path)
    rows = report.summarize(tmp_path, upload=False, variables=False)
    assert {r.state for r in rows if r.project == "Q"} == {"ok"}
    assert {r.upload for r in rows} == {""}


def test_written_report_and_problem_lines(tmp_path: Path) -> None:
    build(tmp_path)
    out = tmp_path / "report"
    report.write_report(
        tmp_path,
        upload=True,
        variables=True,
        summary=out / "s.tsv",
        amounts_tsv=out / "a.tsv",
        plot_png=out / "p.png",
    )
    assert (out / "p.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "a.tsv").read_text().splitlines()[0].split("\t") == list(report.AMOUNT_COLUMNS)
    lines = report.problems(out / "s.tsv")
    assert lines == [
        "P/S9: error: subject not found in project P",
        "P/S1/E1 scan 3 (T3): failed: why failed",
        "P/S1/E1 scan 4 (T4): missing: not converted",
        "Q/S1/E1 scan 1 (T1): missing: session variables not set",
    ]
    assert report.problems(tmp_path / "none.tsv") == []


def test_refused_writes_are_one_problem_per_session(tmp_path: Path) -> None:
    """A read-only user: the scans are fine locally, the session's writes were refused (once)."""
    build(tmp_path)
    for step, path in (("upload_session", paths.upload_receipt), ("set_variables", paths.variables_receipt)):
        receipts.write_denied(
            path(tmp_path, "Q", "S1", "E1"), step=step, host="h", session_id="X", project="Q"
        )
    rows = report.summarize(tmp_path)
    q = [r for r in rows if r.project == "Q"]
    assert [(r.scan_id, r.state, r.upload, r.variables) for r in q] == [
        ("1", "ok", "denied", "denied"),
        ("", "denied", "", ""),
    ]
    summary = tmp_path / "s.tsv"
    report.write_report(
        tmp_path,
        upload=True,
        variables=True,
        summary=summary,
        amounts_tsv=tmp_path / "a.tsv",
        plot_png=tmp_path / "p.png",
    )
    denied = [line for line in report.problems(summary) if line.startswith("Q/")]
    assert denied == ["Q/S1/E1: denied: no write permission on project Q (upload_session, set_variables)"]


def test_project_summary_tables_from_the_manifest(tmp_path: Path) -> None:
    """xnat-prep summary's tables in the run report: selected and skipped scans, the selected scans'
    files (sizes, md5 share) from the manifest; written beside the summary."""
    build(tmp_path)
    scans = manifest.read_scans(tmp_path / paths.SCANS_TSV)  # XNAT IDs are unique across projects
    scans = [s if s.project == "P" else dataclasses.replace(s, session_id="XQ1") for s in scans]
    manifest.write_tsv(tmp_path / paths.SCANS_TSV, scans)
    # P's session also holds a scan discovery skipped, and a second session with only a skipped scan
    identity = ("P", "S1", "XS1", "E1", "XE1", "xnat:mrSessionData")
    skipped = [
        manifest.SkippedRow(*identity, "5", "T1", "", "type in scans.exclude_types"),
        manifest.SkippedRow("P", "S3", "XS3", "E3", "XE3", "xnat:petSessionData", "1", "PET", "", "excluded"),
    ]
    manifest.write_tsv(tmp_path / paths.SKIPPED_TSV, skipped)
    files = [
        manifest.FileRow(scan_id, "DICOM", f"{scan_id}-{i}.dcm", 50, "" if i else "abc", "uri")
        for scan_id in ("1", "2", "3", "4")
        for i in range(2)
    ]
    manifest.write_tsv(paths.session_files(tmp_path, "P", "S1", "E1"), files)
    sessions = [manifest.SessionRow(*identity, 4, 400, "2021-03-04")]  # E3 has no selected scan: no row
    manifest.write_tsv(tmp_path / paths.SESSIONS_TSV, sessions)
    found = report.manifest_summary(tmp_path)
    p = found["projects"].set_index("project").loc["P"]
    assert (p["first_date"], p["last_date"]) == ("2021-03-04", "2021-03-04")
    assert (p["subjects"], p["sessions"], p["scans"], p["files"], p["bytes"]) == (3, 2, 6, 8, 400)
    assert p["sessions_by_type"] == "xnat:mrSessionData=1, xnat:petSessionData=1"
    assert p["md5_share"] == 0.5 and p["requests"] == 0
    types = found["scan_types"].set_index(["project", "scan_type"])
    assert types.loc[("P", "T1"), ["scans", "selected", "bytes"]].tolist() == [2, 1, 100]  # 1 selected, 5 not
    assert types.loc[("P", "PET"), ["scans", "selected", "files"]].tolist() == [1, 0, 0]
    assert types.loc[("Q", "T1"), "bytes"] == 0  # Q's file list is not in the manifest

    out = tmp_path / "report"
    report.write_report(
        tmp_path,
        upload=True,
        variables=True,
        summary=out / "s.tsv",
        amounts_tsv=out / "a.tsv",
        plot_png=out / "p.png",
        projects_tsv=out / "projects.tsv",
        scan_types_tsv=out / "scan_types.tsv",
    )
    assert (out / "projects.tsv").read_text().splitlines()[0].startswith("project\tsubjects\tsessions")
    assert "selected" in (out / "scan_types.tsv").read_text().splitlines()[0].split("\t")


def test_project_summary_reads_an_older_sessions_tsv_without_dates(tmp_path: Path) -> None:
    build(tmp_path)
    (tmp_path / paths.SESSIONS_TSV).write_text(
        "project\tsubject\tsubject_id\tsession\tsession_id\txsi_type\tn_scans\tbytes\n"
    )
    p = report.manifest_summary(tmp_path)["projects"].set_index("project").loc["P"]
    assert p["sessions"] == 1 and not p["first_date"]


def test_project_summary_of_an_empty_manifest(tmp_path: Path) -> None:
    manifest.write_tsv(tmp_path / paths.SCANS_TSV, [], manifest.ScanRow)
    manifest.write_tsv(tmp_path / paths.ERRORS_TSV, [], manifest.ErrorRow)
    found = report.manifest_summary(tmp_path)
    assert len(found["projects"]) == 0 and "selected" in found["scan_types"].columns
