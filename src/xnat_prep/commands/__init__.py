"""The ``xnat-prep`` subcommands, one module each: ``add_arguments(parser)`` and ``run(args) -> int``.

The only place that parses arguments: each command turns its options into a call of one library
function (the workflow's rules run exactly these commands, so a rule's command line can be
copied and run by hand). ``cli.py`` configures logging once, before ``run``.
"""
