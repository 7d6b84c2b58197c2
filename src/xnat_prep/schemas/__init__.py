"""The package's own YAML schemas (config, BIDS mapping), parsed once per process.

With libyaml's C loader when PyYAML has it: the config schema takes ~50 ms with the pure-Python
loader, ~5 ms with the C one, and every workflow job that checks a host and every Snakemake start
parses it. Users' files keep the pure-Python loader (``config.read_yaml``), whose error marks the
messages are built from.
"""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def load(name: str) -> dict:
    """The package file ``name`` (e.g. ``schemas/config.schema.yaml``), parsed."""
    import yaml  # here: jobs that never read a schema (convert, pseudonymise) do not import it

    text = resources.files("xnat_prep").joinpath(name).read_text(encoding="utf-8")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader (C or Python)
