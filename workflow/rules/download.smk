rule download_session:
    """Download a session's selected scans' DICOM, md5-verified and resumable; the receipt is the output, not the files."""
    input:
        # ancient: rediscovery rewrites the list; only a missing receipt means "download again"
        files=ancient("<results>/manifest/files/{project}/{subject}/{session}.tsv"),
        plan=BIDS_GATE,  # BIDS on: the plan's lint of the mapping passed
    output:
        # the scans' folders (dicom.store zip: the scans' zips) go beside it, in
        # <results>/dicom/{project}/{subject}/{session}/
        receipt="<results>/dicom/{project}/{subject}/{session}.json",
    log:
        "logs/download_session/{project}/{subject}/{session}.log",
    benchmark:
        "benchmarks/download_session/{project}/{subject}/{session}.tsv"
    resources:
        # k = xnat.scans_in_parallel scans at once, one connection each: min(k, the session's
        # scans) units of the global cap (Snakemake lowers it to the cap if that is smaller); the
        # job opens exactly as many connections as it holds units (--parallel)
        xnat_api=get_download_slots,
    params:
        session_id=get_session_id,
        scans=get_session_scan_tasks,
        store=DICOM_STORE,
    shell:
        "xnat-prep --log {log:q} download-session --files {input.files:q}"
        " --session-id {params.session_id:q} --scans {params.scans:q} --receipt {output.receipt:q}"
        " --parallel {resources.xnat_api}"
        " --store {params.store}"
