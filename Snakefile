# Entry point for `snakemake --cores N --configfile my.yaml` from the repository root.
# A bare include would run nothing (the first rule of this file is the default target), so the
# `default` rule asks for exactly what the workflow's `all` rule asks for.
include: "workflow/Snakefile"


rule default:
    """Everything the workflow makes (the `all` rule's inputs)."""
    default_target: True
    input:
        rules.all.input,
