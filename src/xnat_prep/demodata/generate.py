"""Demo studies on disk: ``{out}/{subject}/{session}/{series}-{desc}/NNNN.dcm`` and a subject CSV."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from xnat_prep.demodata.dicom import SessionInfo, write_series
from xnat_prep.demodata.protocols import PROTOCOL_NAMES, SIZES, SeriesSpec, session_protocol
from xnat_prep.errors import UserError
from xnat_prep.paths import scan_dir

LabelStyle = Literal["prefixed", "numeric"]
# Header of the subject CSV, after XNAT's subject listing "Download CSV" (extra columns included
# so that readers prove they pick Project/Subject by name and ignore the rest).
CSV_COLUMNS = ("Project", "Subject", "M/F", "YOB", "MR Sessions")


@dataclass(frozen=True)
class PlannedSession:
    subject: str
    session: str
    session_index: int  # 0-based visit number of the subject


def plan_sessions(
    n_subjects: int,
    n_sessions: int,
    style: LabelStyle = "prefixed",
    subject_labels: Sequence[str] | None = None,
) -> list[PlannedSession]:
    """Subject and session labels: ``SUB001``/``SUB001_MR1`` or, numeric style, ``001``/``00101``.

    ``subject_labels`` replaces the generated subject labels (sessions become ``{label}_MR{n}``).
    """
    if n_subjects < 1 or n_sessions < 1:
        raise UserError(f"--subjects and --sessions must be at least 1 (got {n_subjects}, {n_sessions})")
    if subject_labels is not None:
        if len(subject_labels) != n_subjects or len(set(subject_labels)) != n_subjects:
            raise UserError(f"need {n_subjects} distinct subject labels, got {list(subject_labels)}")
        return [PlannedSession(s, f"{s}_MR{j + 1}", j) for s in subject_labels for j in range(n_sessions)]
    plans = []
    for i in range(1, n_subjects + 1):
        subject = f"{i:03d}" if style == "numeric" else f"SUB{i:03d}"
        for j in range(n_sessions):
            session = f"{subject}{j + 1:02d}" if style == "numeric" else f"{subject}_MR{j + 1}"
            plans.append(PlannedSession(subject, session, j))
    return plans


def series_folder(spec: SeriesSpec) -> str:
    """``{SeriesNumber}-{SeriesDescription}`` named as the workflow names scans (``7-unknown`` if empty)."""
    return scan_dir(str(spec.number), spec.description)


def write_session(
    dest: Path, info: SessionInfo, size: str, edge_cases: bool = False, protocol: str = "default"
) -> list[Path]:
    """Write every series of one session under ``dest``; return the series folders (``protocol``:
    default, or the BIDS-typical ``bids``/``reproin`` session, see ``protocols.bids_protocol``)."""
    if size not in SIZES:
        raise UserError(f"unknown size {size!r}: choose one of {', '.join(SIZES)}")
    folders = []
    if protocol not in PROTOCOL_NAMES:
        raise UserError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOL_NAMES)}")
    for spec in session_protocol(size, edge_cases, protocol):
        folder = dest / series_folder(spec)
        write_series(info, spec, folder)
        folders.append(folder)
    return folders


def write_subjects_csv(path: Path, project: str, plans: Sequence[PlannedSession], seed: int = 0) -> None:
    """One row per subject; UTF-8 with a byte-order mark and every field quoted, as spreadsheets
    exported from a web UI often are, so the workflow's reader is tested on the harder form."""
    counts: dict[str, int] = {}
    first: dict[str, PlannedSession] = {}
    for p in plans:
        counts[p.subject] = counts.get(p.subject, 0) + 1
        first.setdefault(p.subject, p)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL)
        writer.writerow(CSV_COLUMNS)
        for subject, p in first.items():
            demo = SessionInfo(project, subject, p.session, seed).demographics
            writer.writerow([project, subject, demo.sex, demo.birth.year, counts[subject]])


def generate(
    out: Path,
    size: str = "tiny",
    n_subjects: int = 1,
    n_sessions: int = 1,
    seed: int = 0,
    edge_cases: bool = False,
    project: str = "DEMO",
    style: LabelStyle = "prefixed",
    protocol: str = "default",
) -> list[PlannedSession]:
    """Write a whole demo study under ``out`` (plus ``out/subjects.csv``); return its sessions."""
    plans = plan_sessions(n_subjects, n_sessions, style)
    for p in plans:
        info = SessionInfo(project, p.subject, p.session, seed, p.session_index)
        write_session(out / p.subject / p.session, info, size, edge_cases, protocol)
    write_subjects_csv(out / "subjects.csv", project, plans, seed)
    return plans
