rule convert_scan:
    """Convert one scan's DICOM to NIfTI and JSON sidecar with dcm2niix; a failure or skip is recorded in the receipt."""
    input:
        download="<results>/dicom/{project}/{subject}/{session}/{scan}.json",
    output:
        receipt="<results>/nifti/{project}/{subject}/{session}/{scan}.json",
    params:
        scan=get_scan_identity,
        extra=config["dcm2niix"]["extra"],
        compress=config["dcm2niix"]["compress"],
    log:
        "logs/convert_scan/{project}/{subject}/{session}/{scan}.log",
    benchmark:
        "benchmarks/convert_scan/{project}/{subject}/{session}/{scan}.tsv"
    conda:
        "../envs/dcm2niix.yaml"
    script:
        "../../scripts/convert_scan.py"
