rule report:
    """Summarise the run: each scan's state, data amounts per project, and a plot (also shown by `snakemake --report`)."""
    input:
        unpack(get_report_inputs),
    output:
        summary=report("<results>/report/summary.tsv", caption="../report/summary.rst", category="Run summary"),
        amounts=report("<results>/report/data_amount.tsv", caption="../report/data_amount.rst", category="Data amount"),
        plot=report("<results>/report/data_amount.png", caption="../report/data_amount_plot.rst", category="Data amount"),
    log:
        "logs/report/report.log",
    conda:
        "../envs/xnat-prep.yaml"
    script:
        "../../scripts/report.py"

