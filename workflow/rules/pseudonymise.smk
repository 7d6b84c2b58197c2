rule pseudonymise_scan:
    """Pseudonymise one scan's DICOM (keyed UIDs and dates, PS3.15 profile); files at risk of burned-in text are quarantined."""
    input:
        download=ancient("<results>/dicom/{project}/{subject}/{session}.json"),
    output:
        # the pseudonymised files go beside it, in <results>/pseudo/{project}/{subject}/{session}/{scan}/
        # (dicom.store zip: in {scan}.zip there)
        receipt="<results>/pseudo/{project}/{subject}/{session}/{scan}.json",
    log:
        "logs/pseudonymise_scan/{project}/{subject}/{session}/{scan}.log",
    benchmark:
        "benchmarks/pseudonymise_scan/{project}/{subject}/{session}/{scan}.tsv"
    params:
        dicom=get_scan_dicom_dir,
        out=dicom_of("receipt"),
        subject_id=get_subject_id,
        options=get_pseudo_options,
        labels=get_pseudo_labels,
        # a new key pseudonymises everything again; its fingerprint identifies it, never the key
        key=PSEUDO["fingerprint"] if PSEUDO else "",
    shell:
        "xnat-prep --log {log:q} pseudonymise {params.dicom:q} {params.out:q} --subject-id {params.subject_id:q}"
        " --layout flat {params.options} {params.labels} --receipt {output.receipt:q}"
