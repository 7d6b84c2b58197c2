"""TLS through a whole workflow run, against the bundled server on HTTPS with a CA of its own:
no CA given → one clear line and nothing fetched; the CA bundle in the config → the run passes;
verification off → the run passes with the project's loud warning."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from workflow_helpers import ADMIN, PASSWORD, Result, Study, all_files, users_file

from xnat_prep.server.testing import running_server

pytestmark = pytest.mark.workflow
SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"


@pytest.fixture(scope="module")
def tls_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Study, Path]]:
    """DEMO with one subject on an HTTPS server whose certificate a trustme CA signed; the CA file."""
    from xnat_prep.demodata import seed_server

    base = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    pem, ca_file = base / "server.pem", base / "ca.pem"
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca.cert_pem.write_to_path(str(ca_file))
    with running_server(base / "xnat", users_file=users_file(base / "users.yaml"), tls=(pem, pem)) as server:
        assert server.url.startswith("https://")
        csv = base / "subjects.csv"
        seed_server(
            server.url, *ADMIN, "DEMO", 1, 1, "tiny", subject_labels=["001"], csv=csv, ca_bundle=str(ca_file)
        )
        yield Study(server, csv, base), ca_file


def run(study: Study, workdir: Path, **xnat: object) -> Result:
    config = study.config(workdir, scans={"include_types": ["localizer"]})
    config["xnat"].update(xnat)
    # the system's CA bundle as the usual variables name it (this machine sets them): not this CA
    env = {k: SYSTEM_CAS for k in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")}
    result = study.snakemake(workdir, config, env=env)
    assert isinstance(result, Result)
    assert "Traceback" not in result.output and PASSWORD not in result.output
    return result


def test_no_ca_is_one_clear_line(tls_study: tuple[Study, Path], tmp_path: Path) -> None:
    study, _ = tls_study
    result = run(study, tmp_path)
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("xnat-prep") and "error" in ln]
    assert result.rc == 1, result.output[-3000:]
    assert len(errors) == 1, errors
    assert "TLS certificate not trusted" in errors[0] and "xnat.ca_bundle" in errors[0], errors
    assert result.requests == [] or all(r["method"] == "GET" for r in result.requests)
    assert [p for p in all_files(tmp_path / "results") if "dicom" in p.parts or "nifti" in p.parts] == []


def test_ca_bundle_run_passes(tls_study: tuple[Study, Path], tmp_path: Path) -> None:
    study, ca_file = tls_study
    result = run(study, tmp_path, ca_bundle=str(ca_file))
    assert result.rc == 0, result.output[-3000:]
    assert "verification is OFF" not in result.output
    assert list((tmp_path / "results" / "nifti").rglob("*.nii.gz"))
    assert result.data_writes()  # NIfTI uploaded, variables set: over HTTPS


@pytest.mark.reliability_full
def test_verify_off_passes_with_the_loud_warning(tls_study: tuple[Study, Path], tmp_path: Path) -> None:
    study, _ = tls_study
    result = run(study, tmp_path, verify_tls=False)
    assert result.rc == 0, result.output[-3000:]
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("xnat-prep: WARNING: ")]
    assert warnings and all(f"TLS certificate verification is OFF for {study.url}" in w for w in warnings)
    assert list((tmp_path / "results" / "nifti").rglob("*.nii.gz"))
