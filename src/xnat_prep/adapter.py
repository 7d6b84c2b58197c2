"""What every thin ``script:`` adapter in ``scripts/`` shares: the rule's log and one-line errors."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

from xnat_prep.errors import UserError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def step(snakemake: Any) -> Iterator[None]:
    """Run one rule's step with logging into the rule's log file.

    A UserError is the user's to fix: it goes to the log and, as one line, to stderr (the
    terminal), and the job exits with status 2. Anything else is a bug: full traceback in the log.
    """
    handler = logging.FileHandler(snakemake.log[0], mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        yield
    except UserError as exc:
        logging.getLogger(snakemake.rule).error("%s", exc)
        print(f"xnat-prep {snakemake.rule}: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception:
        logging.getLogger(snakemake.rule).exception("failed")
        raise
    finally:
        root.removeHandler(handler)
        handler.close()
