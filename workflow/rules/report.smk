rule report:
    """Summarise the run: each scan's state, data amounts per project, and a plot (also shown by `snakemake --report`)."""
    input:
        unpack(get_report_inputs),
    output:
        summary=report(
            "<results>/report/summary.tsv", caption="../report/summary.rst", category="Run summary"
        ),
        amounts=report(
            "<results>/report/data_amount.tsv", caption="../report/data_amount.rst", category="Data amount"
        ),
        plot=report(
            "<results>/report/data_amount.png",
            caption="../report/data_amount_plot.rst",
            category="Data amount",
        ),
        # xnat-prep summary's tables, from the manifest (no XNAT request)
        projects=report(
            "<results>/report/projects.tsv", caption="../report/projects.rst", category="Project summary"
        ),
        scan_types=report(
            "<results>/report/scan_types.tsv", caption="../report/scan_types.rst", category="Project summary"
        ),
    log:
        "logs/report/report.log",
    params:
        root=output_root("summary", paths.SUMMARY_TSV),
        steps=("" if UPLOAD else " --no-upload") + ("" if VARIABLES else " --no-variables"),
        standing=STANDING,  # see common.smk: a rerun lists the problems still standing
    shell:
        "xnat-prep --log {log:q} report --output-root {params.root:q}{params.steps}"
