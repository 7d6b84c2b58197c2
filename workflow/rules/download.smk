rule download_session:
    """Download a session's selected scans' DICOM, md5-verified and resumable; the receipt is the output, not the files."""
    input:
        # ancient: rediscovery rewrites the list; only a missing receipt means "download again"
        files=ancient("<results>/manifest/files/{project}/{subject}/{session}.tsv"),
    output:
        # the scans' folders (dicom.store zip: the scans' zips) go beside it, in
        # <results>/dicom/{project}/{subject}/{session}/
        receipt="<results>/dicom/{project}/{subject}/{session}.json",
    log:
        "logs/download_session/{project}/{subject}/{session}.log",
    benchmark:
        "benchmarks/download_session/{project}/{subject}/{session}.tsv"
    resources:
        xnat_api=1,  # one connection: the session's scans are fetched one after another
    params:
        session_id=get_session_id,
        scans=get_session_scan_tasks,
        store=DICOM_STORE,
    shell:
        "xnat-prep --log {log:q} download-session --files {input.files:q}"
        " --session-id {params.session_id:q} --scans {params.scans:q} --receipt {output.receipt:q}"
        " --store {params.store}"
