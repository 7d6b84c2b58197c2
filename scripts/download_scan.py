"""Rule download_scan: one scan's DICOM, verified (xnat_prep.download); the files go next to the receipt."""

from pathlib import Path

from xnat_prep import adapter, config, download, manifest
from xnat_prep.errors import UserError

sm = snakemake  # noqa: F821 - injected by Snakemake
with adapter.step(sm):
    scan = sm.params.scan
    files = [
        f
        for f in manifest.read_session_files(sm.input.files).get(scan["scan_id"], [])
        if f.resource == scan["resource"]
    ]
    if not files:
        raise UserError(
            f"{sm.input.files}: no {scan['resource']} files for scan {scan['scan_id']}; rerun discovery"
        )
    download.download_scan(
        **config.connection(sm.config),
        session_id=scan["session_id"],
        scan_id=scan["scan_id"],
        resource=scan["resource"],
        files=files,
        dest_dir=Path(sm.output.receipt).with_suffix(""),
        receipt=sm.output.receipt,
    )
