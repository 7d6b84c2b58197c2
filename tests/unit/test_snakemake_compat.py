"""snakemake_compat: the group patch is gated and pinned to the upstream method it mirrors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from xnat_prep import snakemake_compat


def workflow(group_components=None, **dag_settings):
    settings = {"until": [], "omit_from": [], "targets": [], **dag_settings}
    return SimpleNamespace(
        group_settings=SimpleNamespace(group_components=group_components or {}),
        dag_settings=SimpleNamespace(**settings),
        global_resources={"_cores": 2},
        overwrite_configfiles=[],
        is_main_process=True,
    )


def test_upstream_method_is_the_one_the_patch_mirrors():
    """Fails when Snakemake's _update_group_components changes: review the patch, then the hash."""
    assert snakemake_compat.upstream_group_components_sha256() == snakemake_compat.UPSTREAM_SHA256


@pytest.fixture
def restore_dag():
    import snakemake.api
    import snakemake.dag

    original = snakemake.dag.DAG._update_group_components
    yield snakemake.dag.DAG
    snakemake.dag.DAG._update_group_components = original


def test_patch_only_when_groups_are_merged(restore_dag):
    original = restore_dag._update_group_components
    assert not snakemake_compat.idempotent_group_components(workflow())
    assert not snakemake_compat.idempotent_group_components(workflow({"convert": 1}))
    assert restore_dag._update_group_components is original
    assert snakemake_compat.idempotent_group_components(workflow({"convert": 25}))
    assert restore_dag._update_group_components is not original
    assert snakemake_compat.idempotent_group_components(workflow({"convert": 25}))  # once, idempotent
    # the hash is still that of Snakemake's own method, not of the patch
    assert snakemake_compat.upstream_group_components_sha256() == snakemake_compat.UPSTREAM_SHA256


def test_untested_snakemake_is_warned_about_not_patched(restore_dag, monkeypatch, caplog):
    original = restore_dag._update_group_components
    monkeypatch.setattr(snakemake_compat, "TESTED", frozenset({"0.0.1"}))
    assert not snakemake_compat.idempotent_group_components(workflow({"convert": 25}))
    assert restore_dag._update_group_components is original
    assert "not one xnat-prep's --group-components fix is tested on" in caplog.text


def test_report_requested_and_default_resource():
    full = {"default", "all", "report"}
    assert snakemake_compat.report_requested(workflow(), full)
    assert snakemake_compat.report_requested(workflow(targets=["all"]), full)
    assert not snakemake_compat.report_requested(workflow(targets=["results/nifti/x.json"]), full)
    assert not snakemake_compat.report_requested(workflow(until=["convert_scan"]), full)
    wf = workflow()
    snakemake_compat.default_resource(wf, "xnat_api", 4)
    assert wf.global_resources["xnat_api"] == 4
    wf.global_resources["xnat_api"] = 1  # the user's --resources xnat_api=1 wins
    snakemake_compat.default_resource(wf, "xnat_api", 4)
    assert wf.global_resources["xnat_api"] == 1
    assert snakemake_compat.config_source(wf) == "--config"
