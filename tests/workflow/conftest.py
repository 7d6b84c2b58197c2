"""Fixtures of the workflow tests: the bundled server with the demo study, and one full run.

One server for the whole session holds two projects: DEMO (subjects ``001`` and ``SUB002``, one
tiny session each, with the demo edge cases: duplicate scan type, a scan without type, two
non-image series, a series dcm2niix rejects) and SECRET (one subject). The workflow runs as
``runner``, a member of DEMO only, with a password distinctive enough to grep for.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from workflow_helpers import ADMIN, MAIN_DERIVED, PASSWORD, SUBJECTS, CmdlineWatch, Run, Study, users_file

from xnat_prep.server.testing import running_server


@pytest.fixture(scope="session")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Study]:
    from xnat_prep.demodata import seed_server

    base = tmp_path_factory.mktemp("workflow")
    with running_server(base / "xnat-data", users_file=users_file(base / "users.yaml")) as server:
        csv = base / "subjects.csv"
        seed_server(
            server.url, *ADMIN, "DEMO", 2, 1, "tiny", edge_cases=True, subject_labels=SUBJECTS, csv=csv
        )
        seed_server(server.url, *ADMIN, "SECRET", 1, 1, "tiny", subject_labels=["S01"])
        yield Study(server, csv, base)


@pytest.fixture(scope="session")
def main_run(study: Study, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The full workflow on DEMO (all scans, upload, variables incl. user values), run once."""
    workdir = tmp_path_factory.mktemp("main")
    values = workdir / "values.csv"
    values.write_text("session,field,value\n001_MR1,group,control\nSUB002_MR1,group,patient\n")
    config = study.config(workdir, custom_variables={"derived": MAIN_DERIVED, "values_csv": str(values)})
    with CmdlineWatch(PASSWORD) as watch:
        result = study.snakemake(workdir, config)
    return Run(workdir, config, result, watch)
