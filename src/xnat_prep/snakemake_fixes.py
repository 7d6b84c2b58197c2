"""Workarounds for Snakemake bugs that the workflow hits; each names its upstream report."""

from __future__ import annotations

from collections import defaultdict
from typing import Any


def idempotent_group_components() -> None:
    """Make ``--group-components N`` (N > 1) safe on reruns: snakemake-executor-plugin-slurm#253.

    Snakemake 9 (seen up to 9.27.1) merges a group's components by mutating cached ``GroupJob``
    objects. When a checkpoint's output already exists (every rerun after discovery) Snakemake
    post-processes the DAG twice, the second pass merges the merged groups again, and the
    scheduler, holding the first objects, submits the same jobs twice. Here components stay
    untouched, chunks are cut in a fixed order, and each merged group comes from the factory's
    cache, so a second pass yields the very same groups. No-op if Snakemake's internals moved.
    """
    import snakemake.dag
    from snakemake.common import group_into_chunks

    if not hasattr(snakemake.dag.DAG, "_update_group_components"):
        return

    def update_group_components(dag: Any) -> None:
        by_id: dict[str, set[Any]] = defaultdict(set)
        for group in dag._group.values():
            by_id[group.groupid].add(group)
        settings = dag.workflow.group_settings.group_components
        for groupid, components in by_id.items():
            n = settings.get(dag.workflow.parent_groupids.get(groupid, groupid), 1)
            if n < 2:
                continue
            ordered = sorted(components, key=lambda g: sorted(str(f) for job in g.jobs for f in job.output))
            for chunk in group_into_chunks(n, ordered):
                jobs = [job for component in chunk for job in component.jobs]
                merged = dag.group_job_factory.new(groupid, jobs, dag.workflow.global_resources)
                for job in jobs:
                    dag._group[job] = merged
        for group in dag._group.values():
            group.finalize()

    snakemake.dag.DAG._update_group_components = update_group_components
