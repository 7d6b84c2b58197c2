rule set_variables:
    """Write the session's custom variables (status, date, derived measures, user values), only those that differ."""
    input:
        # the session's convert receipt (it stands for its scans'); a plain path, no function per job
        converts="<results>/nifti/{project}/{subject}/{session}.json",
        values=VALUES_CSV,
    output:
        receipt="<results>/receipts/variables/{project}/{subject}/{session}.json",
    log:
        "logs/set_variables/{project}/{subject}/{session}.log",
    resources:
        xnat_api=1,
    params:
        session_id=get_session_id,
        prefix=config["custom_variables"]["prefix"],
        derived=as_json(config["custom_variables"]["derived"]),
    shell:
        "xnat-prep --log {log:q} set-variables --project {wildcards.project:q} --session-id {params.session_id:q}"
        " --session {wildcards.session:q} --convert-receipts {input.converts:q} --values-csv {input.values:q}"
        " --prefix {params.prefix:q} --derived {params.derived:q} --receipt {output.receipt:q}"
