rule plan:
    """What the run will do, before any download: scans selected and skipped, bytes, requests, jobs, disk, time."""
    input:
        scans="<results>/manifest/scans.tsv",
        bids=BIDS["mapping"] or [],  # BIDS on: the plan lints the mapping (errors stop the run)
    output:
        plan="<results>/plan/plan.tsv",
        inventory="<results>/plan/inventory.tsv",
    log:
        "logs/plan/plan.log",
    params:
        root=output_root("plan", paths.PLAN_TSV),
        steps=("" if UPLOAD else " --no-upload")
        + ("" if VARIABLES else " --no-variables")
        + (" --store zip" if ZIP else ""),
        bids=(f" --bids-mapping {shlex.quote(BIDS['mapping'])} {bids_options()}" if BIDS["mapping"] else ""),
    shell:
        "xnat-prep --log {log:q} plan --output-root {params.root:q}{params.steps}{params.bids}"
