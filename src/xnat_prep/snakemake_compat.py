"""Everything the workflow needs from Snakemake beyond its documented API, in one place.

Each entry names what it relies on and why; a Snakemake upgrade is a review of this file (and of
``TESTED``). The uses:

- ``idempotent_group_components``: replaces the private ``DAG._update_group_components`` to work
  around snakemake-executor-plugin-slurm#253 (jobs submitted twice when groups meet a checkpoint on
  a rerun). Installed only on tested versions whose upstream method is the one the patch mirrors
  (``UPSTREAM_SHA256``; a unit test fails when it changes), and acting only when the run merges
  components (checked when the DAG is built: the group settings are not known at parse time).
- ``is_main_process``: ``workflow.is_main_process``, to read the manifest directly in cluster jobs,
  where the discover checkpoint is not in the DAG (``checkpoints.discover.get()`` fails there).
- ``report_requested``: ``workflow.dag_settings`` (targets, ``--until``, ``--omit-from``), to tell a
  full run from a partial one at its end.
- ``config_source``: ``workflow.overwrite_configfiles``, the ``--configfile`` names for messages.
- ``default_resource``: ``workflow.global_resources``, to make ``xnat.max_connections`` the default
  of the ``xnat_api`` cap unless the user gave ``--resources xnat_api=N``; ``shared_resource`` hands
  the main process's limit to the jobs (``workflow.is_main_process``).
- The end-of-run "run the same command again" check (``xnat_prep.run.finish``): Snakemake 9.27 does
  not add to a running invocation all the jobs that a checkpoint run again finds.
- Outside the workflow, ``bench/`` uses ``snakemake.api`` internals to time stages
  (``bench/localrules.py``: ``workflow_api._workflow``, ``_localrules``; ``bench/stages.smk``:
  stage targets because ``--until``/``--omit-from`` fail behind the checkpoint).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from importlib.metadata import version
from typing import Any

log = logging.getLogger(__name__)

# Snakemake versions the patch is tested on (tests/slurm runs it on a real cluster).
TESTED = frozenset({"9.27.1"})
# sha256 of the source of snakemake.dag.DAG._update_group_components that the patch replaces.
UPSTREAM_SHA256 = "7025e72ba0282c87ca9a6e77a659721ea54456c8e58b19a45c2d3596cc9c3ae4"
_PATCHED = "_xnat_prep_patched"


def upstream_group_components_sha256() -> str:
    """The hash of Snakemake's own ``_update_group_components`` (before any patch)."""
    import snakemake.api
    import snakemake.dag

    method = snakemake.dag.DAG._update_group_components
    method = getattr(method, "__wrapped__", method)
    return hashlib.sha256(inspect.getsource(method).encode()).hexdigest()


def idempotent_group_components() -> bool:
    """Make ``--group-components N`` (N > 1) safe on reruns: snakemake-executor-plugin-slurm#253.

    Snakemake 9 (seen up to 9.27.1) merges a group's components by mutating cached ``GroupJob``
    objects. When a checkpoint's output already exists (every rerun after discovery) Snakemake
    post-processes the DAG twice, the second pass merges the merged groups again, and the
    scheduler, holding the first objects, submits the same jobs twice. Here components stay
    untouched, chunks are cut in a fixed order, and each merged group comes from the factory's
    cache, so a second pass yields the very same groups.

    Installed only on tested Snakemake versions whose method is the one mirrored (else a warning),
    and it acts only when components are merged: the group settings are known when the DAG is
    built, not when the Snakefile is parsed (the API sets them after the parse), so the check is
    made at call time and Snakemake's own method runs otherwise. Returns whether it is installed.
    """
    import snakemake.api
    import snakemake.dag
    from snakemake.common import group_into_chunks

    current = snakemake.dag.DAG._update_group_components
    if getattr(current, _PATCHED, False):
        return True
    installed = version("snakemake")
    if installed not in TESTED or upstream_group_components_sha256() != UPSTREAM_SHA256:
        log.warning(
            "Snakemake %s is not one xnat-prep's --group-components fix is tested on (%s): reruns of a "
            "grouped run may submit jobs twice (snakemake-executor-plugin-slurm#253)",
            installed,
            ", ".join(sorted(TESTED)),
        )
        return False

    def update_group_components(dag: Any) -> None:
        settings = dag.workflow.group_settings.group_components
        if not any(n > 1 for n in settings.values()):  # nothing merged: Snakemake's own method
            update_group_components.__wrapped__(dag)  # type: ignore[attr-defined]
            return
        by_id: dict[str, set[Any]] = defaultdict(set)
        for group in dag._group.values():
            by_id[group.groupid].add(group)
        for groupid, groups in by_id.items():
            n = settings.get(dag.workflow.parent_groupids.get(groupid, groupid), 1)
            if n < 2:
                continue
            ordered = sorted(groups, key=lambda g: sorted(str(f) for job in g.jobs for f in job.output))
            for chunk in group_into_chunks(n, ordered):
                jobs = [job for component in chunk for job in component.jobs]
                merged = dag.group_job_factory.new(groupid, jobs, dag.workflow.global_resources)
                for job in jobs:
                    dag._group[job] = merged
        for group in dag._group.values():
            group.finalize()

    setattr(update_group_components, _PATCHED, True)
    update_group_components.__wrapped__ = current  # type: ignore[attr-defined]
    snakemake.dag.DAG._update_group_components = update_group_components
    return True


def is_main_process(workflow: Any) -> bool:
    """Whether this is the Snakemake process that schedules (not a job's re-parse)."""
    return bool(workflow.is_main_process)


def cluster_executor(workflow: Any) -> bool:
    """Whether jobs go to a cluster (an executor plugin that does not run them on this host)."""
    plugin = workflow.executor_plugin
    return plugin is not None and not plugin.common_settings.local_exec


def config_source(workflow: Any) -> str:
    """The config file name(s) for messages."""
    return ", ".join(map(str, workflow.overwrite_configfiles)) or "--config"


def default_resource(workflow: Any, name: str, value: int) -> None:
    """A global resource's limit, unless the user set it (``--resources name=N`` or a profile)."""
    if name not in workflow.global_resources:
        workflow.global_resources[name] = value


CAP_ENV = "XNAT_PREP_CAP_{}"


def shared_resource(workflow: Any, name: str, value: int) -> None:
    """``default_resource``, and the same limit in the cluster jobs.

    ``--resources name=N`` reaches only the main process: a cluster job's Snakemake gets no
    ``--resources`` and would constrain a rule's request by the config's value instead. The main
    process leaves its limit in the environment the jobs inherit (as ``config.export_for_jobs``
    does), and a job takes it from there, so ``{resources.name}`` in a job's command is the number
    of units the main process granted it.
    """
    env = CAP_ENV.format(name.upper())
    if is_main_process(workflow):
        default_resource(workflow, name, value)
        os.environ[env] = str(resource_limit(workflow, name))
    else:
        default_resource(workflow, name, int(os.environ.get(env) or value))


def resource_limit(workflow: Any, name: str) -> int:
    """A global resource's limit as a number."""
    limit = workflow.global_resources[name]
    return int(getattr(limit, "value", limit))  # a Resource in Snakemake 9


def raise_scheduler_limit(workflow: Any, name: str, value: int) -> bool:
    """Raise a global resource's limit for the scheduler of a run that is starting (``onstart``:
    the executor is known only then, and the scheduler already copied the limits); False, and
    the limit unchanged, where the scheduler is not as expected (a safe default: the lower limit).

    Snakemake 9's ``JobScheduler`` keeps ``global_resources`` and the ``resources`` still free;
    no job has been selected before ``onstart``, so both move by the same amount."""
    scheduler = getattr(workflow, "scheduler", None)
    limits = getattr(scheduler, "global_resources", None)
    free = getattr(scheduler, "resources", None)
    if not isinstance(limits, dict) or not isinstance(free, dict) or not isinstance(limits.get(name), int):
        return False
    if free.get(name) != limits[name] or value <= limits[name]:
        return False
    free[name] += value - limits[name]
    limits[name] = value
    return True


def report_requested(workflow: Any, full_run_targets: Iterable[str]) -> bool:
    """Whether this invocation asked for the whole run (no target, or one of ``full_run_targets``),
    not only for some of the work (other targets, ``--until``, ``--omit-from``)."""
    settings = workflow.dag_settings
    if settings.until or settings.omit_from:
        return False
    targets = set(settings.targets)
    return not targets or bool(targets & set(full_run_targets))
