rule convert_scan:
    """Convert one scan's DICOM to NIfTI and JSON sidecar with dcm2niix; a failure or skip is recorded in the receipt."""
    input:
        unpack(get_convert_input),
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
        dicom=get_convert_dicom,
        # pseudonymised: no session label in file names, no identifying key in the sidecars
        name="{scan}" if PSEUDO else "{session}_{scan}",
        scrub=" --scrub-sidecars" if PSEUDO else "",
    shell:
        "xnat-prep --log {log:q} convert-scan --dicom {params.dicom:q} --receipt {output.receipt:q}"
        " --name {params.name:q} --extra={params.extra:q} --compress {params.compress}"
        " --scan-id={params.scan[scan_id]:q} --scan-type={params.scan[scan_type]:q}{params.scrub}"
