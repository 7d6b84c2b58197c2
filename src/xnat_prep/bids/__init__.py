"""BIDS output: the ``bids.yaml`` mapping, its lint before any download, the dataset, validation.

- ``mapping.load``: read and check ``bids.yaml`` (schema ``schemas/bids.schema.yaml``);
- ``layout.build``: scans -> BIDS names, run numbers, fieldmaps, and the lint's problems (pure);
- ``dataset.write``: the dataset under ``<output_root>/bids/`` from the converted scans;
- ``validate.run``: the official validator (``bids-validator-deno``) on it;
- ``draft.draft``: a starter ``bids.yaml`` from the plan's inventory (``xnat-prep bids-init``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from xnat_prep import manifest, paths
from xnat_prep.bids.layout import Layout, Problem, build, sanitise
from xnat_prep.bids.mapping import Mapping_, load
from xnat_prep.errors import UserError
from xnat_prep.fsutil import atomic_write

__all__ = ["Layout", "Mapping_", "Problem", "build", "lint", "load", "pseudonyms", "sanitise"]


def pseudonyms(
    scans: list[manifest.ScanRow], mapping_csv: str | None, key_file: str | None, namespace: str = ""
) -> dict[str, str]:
    """subject accession ID -> pseudonym, as the pseudonymise step names the subjects."""
    from xnat_prep.pseudonymise import load_key, pseudonym_for, read_mapping

    ids = sorted({s.subject_id for s in scans})
    if mapping_csv:
        table = read_mapping(mapping_csv)
        return {i: pseudonym_for(table, i, mapping_csv) for i in ids}
    key = load_key(key_file, namespace)
    return {i: key.pseudonym(i) for i in ids}


def layout_of(root: str | Path, mapping: Mapping_, pseudo: Mapping[str, str | None] | None = None) -> Layout:
    """The layout of the run under ``root`` (its frozen manifest and DICOM cache)."""
    from xnat_prep.bids.layout import dicom_values

    root = Path(root)
    scans = manifest.read_scans(root / paths.SCANS_TSV)
    dicom = dicom_values(scans, manifest.read_dicom(root / paths.DICOM_TSV))
    names = None
    if pseudo is not None:
        names = pseudonyms(
            scans, pseudo.get("mapping_csv"), pseudo.get("key_file"), pseudo.get("namespace") or ""
        )
    return build(scans, mapping, dicom=dicom, pseudonyms=names)


def lint(
    root: str | Path,
    mapping_path: str | Path,
    *,
    strict: bool = False,
    pseudo: Mapping[str, str | None] | None = None,
) -> tuple[Layout, list[str]]:
    """Lint the mapping against the run's manifest; write ``plan/bids_lint.tsv`` and
    ``plan/bids_plan.tsv``. Returns the layout and the problem lines; UserError when any is an
    error (or a warning, ``strict``)."""
    from xnat_prep.bids.dataset import plan_rows

    root = Path(root)
    mapping = load(mapping_path)
    layout = layout_of(root, mapping, pseudo)
    rows = ["level\tcode\tsession\tscan_id\tscan_type\tseries_description\trule\tmessage"]
    for p in layout.problems:
        cells = [p.level, p.code, p.session, p.scan, p.scan_type, p.description, p.rule, p.message]
        rows.append("\t".join(c.replace("\t", " ").replace("\n", " ") for c in cells))
    atomic_write(root / paths.BIDS_LINT_TSV, "\n".join(rows) + "\n", mode=0o644, fsync=False)
    atomic_write(root / paths.BIDS_PLAN_TSV, plan_rows(layout), mode=0o644, fsync=False)
    lines = [p.line() for p in layout.problems]
    errors = layout.errors(strict)
    if errors:
        raise UserError(
            f"{mapping_path}: {len(errors)} BIDS mapping problem(s)"
            + (" (strict: warnings count)" if strict else "")
            + ", nothing downloaded:\n"
            + "\n".join(lines)
        )
    return layout, lines
