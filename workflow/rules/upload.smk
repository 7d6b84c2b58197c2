rule upload_session:
    """Upload a session's NIfTI results into each scan's NIFTI resource (only what differs), then verify the md5s."""
    input:
        # the session's convert receipt (it stands for its scans'); a plain path, no function per job
        converts="<results>/nifti/{project}/{subject}/{session}.json",
    output:
        receipt="<results>/receipts/upload/{project}/{subject}/{session}.json",
    log:
        "logs/upload_session/{project}/{subject}/{session}.log",
    benchmark:
        "benchmarks/upload_session/{project}/{subject}/{session}.tsv"
    resources:
        xnat_api=1,
    params:
        session_id=get_session_id,
        resource=config["upload"]["resource"],
    shell:
        "xnat-prep --log {log:q} upload-session --project {wildcards.project:q} --session-id {params.session_id:q}"
        " --convert-receipts {input.converts:q} --resource {params.resource:q} --receipt {output.receipt:q}"
