"""Rule upload_session: a session's NIfTI into each scan's resource on XNAT (xnat_prep.upload)."""

from xnat_prep import adapter, config, receipts, upload

sm = snakemake  # noqa: F821 - injected by Snakemake
with adapter.step(sm):
    upload.upload_session(
        **config.connection(sm.config),
        session_id=sm.params.session_id,
        scans=[(receipts.read(path)["scan_id"], path) for path in sm.input.converts],
        resource=sm.params.resource,
        receipt=sm.output.receipt,
    )
