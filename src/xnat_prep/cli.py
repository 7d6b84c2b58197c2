"""`xnat-prep` console script: dispatches to one module per subcommand.

Each command module defines ``add_arguments(parser)`` and ``run(args) -> int``. Only the chosen
module is imported, so a per-scan job does not pay for importing the server or xnatpy.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from xnat_prep import __version__
from xnat_prep.errors import UserError

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "server": ("xnat_prep.server.cli", "run the bundled XNAT-compatible server"),
    "users": ("xnat_prep.server.users_cli", "manage a users file for the bundled server"),
    "demo-data": ("xnat_prep.demodata.cli", "generate synthetic DICOM sessions, or seed a server with them"),
    "validate": ("xnat_prep.validate_cli", "check a workflow config and subject CSV offline"),
    "discover": ("xnat_prep.discover", "list subjects' sessions, scans and files into a manifest"),
    "download-session": ("xnat_prep.download", "download a session's scans' DICOM, verified and resumable"),
    "convert-scan": ("xnat_prep.convert", "convert one scan's DICOM to NIfTI with dcm2niix"),
    "pseudonymise": (
        "xnat_prep.commands.pseudonymise",
        "pseudonymise a subject's DICOM (keyed, PS3.15 profile)",
    ),
    "upload-session": ("xnat_prep.upload", "upload a session's NIfTI results to XNAT"),
    "set-variables": ("xnat_prep.variables", "write custom variables on a session"),
    "report": ("xnat_prep.report", "summarise a run"),
    "token": ("xnat_prep.token_cli", "mint or invalidate an XNAT alias token"),
    "demo": ("xnat_prep.demo", "run the whole workflow end to end on the bundled demo server"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xnat-prep", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"xnat-prep {__version__}")
    parser.add_argument(
        "--log", metavar="FILE", help="log into FILE (errors still also go to stderr, as one line)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def _command(argv: list[str]) -> str | None:
    """The subcommand's name: the first word that is not an option (or ``--log``'s value)."""
    words = iter(argv)
    for word in words:
        if word == "--log":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = _command(argv)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        if args.log:  # a rule's `shell:` job: the log file is the rule's log
            from xnat_prep.adapter import logged

            with logged(args.log, args.command):
                return module.run(args) or 0
        return module.run(args) or 0
    except UserError as exc:
        print(f"xnat-prep {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
