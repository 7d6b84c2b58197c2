"""File transfer in the project hierarchy: listing, single files, zips, uploads (raw or an archive
to extract) and deletes under ``.../files``."""

from __future__ import annotations

import re
import tarfile
import tempfile
import zipfile
from typing import TYPE_CHECKING

from xnat_prep.server.access import check_write
from xnat_prep.server.errors import HTTPError
from xnat_prep.server.listings import file_row, obj_uri
from xnat_prep.server.resolve import safe_path
from xnat_prep.server.store import Conflict, FileEntry, Obj, Resource, Store
from xnat_prep.server.zipstream import NotAnArchive, ZipEntry, iter_members, scan_zip_name

if TYPE_CHECKING:
    from xnat_prep.server.http import Handler
    from xnat_prep.server.resolve import Loc


def resources_for(store: Store, loc: Loc) -> list[tuple[Obj, Resource]]:
    """The resources a ``.../files`` request covers, with their owners."""
    if loc.missing is not None:
        return []
    if loc.resource is not None:
        owner = loc.obj
        assert owner is not None
        return [(owner, loc.resource)]
    if loc.scan_selection is not None:
        return [(o, r) for o in loc.scan_selection for r in store.resources(o.key)]
    return [(loc.obj, r) for r in store.resources(loc.owner_key)] if loc.obj else []


def zip_name(owner: Obj, res: Resource, path: str, loc: Loc) -> str:
    if owner.kind == "scan":
        session = loc.experiment.label if loc.experiment else owner.experiment_id
        return scan_zip_name(session, owner.id, owner.extra.get("type", ""), res.label, path)
    return f"{owner.label}/resources/{res.label}/files/{path}"


def get_files(h: Handler, loc: Loc) -> None:
    store = h.server.store
    zipped = h.query.get("format", "").lower() == "zip"
    if loc.missing is not None and (loc.rest or zipped):
        raise HTTPError(404, f"resource {loc.missing} not found")
    if loc.rest:
        if loc.resource is None:
            raise HTTPError(
                404, "a file is addressed through its resource: .../resources/{label}/files/{path}"
            )
        path = safe_path(loc.rest)
        entry = store.file(loc.resource.id, path)
        if entry is None:
            raise HTTPError(404, f"file {path} not found in resource {loc.resource.label}")
        h.send_file(store.blob_path(entry.blob), entry.size, path, {"ETag": f'"{entry.md5}"'})
        return
    pairs = resources_for(store, loc)
    if zipped:
        entries = [
            ZipEntry(zip_name(owner, res, e.path, loc), store.blob_path(e.blob), e.size, e.crc32)
            for owner, res in pairs
            for e in store.files(res.id)
        ]
        h.send_zip(
            entries, loc.experiment.label if loc.experiment else loc.obj.label if loc.obj else "download"
        )
        return
    locator = h.query.get("locator")
    if locator not in (None, "absolutePath"):
        raise HTTPError(400, f"locator={locator} is not supported (absolutePath is)")
    rows = []
    for owner, res in pairs:
        for e in store.files(res.id):
            rows.append(file_row(res, e, obj_uri(owner)))
            if locator:  # where the bytes are on this server (a blob, not XNAT's archive tree)
                rows[-1]["absolutePath"] = str(store.blob_path(e.blob))
    h.send_result_set(rows)


def put_file(h: Handler, loc: Loc) -> None:
    """Upload a raw body to .../resources/{label}/files/{path}; extract=true unpacks zip/tar(.gz)."""
    check_write(h, loc)
    store = h.server.store
    owner = loc.obj
    if owner is None or loc.scan_selection is not None or (loc.resource is None and loc.missing is None):
        raise HTTPError(400, "upload to .../resources/{label}/files/{path}")
    overwrite = h.query.get("overwrite", "").lower() == "true"
    extract = h.query.get("extract", "").lower() == "true"
    path = safe_path(loc.rest)
    meta = {
        "format": h.query.get("format", ""),
        "content": h.query.get("content", ""),
        "tags": h.query.get("tags", ""),
    }
    if loc.resource is not None and not extract and not overwrite and store.file(loc.resource.id, path):
        h.close_connection = True  # do not read a body we refuse
        raise conflict(path, loc.resource.label)
    if extract and re.search(r"\.(zip|tar|tar\.gz|tgz)$", path, re.I):
        entries = receive_archive(h, store, meta)
    else:
        blob = store.receive(h.body)
        entries = [FileEntry(path, blob.size, blob.md5, blob.name, blob.crc32, **meta)]
    resource = loc.resource or store.create_resource(
        loc.owner_key, loc.missing or "", h.query.get("format", "")
    )
    try:
        store.put_files(resource.id, entries, overwrite)
    except Conflict as exc:
        raise conflict(str(exc), resource.label) from exc
    h.send_text("", 200)


def conflict(path: str, label: str) -> HTTPError:
    return HTTPError(409, f"File {path} already exists in resource {label}; add overwrite=true to replace it")


def receive_archive(h: Handler, store: Store, meta: dict[str, str]) -> list[FileEntry]:
    """Store every regular member of an uploaded zip/tar(.gz) as a blob."""
    entries: list[FileEntry] = []
    with tempfile.TemporaryFile(dir=store.data_dir) as tmp:
        for chunk in iter(lambda: h.body.read(1 << 20), b""):
            tmp.write(chunk)
        tmp.seek(0)
        links: list[str] = []
        try:
            for name, stream in iter_members(tmp, links):
                member = safe_path(name.split("/"))
                blob = store.receive(stream)
                entries.append(FileEntry(member, blob.size, blob.md5, blob.name, blob.crc32, **meta))
            if links:
                # what XNAT stores for a link is unverified; a 400 is loud where an empty file is not
                raise HTTPError(
                    400,
                    f"the archive holds symbolic links, not files: {', '.join(links[:10])}"
                    + (f" and {len(links) - 10} more" if len(links) > 10 else "")
                    + " (archive the files themselves, e.g. tar --dereference)",
                )
        except (zipfile.BadZipFile, tarfile.TarError, NotAnArchive, OSError) as exc:
            store.discard_blobs([e.blob for e in entries])
            raise HTTPError(400, f"cannot extract the upload: {exc}") from exc
        except HTTPError:
            store.discard_blobs([e.blob for e in entries])
            raise
    return entries


def delete_file(h: Handler, loc: Loc) -> None:
    check_write(h, loc)
    if loc.missing is not None:
        raise HTTPError(404, f"resource {loc.missing} not found")
    if loc.resource is None or not loc.rest:
        raise HTTPError(400, "delete .../resources/{label}/files/{path}")
    path = safe_path(loc.rest)
    if not h.server.store.delete_file(loc.resource.id, path):
        raise HTTPError(404, f"file {path} not found")
    h.send_text("")
