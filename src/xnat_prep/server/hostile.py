"""Hostile answers: the server answers wrongly on purpose, to test what a client does with them.

Set with the fault SPEC's ``answer=KIND`` (``faults.py``; seeded and scoped by ``path`` like the
other faults, ``answer_rate`` the fraction of matching requests, default all). Unlike the other
faults these are not glitches a retry gets past: the same request gets the same wrong answer. Each
kind changes one kind of answer and leaves the others alone:

    html             any GET: 200 with an HTML login page (an SSO proxy, an expired portal session)
    html_as_json     the same page labelled application/json
    not_json         any GET: 200 application/json with a body that is not JSON
    empty_body       any GET: 200 with an empty body
    wrong_shape      JSON answers: valid JSON of the wrong shape (a ResultSet whose Result is not a
                     list; other documents an empty list)
    missing_columns  listings: every row without its columns (only an unrelated one left)
    wrong_digest     file listings: every ``digest`` is not the md5 of the file's bytes
    huge_size        file listings: every ``Size`` is 10 TB
    negative_size    file listings: every ``Size`` is -1
    bad_size         file listings: every ``Size`` is not a number ("12 kB")
    unsafe_dotdot    file listings: every file's URI path climbs out with ``../``
    unsafe_absolute  file listings: every file's URI path is absolute (``%2Fetc%2F...``)
    unsafe_nul       file listings: every file's URI path holds a NUL (``%00``)
    corrupt_bytes    file downloads and zips: the files' bytes differ from what the listing says (a
                     zip's own CRCs match the wrong bytes, so only the listing's md5 can tell)
    zip_slip         zips: every entry named ``../../<name>``
    zip_absolute     zips: every entry named ``/absolute/<name>``
    zip_mismatch     zips: every entry renamed, so none is a file of the listing
    zip_truncated    zips: the archive cut in half, sent whole (Content-Length matches: not a
                     transport error)

Two more zip kinds are not wrong, only shaped differently from this server's own zips (STORED, sizes
in each local header), as other writers shape them; a client must read both:

    zip_deflated     zips: DEFLATED with a data descriptor after each entry, as XNAT's
                     ``java.util.zip.ZipOutputStream`` streams them
    zip_descriptor   zips: STORED with a data descriptor after each entry (Python's zipfile writing to
                     a stream): an entry's end is known only from the central directory

Zips of the hostile kinds are built in memory (the test bed's resources are small).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from typing import Any

from xnat_prep.server.zipstream import ZipEntry

KINDS = (
    "html",
    "html_as_json",
    "not_json",
    "empty_body",
    "wrong_shape",
    "missing_columns",
    "wrong_digest",
    "huge_size",
    "negative_size",
    "bad_size",
    "unsafe_dotdot",
    "unsafe_absolute",
    "unsafe_nul",
    "corrupt_bytes",
    "zip_slip",
    "zip_absolute",
    "zip_mismatch",
    "zip_truncated",
    "zip_deflated",
    "zip_descriptor",
)
LOGIN_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>XNAT - Login</title></head>\n"
    b'<body><form method="post" action="/login"><input name="username"><input name="password" '
    b'type="password"><button>Login</button></form></body></html>\n'
)
TEN_TB = 10 * 10**12


def whole_answer(kind: str | None, method: str) -> tuple[bytes, str] | None:
    """(body, content type) answering a GET instead of the server, for the kinds that replace
    every answer; None otherwise."""
    if method != "GET":
        return None
    if kind == "html":
        return LOGIN_PAGE, "text/html;charset=UTF-8"
    if kind == "html_as_json":
        return LOGIN_PAGE, "application/json"
    if kind == "not_json":
        return b'{"ResultSet": {"Result": [{"ID": "', "application/json"
    if kind == "empty_body":
        return b"", "application/json"
    return None


def json_doc(kind: str | None, doc: Any) -> Any:
    """A JSON answer as the kind changes it (listings' file rows, shapes)."""
    if kind is None:
        return doc
    result_set = isinstance(doc, dict) and isinstance(doc.get("ResultSet"), dict)
    if kind == "wrong_shape":
        return {"ResultSet": {"Result": {"0": "not a list"}, "totalRecords": "1"}} if result_set else []
    if not result_set:
        return doc
    rows = doc["ResultSet"].get("Result")
    if not isinstance(rows, list):
        return doc
    if kind == "missing_columns":
        rows = [{"xnat_prep_note": "columns left out"} for _ in rows]
    else:
        rows = [_file_row(kind, row) if _is_file_row(row) else row for row in rows]
    return {**doc, "ResultSet": {**doc["ResultSet"], "Result": rows}}


def _is_file_row(row: Any) -> bool:
    return isinstance(row, dict) and "/files/" in str(row.get("URI", "")) and "Size" in row


def _file_row(kind: str, row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    owner, _, path = row["URI"].partition("/files/")
    name = path.rsplit("/", 1)[-1]
    if kind == "wrong_digest":
        row["digest"] = hashlib.md5(f"not {row.get('digest', '')}".encode()).hexdigest()
    elif kind == "huge_size":
        row["Size"] = str(TEN_TB)
    elif kind == "negative_size":
        row["Size"] = "-1"
    elif kind == "bad_size":
        row["Size"] = "12 kB"
    elif kind == "unsafe_dotdot":
        row["URI"] = f"{owner}/files/../../{name}"
    elif kind == "unsafe_absolute":
        row["URI"] = f"{owner}/files/%2Fetc%2F{name}"
    elif kind == "unsafe_nul":
        row["URI"] = f"{owner}/files/{name}%00.dcm"
    return row


def file_bytes(kind: str | None, data: bytes) -> bytes | None:
    """A single file's body as the kind changes it; None: sent as stored."""
    if kind != "corrupt_bytes":
        return None
    return _corrupt(data)


def _corrupt(data: bytes) -> bytes:
    if not data:
        return b"\0"
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def zip_body(kind: str | None, entries: list[ZipEntry]) -> bytes | None:
    """A zip of ``entries`` as the kind changes it; None for the kinds that leave zips alone."""
    if kind in ("zip_deflated", "zip_descriptor"):
        return _streamed_zip(entries, zipfile.ZIP_DEFLATED if kind == "zip_deflated" else zipfile.ZIP_STORED)
    if kind not in ("corrupt_bytes", "zip_slip", "zip_absolute", "zip_mismatch", "zip_truncated"):
        return None
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for entry in entries:
            data = entry.path.read_bytes()
            name = entry.name
            base = name.rsplit("/", 1)[-1]
            if kind == "corrupt_bytes":
                data = _corrupt(data)
            elif kind == "zip_slip":
                name = f"../../{base}"
            elif kind == "zip_absolute":
                name = f"/absolute/{base}"
            elif kind == "zip_mismatch":
                name = f"{name.rsplit('/', 1)[0]}/renamed-{base}" if "/" in name else f"renamed-{base}"
            archive.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data)
    body = out.getvalue()
    return body[: len(body) // 2] if kind == "zip_truncated" else body


class _Stream(io.RawIOBase):
    """A write-only stream zipfile cannot seek in: it then writes a data descriptor after each entry."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.data += b
        return len(b)


def _streamed_zip(entries: list[ZipEntry], method: int) -> bytes:
    out = _Stream()
    with zipfile.ZipFile(out, "w", method) as archive:
        for entry in entries:
            info = zipfile.ZipInfo(entry.name, (1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            with archive.open(info, "w") as fh:
                fh.write(entry.path.read_bytes())
    return bytes(out.data)
