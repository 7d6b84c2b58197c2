"""The XNAT calls the product makes, on the one policy of ``http.Session``.

Each is one REST request (or a fixed few) whose answer shape ``docs/architecture.md`` fixes;
callers get plain Python values, never a response object.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from xnat_prep import credentials as creds_mod
from xnat_prep.xnat_api.http import Body, NotFound, Session, XnatError

# Columns asked for in each listing: only what the manifest needs.
SUBJECT_COLUMNS = "ID,label"
EXPERIMENT_COLUMNS = "ID,label,xsiType,date"
SCAN_COLUMNS = "ID,type,series_description,xsiType"
# The project-wide scan search (DAX's ``SCAN_PROJ_POST_URI`` and ``rcq/projectinfo.py``): session
# columns (the ones DAX asks this search for: ID, label, subject_label, .../subject_id, .../date;
# xsiType, which DAX reads without asking) on every scan row.
PROJECT_SCAN_COLUMNS = (
    "ID,label,xsiType,subject_label,xnat:imagesessiondata/subject_id,xnat:imagesessiondata/date,"
    "xnat:imagescandata/id,xnat:imagescandata/type,xnat:imagescandata/series_description"
)
# For the import direction: the study and series UIDs decide whether a session is already there.
# (XNAT's listings take data-type fields as columns; `UID` is imageSessionData/imageScanData's.)
PROJECT_EXPERIMENT_COLUMNS = "ID,label,subject_ID,subject_label,xsiType,date,UID"
SCAN_UID_COLUMNS = "ID,type,series_description,UID"
WRITE_ROLES = frozenset({"owner", "member"})


def _q(part: str) -> str:
    return quote(part, safe="")


def file_path(row: Mapping[str, Any]) -> str:
    """A file row's path in its resource: the text after ``/files/`` of its URI (else its Name)."""
    uri = str(row.get("URI", ""))
    return uri.split("/files/", 1)[1] if "/files/" in uri else str(row.get("Name", ""))


class Client(Session):
    """A ``Session`` with the product's XNAT calls."""

    # -- discovery -------------------------------------------------------------------------------

    def subjects(self, project: str) -> list[dict[str, Any]]:
        return self.rows(
            f"/data/projects/{_q(project)}/subjects", {"columns": SUBJECT_COLUMNS}, required=("ID", "label")
        )

    def experiments(self, project: str, subject_id: str) -> list[dict[str, Any]]:
        path = f"/data/projects/{_q(project)}/subjects/{_q(subject_id)}/experiments"
        return self.rows(path, {"columns": EXPERIMENT_COLUMNS}, required=("ID", "label", "xsiType"))

    def scans(self, session_id: str) -> list[dict[str, Any]]:
        return self.rows(
            f"/data/experiments/{_q(session_id)}/scans", {"columns": SCAN_COLUMNS}, required=("ID",)
        )

    def project_scans(self, project: str) -> list[dict[str, Any]]:
        """One row per scan of every image session of a project, each with its session's label,
        type, subject and date: one request (XNAT's search over ``xnat:imagescandata`` columns, as
        DAX lists a project). The search is a left join from the session: a session without scans
        is one row with empty scan columns. Keys are the column names (xpaths lower-cased)."""
        params = {"project": project, "xsiType": "xnat:imageSessionData", "columns": PROJECT_SCAN_COLUMNS}
        return self.rows("/data/experiments", params, required=("ID", "xnat:imagescandata/id"))

    def session_files(self, session_id: str) -> list[dict[str, Any]]:
        """Every file of every scan resource of a session (with ``digest``) in one listing."""
        return self.rows(
            f"/data/experiments/{_q(session_id)}/scans/ALL/files", required=("URI", "Size", "collection")
        )

    def dicom_values(
        self, project: str, session_id: str, scan_id: str, keywords: list[str]
    ) -> dict[str, str]:
        """Top-level header elements of a scan's first DICOM file (XNAT's DICOM dump service):
        tag -> value, as ``(GGGG,EEEE)`` strings; one request."""
        src = f"/archive/projects/{project}/experiments/{session_id}/scans/{scan_id}"
        params = [("src", src), *(("field", k) for k in keywords)]
        return {
            str(r.get("tag1", "")): str(r.get("value", ""))
            for r in self.rows("/data/services/dicomdump", params)
            if not r.get("tag2")
        }

    # -- resources (of a scan, or of a session when scan_id is "") -----------------------------------

    def scan_resource_uri(self, session_id: str, scan_id: str, label: str) -> str:
        """A resource's URI: the scan's, or the session's own when ``scan_id`` is empty."""
        owner = f"/data/experiments/{_q(session_id)}" + (f"/scans/{_q(scan_id)}" if scan_id else "")
        return f"{owner}/resources/{_q(label)}"

    def scan_resources(self, session_id: str, scan_id: str) -> set[str]:
        """The resource labels of a scan (or the session's own with ``scan_id`` ""); ``NotFound``
        when the session has no such scan."""
        owner = f"/data/experiments/{_q(session_id)}" + (f"/scans/{_q(scan_id)}" if scan_id else "")
        return {str(r.get("label", "")) for r in self.rows(f"{owner}/resources")}

    def resource_digests(self, session_id: str, scan_id: str, label: str) -> dict[str, str]:
        """File path in the resource -> md5 digest as XNAT reports it ({} for no resource)."""
        try:
            rows = self.rows(self.scan_resource_uri(session_id, scan_id, label) + "/files")
        except NotFound:
            return {}
        return {file_path(row): str(row.get("digest", "")) for row in rows}

    def create_resource(self, session_id: str, scan_id: str, label: str, format: str) -> None:
        """Create a resource; one that exists already (a retried PUT that had worked) is fine."""
        try:
            self.put(self.scan_resource_uri(session_id, scan_id, label), {"format": format})
        except XnatError as exc:
            if exc.status != 409 or label not in self.scan_resources(session_id, scan_id):
                raise

    def upload_file(
        self, session_id: str, scan_id: str, label: str, name: str, path: Path, overwrite: bool = True
    ) -> None:
        """PUT one file into a resource; with ``overwrite`` a file of that name is replaced (safe to
        repeat), without it XNAT refuses to replace one."""
        uri = self.scan_resource_uri(session_id, scan_id, label) + "/files/" + quote(name)
        query = {"inbody": "true"} | ({"overwrite": "true"} if overwrite else {})
        self.put(uri, query, body=Path(path))

    # -- the import direction ------------------------------------------------------------------

    def project_experiments(self, project: str) -> list[dict[str, Any]]:
        """Every experiment of a project with its label, subject, type, date and study UID (one GET):
        the summary's sessions and the import direction's "is this study there already"."""
        return self.rows(f"/data/projects/{_q(project)}/experiments", {"columns": PROJECT_EXPERIMENT_COLUMNS})

    def scan_uids(self, session_id: str) -> dict[str, str]:
        """Scan ID -> SeriesInstanceUID (as XNAT took it from the scan's first file)."""
        rows = self.rows(f"/data/experiments/{_q(session_id)}/scans", {"columns": SCAN_UID_COLUMNS})
        return {str(r.get("ID", "")): str(r.get("UID", "")) for r in rows}

    def writable_projects(self) -> set[str] | None:
        """Projects the user may add data to (role owner or member), or None when XNAT does not say
        (no ``/xapi/access/projects``): then the import request itself is the check."""
        try:
            rows = self.get_json("/xapi/access/projects")
        except NotFound:
            return None
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "role" in r for r in rows):
            return None
        # XNAT names roles "owner"/"member" or, in some versions, the group "Owners"/"Members"
        return {str(r.get("ID")) for r in rows if str(r["role"]).lower().rstrip("s") in WRITE_ROLES}

    def prearchive_sessions(self, project: str) -> list[dict[str, Any]]:
        """A project's prearchive entries (``url``, ``name``, ``tag`` = StudyInstanceUID, ``status``)."""
        try:
            return self.rows(f"/data/prearchive/projects/{_q(project)}")
        except NotFound:
            return []

    def import_session(self, params: Mapping[str, str], body: Body) -> str:
        """``POST /data/services/import`` with a zip body (streamed); returns the URI XNAT answers
        (``/data/archive/...`` or ``/data/prearchive/...``). Repeated only when XNAT cannot have
        acted on it (the policy's rule for POST): the caller looks before it sends it again."""
        query = {"inbody": "true", "import-handler": "DICOM-zip", **params}
        answer = self.request(
            "POST",
            "/data/services/import",
            params=query,
            body=body,
            headers={"Content-Type": "application/zip"},
        )
        return answer.text.strip()  # type: ignore[union-attr]

    def archive_prearchived(self, src: str, params: Mapping[str, str]) -> str:
        """``POST /data/services/archive?src=/prearchive/projects/P/TS/NAME`` (+ project, subject,
        session, overwrite); returns the archived session's URI."""
        answer = self.request("POST", "/data/services/archive", params={"src": src, **params})
        return answer.text.strip()  # type: ignore[union-attr]

    def ensure_session(self, project: str, subject: str, session: str, xsi_type: str) -> str:
        """The ID of ``session`` of ``subject`` in ``project``, created (subject too) when missing.

        Two PUTs at most, each safe to repeat: a PUT of an existing subject or session changes
        nothing. Only for resource uploads: a DICOM import must not find the session pre-created
        (XNAT then merges through the prearchive).
        """
        for row in self.project_experiments(project):
            if row.get("label") == session:
                return str(row["ID"])
        base = f"/data/projects/{_q(project)}/subjects/{_q(subject)}"
        self.put(base, {"xsiType": "xnat:subjectData"})
        answer = self.put(f"{base}/experiments/{_q(session)}", {"xsiType": xsi_type})
        new_id = answer.text.strip()
        if new_id and "/" not in new_id and " " not in new_id:
            return new_id
        for row in self.project_experiments(project):
            if row.get("label") == session:
                return str(row["ID"])
        raise XnatError(f"{project}/{subject}/{session}: created, but XNAT does not list it")

    def ensure_scan(self, session_id: str, scan_id: str, xsi_type: str, fields: Mapping[str, str]) -> None:
        """Create a scan unless the session has it (one PUT, safe to repeat)."""
        if scan_id in self.scan_uids(session_id):
            return
        query = {"xsiType": xsi_type} | {f"{xsi_type}/{k}": v for k, v in fields.items() if v}
        self.put(f"/data/experiments/{_q(session_id)}/scans/{_q(scan_id)}", query)

    # -- custom variables ------------------------------------------------------------------------

    def experiment(self, session_id: str) -> tuple[str, dict[str, str]]:
        """An experiment's xsi type and its custom variables (names lower-cased as XNAT keeps them)."""
        data = self.get_json(f"/data/experiments/{_q(session_id)}")
        try:
            item = data["items"][0]
            xsi_type = str(item["meta"]["xsi:type"])
            fields: dict[str, str] = {}
            for child in item.get("children", []):
                if child.get("field") == "fields/field":
                    for entry in child.get("items", []):
                        values = entry["data_fields"]
                        fields[str(values["name"]).lower()] = str(values.get("field", ""))
        except (KeyError, IndexError, TypeError):
            raise XnatError(f"GET /data/experiments/{session_id}: not an XNAT experiment document") from None
        return xsi_type, fields

    def set_fields(self, session_id: str, xsi_type: str, values: Mapping[str, str]) -> None:
        """Set custom variables in one PUT (setting a value twice is harmless)."""
        query = {"xsiType": xsi_type}
        query.update({f"{xsi_type}/fields/field[name={k}]/field": v for k, v in values.items()})
        self.put(f"/data/experiments/{_q(session_id)}", query)

    # -- alias tokens ----------------------------------------------------------------------------

    def mint_token(self) -> creds_mod.Credentials:
        """Issue an alias token (``GET /data/services/tokens/issue``): a revocable stand-in password."""
        token = self.get_json("/data/services/tokens/issue")
        try:
            return creds_mod.Credentials(
                token["alias"], token["secret"], f"alias token issued by {self.host}"
            )
        except (KeyError, TypeError):
            raise XnatError(f"XNAT at {self.host} answered the token request without alias/secret") from None

    def invalidate_token(self, token: creds_mod.Credentials) -> None:
        """Revoke an alias token (``GET /data/services/tokens/invalidate/{alias}/{secret}``)."""
        self.request("GET", f"/data/services/tokens/invalidate/{_q(token.user)}/{_q(token.password)}")
