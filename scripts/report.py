"""Rule report: the run summary, data amounts and plot (xnat_prep.report)."""

from xnat_prep import adapter, report

sm = snakemake  # noqa: F821 - injected by Snakemake
with adapter.step(sm):
    report.write_report(
        sm.config["output_root"],
        upload=sm.config["upload"]["enabled"],
        variables=sm.config["custom_variables"]["enabled"],
        summary=sm.output.summary,
        amounts_tsv=sm.output.amounts,
        plot_png=sm.output.plot,
    )
