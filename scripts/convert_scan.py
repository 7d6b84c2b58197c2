"""Rule convert_scan: dcm2niix on one scan (xnat_prep.convert); outputs go next to the receipt."""

from pathlib import Path

from xnat_prep import adapter, convert

sm = snakemake  # noqa: F821 - injected by Snakemake
with adapter.step(sm):
    convert.convert_scan(
        dicom_dir=Path(sm.input.download).with_suffix(""),
        out_dir=Path(sm.output.receipt).with_suffix(""),
        receipt=sm.output.receipt,
        name=f"{sm.wildcards.session}_{sm.wildcards.scan}",
        extra=sm.params.extra,
        compress=sm.params.compress,
        scan_id=sm.params.scan["scan_id"],
        scan_type=sm.params.scan["scan_type"],
    )
