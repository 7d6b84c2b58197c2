"""The XNAT half of the preflight and the per-row decision: what is there, and what to do about it.

A cheap look: per project one experiments listing (labels, subject labels, study UIDs), one
prearchive listing and, once, the user's writable projects; per session already there its scans'
SeriesInstanceUIDs and its DICOM file listing (counts and digests). Decisions go by UIDs and file
counts, not by the md5 of what was uploaded: an XNAT with an anonymization script rewrites
headers on import, so its digests need not equal ours (``server_rewrites``). Where they can
(no rewriting) the digests are compared too, and a receipt of an earlier import tells us whether
the local files changed since.

- nothing (archive nor prearchive): import;
- the session with the same study, every series, same file counts: skip (the rerun: no modifying
  request);
- same study, some series missing: append if the row says append or replace, else partial;
- another study, or a series with other counts or files: replace if the row says so, else conflict;
- the study under another label, or the label under another subject: conflict;
- a prearchive entry of the study or label: archive it if asked (READY), else pending.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xnat_prep.importing.local import LocalSession
from xnat_prep.xnat_api import AccessDenied, Client, NotFound

WRITES = frozenset({"import", "append", "replace", "archive"})
PROBLEMS = frozenset({"conflict", "partial", "denied"})
_SCAN_IN_URI = re.compile(r"/scans/([^/]+)/resources/")


@dataclass
class RemoteScan:
    scan_id: str
    uid: str
    digests: list[str] = field(default_factory=list)  # of its DICOM files, sorted

    @property
    def n_files(self) -> int:
        return len(self.digests)


@dataclass
class Remote:
    """What XNAT holds for one row."""

    session_id: str = ""  # the archived session with the row's label, if any
    subject: str = ""
    study_uid: str = ""
    scans: dict[str, RemoteScan] = field(default_factory=dict)  # by SeriesInstanceUID
    same_study_as: str = ""  # another session label of the project holding the row's study
    prearchive: list[dict[str, Any]] = field(default_factory=list)
    writable: bool = True
    problem: str = ""  # the project cannot be read

    def summary(self) -> str:
        parts = []
        if self.session_id:
            n = sum(s.n_files for s in self.scans.values())
            parts.append(f"archived {self.session_id}: {len(self.scans)} series, {n} files")
        parts += [f"prearchive {p.get('status', '?')} {p.get('url', '')}" for p in self.prearchive]
        return "; ".join(parts) or "absent"


@dataclass
class Decision:
    action: str  # import | append | replace | archive | skip | pending | conflict | partial | denied
    reason: str
    overwrite: str = "none"
    series: list[str] = field(default_factory=list)  # SeriesInstanceUIDs to send
    prearchive_src: str = ""


@dataclass
class ProjectState:
    experiments: list[dict[str, Any]]
    prearchive: list[dict[str, Any]]
    problem: str = ""


def session_scans(client: Client, session_id: str) -> dict[str, RemoteScan]:
    """A session's scans by SeriesInstanceUID with their DICOM files' digests (two GETs)."""
    uids = client.scan_uids(session_id)
    digests: dict[str, list[str]] = {scan_id: [] for scan_id in uids}
    for row in client.session_files(session_id):
        if str(row.get("collection", "DICOM")) != "DICOM":
            continue  # NIfTI, snapshots and the like are not what an import brings
        match = _SCAN_IN_URI.search(str(row.get("URI", "")))
        if match and match.group(1) in digests:
            digests[match.group(1)].append(str(row.get("digest", "")))
    return {
        uid or f"scan {scan_id}": RemoteScan(scan_id, uid, sorted(digests[scan_id]))
        for scan_id, uid in uids.items()
    }


def project_state(client: Client, project: str) -> ProjectState:
    try:
        return ProjectState(client.project_experiments(project), client.prearchive_sessions(project))
    except (NotFound, AccessDenied):
        return ProjectState([], [], f"project {project} not found on {client.host} (or not visible to you)")


def look(client: Client, sessions: Sequence[LocalSession]) -> dict[str, Remote]:
    """What XNAT holds for each row (by row key): 2 GETs per project + 2 per session present."""
    projects = {
        project: project_state(client, project) for project in dict.fromkeys(s.row.project for s in sessions)
    }
    writable = client.writable_projects()
    out = {}
    for s in sessions:
        state = projects[s.row.project]
        out[s.row.key] = remote_of(client, s, state, writable)
    return out


def remote_of(client: Client, local: LocalSession, state: ProjectState, writable: set[str] | None) -> Remote:
    row = local.row
    remote = Remote(writable=writable is None or row.project in writable, problem=state.problem)
    for e in state.experiments:
        if e.get("label") == row.session:
            remote.session_id = str(e.get("ID", ""))
            remote.subject = str(e.get("subject_label", ""))
            remote.study_uid = str(e.get("UID", ""))
        elif local.study_uid and e.get("UID") == local.study_uid:
            remote.same_study_as = str(e.get("label", ""))
    if remote.session_id:
        remote.scans = session_scans(client, remote.session_id)
    remote.prearchive = [
        p
        for p in state.prearchive
        if p.get("tag") == local.study_uid
        or p.get("name") == row.session
        or p.get("folderName") == row.session
    ]
    return remote


def decide(
    local: LocalSession,
    remote: Remote,
    *,
    previous: Mapping[str, Any] | None = None,
    server_rewrites: bool = False,
    archive_pending: bool = False,
    own: bool = False,
) -> Decision:
    """The row's decision. ``previous``: the receipt of an earlier import of this row (its
    ``series`` md5 lists tell whether the local files changed since). ``own``: XNAT's state may be
    the remains of our own import that failed half-way, so missing or short series are appended."""
    row = local.row
    writes = _decide(local, remote, previous, server_rewrites, archive_pending, own)
    if writes.action in WRITES and not remote.writable:
        return Decision(
            "denied", f"you may not add data to project {row.project} (role owner or member needed)"
        )
    return writes


def _decide(
    local: LocalSession,
    remote: Remote,
    previous: Mapping[str, Any] | None,
    server_rewrites: bool,
    archive_pending: bool,
    own: bool,
) -> Decision:
    row = local.row
    if remote.problem:
        return Decision("conflict", remote.problem)
    if remote.same_study_as:
        return Decision(
            "conflict",
            f"study {local.study_uid} is already in {row.project} as session {remote.same_study_as}",
        )
    if remote.session_id:
        return _present(local, remote, previous, server_rewrites, own)
    if len(remote.prearchive) > 1:
        urls = ", ".join(str(p.get("url", "")) for p in remote.prearchive)
        return Decision(
            "conflict", f"{len(remote.prearchive)} prearchive entries match: {urls}; resolve them in XNAT"
        )
    if remote.prearchive:
        entry = remote.prearchive[0]
        status, url = str(entry.get("status", "")), str(entry.get("url", ""))
        if entry.get("tag") and entry.get("tag") != local.study_uid:
            return Decision("conflict", f"prearchive entry {url} holds another study ({entry.get('tag')})")
        if status.upper() != "READY":
            return Decision("conflict", f"prearchive entry {url} is in state {status}; resolve it in XNAT")
        if archive_pending:
            return Decision("archive", f"archive prearchive entry {url}", prearchive_src=url)
        return Decision("pending", f"in the prearchive ({status}) at {url}; --archive-pending archives it")
    return Decision(
        "import", f"not in XNAT: {len(local.series)} series, {local.n_files} files", series=list(local.series)
    )


def _present(
    local: LocalSession, remote: Remote, previous: Mapping[str, Any] | None, server_rewrites: bool, own: bool
) -> Decision:
    row = local.row
    everything = list(local.series)
    if remote.subject and remote.subject != row.subject:
        return Decision("conflict", f"session {row.session} exists under subject {remote.subject}")
    if remote.study_uid and remote.study_uid != local.study_uid:
        reason = f"session {row.session} holds another study ({remote.study_uid})"
        return _replace_or_conflict(row.on_conflict, reason, everything)
    missing, changed, short = [], [], []
    before = {s["uid"]: s.get("md5", []) for s in (previous or {}).get("series", [])}
    for uid, series in local.series.items():
        there = remote.scans.get(uid)
        if there is None:
            missing.append(uid)
        elif there.n_files < len(series.files) and own:
            short.append(uid)
        elif there.n_files != len(series.files):
            changed.append(f"series {series.number}: {there.n_files} files in XNAT, {len(series.files)} here")
        elif not server_rewrites and all(there.digests) and Counter(there.digests) != Counter(series.md5s):
            changed.append(f"series {series.number}: files differ from XNAT's (md5)")
        elif uid in before and sorted(before[uid]) != series.md5s:
            changed.append(
                f"series {series.number}: files changed since the import of {previous.get('date', '')}"
            )  # type: ignore[union-attr]
    if changed:
        return _replace_or_conflict(row.on_conflict, "; ".join(changed), everything)
    if missing or short:
        todo = missing + short
        reason = f"{len(todo)} of {len(local.series)} series not (all) in XNAT"
        if own or row.on_conflict in ("append", "replace"):
            return Decision("append", reason, overwrite="append", series=todo)
        return Decision("partial", reason + "; set on_conflict to append to add them")
    extra = len(remote.scans) - len(local.series)
    more = f"; XNAT has {extra} more series" if extra > 0 else ""
    return Decision("skip", f"in XNAT as {remote.session_id} (same study, series and file counts){more}")


def _replace_or_conflict(on_conflict: str, reason: str, series: list[str]) -> Decision:
    if on_conflict == "replace":
        return Decision(
            "replace", reason + " (replaced: on_conflict is replace)", overwrite="delete", series=series
        )
    return Decision("conflict", reason + "; nothing written (on_conflict replace would replace it)")
