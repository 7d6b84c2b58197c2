"""Every profile passes a dry run, and the overlays layer the way profiles/README.md says.

No cluster needed: a dry run only parses the workflow and the profiles (unknown keys fail it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from slurm_helpers import PROFILES, Result, dry_run_env, profile_args, run, snakemake_cmd, write_config


def load_profile(name: str) -> dict[str, Any]:
    """A profile's YAML: ``name`` is a directory under profiles/ (its config.yaml) or a file there."""
    path = PROFILES / name
    return yaml.safe_load((path / "config.yaml" if path.is_dir() else path).read_text()) or {}


SLURM = load_profile("slurm")
IRIDIS = load_profile("iridis")
NETWORK_RULES = ("discover", "download_session", "upload_session", "set_variables")


def dry_run(workdir: Path, *args: str, network_on_submit_host: bool = False) -> Result:
    """``snakemake -n`` in ``workdir`` (a subject CSV, a server nobody asks: dry runs stay offline)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "subjects.csv").write_text('"Project","Subject"\n"DEMO","SUB001"\n')
    config = {
        "xnat": {"host": "http://127.0.0.1:9"},
        "subjects": {"csv": str(workdir / "subjects.csv")},
        "cluster": {"network_on_submit_host": network_on_submit_host},
    }
    write_config(workdir, config)
    result = run(snakemake_cmd(workdir, "-n", *args), dry_run_env(workdir), timeout=120)
    assert result.rc == 0, result.output[-3000:]
    assert "This was a dry-run" in result.output
    return result


def discover_resources(result: Result) -> dict[str, str]:
    """The resources the dry run lists for the discover job."""
    match = re.search(r"^\w*checkpoint discover:\n(?:    .*\n)*?    resources: (.*)$", result.output, re.M)
    assert match, result.output[-3000:]
    return dict(item.split("=", 1) for item in match[1].split(", "))


def expected(resources: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in resources.items()}


def test_workstation_default_profile_is_loaded_only_without_a_workflow_profile(tmp_path: Path) -> None:
    plain = dry_run(tmp_path / "plain")
    assert re.search(r"Using workflow specific profile \S*profiles/default\b", plain.output)
    resources = discover_resources(plain)
    assert "slurm_partition" not in resources and "runtime" not in resources

    cluster = dry_run(tmp_path / "slurm", *profile_args(workflow="slurm"))
    assert "profiles/default" not in cluster.output
    assert re.search(r"workflow specific profile \S*profiles/slurm\b", cluster.output)
    assert discover_resources(cluster).items() >= expected(SLURM["set-resources"]["discover"]).items()


@pytest.mark.parametrize("overlay", ["iridis", "ci", "slurm/network-on-nodes.yaml"])
def test_overlay_keeps_the_slurm_profile_and_replaces_only_its_own_keys(tmp_path: Path, overlay: str) -> None:
    result = dry_run(tmp_path, *profile_args("slurm", workflow=overlay))
    overlay_keys = load_profile(overlay)
    resources = discover_resources(result)
    # per-rule resources come from profiles/slurm, whatever the overlay says
    assert resources.items() >= expected(SLURM["set-resources"]["discover"]).items()
    if "default-resources" in overlay_keys:
        # ... and the overlay's default resources apply where no rule-specific value is set
        defaults = overlay_keys["default-resources"].items()
        rule_specific = SLURM["set-resources"]["discover"]
        assert resources.items() >= expected({k: v for k, v in defaults if k not in rule_specific}).items()


def test_iridis_overlay_sets_a_partition_and_keeps_every_default_resource(tmp_path: Path) -> None:
    # A top-level key of the overlay replaces the whole key of profiles/slurm (checked above),
    # so the overlay must repeat every default resource it does not mean to drop.
    assert IRIDIS["default-resources"]["slurm_partition"]
    assert set(SLURM["default-resources"]) <= set(IRIDIS["default-resources"])
    result = dry_run(tmp_path, *profile_args("slurm", workflow="iridis"))
    report = re.search(r"^\w*rule report:\n(?:    .*\n)*?    resources: (.*)$", result.output, re.M)
    assert report and f"slurm_partition={IRIDIS['default-resources']['slurm_partition']}" in report[1]


def test_network_on_nodes_overlay_groups_every_network_rule_but_discover() -> None:
    overlay = yaml.safe_load((PROFILES / "slurm" / "network-on-nodes.yaml").read_text())
    assert set(overlay["groups"]) == {"convert_session", *NETWORK_RULES} - {"discover"}
    assert len(set(overlay["groups"].values())) == 1  # one connected component per session
    # the base profile groups no network rule: under network_on_submit_host they must stay local
    assert set(SLURM["groups"]) == {"convert_session"}


def test_cluster_profiles_keep_group_jobs_to_one_core() -> None:
    # Group members run one after another in the job: a core limit of 1 makes Snakemake size a
    # group as one member (largest memory, summed runtime, one xnat_api slot).
    assert SLURM["cores"] == 1
    assert "cores" not in IRIDIS


@pytest.mark.parametrize("profile", ["slurm", "slurm/network-on-nodes.yaml", "iridis", "ci"])
def test_every_profile_key_says_why(profile: str) -> None:
    """Each top-level key has a comment on its line or right above it (a blank line ends a comment)."""
    path = PROFILES / profile
    lines = (path / "config.yaml" if path.is_dir() else path).read_text().splitlines()
    keys = [i for i, line in enumerate(lines) if re.match(r"^[a-z][\w-]*:", line)]
    assert keys
    for i in keys:
        above = lines[i - 1] if i else ""
        commented = "#" in lines[i] or above.startswith("#") or i - 1 in keys
        assert commented, f"{profile}: {lines[i]!r} says not why"


def test_workstation_profile_sets_no_resources() -> None:
    """profiles/default is loaded whenever no --workflow-profile is given, and a workflow profile's
    key replaces a --profile's: resource keys there would silently undo a cluster profile's."""
    default = yaml.safe_load((PROFILES / "default" / "config.yaml").read_text()) or {}
    cluster_keys = {"default-resources", "set-resources", "resources", "cores", "groups", "executor"}
    assert not set(default) & cluster_keys
