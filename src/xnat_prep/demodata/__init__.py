"""Synthetic MR DICOM sessions (``generate``), real Siemens samples, and server seeding.

``seed_server`` is imported on first use: it pulls in xnatpy, which generation does not need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xnat_prep.demodata.generate import generate, plan_sessions, write_session, write_subjects_csv
from xnat_prep.demodata.protocols import SIZES, session_protocol
from xnat_prep.demodata.samples import siemens_samples

if TYPE_CHECKING:
    from xnat_prep.demodata.seed import seed_server

__all__ = [
    "SIZES",
    "generate",
    "plan_sessions",
    "seed_server",
    "session_protocol",
    "siemens_samples",
    "write_session",
    "write_subjects_csv",
]


def __getattr__(name: str) -> Any:
    if name == "seed_server":
        from xnat_prep.demodata.seed import seed_server

        return seed_server
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
