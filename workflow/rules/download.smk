rule download_scan:
    """Download one scan's DICOM files, md5-verified and resumable; the receipt is the output, not the files."""
    input:
        # ancient: rediscovery rewrites the list; only a missing receipt means "download again"
        files=ancient("<results>/manifest/files/{project}/{subject}/{session}.tsv"),
    output:
        receipt="<results>/dicom/{project}/{subject}/{session}/{scan}.json",
    params:
        scan=get_scan_identity,
    log:
        "logs/download_scan/{project}/{subject}/{session}/{scan}.log",
    benchmark:
        "benchmarks/download_scan/{project}/{subject}/{session}/{scan}.tsv"
    resources:
        xnat_api=1,
    conda:
        "../envs/xnat-prep.yaml"
    script:
        "../../scripts/download_scan.py"
