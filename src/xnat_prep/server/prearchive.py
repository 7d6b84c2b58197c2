"""Import service and prearchive endpoints.

* ``POST /data/services/import`` (zip or tar(.gz) of DICOM; ``project``, ``subject``, ``session``,
  ``overwrite=none|append|delete``, ``dest=/archive/...|/prearchive/projects/P``) answers exactly 200
  with the session's URI, as xnatpy requires.
* ``GET /data/prearchive/projects[/P[/TIMESTAMP/NAME[/scans[/N/resources[/R/files[/path]]]]]]``
* ``POST /data/services/archive?src=/prearchive/projects/P/TS/NAME`` archives a prearchive session;
  ``POST /data/services/prearchive/delete?src=...`` and ``DELETE /data/prearchive/projects/P/TS/NAME``
  remove one.

As XNAT does (docs/server.md, "Prearchive"):

* a second upload of a study (same project and StudyInstanceUID) into the prearchive is merged into
  the entry that holds it (its URI answered again), not made a second entry; files it has already
  are kept, not replaced;
* an entry whose session label is already a session of the project's archive has status
  ``CONFLICT`` (else ``READY``), set when the entry is built or merged into; archiving a CONFLICT
  entry needs ``overwrite=append`` or ``delete`` (409 otherwise);
* ``overwrite=append`` (import and archive) adds scans and files but never replaces a file the
  archived session has already: same-named files of the upload are dropped.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import TYPE_CHECKING, Any

from xnat_prep.server.access import check_read
from xnat_prep.server.errors import HTTPError
from xnat_prep.server.importer import ImportFailed, anonymize_session, parse_dest, read_session, xnat_label
from xnat_prep.server.resolve import safe_path
from xnat_prep.server.store import Conflict, Store
from xnat_prep.server.zipstream import ZipEntry, scan_zip_name

if TYPE_CHECKING:
    from xnat_prep.server.http import Handler

_stamp_lock = threading.Lock()
_last_stamp = [""]


def timestamp() -> str:
    """A unique prearchive timestamp ``YYYYMMDD_HHMMSSmmm`` (what xnatpy parses with %f)."""
    with _stamp_lock:
        while True:
            t = time.time()
            stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(t)) + f"{int(t * 1000) % 1000:03d}"
            if stamp != _last_stamp[0]:
                _last_stamp[0] = stamp
                return stamp
            time.sleep(0.001)


def require_write(h: Handler, project: str) -> None:
    if h.server.store.project(project) is None:
        raise HTTPError(404, f"project {project} not found")
    if not h.server.auth.can_write(h.require_user(), project):
        raise HTTPError(403, f"user '{h.user}' may not add data to project {project}")


def import_service(h: Handler) -> None:
    store = h.server.store
    user = h.require_user()
    q = h.query
    try:
        dest = parse_dest(q["dest"]) if q.get("dest") else {"area": "archive"}
    except ImportFailed as exc:
        raise HTTPError(400, str(exc)) from exc
    overwrite = q.get("overwrite", "none").lower()
    if overwrite not in ("none", "append", "delete"):
        raise HTTPError(400, "overwrite must be none, append or delete")
    project = q.get("project") or q.get("PROJECT_ID") or dest.get("project")
    if project:  # check before reading a possibly large body
        require_write(h, project)
    try:
        doc = read_session(store, h.body, h.server.options.dicom_name_template)
    except ImportFailed as exc:
        raise HTTPError(400, str(exc)) from exc
    project = project or doc["labels"]["project"]
    subject = q.get("subject") or q.get("SUBJECT_ID") or dest.get("subject") or doc["labels"]["subject"]
    session = q.get("session") or q.get("EXPT_LABEL") or dest.get("session") or doc["labels"]["session"]
    try:
        if not project or not subject or not session:
            raise HTTPError(
                400,
                "cannot tell project, subject and session: give project=, subject=, session= "
                "or set StudyDescription, PatientName and PatientID in the DICOM",
            )
        require_write(h, project)
        options = h.server.options
        if options.anonymize is not None:
            labels = {"project": project, "subject": subject, "session": session}
            anonymize_session(store, doc, options.anonymize, labels, options.dicom_name_template)
        if dest["area"] == "prearchive":
            h.send_text(f"{to_prearchive(store, project, subject, session, doc)}\r\n")
            return
        if overwrite == "append":
            store.discard_blobs(keep_existing_files(store, doc, store.experiment(session, project)))
        experiment_id = store.archive_session(doc, project, subject, session, overwrite, user)
    except Conflict as exc:
        store.discard_blobs(blobs(doc))
        raise HTTPError(
            409,
            f"session {exc} already exists in project {project}; use overwrite=append or overwrite=delete",
        ) from exc
    except BaseException:
        store.discard_blobs(blobs(doc))
        raise
    experiment = store.experiment(experiment_id)
    assert experiment is not None
    h.send_text(
        f"/data/archive/projects/{project}/subjects/{experiment.subject_id}/experiments/{experiment_id}\r\n"
    )


def to_prearchive(store: Store, project: str, subject: str, session: str, doc: dict[str, Any]) -> str:
    """Put an upload into the project's prearchive (merged into the entry of the same study if there
    is one) and return the entry's URI."""
    now = time.strftime("%Y-%m-%d %H:%M:%S.000")
    study = doc["fields"].get("UID", "")
    with _merge_lock:
        for p, stamp, name, old in store.prearchive(project):
            if p == project and study and old["fields"].get("UID") == study:
                merged = merge(store, old, doc)
                merged.update(uploaded=now, status=status(store, project, name))
                store.take_prearchive(project, stamp, name, keep_blobs=True)
                store.add_prearchive(project, stamp, name, merged)
                return f"/data/prearchive/projects/{project}/{stamp}/{name}"
        stamp, name = timestamp(), xnat_label(session)
        doc.update(subject=subject, uploaded=now, status=status(store, project, name))
        store.add_prearchive(project, stamp, name, doc)
    return f"/data/prearchive/projects/{project}/{stamp}/{name}"


_merge_lock = threading.Lock()


def status(store: Store, project: str, name: str) -> str:
    """CONFLICT when the project's archive has a session of that label already, else READY."""
    return "CONFLICT" if store.experiment(name, project) is not None else "READY"


def merge(store: Store, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new``'s scans and files added to ``old``'s (files ``old`` has already are kept, the new
    copies' blobs dropped)."""
    scans = {s["id"]: s for s in old["scans"]}
    dropped: list[str] = []
    for scan in new["scans"]:
        have = scans.get(scan["id"])
        if have is None:
            old["scans"].append(scan)
            continue
        paths = {f["path"] for f in have["files"]}
        for f in scan["files"]:
            if f["path"] in paths:
                dropped.append(f["blob"])
            else:
                have["files"].append(f)
    store.discard_blobs(dropped)
    return old


def keep_existing_files(store: Store, doc: dict[str, Any], experiment: Any) -> list[str]:
    """``overwrite=append`` never replaces a file the archived session has: drop such files from
    ``doc``; returns their blobs (for the caller to discard once nothing can go back)."""
    dropped: list[str] = []
    if experiment is None:
        return dropped
    for scan in doc["scans"]:
        resource = store.resource(f"scan:{experiment.id}/{scan['id']}", "DICOM")
        if resource is None:
            continue
        there = {f.path for f in store.files(resource.id)}
        dropped += [f["blob"] for f in scan["files"] if f["path"] in there]
        scan["files"] = [f for f in scan["files"] if f["path"] not in there]
    return dropped


def blobs(doc: dict[str, Any]) -> list[str]:
    return [f["blob"] for s in doc["scans"] for f in s["files"]]


def parse_src(src: str) -> tuple[str, str, str]:
    parts = [p for p in src.split("/") if p]
    if parts[:1] == ["data"]:
        parts = parts[1:]
    if len(parts) != 5 or parts[:2] != ["prearchive", "projects"]:
        raise HTTPError(400, f"src must be /prearchive/projects/P/TIMESTAMP/NAME, got {src!r}")
    return parts[2], parts[3], parts[4]


def archive_service(h: Handler) -> None:
    store = h.server.store
    user = h.require_user()
    project, stamp, name = parse_src(h.query.get("src", ""))
    require_write(h, project)
    overwrite = h.query.get("overwrite", "none").lower()
    if overwrite not in ("none", "append", "delete"):
        raise HTTPError(400, "overwrite must be none, append or delete")
    doc = find(h, project, stamp, name)
    target = h.query.get("project") or project
    require_write(h, target)
    subject = h.query.get("subject") or doc.get("subject") or doc["labels"]["subject"]
    session = h.query.get("session") or name
    existing = store.experiment(session, target)
    if existing is not None and overwrite == "none":
        raise HTTPError(
            409,
            f"session {session} already exists in project {target}; use overwrite=append or overwrite=delete",
        )
    entry = copy.deepcopy(doc)
    dropped = keep_existing_files(store, doc, existing) if overwrite == "append" else []
    store.take_prearchive(project, stamp, name, keep_blobs=True)
    try:
        experiment_id = store.archive_session(
            doc, target, subject, session, "delete" if overwrite == "delete" else "append", user
        )
    except BaseException:
        store.add_prearchive(project, stamp, name, entry)  # put it back: nothing was archived
        raise
    store.discard_blobs(dropped)
    experiment = store.experiment(experiment_id)
    assert experiment is not None
    h.send_text(
        f"/data/archive/projects/{target}/subjects/{experiment.subject_id}/experiments/{experiment_id}"
    )


def delete_service(h: Handler) -> None:
    project, stamp, name = parse_src(h.query.get("src", ""))
    delete(h, project, stamp, name)


def delete(h: Handler, project: str, stamp: str, name: str) -> None:
    require_write(h, project)
    if h.server.store.take_prearchive(project, stamp, name, keep_blobs=False) is None:
        raise HTTPError(404, f"no prearchive session {project}/{stamp}/{name}")
    h.send_text("")


def find(h: Handler, project: str, stamp: str, name: str) -> dict[str, Any]:
    check_read(h, project)
    for p, s, n, doc in h.server.store.prearchive(project):
        if (p, s, n) == (project, stamp, name):
            return doc
    raise HTTPError(404, f"no prearchive session {project}/{stamp}/{name}")


def session_row(project: str, stamp: str, name: str, doc: dict[str, Any]) -> dict[str, str]:
    fields = doc["fields"]
    return {
        "project": project,
        "timestamp": stamp,
        "lastmod": doc.get("uploaded", ""),
        "uploaded": doc.get("uploaded", ""),
        "scan_date": fields.get("date", ""),
        "scan_time": fields.get("time", ""),
        "subject": doc.get("subject", ""),
        "folderName": name,
        "name": name,
        "tag": fields.get("UID", ""),
        "status": doc.get("status", "READY"),
        "url": f"/prearchive/projects/{project}/{stamp}/{name}",
        "autoarchive": "Manual",
        "prevent_anon": "false",
        "prevent_auto_commit": "false",
        "SOURCE": "",
        "VISIT": "",
        "PROTOCOL": "",
        "TIMEZONE": "",
        "xsiType": doc["xsi_type"],
    }


def handle(h: Handler, parts: list[str]) -> None:
    """/data/prearchive/projects/..., ``parts`` starting after ``prearchive``."""
    store, user = h.server.store, h.require_user()
    if parts[:1] != ["projects"]:
        raise HTTPError(404, "no such prearchive resource")
    parts = parts[1:]
    if len(parts) <= 1:
        if parts:
            check_read(h, parts[0])
        visible = h.server.auth.readable_projects(user)
        rows = [
            session_row(*entry)
            for entry in store.prearchive(parts[0] if parts else None)
            if visible is None or entry[0] in visible
        ]
        h.send_result_set(rows)
        return
    if len(parts) < 3:
        raise HTTPError(404, "use /data/prearchive/projects/P/TIMESTAMP/NAME")
    project, stamp, name = parts[:3]
    if h.command == "DELETE" and len(parts) == 3:
        delete(h, project, stamp, name)
        return
    doc = find(h, project, stamp, name)
    rest = parts[3:]
    scans = doc["scans"]
    if not rest:
        if h.query.get("format", "").lower() == "zip":
            send_zip(h, name, scans)
        else:
            h.send_result_set([session_row(project, stamp, name, doc)])
        return
    if rest[0] != "scans":
        raise HTTPError(404, "no such prearchive resource")
    if len(rest) == 1:
        h.send_result_set(
            [
                {
                    "ID": s["id"],
                    "series_description": s["fields"].get("series_description", ""),
                    "type": s["fields"].get("type", ""),
                }
                for s in scans
            ]
        )
        return
    scan = next((s for s in scans if s["id"] == rest[1]), None)
    if scan is None:
        raise HTTPError(404, f"no scan {rest[1]}")
    base = f"/data/prearchive/projects/{project}/{stamp}/{name}/scans/{scan['id']}/resources/DICOM/files"
    if len(rest) == 2:
        send_zip(h, name, [scan])
    elif rest[2:] == ["resources"]:
        h.send_result_set(
            [
                {
                    "label": "DICOM",
                    "file_count": str(len(scan["files"])),
                    "file_size": str(sum(f["size"] for f in scan["files"])),
                }
            ]
        )
    elif rest[2:4] == ["resources", "DICOM"] and rest[4:5] == ["files"]:
        if len(rest) == 5:
            h.send_result_set(
                [
                    {
                        "Name": f["path"],
                        "Size": str(f["size"]),
                        "URI": f"{base}/{f['path']}",
                        "digest": f["md5"],
                    }
                    for f in scan["files"]
                ]
            )
            return
        path = safe_path(rest[5:])
        entry = next((f for f in scan["files"] if f["path"] == path), None)
        if entry is None:
            raise HTTPError(404, f"no file {path}")
        h.send_file(store.blob_path(entry["blob"]), entry["size"], path)
    else:
        raise HTTPError(404, "no such prearchive resource")


def send_zip(h: Handler, name: str, scans: list[dict[str, Any]]) -> None:
    store = h.server.store
    h.send_zip(
        [
            ZipEntry(
                scan_zip_name(name, s["id"], s["fields"].get("type", ""), "DICOM", f["path"]),
                store.blob_path(f["blob"]),
                f["size"],
                f.get("crc32"),
            )
            for s in scans
            for f in s["files"]
        ],
        name,
    )
