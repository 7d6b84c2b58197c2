"""Scale without data: a synthetic manifest of N scans, the DAG it gives, a no-op rerun over it,
and how many cluster jobs the Slurm profile would submit for it.

The manifest is written with discovery's own writer, so it is exactly what ``discover`` would
leave for a study of that shape. Nothing here talks to a server: the dry-runs never do, and the
no-op rerun has nothing to do (every output is synthesised, in dependency order so that each is
newer than its inputs, which is how Snakemake decides that a job is done).
"""

from __future__ import annotations

import re
from dataclasses import astuple, dataclass
from pathlib import Path

from xnat_prep import paths
from xnat_prep.discover import Discovery, write
from xnat_prep.manifest import FileRow, ScanRow, SessionIdentity, SessionRow

PROJECT = "SCALE"
SCANS_PER_SESSION = 10
SESSIONS_PER_SUBJECT = 5
SCAN_TYPES = ("T1w", "T2w", "FLAIR", "fMRI_rest", "fMRI_task", "DWI", "fmap_AP", "fmap_PA", "SWI", "ASL")


@dataclass(frozen=True)
class Shape:
    subjects: int

    @property
    def sessions(self) -> int:
        return self.subjects * SESSIONS_PER_SUBJECT

    @property
    def scans(self) -> int:
        return self.sessions * SCANS_PER_SESSION


def shape_for(n_scans: int) -> Shape:
    """The study shape with ``n_scans`` scans (5 sessions of 10 scans per subject)."""
    per_subject = SESSIONS_PER_SUBJECT * SCANS_PER_SESSION
    if n_scans % per_subject:
        raise ValueError(f"{n_scans} scans is not a multiple of {per_subject}")
    return Shape(n_scans // per_subject)


def _labels(shape: Shape) -> list[tuple[str, str, str, str, str]]:
    """(subject, subject_id, session, session_id, session key) for each session."""
    out = []
    for s in range(shape.subjects):
        for e in range(SESSIONS_PER_SUBJECT):
            n = s * SESSIONS_PER_SUBJECT + e
            out.append((f"S{s:05d}", f"XNAT_S{s:05d}", f"S{s:05d}_MR{e + 1}", f"XNAT_E{n:06d}", ""))
    return out


def write_subjects(csv_path: Path, shape: Shape) -> None:
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f'"{PROJECT}","S{s:05d}"\n' for s in range(shape.subjects)]
    csv_path.write_text('"Project","Subject"\n' + "".join(rows), encoding="utf-8")


def write_manifest(root: Path, shape: Shape) -> list[ScanRow]:
    """The manifest discovery would write for this shape (2 files per scan in the file lists)."""
    result = Discovery()
    for subject, subject_id, session, session_id, _ in _labels(shape):
        files = []
        identity = astuple(
            SessionIdentity(PROJECT, subject, subject_id, session, session_id, "xnat:mrSessionData")
        )
        for i, scan_type in enumerate(SCAN_TYPES, start=1):
            scan = paths.scan_dir(str(i), scan_type)
            result.scans.append(
                ScanRow(
                    *identity,
                    str(i),
                    scan_type,
                    scan_type,
                    scan,
                    "DICOM",
                    2,
                    2048,
                )
            )
            files += [
                FileRow(
                    str(i),
                    "DICOM",
                    f"{k:04d}.dcm",
                    1024,
                    "0" * 32,
                    f"/data/experiments/{session_id}/scans/{i}/resources/DICOM/files/{k:04d}.dcm",
                )
                for k in (1, 2)
            ]
        result.sessions.append(
            SessionRow(
                *identity,
                SCANS_PER_SESSION,
                SCANS_PER_SESSION * 2048,
            )
        )
        result.files[(PROJECT, subject, session)] = files
    write(root, result)
    return result.scans


def write_outputs(root: Path, scans: list[ScanRow]) -> None:
    """Every declared output of every job after discovery, each stage after the one before."""
    receipt = "{}\n"
    sessions = sorted({(r.project, r.subject, r.session) for r in scans})
    for key in sessions:
        _touch(paths.session_download_receipt(root, *key), receipt)
    if hasattr(paths, "session_convert_receipt"):  # one convert job per session
        for key in sessions:
            _touch(paths.session_convert_receipt(root, *key), receipt)
    else:  # the layout before 2026-12-02: one per scan
        for row in scans:
            _touch(paths.convert_receipt(root, row.project, row.subject, row.session, row.scan), receipt)
    for key in sessions:
        _touch(paths.upload_receipt(root, *key), receipt)
        _touch(paths.variables_receipt(root, *key), receipt)
    # A summary with no rows: the workflow's end-of-run check finds no problem in it.
    _touch(root / paths.SUMMARY_TSV, "project\tsubject\tsession\tscan_id\tscan_type\tstate\tmessage\n")
    _touch(root / paths.DATA_AMOUNT_TSV, "project\n")
    _touch(root / paths.DATA_AMOUNT_PNG, "")


def _touch(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


_GROUP_HEADER = re.compile(r"^\[[^\]]*\] Group job ", re.M)
_TOP_RULE = re.compile(r"^rule (\w+):", re.M)  # unindented: a job outside any group
# a group member: its indented rule line and, a few lines on, its wildcards
_MEMBER = re.compile(r"^    rule (\w+):\n(?:        .*\n)*?        wildcards: (.*)$", re.M)
_COUNT = re.compile(r"^(\w+)\s+(\d+)$", re.M)


@dataclass(frozen=True)
class ClusterJobs:
    """What a dry-run says a cluster executor would submit."""

    groups: int  # distinct group jobs
    singles: int  # jobs outside any group that are not local
    largest_group: int  # member jobs of the biggest group job
    relisted: int  # group jobs the dry-run listed again (same members): a Snakemake loop

    @property
    def submissions(self) -> int:
        return self.groups + self.singles


def cluster_jobs(dry_run_log: str, local_rules: set[str]) -> ClusterJobs:
    """Count submissions in a dry-run's output: one per distinct group job, one per job outside
    a group whose rule is not local. Group jobs are identified by their members, because a
    dry-run of grouped jobs behind a checkpoint can list the same group job again and again."""
    blocks = _GROUP_HEADER.split(dry_run_log)
    singles = sum(1 for rule in _TOP_RULE.findall(blocks[0]) if rule not in local_rules)
    groups: set[frozenset[str]] = set()
    listed = 0
    for block in blocks[1:]:
        # a group's members are indented; the first unindented job line after them is not one
        body, _, rest = block.partition("\nrule ")
        members = frozenset(_MEMBER.findall(body))
        groups.add(members)
        listed += 1
        singles += sum(1 for rule in _TOP_RULE.findall("rule " + rest) if rest and rule not in local_rules)
    largest = max(map(len, groups), default=0)
    return ClusterJobs(len(groups), singles, largest, listed - len(groups))


def job_counts(dry_run_log: str) -> dict[str, int]:
    """The dry-run's "Job stats" table as rule -> count (``total`` included)."""
    stats = dry_run_log.rsplit("Job stats:", 1)
    return {k: int(v) for k, v in _COUNT.findall(stats[1])} if len(stats) == 2 else {}


def nothing_to_do(log: str) -> bool:
    return "Nothing to be done" in log
