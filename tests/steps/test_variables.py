"""variables.derive and the user-values CSV (offline)."""

from __future__ import annotations

import pytest

from xnat_prep import __version__, receipts, variables
from xnat_prep.errors import UserError


def scan(
    tmp_path,
    scan_id,
    scan_type,
    status="converted",
    shape=(64, 64, 30),
    voxel=(2.0, 2.0, 2.5),
    date="2024-05-01",
):
    outputs = [
        {"name": f"s{scan_id}.json", "size": 10, "md5": "x"},
        {
            "name": f"s{scan_id}.nii.gz",
            "size": 99,
            "md5": "y",
            "shape": list(shape),
            "voxel_size": list(voxel),
        },
    ]
    data = {
        "scan_id": scan_id,
        "scan_type": scan_type,
        "status": status,
        "reason": "" if status == "converted" else "why",
        "outputs": outputs if status == "converted" else [],
        "date": date,
    }
    return receipts.write(tmp_path / f"{scan_id}.json", data)


BOLD = [{"name": "bold_volumes", "scan_types": ["*BOLD*"], "measure": "n_volumes"}]


def test_complete_session_with_measures_in_scan_order(tmp_path):
    paths = [
        scan(tmp_path, "10", "task-rest_bold", shape=(64, 64, 30, 120), date="2024-05-02"),
        scan(tmp_path, "2", "rest_BOLD", shape=(64, 64, 30, 80)),
        scan(tmp_path, "1", "T1w", shape=(176, 256, 256), voxel=(1.0, 1.0, 1.2)),
        scan(tmp_path, "3", "report", status="skipped"),
    ]
    derived = [
        *BOLD,
        {"name": "T1_voxels", "scan_types": ["t1*"], "measure": "voxel_size"},
        {"name": "t1_shape", "scan_types": ["T1w"], "measure": "shape"},
        {"name": "n_bold", "scan_types": ["*bold*"], "measure": "n_scans"},
        {"name": "n_dwi", "scan_types": ["*dwi*"], "measure": "n_scans"},
        {"name": "dwi_volumes", "scan_types": ["*dwi*"], "measure": "n_volumes"},
    ]
    values = variables.derive(paths, "xp_", derived)
    assert values == {
        "xp_status": "complete",
        "xp_nifti_count": "3",
        "xp_version": __version__,
        "xp_date": "2024-05-02",
        "bold_volumes": "80,120",  # scan 2 before scan 10
        "t1_voxels": "1x1x1.2",
        "t1_shape": "176x256x256",
        "n_bold": "2",
        "n_dwi": "0",
    }


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["converted", "failed"], "partial"),
        (["failed", "skipped"], "failed"),
        (["skipped", "skipped"], "complete"),
        (["converted", "skipped"], "complete"),
    ],
)
def test_status(tmp_path, statuses, expected):
    paths = [scan(tmp_path, str(i), "T1w", status=s) for i, s in enumerate(statuses)]
    assert variables.derive(paths, "p_", [])["p_status"] == expected


def write_csv(tmp_path, text):
    path = tmp_path / "values.csv"
    path.write_text(text)
    return path


def test_values_csv_lower_cases_names_and_groups_by_session(tmp_path):
    path = write_csv(tmp_path, "session,field,value\nS1,Group,control\nS1,site,A\nS2,group,patient\n")
    assert variables.read_values_csv(path) == {
        "S1": {"group": "control", "site": "A"},
        "S2": {"group": "patient"},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("session,value\nS1,x\n", "row 1: missing column(s) field"),
        ("session,field,value\nS1,group,\n", "row 2, column 'value': empty"),
        ("session,field,value\nS1,2bad,x\n", "row 2, column 'field'"),
        (
            "session,field,value\nS1,group,a\nS1,GROUP,b\n",
            "row 3, column 'field': 'group' for S1 already in row 2",
        ),
        ("session,field,value\nS1,xp_status,done\n", "set by the workflow"),
    ],
)
def test_values_csv_errors_name_row_and_column(tmp_path, text, message):
    path = write_csv(tmp_path, text)
    with pytest.raises(UserError, match=r"values\.csv") as info:
        variables.read_values_csv(path, reserved={"xp_status"})
    assert message in str(info.value)


def test_session_values_merge_derived_with_the_csv_rows_for_label_or_id(tmp_path):
    receipt = scan(tmp_path, "1", "rest_bold", shape=(8, 8, 4, 12))
    path = write_csv(
        tmp_path, "session,field,value\nS1,brain_volume,1234\nXNAT_E9,site,A\nS2,brain_volume,999\n"
    )
    values = variables.session_values([receipt], "xp_", BOLD, path, ("S1", "XNAT_E9"))
    assert values["brain_volume"] == "1234" and values["site"] == "A" and values["bold_volumes"] == "12"
    assert values["xp_status"] == "complete"
    # a CSV value may not take a name the workflow derives for this session
    clash = write_csv(tmp_path, "session,field,value\nS1,bold_volumes,7\n")
    with pytest.raises(UserError, match="set by the workflow"):
        variables.session_values([receipt], "xp_", BOLD, clash, ("S1",))
