rule set_variables:
    """Write the session's custom variables (status, date, derived measures, user values), only those that differ."""
    input:
        converts=get_session_converts,
        values=get_values_csv,
    output:
        receipt="<results>/receipts/variables/{project}/{subject}/{session}.json",
    params:
        session_id=get_session_id,
        prefix=config["custom_variables"]["prefix"],
        derived=canonical(config["custom_variables"]["derived"]),
    log:
        "logs/set_variables/{project}/{subject}/{session}.log",
    resources:
        xnat_api=1,
    conda:
        "../envs/xnat-prep.yaml"
    script:
        "../../scripts/set_variables.py"
