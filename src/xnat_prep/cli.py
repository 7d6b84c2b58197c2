"""`xnat-prep` console script: dispatches to one module per subcommand (``xnat_prep.commands``).

Each command module defines ``add_arguments(parser)`` and ``run(args) -> int``. Only the chosen
module is imported, so a per-scan job does not pay for importing the server or xnatpy. Logging is
configured here, once: into the rule's log file with ``--log`` (a workflow job), else to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import keyword
import logging
import os
import sys
from collections.abc import Iterator

from xnat_prep import __version__, process, slots
from xnat_prep.errors import UserError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# command name -> one-line help; the module is xnat_prep.commands.<name with _ for -> (and a
# trailing _ for a Python keyword: import -> import_)
COMMANDS: dict[str, str] = {
    "validate": "check a workflow config and subject CSV offline",
    "discover": "list subjects' sessions, scans and files into a manifest",
    "download-session": "download a session's scans' DICOM, verified and resumable",
    "pseudonymise": "pseudonymise a subject's DICOM (keyed UIDs and dates, PS3.15 profile)",
    "convert-session": "convert a session's scans' DICOM to NIfTI with dcm2niix, resumable per scan",
    "convert-scan": "convert one scan's DICOM to NIfTI with dcm2niix",
    "upload-session": "upload a session's NIfTI results to XNAT",
    "set-variables": "write custom variables on a session",
    "plan": "what a run will do (scans, bytes, requests, jobs, disk, time), before any download",
    "bids-init": "draft a bids.yaml mapping from the plan's inventory (one commented rule per series)",
    "bids-dataset": "write the BIDS dataset (output_root/bids) from the converted scans, by bids.yaml",
    "bids-validate": "run the official BIDS validator (bids-validator-deno) on a dataset",
    "import": "import DICOM sessions from a CSV into XNAT (preflight, plan, safe reruns)",
    "upload-resources": "upload files (NIfTI or any) from a CSV into scan or session resources",
    "push": "import pseudonymised session copies into a target project or server",
    "report": "summarise a run",
    "summary": "what projects hold on XNAT: subjects, sessions, scans by type, files, bytes",
    "token": "mint or invalidate an XNAT alias token",
    "demo": "run the whole workflow end to end on the bundled demo server",
    "demo-data": "generate synthetic DICOM sessions, or seed a server with them",
    "server": "run the bundled XNAT-compatible server",
    "users": "manage a users file for the bundled server",
}


def module_name(command: str) -> str:
    name = command.replace("-", "_")
    return "xnat_prep.commands." + (name + "_" if keyword.iskeyword(name) else name)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xnat-prep", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"xnat-prep {__version__}")
    parser.add_argument(
        "--log", metavar="FILE", help="log into FILE (errors still also go to stderr, as one line)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_ in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == command:
            importlib.import_module(module_name(name)).add_arguments(p)
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


def log_handler(path: str | None) -> logging.Handler:
    """Where the command logs: ``path`` (a rule's log file; UserError if it cannot be written) or stderr."""
    if not path:
        return logging.StreamHandler(sys.stderr)
    try:  # Snakemake makes a rule's log folder; a command run by hand may name a new one
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return logging.FileHandler(path, mode="w", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--log {path}: cannot write the log there ({exc.strerror or exc})") from None


@contextlib.contextmanager
def logging_to(handler: logging.Handler) -> Iterator[None]:
    """Log at INFO into ``handler``."""
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # its INFO lines are about its own choices
    logging.captureWarnings(True)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    process.exit_without_final_collection()
    command = _command(argv)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(module_name(args.command))
    slots.join()  # a workflow job shares the run's XNAT connection slots (none outside a run)
    log = logging.getLogger(args.command)
    try:
        handler = log_handler(args.log)
    except UserError as exc:
        print(f"xnat-prep {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    with logging_to(handler):
        try:
            if getattr(args, "receipt", None):  # a step's receipt: its rule's output, one writer
                from xnat_prep.fsutil import remove_stale_parts  # (only steps pay for the import)

                # the temporary file of a receipt whose writer was killed mid-write (not final-looking,
                # but litter beside the outputs); only this job writes that receipt
                remove_stale_parts(args.receipt)
            return module.run(args) or 0
        except UserError as exc:
            # The user's to fix: one line in the log and on stderr (the terminal), no traceback.
            if args.log:
                log.error("%s", exc)
            print(f"xnat-prep {args.command}: error: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            return 130
        except Exception:
            if args.log:  # a bug: the traceback goes to the rule's log (and, raised, to stderr)
                log.exception("failed")
            raise


if __name__ == "__main__":
    sys.exit(main())
