"""Pseudonymisation of DICOM before conversion: a pure library (no argparse, no network).

- ``load_key`` / ``Key``: the secret key (from an owner-only file) and everything derived from
  it: keyed UIDs, per-subject date offsets, pseudonyms, the key's fingerprint.
- ``Profile`` / ``validate_overrides`` / ``validate_options``: PS3.15 Table E.1-1 as data, the
  options a site picks and per-tag overrides.
- ``Pseudonymiser``: one dataset in place; ``pseudonymise_tree``: a folder or zip into a new
  folder, atomically, returning the receipt data.
- ``read_mapping``: the subject -> pseudonym CSV; ``scrub_sidecar(_file)``: dcm2niix JSON.
"""

from xnat_prep.pseudonymise.dataset import KEEP_PRIVATE, Pseudonymiser, quarantine_reason
from xnat_prep.pseudonymise.keys import KEY_FILE_ENV, Key, load_key, new_key_file
from xnat_prep.pseudonymise.mapping import pseudonym_for, read_mapping
from xnat_prep.pseudonymise.profile import (
    DEFAULT_OPTIONS,
    Profile,
    option_names,
    validate_options,
    validate_overrides,
)
from xnat_prep.pseudonymise.sidecar import IDENTIFYING_KEYS, scrub_sidecar, scrub_sidecar_file
from xnat_prep.pseudonymise.tree import pseudonymise_tree, write_reid_table

__all__ = [
    "DEFAULT_OPTIONS",
    "IDENTIFYING_KEYS",
    "KEEP_PRIVATE",
    "KEY_FILE_ENV",
    "Key",
    "Profile",
    "Pseudonymiser",
    "load_key",
    "new_key_file",
    "option_names",
    "pseudonym_for",
    "pseudonymise_tree",
    "quarantine_reason",
    "read_mapping",
    "scrub_sidecar",
    "scrub_sidecar_file",
    "validate_options",
    "validate_overrides",
    "write_reid_table",
]
