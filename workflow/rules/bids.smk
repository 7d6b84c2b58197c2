rule bids_dataset:
    """Write the BIDS dataset (<results>/bids/) from the converted scans by the bids.yaml mapping; files are hard links, reruns change nothing."""
    input:
        unpack(get_bids_inputs),
    output:
        # the dataset is <results>/bids/; what this build wrote is in receipts/bids/build_manifest.json
        receipt="<results>/receipts/bids/bids_dataset.json",
    log:
        "logs/bids_dataset/bids_dataset.log",
    benchmark:
        "benchmarks/bids_dataset/bids_dataset.tsv"
    params:
        root=output_root("receipt", paths.BIDS_RECEIPT),
        options=bids_options(),
        key=PSEUDO["fingerprint"] if PSEUDO else "",
    shell:
        "xnat-prep --log {log:q} bids-dataset --output-root {params.root:q} --mapping {input.mapping:q}"
        " --receipt {output.receipt:q} {params.options}"


rule bids_validate:
    """Check the BIDS dataset with the official validator (bids-validator-deno, offline); its errors fail the run."""
    input:
        dataset="<results>/receipts/bids/bids_dataset.json",
    output:
        receipt="<results>/receipts/bids/bids_validate.json",
    log:
        "logs/bids_validate/bids_validate.log",
    benchmark:
        "benchmarks/bids_validate/bids_validate.tsv"
    params:
        dataset=lambda wildcards, input: str(
            paths.root_of(input.dataset, paths.BIDS_RECEIPT) / paths.BIDS_DIR
        ),
    shell:
        "xnat-prep --log {log:q} bids-validate {params.dataset:q} --receipt {output.receipt:q}"
