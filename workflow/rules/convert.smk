rule convert_scan:
    """Convert one scan's DICOM to NIfTI and JSON sidecar with dcm2niix; a failure or skip is recorded in the receipt."""
    input:
        # ancient: the session's download job reruns when scans are added to the selection; the
        # scans converted already do not need converting again
        download=ancient("<results>/dicom/{project}/{subject}/{session}.json"),
    output:
        # the NIfTI files go beside it, in <results>/nifti/{project}/{subject}/{session}/{scan}/
        receipt="<results>/nifti/{project}/{subject}/{session}/{scan}.json",
    log:
        "logs/convert_scan/{project}/{subject}/{session}/{scan}.log",
    benchmark:
        "benchmarks/convert_scan/{project}/{subject}/{session}/{scan}.tsv"
    conda:
        "../envs/dcm2niix.yaml"
    params:
        scan=get_scan_identity,
        extra=config["dcm2niix"]["extra"],
        compress="y" if config["dcm2niix"]["compress"] else "n",
        dicom=get_scan_dicom_dir,
    shell:
        "xnat-prep --log {log:q} convert-scan --dicom {params.dicom:q} --receipt {output.receipt:q}"
        " --name {wildcards.session}_{wildcards.scan} --extra={params.extra:q} --compress {params.compress}"
        " --scan-id={params.scan[scan_id]:q} --scan-type={params.scan[scan_type]:q}"
