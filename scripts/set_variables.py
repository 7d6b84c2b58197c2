"""Rule set_variables: a session's custom variables on XNAT (xnat_prep.variables)."""

from xnat_prep import adapter, config, variables

sm = snakemake  # noqa: F821 - injected by Snakemake
with adapter.step(sm):
    variables.set_variables(
        **config.connection(sm.config),
        session_id=sm.params.session_id,
        values=variables.session_values(
            sm.input.converts,
            sm.params.prefix,
            sm.params.derived,
            sm.input.values[0] if sm.input.values else None,
            (sm.wildcards.session, sm.params.session_id),
        ),
        receipt=sm.output.receipt,
    )
