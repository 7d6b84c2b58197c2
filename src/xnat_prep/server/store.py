"""Persistent storage of the bundled server: metadata in SQLite, file contents as blobs on disk.

Layout under the data directory::

    xnat.sqlite            projects, subjects, experiments, scans, resources, files, fields, roles,
                           alias tokens, prearchive sessions, accession counters (WAL mode)
    blobs/ab/<32 hex>      file contents, named by a random id; a file row points to its blob

Why blobs and not XNAT's arc001/ tree: a write is a new blob (temp file in the blob's own
directory, renamed when complete) and then one committed DB row that points to it, so a killed
server never shows a half-written file, an overwrite is atomic, and moving a prearchive session into
the archive moves pointers instead of bytes. Blobs no row refers to (a crash before the commit) and
stray temp files are removed at start-up.

Durability: every method that commits rows pointing at blobs first fsyncs those blobs and their
directories (``_make_durable``), all of a request's blobs at once and concurrently, so the journal
commits them together. An import of 14,317 files took ~80 s of fsync one file at a time, ~2 s so.

One connection guarded by a lock: every statement is short, file I/O happens outside the lock,
so the lock is never held while bytes move.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

CHUNK = 1 << 20
_MODIFIED = ("projects", "subjects", "experiments")  # tables with XNAT's meta/last_modified
CHILD_TABLES = {"scan": "scans", "reconstruction": "reconstructions"}  # objects inside a session
PART_SUFFIX = ".part"
SYNC_THREADS = 16  # concurrent fsyncs share journal commits; more threads gained nothing measurable

SCHEMA = """
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS projects(
    id TEXT PRIMARY KEY, insert_date TEXT, insert_user TEXT, extra TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS project_roles(
    project TEXT NOT NULL, login TEXT NOT NULL, role TEXT NOT NULL, PRIMARY KEY(project, login));
CREATE TABLE IF NOT EXISTS subjects(
    id TEXT PRIMARY KEY, project TEXT NOT NULL, label TEXT NOT NULL, insert_date TEXT, insert_user TEXT,
    extra TEXT NOT NULL DEFAULT '{}', UNIQUE(project, label));
CREATE TABLE IF NOT EXISTS experiments(
    id TEXT PRIMARY KEY, project TEXT NOT NULL, subject_id TEXT NOT NULL, label TEXT NOT NULL,
    xsi_type TEXT NOT NULL, insert_date TEXT, insert_user TEXT, extra TEXT NOT NULL DEFAULT '{}',
    UNIQUE(project, label));
CREATE TABLE IF NOT EXISTS scans(
    experiment_id TEXT NOT NULL, id TEXT NOT NULL, xsi_type TEXT NOT NULL, seq INTEGER NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}', PRIMARY KEY(experiment_id, id));
CREATE TABLE IF NOT EXISTS reconstructions(
    experiment_id TEXT NOT NULL, id TEXT NOT NULL, xsi_type TEXT NOT NULL, seq INTEGER NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}', PRIMARY KEY(experiment_id, id));
CREATE TABLE IF NOT EXISTS shares(
    kind TEXT NOT NULL, id TEXT NOT NULL, project TEXT NOT NULL, label TEXT NOT NULL,
    PRIMARY KEY(kind, id, project), UNIQUE(kind, project, label));
CREATE TABLE IF NOT EXISTS resources(
    id INTEGER PRIMARY KEY AUTOINCREMENT, parent TEXT NOT NULL, label TEXT NOT NULL,
    format TEXT NOT NULL DEFAULT '', content TEXT NOT NULL DEFAULT '', tags TEXT NOT NULL DEFAULT '',
    UNIQUE(parent, label));
CREATE TABLE IF NOT EXISTS files(
    resource_id INTEGER NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL, md5 TEXT NOT NULL,
    blob TEXT NOT NULL, crc32 INTEGER, format TEXT NOT NULL DEFAULT '', content TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '', PRIMARY KEY(resource_id, path));
CREATE TABLE IF NOT EXISTS fields(
    parent TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY(parent, name));
CREATE TABLE IF NOT EXISTS tokens(
    alias TEXT PRIMARY KEY, secret_sha256 TEXT NOT NULL, login TEXT NOT NULL, created REAL NOT NULL,
    expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS prearchive(
    project TEXT NOT NULL, timestamp TEXT NOT NULL, name TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY(project, timestamp, name));
"""


def now_text() -> str:
    """XNAT's insert_date format, e.g. ``2024-01-31 12:00:00.123``."""
    t = time.time()
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def _fsync_all(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class Blob:
    """A file's contents, received on disk, not yet referenced by a row (nor durable)."""

    name: str
    size: int
    md5: str
    crc32: int  # zip entries need it; computing it on upload lets zips be sent with sendfile


@dataclass
class FileEntry:
    path: str
    size: int
    md5: str
    blob: str
    crc32: int | None = None
    format: str = ""
    content: str = ""
    tags: str = ""


@dataclass
class Resource:
    id: int
    parent: str  # "project:P", "subject:XNAT_S00001", "experiment:XNAT_E00001", "scan:XNAT_E00001/3"
    label: str
    format: str
    content: str
    tags: str
    file_count: int = 0
    file_size: int = 0


@dataclass
class Obj:
    """A project, subject, experiment or scan row; ``extra`` holds its other XSD data fields."""

    kind: str
    id: str
    project: str = ""
    label: str = ""
    subject_id: str = ""
    experiment_id: str = ""
    xsi_type: str = ""
    insert_date: str = ""
    last_modified: str = ""
    insert_user: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The owner key used by resources and custom fields."""
        if self.kind == "scan":
            return f"scan:{self.experiment_id}/{self.id}"
        if self.kind == "reconstruction":
            return f"recon:{self.experiment_id}/{self.id}"
        return f"{self.kind}:{self.id}"


class Conflict(Exception):
    """The write would replace something the request did not ask to replace."""


class Store:
    """Thread-safe archive storage. All methods are safe to call from request threads."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.blob_dir = self.data_dir / "blobs"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self._blob_dirs = {path for path in self.blob_dir.iterdir() if path.is_dir()}
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.data_dir / "xnat.sqlite", check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        if "crc32" not in {r[1] for r in self._db.execute("PRAGMA table_info(files)")}:
            self._db.execute("ALTER TABLE files ADD COLUMN crc32 INTEGER")  # data dirs from before 0.1.0
        for table in _MODIFIED:  # data dirs from before last_modified was kept
            if "last_modified" not in {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN last_modified TEXT")
        self._collect_garbage()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- low level -------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; a uniqueness clash (two requests creating one label) is a Conflict."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except sqlite3.IntegrityError as exc:
                self._db.execute("ROLLBACK")
                raise Conflict(str(exc)) from exc
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    @staticmethod
    def _touch(db: sqlite3.Connection, key: str) -> None:
        """Mark an object, and the experiment and subject above it, modified now (XNAT's last_modified).

        ``key`` is an owner key (``Obj.key``, a resource's parent): a scan counts as its experiment.
        """
        kind, _, ref = key.partition(":")
        stamp = now_text()
        if kind in ("scan", "recon", "experiment"):  # E/N of a scan or reconstruction, E/in of inputs
            kind, ref = "experiment", ref.partition("/")[0]
        if kind == "experiment":
            db.execute("UPDATE experiments SET last_modified=? WHERE id=?", (stamp, ref))
            row = db.execute("SELECT subject_id FROM experiments WHERE id=?", (ref,)).fetchone()
            kind, ref = ("subject", row[0]) if row else ("", "")
        if kind in ("subject", "project"):
            db.execute(f"UPDATE {kind}s SET last_modified=? WHERE id=?", (stamp, ref))  # noqa: S608

    def _next_id(self, db: sqlite3.Connection, name: str) -> int:
        row = db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        value = (row[0] if row else 0) + 1
        db.execute("INSERT OR REPLACE INTO counters(name, value) VALUES(?, ?)", (name, value))
        return value

    # ---- blobs -----------------------------------------------------------------------------

    def blob_path(self, name: str) -> Path:
        return self.blob_dir / name[:2] / name

    def receive(self, source: IO[bytes] | Iterator[bytes]) -> Blob:
        """Copy a stream to a new blob (temp name, md5 and CRC-32 while writing, rename).

        Not fsynced here: the method that commits the row pointing at it does that (module docstring).
        """
        name = uuid.uuid4().hex
        final = self.blob_path(name)
        if final.parent not in self._blob_dirs:  # a set lookup is cheaper than mkdir for every file
            final.parent.mkdir(exist_ok=True)
            self._blob_dirs.add(final.parent)
        temp = final.with_name(f".{name}{PART_SUFFIX}")
        md5 = hashlib.md5()
        crc = 0
        size = 0
        chunks = iter(lambda: source.read(CHUNK), b"") if hasattr(source, "read") else source
        try:
            with open(temp, "wb") as out:
                for chunk in chunks:
                    md5.update(chunk)
                    crc = zlib.crc32(chunk, crc)
                    out.write(chunk)
                    size += len(chunk)
            os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return Blob(name, size, md5.hexdigest(), crc)

    def _make_durable(self, names: Iterable[str]) -> None:
        """fsync blobs and the directories holding their names; called before rows point to them.

        ``blob_dir`` is always included: it holds the names of subdirectories ``receive`` creates.
        """
        files = {self.blob_path(name) for name in names}
        paths = [*files, *{path.parent for path in files}, self.blob_dir]
        workers = min(SYNC_THREADS, len(paths))
        with ThreadPoolExecutor(workers, "fsync") as pool:
            # one task per worker, not per file: 14k futures cost as much CPU as the fsyncs
            list(pool.map(_fsync_all, (paths[i::workers] for i in range(workers))))  # re-raises errors

    def discard_blobs(self, names: list[str]) -> None:
        for name in names:
            self.blob_path(name).unlink(missing_ok=True)

    def _collect_garbage(self) -> None:
        """Remove temp files and blobs that no committed row refers to (left by a crash)."""
        used = {r[0] for r in self._query("SELECT blob FROM files")}
        for row in self._query("SELECT doc FROM prearchive"):
            used.update(f["blob"] for scan in json.loads(row[0])["scans"] for f in scan["files"])
        for sub in self.blob_dir.iterdir():
            for path in sub.iterdir():
                if path.name.endswith(PART_SUFFIX) or path.name not in used:
                    path.unlink(missing_ok=True)

    # ---- objects ---------------------------------------------------------------------------

    @staticmethod
    def _obj(kind: str, row: sqlite3.Row) -> Obj:
        keys = row.keys()
        return Obj(
            kind=kind,
            id=row["id"],
            project=row["project"] if "project" in keys else (row["id"] if kind == "project" else ""),
            label=row["label"] if "label" in keys else row["id"],
            subject_id=row["subject_id"] if "subject_id" in keys else "",
            experiment_id=row["experiment_id"] if "experiment_id" in keys else "",
            xsi_type=row["xsi_type"] if "xsi_type" in keys else f"xnat:{kind}Data",
            insert_date=row["insert_date"] if "insert_date" in keys else "",
            last_modified=(row["last_modified"] if "last_modified" in keys else "") or "",
            insert_user=row["insert_user"] if "insert_user" in keys else "",
            extra=json.loads(row["extra"]),
        )

    def projects(self) -> list[Obj]:
        # XNAT lists projects case-insensitively (dummydicomproject before TRAINING; xnatpy's tests)
        rows = self._query("SELECT * FROM projects ORDER BY id COLLATE NOCASE, id")
        return [self._obj("project", r) for r in rows]

    def project(self, project_id: str) -> Obj | None:
        rows = self._query("SELECT * FROM projects WHERE id=?", (project_id,))
        return self._obj("project", rows[0]) if rows else None

    def _in_project(self, kind: str, project: str | None, **match: str) -> list[Obj]:
        """Subjects or experiments of a project: its own, then those shared into it (with the label
        they have there); of every project when ``project`` is None. ``match``: id, label, subject_id."""
        columns = "t.id, t.project, {}, t.insert_date, t.insert_user, t.extra, t.last_modified"
        columns += ", t.subject_id, t.xsi_type" if kind == "experiment" else ""

        def part(label: str, source: str, where: str, args: list[str]) -> tuple[str, list[str]]:
            for name, value in match.items():
                where += f" AND {label if name == 'label' else 't.' + name}=?"
                args.append(value)
            return f"SELECT {columns.format(label + ' AS label')} FROM {kind}s t{source} WHERE {where}", args  # noqa: S608

        if project is None:
            sql, args = part("t.label", "", "1=1", [])
        else:
            own, own_args = part("t.label", "", "t.project=?", [project])
            join = " JOIN shares s ON s.kind=? AND s.id=t.id"
            shared, shared_args = part("s.label", join, "s.project=?", [kind, project])
            sql, args = f"{own} UNION ALL {shared}", own_args + shared_args
        rows = self._query(f"SELECT * FROM ({sql}) ORDER BY id", tuple(args))  # noqa: S608
        return [self._obj(kind, r) for r in rows]

    def subjects(self, project: str | None = None) -> list[Obj]:
        return self._in_project("subject", project)

    def subject(self, ref: str, project: str | None = None) -> Obj | None:
        """A subject by accession ID, or by label within ``project`` (its own or shared into it)."""
        return self._one("subject", ref, project)

    def experiments(self, project: str | None = None, subject_id: str | None = None) -> list[Obj]:
        if subject_id is None:
            return self._in_project("experiment", project)
        return self._in_project("experiment", project, subject_id=subject_id)

    def experiment(self, ref: str, project: str | None = None) -> Obj | None:
        """An experiment by accession ID, or by label within ``project`` (its own or shared into it)."""
        return self._one("experiment", ref, project)

    def _one(self, kind: str, ref: str, project: str | None) -> Obj | None:
        found = self._in_project(kind, project, id=ref)
        if not found and project is not None:
            found = self._in_project(kind, project, label=ref)
        return found[0] if found else None

    def scans(self, experiment_id: str, kind: str = "scan") -> list[Obj]:
        """A session's scans (or, with kind="reconstruction", its reconstructions) in creation order."""
        sql = f"SELECT * FROM {CHILD_TABLES[kind]} WHERE experiment_id=? ORDER BY seq"  # noqa: S608
        return [self._obj(kind, r) for r in self._query(sql, (experiment_id,))]

    def scan(self, experiment_id: str, scan_id: str, kind: str = "scan") -> Obj | None:
        sql = f"SELECT * FROM {CHILD_TABLES[kind]} WHERE experiment_id=? AND id=?"  # noqa: S608
        rows = self._query(sql, (experiment_id, scan_id))
        return self._obj(kind, rows[0]) if rows else None

    def assessors(self, experiment_id: str) -> list[Obj]:
        """The image assessors (derived experiments) of a session."""
        rows = self._query(
            "SELECT * FROM experiments WHERE json_extract(extra, '$.imageSession_ID')=? ORDER BY id",
            (experiment_id,),
        )
        return [self._obj("experiment", r) for r in rows]

    def create_project(self, project_id: str, user: str, extra: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO projects(id, insert_date, insert_user, extra) VALUES(?,?,?,?)",
                (project_id, now_text(), user, json.dumps(extra)),
            )
            self._touch(db, f"project:{project_id}")

    def create_subject(
        self, project: str, label: str, user: str, extra: dict[str, Any], subject_id: str | None = None
    ) -> str:
        """Create a subject; its accession ID is the next XNAT_Snnnnn unless ``subject_id`` is given."""
        with self.transaction() as db:
            return self._create_subject(db, project, label, user, extra, subject_id)

    def _create_subject(
        self,
        db: sqlite3.Connection,
        project: str,
        label: str,
        user: str,
        extra: dict[str, Any],
        subject_id: str | None = None,
    ) -> str:
        subject_id = subject_id or f"XNAT_S{self._next_id(db, 'subject'):05d}"
        db.execute(
            "INSERT INTO subjects(id, project, label, insert_date, insert_user, extra) VALUES(?,?,?,?,?,?)",
            (subject_id, project, label, now_text(), user, json.dumps(extra)),
        )
        self._touch(db, f"subject:{subject_id}")
        return subject_id

    def create_experiment(
        self,
        project: str,
        subject_id: str,
        label: str,
        xsi_type: str,
        user: str,
        extra: dict[str, Any],
        experiment_id: str | None = None,
    ) -> str:
        """Create an experiment; its accession ID is the next XNAT_Ennnnn unless given."""
        with self.transaction() as db:
            return self._create_experiment(
                db, project, subject_id, label, xsi_type, user, extra, experiment_id
            )

    def _create_experiment(
        self,
        db: sqlite3.Connection,
        project: str,
        subject_id: str,
        label: str,
        xsi_type: str,
        user: str,
        extra: dict[str, Any],
        experiment_id: str | None = None,
    ) -> str:
        experiment_id = experiment_id or f"XNAT_E{self._next_id(db, 'experiment'):05d}"
        db.execute(
            "INSERT INTO experiments(id, project, subject_id, label, xsi_type, insert_date, "
            "insert_user, extra) VALUES(?,?,?,?,?,?,?,?)",
            (experiment_id, project, subject_id, label, xsi_type, now_text(), user, json.dumps(extra)),
        )
        self._touch(db, f"experiment:{experiment_id}")
        return experiment_id

    def create_scan(
        self, experiment_id: str, scan_id: str, xsi_type: str, extra: dict[str, Any], kind: str = "scan"
    ) -> None:
        with self.transaction() as db:
            self._create_scan(db, experiment_id, scan_id, xsi_type, extra, kind)

    @staticmethod
    def _create_scan(
        db: sqlite3.Connection,
        experiment_id: str,
        scan_id: str,
        xsi_type: str,
        extra: dict[str, Any],
        kind: str = "scan",
    ) -> None:
        table = CHILD_TABLES[kind]
        seq = db.execute(
            f"SELECT COALESCE(MAX(seq), 0) + 1 FROM {table} WHERE experiment_id=?",  # noqa: S608
            (experiment_id,),
        ).fetchone()[0]
        db.execute(
            f"INSERT INTO {table}(experiment_id, id, xsi_type, seq, extra) VALUES(?,?,?,?,?)",
            (experiment_id, scan_id, xsi_type, seq, json.dumps(extra)),
        )
        Store._touch(db, f"experiment:{experiment_id}")

    def update(self, obj: Obj, extra: dict[str, Any], label: str | None = None) -> None:
        """Merge data fields into an object (a value of None removes the field); optionally relabel."""
        merged = {k: v for k, v in {**obj.extra, **extra}.items() if v is not None}
        table = CHILD_TABLES.get(obj.kind, f"{obj.kind}s")
        with self.transaction() as db:
            if obj.kind in CHILD_TABLES:
                db.execute(
                    f"UPDATE {table} SET extra=? WHERE experiment_id=? AND id=?",  # noqa: S608
                    (json.dumps(merged), obj.experiment_id, obj.id),
                )
            else:
                db.execute(f"UPDATE {table} SET extra=? WHERE id=?", (json.dumps(merged), obj.id))  # noqa: S608
            if label is not None and label != obj.label and obj.kind in ("subject", "experiment"):
                db.execute(f"UPDATE {table} SET label=? WHERE id=?", (label, obj.id))  # noqa: S608
            self._touch(db, obj.key)
        obj.extra = merged

    def delete(self, obj: Obj) -> None:
        """Delete an object with everything below it, then its blobs."""
        with self.transaction() as db:
            blobs = self._delete(db, obj)
            if obj.kind in CHILD_TABLES:
                self._touch(db, obj.key)
            elif obj.kind == "experiment":
                self._touch(db, f"subject:{obj.subject_id}")
        self.discard_blobs(blobs)

    def _delete(self, db: sqlite3.Connection, obj: Obj) -> list[str]:
        blobs: list[str] = []
        if obj.kind == "project":
            for sub in db.execute("SELECT * FROM subjects WHERE project=?", (obj.id,)).fetchall():
                blobs += self._delete(db, self._obj("subject", sub))
            db.execute("DELETE FROM projects WHERE id=?", (obj.id,))
            db.execute("DELETE FROM project_roles WHERE project=?", (obj.id,))
        elif obj.kind == "subject":
            for exp in db.execute("SELECT * FROM experiments WHERE subject_id=?", (obj.id,)).fetchall():
                blobs += self._delete(db, self._obj("experiment", exp))
            db.execute("DELETE FROM subjects WHERE id=?", (obj.id,))
        elif obj.kind == "experiment":
            below = [("scan", "SELECT * FROM scans WHERE experiment_id=?")]
            below.append(("reconstruction", "SELECT * FROM reconstructions WHERE experiment_id=?"))
            below.append(
                ("experiment", "SELECT * FROM experiments WHERE json_extract(extra, '$.imageSession_ID')=?")
            )
            for kind, sql in below:  # scans, reconstructions and assessors go with their session
                for row in db.execute(sql, (obj.id,)).fetchall():
                    blobs += self._delete(db, self._obj(kind, row))
            db.execute("DELETE FROM experiments WHERE id=?", (obj.id,))
        else:
            db.execute(
                f"DELETE FROM {CHILD_TABLES[obj.kind]} WHERE experiment_id=? AND id=?",  # noqa: S608
                (obj.experiment_id, obj.id),
            )
        in_key = f"{obj.key}/in"  # an assessor's or reconstruction's input resources
        for res in db.execute(
            "SELECT id FROM resources WHERE parent IN (?, ?)", (obj.key, in_key)
        ).fetchall():
            blobs += self._delete_resource(db, res[0])
        db.execute("DELETE FROM fields WHERE parent=?", (obj.key,))
        db.execute("DELETE FROM shares WHERE kind=? AND id=?", (obj.kind, obj.id))
        return blobs

    # ---- sharing ---------------------------------------------------------------------------

    def shares(self, kind: str, obj_id: str) -> dict[str, str]:
        """project -> label of the projects a subject or experiment is shared into."""
        rows = self._query(
            "SELECT project, label FROM shares WHERE kind=? AND id=? ORDER BY project", (kind, obj_id)
        )
        return {r[0]: r[1] for r in rows}

    def share(self, obj: Obj, project: str, label: str) -> None:
        """Share a subject or experiment into ``project`` under ``label`` (Conflict if taken there)."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO shares(kind, id, project, label) VALUES(?,?,?,?)",
                (obj.kind, obj.id, project, label),
            )
            self._touch(db, obj.key)

    def unshare(self, obj: Obj, project: str) -> bool:
        with self.transaction() as db:
            gone = db.execute(
                "DELETE FROM shares WHERE kind=? AND id=? AND project=?", (obj.kind, obj.id, project)
            ).rowcount
            self._touch(db, obj.key)
        return bool(gone)

    # ---- custom fields ---------------------------------------------------------------------

    def fields(self, parent: str) -> dict[str, str]:
        rows = self._query("SELECT name, value FROM fields WHERE parent=? ORDER BY name", (parent,))
        return {r[0]: r[1] for r in rows}

    def set_fields(self, parent: str, values: dict[str, str | None]) -> None:
        """Set custom fields in one transaction; a value of None deletes the field."""
        with self.transaction() as db:
            for name, value in values.items():
                if value is None:
                    db.execute("DELETE FROM fields WHERE parent=? AND name=?", (parent, name))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO fields(parent, name, value) VALUES(?,?,?)",
                        (parent, name, value),
                    )
            self._touch(db, parent)

    # ---- resources and files ---------------------------------------------------------------

    _RES_SQL = (
        "SELECT r.*, COUNT(f.path) AS file_count, COALESCE(SUM(f.size), 0) AS file_size "
        "FROM resources r LEFT JOIN files f ON f.resource_id = r.id "
    )

    @staticmethod
    def _resource(row: sqlite3.Row) -> Resource:
        return Resource(
            row["id"],
            row["parent"],
            row["label"],
            row["format"],
            row["content"],
            row["tags"],
            row["file_count"],
            row["file_size"],
        )

    def resources(self, parent: str) -> list[Resource]:
        rows = self._query(self._RES_SQL + "WHERE r.parent=? GROUP BY r.id ORDER BY r.id", (parent,))
        return [self._resource(r) for r in rows]

    def resource(self, parent: str, ref: str) -> Resource | None:
        """A resource of ``parent`` by label, or by numeric ID."""
        rows = self._query(self._RES_SQL + "WHERE r.parent=? AND r.label=? GROUP BY r.id", (parent, ref))
        if not rows and ref.isdigit():
            rows = self._query(
                self._RES_SQL + "WHERE r.parent=? AND r.id=? GROUP BY r.id", (parent, int(ref))
            )
        return self._resource(rows[0]) if rows else None

    def create_resource(
        self, parent: str, label: str, fmt: str = "", content: str = "", tags: str = ""
    ) -> Resource:
        """Create a resource, or update format/content/tags of an existing one (empty = keep)."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT id FROM resources WHERE parent=? AND label=?", (parent, label)
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO resources(parent, label, format, content, tags) VALUES(?,?,?,?,?)",
                    (parent, label, fmt, content, tags),
                )
            else:
                for column, value in (("format", fmt), ("content", content), ("tags", tags)):
                    if value:
                        db.execute(f"UPDATE resources SET {column}=? WHERE id=?", (value, row[0]))  # noqa: S608
            self._touch(db, parent)
        resource = self.resource(parent, label)
        assert resource is not None
        return resource

    def delete_resource(self, resource_id: int) -> None:
        with self.transaction() as db:
            blobs = self._delete_resource(db, resource_id)
        self.discard_blobs(blobs)

    @staticmethod
    def _touch_resource(db: sqlite3.Connection, resource_id: int) -> None:
        row = db.execute("SELECT parent FROM resources WHERE id=?", (resource_id,)).fetchone()
        if row is not None:
            Store._touch(db, row[0])

    @staticmethod
    def _delete_resource(db: sqlite3.Connection, resource_id: int) -> list[str]:
        Store._touch_resource(db, resource_id)
        blobs = [r[0] for r in db.execute("SELECT blob FROM files WHERE resource_id=?", (resource_id,))]
        db.execute("DELETE FROM files WHERE resource_id=?", (resource_id,))
        db.execute("DELETE FROM resources WHERE id=?", (resource_id,))
        return blobs

    @staticmethod
    def _file(r: sqlite3.Row) -> FileEntry:
        return FileEntry(
            r["path"], r["size"], r["md5"], r["blob"], r["crc32"], r["format"], r["content"], r["tags"]
        )

    def files(self, resource_id: int) -> list[FileEntry]:
        rows = self._query("SELECT * FROM files WHERE resource_id=? ORDER BY path", (resource_id,))
        return [self._file(r) for r in rows]

    def file(self, resource_id: int, path: str) -> FileEntry | None:
        rows = self._query("SELECT * FROM files WHERE resource_id=? AND path=?", (resource_id, path))
        return self._file(rows[0]) if rows else None

    def put_files(self, resource_id: int, entries: list[FileEntry], overwrite: bool) -> None:
        """Point file rows at new blobs in one transaction, then drop the blobs they replaced.

        Without ``overwrite`` an existing path raises :class:`Conflict` and nothing changes (the new
        blobs are discarded).
        """
        try:
            self._make_durable(e.blob for e in entries)
            with self.transaction() as db:
                replaced = []
                for e in entries:
                    old = db.execute(
                        "SELECT blob FROM files WHERE resource_id=? AND path=?", (resource_id, e.path)
                    ).fetchone()
                    if old is not None:
                        if not overwrite:
                            raise Conflict(e.path)
                        replaced.append(old[0])
                    db.execute(
                        "INSERT OR REPLACE INTO files(resource_id, path, size, md5, blob, crc32, format, "
                        "content, tags) VALUES(?,?,?,?,?,?,?,?,?)",
                        (resource_id, e.path, e.size, e.md5, e.blob, e.crc32, e.format, e.content, e.tags),
                    )
                self._touch_resource(db, resource_id)
        except BaseException:
            self.discard_blobs([e.blob for e in entries])
            raise
        self.discard_blobs(replaced)

    def delete_file(self, resource_id: int, path: str) -> bool:
        with self.transaction() as db:
            row = db.execute(
                "SELECT blob FROM files WHERE resource_id=? AND path=?", (resource_id, path)
            ).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM files WHERE resource_id=? AND path=?", (resource_id, path))
            self._touch_resource(db, resource_id)
        self.discard_blobs([row[0]])
        return True

    # ---- sessions from the import service -----------------------------------------------------

    def archive_session(
        self, doc: dict[str, Any], project: str, subject_label: str, label: str, overwrite: str, user: str
    ) -> str:
        """Store an imported session document (see importer.py) in the archive; returns its ID.

        ``overwrite``: ``none`` refuses an existing session (:class:`Conflict`), ``append`` adds
        scans and replaces same-named files, ``delete`` replaces the session's scans and data.
        """
        discard: list[str] = []
        self._make_durable(f["blob"] for scan in doc["scans"] for f in scan["files"])
        with self.transaction() as db:
            subject = db.execute(
                "SELECT id FROM subjects WHERE project=? AND (label=? OR id=?)",
                (project, subject_label, subject_label),
            ).fetchone()
            subject_id = subject[0] if subject else self._create_subject(db, project, subject_label, user, {})
            row = db.execute(
                "SELECT * FROM experiments WHERE project=? AND (label=? OR id=?)", (project, label, label)
            ).fetchone()
            if row is not None and overwrite not in ("append", "delete"):
                raise Conflict(label)
            if row is None:
                experiment_id = self._create_experiment(
                    db, project, subject_id, label, doc["xsi_type"], user, doc["fields"]
                )
            else:
                experiment_id = row["id"]
                current = json.loads(row["extra"])
                if overwrite == "delete":
                    for scan in db.execute(
                        "SELECT * FROM scans WHERE experiment_id=?", (experiment_id,)
                    ).fetchall():
                        discard += self._delete(db, self._obj("scan", scan))
                    current = {}
                db.execute(
                    "UPDATE experiments SET extra=?, xsi_type=? WHERE id=?",
                    (json.dumps({**current, **doc["fields"]}), doc["xsi_type"], experiment_id),
                )
                self._touch(db, f"experiment:{experiment_id}")
            for scan in doc["scans"]:
                if (
                    db.execute(
                        "SELECT 1 FROM scans WHERE experiment_id=? AND id=?", (experiment_id, scan["id"])
                    ).fetchone()
                    is None
                ):
                    self._create_scan(db, experiment_id, scan["id"], scan["xsi_type"], scan["fields"])
                parent = f"scan:{experiment_id}/{scan['id']}"
                res = db.execute(
                    "SELECT id FROM resources WHERE parent=? AND label='DICOM'", (parent,)
                ).fetchone()
                if res is None:
                    db.execute(
                        "INSERT INTO resources(parent, label, format, content) "
                        "VALUES(?, 'DICOM', 'DICOM', 'RAW')",
                        (parent,),
                    )
                    res = db.execute("SELECT last_insert_rowid()").fetchone()
                # one query and one executemany per scan: the lock is held while this runs
                old = dict(db.execute("SELECT path, blob FROM files WHERE resource_id=?", (res[0],)))
                discard += [old[f["path"]] for f in scan["files"] if f["path"] in old]
                db.executemany(
                    "INSERT OR REPLACE INTO files(resource_id, path, size, md5, blob, crc32) "
                    "VALUES(?,?,?,?,?,?)",
                    [
                        (res[0], f["path"], f["size"], f["md5"], f["blob"], f.get("crc32"))
                        for f in scan["files"]
                    ],
                )
        self.discard_blobs(discard)
        return experiment_id

    def add_prearchive(self, project: str, timestamp: str, name: str, doc: dict[str, Any]) -> None:
        self._make_durable(f["blob"] for scan in doc["scans"] for f in scan["files"])
        with self.transaction() as db:
            db.execute(
                "INSERT INTO prearchive(project, timestamp, name, doc) VALUES(?,?,?,?)",
                (project, timestamp, name, json.dumps(doc)),
            )

    def prearchive(self, project: str | None = None) -> list[tuple[str, str, str, dict[str, Any]]]:
        if project is None:
            rows = self._query("SELECT * FROM prearchive ORDER BY timestamp")
        else:
            rows = self._query("SELECT * FROM prearchive WHERE project=? ORDER BY timestamp", (project,))
        return [(r["project"], r["timestamp"], r["name"], json.loads(r["doc"])) for r in rows]

    def take_prearchive(self, project: str, timestamp: str, name: str, keep_blobs: bool) -> dict | None:
        """Remove a prearchive session and return its document (blobs kept for archiving, or dropped)."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT doc FROM prearchive WHERE project=? AND timestamp=? AND name=?",
                (project, timestamp, name),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "DELETE FROM prearchive WHERE project=? AND timestamp=? AND name=?",
                (project, timestamp, name),
            )
        doc = json.loads(row[0])
        if not keep_blobs:
            self.discard_blobs([f["blob"] for s in doc["scans"] for f in s["files"]])
        return doc

    # ---- roles and tokens ------------------------------------------------------------------

    def roles(self, login: str | None = None, project: str | None = None) -> list[tuple[str, str, str]]:
        """(project, login, role) rows set through the API ("" = removed), optionally filtered."""
        sql, args = "SELECT project, login, role FROM project_roles WHERE 1=1", []
        if login is not None:
            sql += " AND login=?"
            args.append(login)
        if project is not None:
            sql += " AND project=?"
            args.append(project)
        return [(r[0], r[1], r[2]) for r in self._query(sql + " ORDER BY project, login", tuple(args))]

    def set_role(self, project: str, login: str, role: str | None) -> None:
        """Record a role set through the API; None records its removal (overrides the users file)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO project_roles(project, login, role) VALUES(?,?,?)",
                (project, login, role or ""),
            )

    def add_token(self, alias: str, secret: str, login: str, lifetime: float) -> float:
        created = time.time()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO tokens(alias, secret_sha256, login, created, expires) VALUES(?,?,?,?,?)",
                (alias, hashlib.sha256(secret.encode()).hexdigest(), login, created, created + lifetime),
            )
        return created + lifetime

    def token_login(self, alias: str, secret: str) -> str | None:
        """The login an unexpired alias token stands for, or None."""
        rows = self._query("SELECT secret_sha256, login, expires FROM tokens WHERE alias=?", (alias,))
        if not rows or rows[0]["expires"] < time.time():
            return None
        digest = hashlib.sha256(secret.encode()).hexdigest()
        return rows[0]["login"] if hmac.compare_digest(digest, rows[0]["secret_sha256"]) else None

    def delete_token(self, alias: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM tokens WHERE alias=?", (alias,))
