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
from xnat_prep.xnat_api.http import NotFound, Session, XnatError

# Columns asked for in each listing: only what the manifest needs.
SUBJECT_COLUMNS = "ID,label"
EXPERIMENT_COLUMNS = "ID,label,xsiType"
SCAN_COLUMNS = "ID,type,series_description,xsiType"
PROJECT_EXPERIMENT_COLUMNS = "ID,label,subject_ID,subject_label,xsiType,date"
PROJECT_SCAN_COLUMNS = (
    "ID,label,xnat:imagescandata/id,xnat:imagescandata/type,xnat:imagescandata/series_description"
)


def _q(part: str) -> str:
    return quote(part, safe="")


class Client(Session):
    """A ``Session`` with the product's XNAT calls."""

    # -- discovery -------------------------------------------------------------------------------

    def subjects(self, project: str) -> list[dict[str, Any]]:
        return self.rows(f"/data/projects/{_q(project)}/subjects", {"columns": SUBJECT_COLUMNS})

    def experiments(self, project: str, subject_id: str) -> list[dict[str, Any]]:
        path = f"/data/projects/{_q(project)}/subjects/{_q(subject_id)}/experiments"
        return self.rows(path, {"columns": EXPERIMENT_COLUMNS})

    def scans(self, session_id: str) -> list[dict[str, Any]]:
        return self.rows(f"/data/experiments/{_q(session_id)}/scans", {"columns": SCAN_COLUMNS})

    def project_experiments(self, project: str) -> list[dict[str, Any]]:
        """Every experiment of a project with its subject, type and date: one request."""
        return self.rows(f"/data/projects/{_q(project)}/experiments", {"columns": PROJECT_EXPERIMENT_COLUMNS})

    def project_scans(self, project: str) -> list[dict[str, Any]]:
        """One row per scan of every image session of a project: one request (XNAT's search over
        ``xnat:imagescandata`` columns, as DAX lists a project). Keys are the column names."""
        params = {"project": project, "xsiType": "xnat:imageSessionData", "columns": PROJECT_SCAN_COLUMNS}
        return self.rows("/data/experiments", params)

    def session_files(self, session_id: str) -> list[dict[str, Any]]:
        """Every file of every scan resource of a session (with ``digest``) in one listing."""
        return self.rows(f"/data/experiments/{_q(session_id)}/scans/ALL/files")

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

    # -- scan resources --------------------------------------------------------------------------

    def scan_resource_uri(self, session_id: str, scan_id: str, label: str) -> str:
        return f"/data/experiments/{_q(session_id)}/scans/{_q(scan_id)}/resources/{_q(label)}"

    def scan_resources(self, session_id: str, scan_id: str) -> set[str]:
        """The resource labels of a scan; ``NotFound`` when the session has no such scan."""
        rows = self.rows(f"/data/experiments/{_q(session_id)}/scans/{_q(scan_id)}/resources")
        return {str(r.get("label", "")) for r in rows}

    def resource_digests(self, session_id: str, scan_id: str, label: str) -> dict[str, str]:
        """File path in the resource -> md5 digest as XNAT reports it ({} for no resource)."""
        try:
            rows = self.rows(self.scan_resource_uri(session_id, scan_id, label) + "/files")
        except NotFound:
            return {}
        out = {}
        for row in rows:
            uri = str(row.get("URI", ""))
            name = uri.split("/files/", 1)[1] if "/files/" in uri else str(row.get("Name", ""))
            out[name] = str(row.get("digest", ""))
        return out

    def create_resource(self, session_id: str, scan_id: str, label: str, format: str) -> None:
        """Create a scan resource; one that exists already (a retried PUT that had worked) is fine."""
        try:
            self.put(self.scan_resource_uri(session_id, scan_id, label), {"format": format})
        except XnatError as exc:
            if exc.status != 409 or label not in self.scan_resources(session_id, scan_id):
                raise

    def upload_file(self, session_id: str, scan_id: str, label: str, name: str, path: Path) -> None:
        """PUT one file into a scan resource, replacing any file of that name (safe to repeat)."""
        uri = self.scan_resource_uri(session_id, scan_id, label) + "/files/" + quote(name)
        self.put(uri, {"overwrite": "true", "inbody": "true"}, body=Path(path))

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
