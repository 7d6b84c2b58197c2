"""The package's own YAML schemas (config, BIDS mapping), parsed once per process.

With libyaml's C loader when PyYAML has it: the config schema takes ~50 ms with the pure-Python
loader, ~5 ms with the C one, and every workflow job that checks a host and every Snakemake start
parses it. Users' files keep the pure-Python loader (``config.read_yaml``), whose error marks the
messages are built from.
"""

from __future__ import annotations

import functools
from importlib import resources

import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def load(name: str) -> dict:
    """The package file ``name`` (e.g. ``schemas/config.schema.yaml``), parsed."""
    text = resources.files("xnat_prep").joinpath(name).read_text(encoding="utf-8")
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader (C or Python)
