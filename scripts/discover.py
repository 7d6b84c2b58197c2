"""Rule discover: list the subjects on XNAT into the manifest (xnat_prep.discover)."""

from xnat_prep import adapter, discover, subjects

sm = snakemake  # noqa: F821 - injected by Snakemake
with adapter.step(sm):
    discover.run_discovery(sm.config, subjects.read(sm.input.subjects, sm.params.project))
