checkpoint discover:
    """List the subjects' sessions, scans and DICOM files on XNAT into the manifest: one checkpoint for the whole run."""
    input:
        subjects=config["subjects"]["csv"],
    output:
        scans="<results>/manifest/scans.tsv",
        sessions="<results>/manifest/sessions.tsv",
        errors="<results>/manifest/errors.tsv",
    params:
        project=config["subjects"]["project"],
        selection=canonical(config["scans"]),
    log:
        "logs/discover/discover.log",
    benchmark:
        "benchmarks/discover/discover.tsv"
    resources:
        # It lists sessions over up to xnat.max_connections connections, but nothing else can
        # run meanwhile: every other job is known only once this checkpoint has finished.
        xnat_api=1,
    conda:
        "../envs/xnat-prep.yaml"
    script:
        "../../scripts/discover.py"
