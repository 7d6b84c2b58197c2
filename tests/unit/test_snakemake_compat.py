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


def test_patch_acts_only_when_groups_are_merged(restore_dag, monkeypatch):
    original = restore_dag._update_group_components
    assert snakemake_compat.idempotent_group_components()
    patched = restore_dag._update_group_components
    assert patched is not original and patched.__wrapped__ is original
    assert snakemake_compat.idempotent_group_components() and restore_dag._update_group_components is patched
    assert snakemake_compat.upstream_group_components_sha256() == snakemake_compat.UPSTREAM_SHA256
    handed_over = []
    monkeypatch.setattr(patched, "__wrapped__", handed_over.append)
    for components in ({}, {"convert": 1}):  # parse time knows no groups: decided per DAG
        dag = SimpleNamespace(workflow=workflow(components))
        patched(dag)
        assert handed_over[-1] is dag
    merged = SimpleNamespace(workflow=workflow({"convert": 25}), _group={})
    patched(merged)  # merges itself (nothing to merge here), Snakemake's method not called
    assert len(handed_over) == 2


def test_untested_snakemake_is_warned_about_not_patched(restore_dag, monkeypatch, caplog):
    original = restore_dag._update_group_components
    monkeypatch.setattr(snakemake_compat, "TESTED", frozenset({"0.0.1"}))
    assert not snakemake_compat.idempotent_group_components()
    assert restore_dag._update_group_components is original
    assert "not one xnat-prep's --group-components fix is tested on" in caplog.text


def test_report_requested_and_default_resource():
    full = {"default", "all", "report"}
    assert snakemake_compat.report_requested(workflow(), full)
    assert snakemake_compat.report_requested(workflow(targets=["all"]), full)
    assert not snakemake_compat.report_requested(workflow(targets=["results/nifti/x.json"]), full)
    assert not snakemake_compat.report_requested(workflow(until=["convert_session"]), full)
    wf = workflow()
    snakemake_compat.default_resource(wf, "xnat_api", 4)
    assert wf.global_resources["xnat_api"] == 4
    wf.global_resources["xnat_api"] = 1  # the user's --resources xnat_api=1 wins
    snakemake_compat.default_resource(wf, "xnat_api", 4)
    assert wf.global_resources["xnat_api"] == 1
    assert snakemake_compat.config_source(wf) == "--config"


def test_shared_resource_hands_the_main_process_limit_to_jobs(monkeypatch):
    """--resources xnat_api=1 reaches only the main process; its jobs take the limit from the
    environment it leaves them, not the config's value (a Resource object in Snakemake 9)."""
    from snakemake.resources import Resource

    monkeypatch.delenv("XNAT_PREP_CAP_XNAT_API", raising=False)
    main = SimpleNamespace(is_main_process=True, global_resources={"xnat_api": Resource("xnat_api", 1)})
    snakemake_compat.shared_resource(main, "xnat_api", 4)
    assert main.global_resources["xnat_api"].value == 1
    job = SimpleNamespace(is_main_process=False, global_resources={})
    snakemake_compat.shared_resource(job, "xnat_api", 4)
    assert job.global_resources["xnat_api"] == 1
    monkeypatch.delenv("XNAT_PREP_CAP_XNAT_API")
    fresh = SimpleNamespace(is_main_process=False, global_resources={})
    snakemake_compat.shared_resource(fresh, "xnat_api", 4)
    assert fresh.global_resources["xnat_api"] == 4
