rule convert_session:
    """Convert a session's scans' DICOM to NIfTI and JSON sidecars with dcm2niix, one after another; a rerun converts only the scans not done."""
    input:
        # The session's download (ancient: its job reruns when scans are added to the selection; the
        # scans converted already are not converted again), or with pseudonymisation on its scans'
        # pseudonymised DICOM. A plain path where it can be: no input function per job.
        source=(
            get_pseudo_receipts if PSEUDO else ancient("<results>/dicom/{project}/{subject}/{session}.json")
        ),
    output:
        # each scan's receipt and NIfTI folder go beside it, in <results>/nifti/{project}/{subject}/{session}/
        receipt="<results>/nifti/{project}/{subject}/{session}.json",
    log:
        "logs/convert_session/{project}/{subject}/{session}.log",
    benchmark:
        "benchmarks/convert_session/{project}/{subject}/{session}.tsv"
    conda:
        "../envs/dcm2niix.yaml"
    params:
        scans=get_session_convert_scans,
        source=get_convert_source,
        extra=config["dcm2niix"]["extra"],
        compress="y" if config["dcm2niix"]["compress"] else "n",
        gz_level=config["dcm2niix"]["gz_level"],
        # pseudonymised: no session label in file names, no identifying key in the sidecars
        prefix="" if PSEUDO else "{session}_",
        scrub=" --scrub-sidecars" if PSEUDO else "",
        store=DICOM_STORE,
    shell:
        "xnat-prep --log {log:q} convert-session --source {params.source:q} --scans {params.scans:q}"
        " --receipt {output.receipt:q} --name-prefix={params.prefix:q} --extra={params.extra:q}"
        " --compress {params.compress} --gz-level {params.gz_level}{params.scrub} --store {params.store}"
