"""What every rule's step shares, as a ``script:`` adapter or through the CLI's ``--log``: the rule's
log file, and one-line errors."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

from xnat_prep.errors import UserError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def logged(path: str, name: str) -> Iterator[None]:
    """Log into ``path`` while the block runs (``name``: the step, as the logger's name).

    A UserError is the user's to fix: it goes to the log and, as one line, to stderr (the
    terminal), and the process exits with status 2. Anything else is a bug: full traceback in the log.
    """
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        yield
    except UserError as exc:
        logging.getLogger(name).error("%s", exc)
        print(f"xnat-prep {name}: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception:
        logging.getLogger(name).exception("failed")
        raise
    finally:
        root.removeHandler(handler)
        handler.close()


def step(snakemake: Any) -> contextlib.AbstractContextManager[None]:
    """Run one ``script:`` rule's step with logging into the rule's log file (see ``logged``)."""
    return logged(snakemake.log[0], snakemake.rule)
