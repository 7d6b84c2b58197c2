# The upload direction (config/README.md, "Importing DICOM", "Uploading files into resources",
# "Pushing pseudonymised copies"): targets import_all, upload_resources and push, none of them
# part of `all`. Their helpers are in common.smk.


rule import_plan:
    """Preflight every row of the import CSV (headers, one study per row, md5s) and decide each against XNAT: the plan, no write."""
    input:
        csv=IMPORT["csv"] or [],
    output:
        plan="<results>/import/import_plan.tsv",
    log:
        "logs/import_plan/import_plan.log",
    resources:
        xnat_api=1,
    params:
        root=output_root("plan", paths.IMPORT_PLAN),
        options=import_options(),
        columns=column_options(IMPORT["columns"]),
    shell:
        "xnat-prep --log {log:q} import --csv {input.csv:q} --output-root {params.root:q} --dry-run"
        " {params.options} {params.columns}"


rule import_session:
    """Import one row's DICOM session (one streamed request; or nothing when XNAT holds it already), wait for the archive, verify."""
    input:
        plan=ancient("<results>/import/import_plan.tsv"),
    output:
        receipt="<results>/receipts/import/{project}/{subject}/{session}.json",
    log:
        "logs/import_session/{project}/{subject}/{session}.log",
    benchmark:
        "benchmarks/import_session/{project}/{subject}/{session}.tsv"
    resources:
        xnat_api=1,
        xnat_imports=1,
    params:
        csv=IMPORT["csv"],
        row=get_import_row,
        root=import_root,
        options=import_options(),
        columns=column_options(IMPORT["columns"]),
    shell:
        "xnat-prep --log {log:q} import --csv {params.csv:q} --output-root {params.root:q}"
        " --only {wildcards.project}/{wildcards.subject}/{wildcards.session} {params.options} {params.columns}"


rule import_all:
    """Every row of the import CSV imported (or found in XNAT already)."""
    input:
        get_import_receipts,


rule upload_resources:
    """Upload the resources CSV's files into scan or session resources (only what differs), then verify the md5s."""
    input:
        csv=RESOURCES["csv"] or [],
        imports=get_import_receipts,  # the sessions an import brings come first
    output:
        receipts=get_resources_receipts(),
    log:
        "logs/upload_resources/upload_resources.log",
    resources:
        xnat_api=1,
    params:
        root=ROOT,
        columns=column_options(RESOURCES["columns"]),
    shell:
        "xnat-prep --log {log:q} upload-resources --csv {input.csv:q} --output-root {params.root:q} {params.columns}"


rule push:
    """Import the pseudonymised sessions into the target project (own host and credentials) under the pseudonyms, through the import path."""
    input:
        unpack(get_push_input),
    output:
        plan="<results>/push/import_plan.tsv",
    log:
        "logs/push/push.log",
    resources:
        xnat_api=1,
        xnat_imports=1,
    params:
        root=output_root("plan", paths.PUSH_PLAN),
        source=push_source(),
        project=PUSH["project"] or "",
        on_conflict=PUSH["on_conflict"],
        options=import_options(),
    shell:
        "xnat-prep --log {log:q} push {params.source} --project {params.project:q}"
        " --on-conflict {params.on_conflict} --output-root {params.root:q} {params.options}"
