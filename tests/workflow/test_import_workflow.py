"""The upload direction's workflow targets: `import_all` runs one job per row of the import CSV
(capped by the `xnat_imports` resource) after the plan, `upload_resources` after the imports; a
second run has nothing to do and sends no request."""

from __future__ import annotations

from pathlib import Path

import requests
from workflow_helpers import ADMIN

from xnat_prep.demodata.dicom import SessionInfo
from xnat_prep.demodata.generate import write_session


def test_import_and_resources_targets_then_a_rerun_does_nothing(study, tmp_path: Path) -> None:
    requests.put(f"{study.url}/data/projects/IMPWF", auth=ADMIN, timeout=30).raise_for_status()
    rows = []
    for subject in ("IMP01", "IMP02"):
        folder = tmp_path / "dicom" / subject
        write_session(folder, SessionInfo("IMPWF", subject, f"{subject}_MR1", 0), "tiny")
        rows.append(f"IMPWF,{subject},{subject}_MR1,{folder}")
    (tmp_path / "import.csv").write_text("Project,Subject,Label,DICOM folder\n" + "\n".join(rows) + "\n")
    (tmp_path / "nii").mkdir()
    (tmp_path / "nii" / "t1.nii.gz").write_bytes(b"nifti")
    (tmp_path / "resources.csv").write_text(
        f"project,subject,session,scan,resource,path\nIMPWF,IMP01,IMP01_MR1,2,NIFTI,{tmp_path / 'nii'}\n"
    )
    config = study.config(
        tmp_path,
        **{
            "import": {"csv": str(tmp_path / "import.csv"), "columns": {"source": "DICOM folder"}},
            "upload_resources": {"csv": str(tmp_path / "resources.csv")},
        },
    )

    first = study.snakemake(
        tmp_path, config, "import_all", "upload_resources", user=ADMIN[0], password=ADMIN[1]
    )

    assert first.rc == 0, first.output
    imports = [r for r in first.requests if r["path"] == "/data/services/import"]
    assert len(imports) == 2
    plan = (tmp_path / "results/import/import_plan.tsv").read_text().splitlines()
    assert [line.split("\t")[12] for line in plan[1:]] == ["import", "import"]
    assert (tmp_path / "results/receipts/import/IMPWF/IMP02/IMP02_MR1.json").is_file()
    assert (tmp_path / "results/receipts/resources/IMPWF/IMP01/IMP01_MR1.json").is_file()

    again = study.snakemake(
        tmp_path, config, "import_all", "upload_resources", user=ADMIN[0], password=ADMIN[1]
    )

    assert again.rc == 0, again.output
    assert "Nothing to be done" in again.output
    assert again.requests == []
