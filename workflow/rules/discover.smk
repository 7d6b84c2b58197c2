checkpoint discover:
    """List the subjects' sessions, scans and DICOM files on XNAT into the manifest: one checkpoint for the whole run."""
    input:
        subjects=get_subjects_csv,
    output:
        scans="<results>/manifest/scans.tsv",
        sessions="<results>/manifest/sessions.tsv",
        errors="<results>/manifest/errors.tsv",
    log:
        "logs/discover/discover.log",
    benchmark:
        "benchmarks/discover/discover.tsv"
    resources:
        # It lists sessions over up to xnat.max_connections connections, but nothing else can
        # run meanwhile: every other job is known only once this checkpoint has finished.
        xnat_api=1,
    params:
        # a changed project or selection lists again (params are rerun triggers)
        project=config["subjects"]["project"] or "",
        selection=as_json(config["scans"]),
        root=output_root("scans", paths.SCANS_TSV),
    shell:
        "xnat-prep --log {log:q} discover --subjects {input.subjects:q} --project={params.project:q}"
        " --selection {params.selection:q} --output-root {params.root:q}"
