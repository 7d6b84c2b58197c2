"""Rule set_variables: a session's custom variables on XNAT (xnat_prep.variables)."""

from xnat_prep import adapter, config, variables

sm = snakemake  # noqa: F821 - injected by Snakemake
with adapter.step(sm):
    values = variables.derive(sm.input.converts, sm.params.prefix, sm.params.derived)
    if sm.input.values:
        table = variables.read_values_csv(sm.input.values[0], reserved=values)
        values |= table.get(sm.wildcards.session, {}) | table.get(sm.params.session_id, {})
    variables.set_variables(
        **config.connection(sm.config),
        session_id=sm.params.session_id,
        values=values,
        receipt=sm.output.receipt,
    )
