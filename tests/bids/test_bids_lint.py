"""The BIDS mapping's lint on crafted manifests: one case per problem, each naming what it must."""

from __future__ import annotations

import random

import pytest
import yaml

from xnat_prep.bids import layout as layout_mod
from xnat_prep.bids.layout import build, sanitise, session_label
from xnat_prep.bids.mapping import parse
from xnat_prep.errors import UserError
from xnat_prep.manifest import ScanRow


def scan(
    session: str, scan_id: str, scan_type: str, desc: str = "", subject: str = "SUB001", n_files: int = 10
):
    return ScanRow(
        project="P",
        subject=subject,
        subject_id=f"XS_{subject}",
        session=session,
        session_id=f"XE_{session}",
        xsi_type="xnat:mrSessionData",
        scan_id=scan_id,
        scan_type=scan_type,
        series_description=desc or scan_type,
        scan=f"{scan_id}-{scan_type}",
        resource="DICOM",
        n_files=n_files,
        bytes=100,
    )


def mapping(text: str):
    return parse(yaml.safe_load(text), "bids.yaml")


BASE = """
version: 1
rules:
  - {name: loc, match: {series_description: "*localizer*"}, skip: true}
  - {name: t1, match: {scan_type: "T1*"}, bids: anat/T1w, expect: 1}
  - name: rest
    match: {series_description: "re:^rest_bold$"}
    bids: func/bold
    entities: {task: rest}
  - name: fmap_ap
    match: {series_description: "SE_fmap_AP|SE_fmap_PA"}
    bids: fmap/epi
    entities: {dir: "{series_description:re:_(AP|PA)$}"}
    intended_for: [rest]
    b0_group: se
"""


def study():
    s = "SUB001_MR1"
    return [
        scan(s, "1", "localizer"),
        scan(s, "2", "T1w_MPR"),
        scan(s, "3", "SE_fmap_AP"),
        scan(s, "4", "SE_fmap_PA"),
        scan(s, "5", "rest_bold"),
        scan(s, "6", "rest_bold"),
        scan(s, "10", "rest_bold"),
    ]


def codes(layout):
    return [(p.level, p.code) for p in layout.problems]


def test_clean_study_names_runs_and_fieldmaps():
    out = build(study(), mapping(BASE))
    assert out.problems == []
    names = {p.scan.scan_id: p.relpaths() for p in out.planned}
    assert names["2"] == ["sub-SUB001/ses-MR1/anat/sub-SUB001_ses-MR1_T1w"]
    assert names["3"] == ["sub-SUB001/ses-MR1/fmap/sub-SUB001_ses-MR1_dir-AP_epi"]
    # scan 10 after scan 6 (natural order, not text order)
    assert names["5"][0].endswith("task-rest_run-1_bold")
    assert names["6"][0].endswith("task-rest_run-2_bold")
    assert names["10"][0].endswith("task-rest_run-3_bold")
    fmap = next(p for p in out.planned if p.scan.scan_id == "3")
    assert fmap.b0_identifier == "se"
    assert fmap.intended_for == [("XE_SUB001_MR1", "5"), ("XE_SUB001_MR1", "6"), ("XE_SUB001_MR1", "10")]
    assert [p.b0_sources for p in out.planned if p.rule.name == "rest"] == [["se"]] * 3
    assert [s.scan_id for s, _ in out.skipped] == ["1"]


def test_shuffled_manifest_same_layout():
    scans = study()
    first = build(scans, mapping(BASE))
    random.Random(3).shuffle(scans)
    again = build(scans, mapping(BASE))
    assert [(p.scan.scan_id, p.relpaths(), p.b0_sources) for p in first.planned] == [
        (p.scan.scan_id, p.relpaths(), p.b0_sources) for p in again.planned
    ]


def test_unmapped():
    scans = [*study(), scan("SUB001_MR1", "11", "ASL", "pcasl")]
    out = build(scans, mapping(BASE))
    assert ("error", "unmapped") in codes(out)
    line = next(p.line() for p in out.problems if p.code == "unmapped")
    assert (
        line
        == "error: unmapped: session SUB001_MR1, scan 11 (type 'ASL', description 'pcasl'): no rule matches"
    )


def test_ambiguous_two_rules():
    text = BASE + "  - {name: t1b, match: {series_description: 'T1w*'}, bids: anat/T1w, entities: {acq: b}}\n"
    out = build(study(), mapping(text))
    line = next(p.line() for p in out.problems if p.code == "ambiguous")
    assert "scan 2 (type 'T1w_MPR'" in line and "rule 't1' (#2) and rule 't1b' (#5)" in line
    assert out.errors()


def test_skip_and_map_is_a_warning():
    text = BASE + "  - {name: late_skip, match: {scan_type: 'T1*'}, skip: true}\n"
    out = build(study(), mapping(text))
    assert ("warning", "shadowed") in codes(out)
    assert not out.errors() and out.errors(strict=True)


def test_rule_matching_nothing():
    text = BASE + "  - {name: flair, match: {scan_type: FLAIR}, bids: anat/FLAIR}\n"
    out = build(study(), mapping(text))
    assert [p.line() for p in out.problems] == [
        "warning: unused_rule: rule 'flair' (#5): matches no scan of the study"
    ]


def test_expected_count():
    scans = [*study(), scan("SUB001_MR1", "12", "T1w_MPR")]
    out = build(scans, mapping(BASE))
    lines = [p.line() for p in out.problems if p.code == "expect"]
    assert lines == ["warning: expect: session SUB001_MR1, rule 't1' (#2): 2 scan(s), expected 1"]
    scans = [s for s in study() if s.scan_id != "2"]
    out = build(scans, mapping(BASE))
    assert ("warning", "expect") in codes(out)


def test_invalid_names():
    text = BASE.replace("bids: anat/T1w", "bids: anat/T1") + ""
    out = build(study(), mapping(text))
    assert any(p.code == "invalid_name" and "suffix 'T1'" in p.message for p in out.problems)
    text = BASE.replace("entities: {task: rest}", "entities: {task: rest-state}")
    out = build(study(), mapping(text))
    assert any(p.code == "invalid_name" and "letters and digits" in p.message for p in out.problems)
    # a template that finds nothing
    text = BASE.replace("_(AP|PA)$", "_(LR|RL)$")
    out = build(study(), mapping(text))
    assert any(p.code == "invalid_name" and "entity dir is empty" in p.message for p in out.problems)


def test_func_without_task():
    text = BASE.replace("entities: {task: rest}", "entities: {acq: mb4}")
    out = build(study(), mapping(text))
    line = next(p.line() for p in out.problems if p.code == "no_task")
    assert line.startswith("error: no_task: session SUB001_MR1, scan 5 (type 'rest_bold'")
    assert "func/bold needs the task entity" in line


def test_fieldmap_without_targets():
    scans = [s for s in study() if s.scan_type != "rest_bold"]
    out = build(scans, mapping(BASE))
    assert ("warning", "fmap_targets") in codes(out)
    text = BASE.replace("    intended_for: [rest]\n", "")
    out = build(study(), mapping(text))
    assert any(p.code == "fmap_targets" and "without intended_for" in p.message for p in out.problems)


def test_undecided_dicom_criterion():
    text = BASE.replace(
        'match: {scan_type: "T1*"}', 'match: {scan_type: "T1*", dicom: {ImageType: "*ORIGINAL*"}}'
    )
    out = build(study(), mapping(text))
    line = next(p.line() for p in out.problems if p.code == "undecided")
    assert "DICOM ImageType not read" in line
    dicom = {("XE_SUB001_MR1", "2"): {"ImageType": "ORIGINAL\\PRIMARY\\M"}}
    assert build(study(), mapping(text), dicom=dicom).problems == []


def test_sanitising_and_collisions():
    assert sanitise("SUB-001_a b") == "SUB001ab"
    assert session_label("auto", "SUB001", "SUB001_MR1") == "MR1"
    assert session_label("re:_(V\\d)_", "S", "S_V2_x") == "V2"
    scans = [scan("SUB_1_MR1", "2", "T1w", subject="SUB_1"), scan("SUB1_MR1", "2", "T1w", subject="SUB1")]
    out = build(scans, mapping(BASE))
    line = next(p.line() for p in out.problems if p.code == "label")
    assert line == "error: label: subjects SUB1 and SUB_1 both become sub-SUB1"
    scans = [scan("SUB001_MR-1", "2", "T1w"), scan("SUB001_MR1", "2", "T1w")]
    out = build(scans, mapping(BASE))
    assert any(p.code == "label" and "ses-MR1 is also the label" in p.message for p in out.problems)


def test_pseudonyms_replace_labels():
    out = build(study(), mapping(BASE), pseudonyms={"XS_SUB001": "PSN0A1B"})
    assert out.planned[0].relpaths() == ["sub-PSN0A1B/ses-1/anat/sub-PSN0A1B_ses-1_T1w"]


def test_exclude_scans_and_n_files():
    text = BASE + "exclude_scans: [SUB001_MR1/6]\n"
    out = build(study(), mapping(text))
    assert [p.scan.scan_id for p in out.planned if p.rule.name == "rest"] == ["5", "10"]
    text = (
        BASE.replace('"re:^rest_bold$"}', '"re:^rest_bold$", n_files: ">=5"}')
        + "  - {name: cancelled, match: {n_files: '<5'}, skip: true}\n"
    )
    scans = study()
    scans[5] = scan("SUB001_MR1", "6", "rest_bold", n_files=2)
    out = build(scans, mapping(text))
    assert [p.scan.scan_id for p in out.planned if p.rule.name == "rest"] == ["5", "10"]
    assert [p.relpaths()[0].rsplit("_", 2)[-2] for p in out.planned if p.rule.name == "rest"] == [
        "run-1",
        "run-2",
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("version: 1\nrules: []\n", "rules"),
        ("version: 1\nrules: [{match: {scan_type: T1}}]\n", "needs bids"),
        ("version: 1\nrules: [{match: {scan_type: T1}, bids: anat/T1w, entities: {foo: x}}]\n", "foo"),
        ("version: 1\nrules: [{match: {scan_type: 're:('}, bids: anat/T1w}]\n", "regular expression"),
        (
            "version: 1\nrules: [{match: {scan_type: T1}, bids: fmap/epi, intended_for: [nope]}]\n",
            "no rule 'nope'",
        ),
    ],
)
def test_bad_mapping_files(text, message):
    with pytest.raises(UserError, match=message):
        mapping(text)


def test_lint_writes_and_stops(tmp_path):
    from xnat_prep import bids, manifest, paths

    (tmp_path / "manifest").mkdir()
    scans = [*study(), scan("SUB001_MR1", "11", "ASL", "pcasl")]
    manifest.write_tsv(tmp_path / paths.SCANS_TSV, scans)
    (tmp_path / "bids.yaml").write_text(BASE)
    with pytest.raises(UserError, match="1 BIDS mapping problem") as caught:
        bids.lint(tmp_path, tmp_path / "bids.yaml")
    assert "scan 11 (type 'ASL'" in str(caught.value)
    assert "unmapped" in (tmp_path / paths.BIDS_LINT_TSV).read_text()
    assert not (tmp_path / "dicom").exists()
    manifest.write_tsv(tmp_path / paths.SCANS_TSV, study())
    _, lines = bids.lint(tmp_path, tmp_path / "bids.yaml")
    assert lines == []
    assert (
        "sub-SUB001/ses-MR1/func/sub-SUB001_ses-MR1_task-rest_run-3_bold"
        in (tmp_path / paths.BIDS_PLAN_TSV).read_text()
    )


def test_layout_module_has_no_disk_access():
    with open(layout_mod.__file__) as fh:
        assert "open(" not in fh.read()


def test_plan_command_lints_and_exits_non_zero(tmp_path, capsys):
    from xnat_prep import cli, manifest, paths

    scans = [*study(), scan("SUB001_MR1", "11", "ASL", "pcasl")]
    manifest.write_tsv(tmp_path / paths.SCANS_TSV, scans)
    manifest.write_tsv(tmp_path / paths.ERRORS_TSV, [], manifest.ErrorRow)
    manifest.write_tsv(paths.session_files(tmp_path, "P", "SUB001", "SUB001_MR1"), [], manifest.FileRow)
    (tmp_path / "bids.yaml").write_text(BASE)
    argv = ["plan", "--output-root", str(tmp_path), "--bids-mapping", str(tmp_path / "bids.yaml")]
    assert cli.main(argv) == 2  # a UserError: the exit status of bad input
    err = capsys.readouterr().err
    assert "1 BIDS mapping problem(s), nothing downloaded" in err
    assert "error: unmapped: session SUB001_MR1, scan 11 (type 'ASL', description 'pcasl')" in err
    assert (tmp_path / paths.PLAN_TSV).is_file() and not (tmp_path / "dicom").exists()
    manifest.write_tsv(tmp_path / paths.SCANS_TSV, study())
    assert cli.main(argv) == 0
    assert "BIDS mapping" in capsys.readouterr().out
