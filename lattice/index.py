"""The index: a SQLite file derived from the manifest, so that status, ls
and a no-op render on 10,000 assets read one table instead of parsing
10,000 TOML files. It also holds the working-tree stat cache (size, mtime,
inode → the object the file was last hashed to), the lineage edges and the
recipe cache, and the files exports wrote outside the project. Everything
but those two can be rebuilt from the manifest (`lattice fsck --repair`);
losing the export records costs only a refusal (an export then needs
--force to replace such a file), never bytes."""

from __future__ import annotations

import marshal
import os
import sqlite3
import threading
from pathlib import Path
from collections import namedtuple
from collections.abc import Iterable, Iterator

from lattice.errors import RepositoryCorrupt
from lattice.manifest import stamps_digest

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS assets(
    path TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    versions INTEGER NOT NULL,
    object TEXT NOT NULL,          -- output of the current version
    effective TEXT NOT NULL,       -- output of the pinned version, else current
    size INTEGER NOT NULL,
    pinned INTEGER,
    change TEXT NOT NULL,
    time TEXT NOT NULL,
    generator TEXT,                -- NULL for imported content
    deterministic INTEGER NOT NULL DEFAULT 0,
    recipe_key TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    wt_size INTEGER, wt_mtime_ns INTEGER, wt_ino INTEGER, wt_object TEXT
);
CREATE TABLE IF NOT EXISTS inputs(
    child TEXT NOT NULL, pos INTEGER NOT NULL, parent TEXT NOT NULL, object TEXT NOT NULL,
    PRIMARY KEY(child, pos)
);
CREATE INDEX IF NOT EXISTS inputs_parent ON inputs(parent);
CREATE TABLE IF NOT EXISTS cache(
    key TEXT PRIMARY KEY, object TEXT NOT NULL, generator TEXT, time REAL NOT NULL
);
-- A decoded copy of each manifest record, valid while the file's stat matches:
-- reading a 1,000-version asset then costs a JSON decode, not a TOML parse.
CREATE TABLE IF NOT EXISTS records(
    path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL, ino INTEGER NOT NULL, body BLOB NOT NULL
);
-- Records of manifest files a switch or merge replaced, by git blob id:
-- switching back decodes this JSON instead of parsing TOML. Rows are
-- taken out when used, so it holds only what other branches last had.
CREATE TABLE IF NOT EXISTS parked(blob TEXT PRIMARY KEY, body BLOB NOT NULL);
-- Media facts depend only on the content: probe an object once.
CREATE TABLE IF NOT EXISTS media(object TEXT PRIMARY KEY, facts TEXT NOT NULL);
-- Each file an export wrote outside the project (resolved absolute path),
-- as it was written: a later export replaces it only while its stat still
-- matches, so the user's own bytes (or an edit of ours) are never lost.
CREATE TABLE IF NOT EXISTS exports(
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ino INTEGER NOT NULL,
    source TEXT NOT NULL, object TEXT NOT NULL
);
-- status's columns of every asset as one marshal blob (reading 10,000 rows
-- costs about 15 ms, loading the blob 5), valid while `rows` is set: any
-- change to those columns, by any writer, counts a new generation and
-- drops the blob.
CREATE TABLE IF NOT EXISTS working_snapshot(
    id INTEGER PRIMARY KEY CHECK (id = 1), generation INTEGER NOT NULL, rows BLOB
);
CREATE TRIGGER IF NOT EXISTS working_snapshot_insert AFTER INSERT ON assets BEGIN
    UPDATE working_snapshot SET generation = generation + 1, rows = NULL;
END;
CREATE TRIGGER IF NOT EXISTS working_snapshot_delete AFTER DELETE ON assets BEGIN
    UPDATE working_snapshot SET generation = generation + 1, rows = NULL;
END;
CREATE TRIGGER IF NOT EXISTS working_snapshot_update
AFTER UPDATE OF path, object, generator, deterministic, wt_size, wt_mtime_ns, wt_ino, wt_object ON assets BEGIN
    UPDATE working_snapshot SET generation = generation + 1, rows = NULL;
END;
"""


class Row(namedtuple("Row", "path kind versions object effective size pinned change time generator "
                           "deterministic recipe_key tags wt_size wt_mtime_ns wt_ino wt_object")):
    """An asset's row: a tuple, built in C (`ls` builds 10,000), and no
    msgspec to load for commands that only read the index. (collections'
    namedtuple, not typing's: typing costs 3 ms of every command's start.)
    The wt_* columns are the working file's stat cache and the object it
    hashed to; pinned is a version number or None; tags a JSON list."""

    __slots__ = ()

    @property
    def tag_list(self) -> list[str]:
        import json

        return json.loads(self.tags)


# The columns status needs of a row (status reads 10,000).
WorkingRow = namedtuple("WorkingRow", "path object generator deterministic wt_size wt_mtime_ns wt_ino wt_object")


COLUMNS = ", ".join(Row._fields)


class Index:
    """Each thread (worker slots run jobs in threads) gets its own connection:
    WAL mode then isolates readers from another thread's open transaction,
    and SQLite's own locking serializes the writers."""

    def __init__(self, path: Path, reading: bool = False):
        self.path = Path(path)
        self.reading = reading  # a command that only reads: an index it may not write is copied into memory
        self._copy: sqlite3.Connection | None = None  # that copy, shared by every thread
        self._local = threading.local()
        self._open(schema=True)

    @property
    def read_only(self) -> bool:
        """The index file may not be written: this is an in-memory copy,
        and what is written to it is gone when the command ends."""
        return self._copy is not None

    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "db", None)
        return conn if conn is not None else self._open()

    def _open(self, schema: bool = False) -> sqlite3.Connection:
        try:
            from lattice.sqlite import ReadOnlyCopy, connect

            new = schema and not os.path.exists(self.path)
            if self._copy is not None:
                conn = self._copy
            else:
                conn = connect(self.path, reading=self.reading)
                if isinstance(conn, ReadOnlyCopy):
                    self._copy = conn
            if schema:
                conn.executescript(SCHEMA)
            if new:  # the snapshot's generations count from here
                conn.execute("INSERT OR IGNORE INTO working_snapshot(id, generation, rows) VALUES (1, 0, NULL)")
        except sqlite3.DatabaseError as e:
            from lattice.sqlite import storage_failure

            raise storage_failure(e, self.path) or RepositoryCorrupt(f"{self.path}: index is damaged ({e})") from None
        self._local.db = conn
        self._local.depth = 0
        self._local.stamps = None
        self._local.stamps_changed = False
        self._local.unsaved_rows = None
        return conn

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "db", None)
        if conn is not None:
            if conn is not self._copy:  # the copy is all there is: kept for the other threads
                conn.close()
            self._local.db = None

    # -- transactions (re-entrant within a thread) ----------------------------

    def __enter__(self) -> "Index":
        db = self.db
        if self._local.depth == 0:
            db.execute("BEGIN IMMEDIATE")
        self._local.depth += 1
        return self

    def __exit__(self, exc_type, *rest) -> None:
        local = self._local
        local.depth -= 1
        if local.depth == 0:
            changed, local.stamps_changed = local.stamps_changed, False
            if exc_type is not None:
                if changed:
                    local.stamps = None  # they held this transaction's changes
                if self.db.in_transaction:  # SQLite ends it itself on some errors (disk full)
                    self.db.execute("ROLLBACK")
                return
            if changed and local.stamps is not None:
                self.set_manifest_digest(stamps_digest(local.stamps, sort=True))
            self.db.execute("COMMIT")

    # -- assets -----------------------------------------------------------

    def put(self, record, manifest_stat=None, old: Row | None | bool = False) -> None:
        """Record the asset's state from its manifest record (and the stat of
        the manifest file it was read from or written to). Keeps the working
        tree's stat cache, even when the current object changes: it says
        which object the working file held when lattice last wrote or hashed
        it, whatever the manifest now lists (a reader trusts it for the
        current object only while wt_object is that object; status and
        render trust it for an object the manifest no longer lists after a
        `git checkout`: lattice.status.kept). `old`: the asset's row as the
        caller already read it (else it is looked up)."""
        self.put_many([(record, manifest_stat, old)])

    def put_many(self, items: Iterable[tuple[object, os.stat_result | None, Row | None | bool]]) -> None:
        """put() for many (record, manifest_stat, old) at once: one statement
        per table, not four per asset. A path given twice keeps the last."""
        import json

        import msgspec

        items = list(items)
        # The rows not given, read in one query per 500 instead of one each.
        looked_up = self.get_many([record.path for record, _, old in items if old is False])
        assets, records, inputs = {}, {}, {}
        for record, manifest_stat, old in items:
            cur, eff = record.current, record.effective
            recipe = cur.recipe
            if old is False:
                old = looked_up.get(record.path)
            assets[record.path] = (
                record.path, record.kind, len(record.versions), cur.object, eff.object, cur.size,
                record.pinned, cur.change, cur.time,
                recipe.generator if recipe else None, int(bool(recipe and recipe.deterministic)),
                recipe.key if recipe else None, json.dumps(record.tags),
                *((old.wt_size, old.wt_mtime_ns, old.wt_ino, old.wt_object) if old is not None else (None,) * 4),
            )
            if manifest_stat is not None:
                records[record.path] = (record.path, manifest_stat.st_mtime_ns, manifest_stat.st_size, manifest_stat.st_ino, msgspec.json.encode(record))
            inputs[record.path] = [(record.path, i, p, o) for i, (p, o) in enumerate(zip(recipe.inputs, recipe.input_objects))] if recipe else []
        db = self.db
        self._manifest_changed({path: (r[1], r[2], r[3]) for path, r in records.items()})
        db.executemany(f"INSERT OR REPLACE INTO assets({COLUMNS}) VALUES ({', '.join('?' * len(Row._fields))})", assets.values())
        db.executemany("DELETE FROM inputs WHERE child = ?", ((p,) for p in inputs))
        db.executemany("INSERT OR REPLACE INTO records(path, mtime_ns, size, ino, body) VALUES (?, ?, ?, ?, ?)", records.values())
        db.executemany("INSERT INTO inputs(child, pos, parent, object) VALUES (?, ?, ?, ?)", [e for edges in inputs.values() for e in edges])

    def manifest_stamps(self) -> dict[str, tuple[int, int, int]]:
        """Asset name → (mtime_ns, size, inode) of the manifest file last indexed."""
        return {r[0]: (r[1], r[2], r[3]) for r in self.db.execute("SELECT path, mtime_ns, size, ino FROM records")}

    # The digest of every manifest file's stamp, stored when they were last
    # found to match the records table: a command then compares one value,
    # not 10,000 rows. A connection that knows those stamps (track_stamps)
    # keeps them in step with what it writes and stores their new digest
    # with its commit, so the command after a write needs no full comparison
    # either; any other change to the table forgets the digest.
    def manifest_digest(self) -> str | None:
        r = self.db.execute("SELECT value FROM meta WHERE key = 'manifest_digest'").fetchone()
        return r[0] if r else None

    def set_manifest_digest(self, digest: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('manifest_digest', ?)", (digest,))

    def _forget_manifest_digest(self) -> None:
        self.db.execute("DELETE FROM meta WHERE key = 'manifest_digest'")

    def track_stamps(self, stamps: dict[str, tuple[int, int, int]]) -> None:
        """Take `stamps` (name → stamp), just found to match the records
        table, as this thread's view of it, kept up to date by this thread's
        writes."""
        self._local.stamps = stamps

    def _manifest_changed(self, changes: dict[str, tuple[int, int, int] | None]) -> None:
        """The records table is changing (name → new stamp; None: removed)."""
        local = self._local
        if local.stamps is None or local.depth == 0:
            local.stamps = None
            self._forget_manifest_digest()
            return
        for name, stamp in changes.items():
            if stamp is None:
                local.stamps.pop(name, None)
            else:
                local.stamps[name] = stamp
        local.stamps_changed = True

    def record_body(self, name: str, st) -> bytes | None:
        """The cached JSON of `name`'s record if the manifest file is unchanged since."""
        return self.record_bodies({name: st}).get(name)

    def record_bodies(self, stats: dict[str, os.stat_result]) -> dict[str, bytes]:
        """record_body for many manifest files (name → its stat) at once."""
        return {
            path: body
            for path, mtime_ns, size, ino, body in self._select_in("SELECT path, mtime_ns, size, ino, body FROM records WHERE path IN", list(stats))
            if (mtime_ns, size, ino) == (stats[path].st_mtime_ns, stats[path].st_size, stats[path].st_ino)
        }

    # Parked records kept at most (the newest): about a 1 KiB JSON body each.
    PARKED_MAX = 50_000

    def park_many(self, parked: Iterable[tuple[str, bytes]]) -> None:
        """Keep record bodies under git blob ids: (blob, body) pairs."""
        self.db.executemany("INSERT OR REPLACE INTO parked(blob, body) VALUES (?, ?)", parked)

    def trim_parked(self, keep: int = PARKED_MAX) -> None:
        """Forget all but the newest `keep` parked records (rowids only grow:
        a re-park deletes and re-inserts)."""
        self.db.execute("DELETE FROM parked WHERE rowid <= (SELECT max(rowid) FROM parked) - ?", (keep,))

    def unpark_many(self, blobs: list[str]) -> dict[str, bytes]:
        """The parked record bodies of those git blobs that have one, taken
        out of the table."""
        out = dict(self._select_in("SELECT blob, body FROM parked WHERE blob IN", blobs))
        self.db.executemany("DELETE FROM parked WHERE blob = ?", [(b,) for b in out])
        return out

    def first_under(self, names: list[str]) -> dict[str, str]:
        """Name → the first asset inside it as a folder, for those of `names`
        that are folders holding assets: one query per 500 names."""
        out = {}
        for i in range(0, len(names), 500):
            part = names[i : i + 500]
            values = ", ".join("(?)" for _ in part)
            out.update(self.db.execute(
                f"WITH given(name) AS (VALUES {values}) SELECT name, (SELECT path FROM assets "
                "WHERE path > name || '/' AND path < name || '0' ORDER BY path LIMIT 1) AS inside FROM given WHERE inside IS NOT NULL",
                part,
            ))
        return out

    def _select_in(self, sql: str, keys: list[str]) -> Iterator[tuple]:
        """Rows of `sql ... IN (keys)`, one query per 500 keys."""
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            yield from self.db.execute(f"{sql} ({', '.join('?' * len(part))})", part)

    def remove(self, name: str) -> None:
        self._manifest_changed({name: None})
        self.db.execute("DELETE FROM records WHERE path = ?", (name,))
        self.db.execute("DELETE FROM assets WHERE path = ?", (name,))
        self.db.execute("DELETE FROM inputs WHERE child = ?", (name,))

    def get(self, name: str) -> Row | None:
        r = self.db.execute(f"SELECT {COLUMNS} FROM assets WHERE path = ?", (name,)).fetchone()
        return Row._make(r) if r else None

    def working_rows(self, named: bool = True) -> list[WorkingRow]:
        """Every asset's current object and working-file stat cache, by
        path; `named=False`: plain tuples in WorkingRow's order, for a loop
        over 10,000 rows (a quarter of their cost is the names), from the
        snapshot where it is valid (save_working_rows keeps one). There, an
        import whose stat cache holds its current object has None for both
        ids (object_of gives it): they are two thirds of the bytes to load."""
        if named:
            return list(map(WorkingRow._make, self._query_working_rows()))
        # The generation is read before the rows: a change in between then
        # makes save_working_rows keep nothing.
        generation, blob = self.db.execute("SELECT generation, rows FROM working_snapshot").fetchone() or (None, None)
        if blob is not None:
            try:
                rows = marshal.loads(blob)
            except (EOFError, ValueError, TypeError):
                rows = None
            if type(rows) is list:
                return rows  # else damaged: read the table
        rows = self._query_working_rows()
        self._local.unsaved_rows = (generation, rows)
        return rows

    def _query_working_rows(self) -> list[tuple]:
        return self.db.execute(f"SELECT {', '.join(WorkingRow._fields)} FROM assets ORDER BY path").fetchall()

    def save_working_rows(self) -> None:
        """Keep the rows the last working_rows(named=False) read from the
        table as the snapshot the next one loads, unless the assets changed
        since. Never waits for another writer: it is only a cache."""
        generation, rows = self._local.unsaved_rows or (None, None)
        self._local.unsaved_rows = None
        if rows is None or self._local.depth:
            return
        db = self.db
        try:
            waits = db.execute("PRAGMA busy_timeout").fetchone()[0]
            db.execute("PRAGMA busy_timeout = 0")
            try:
                if generation is None:  # an index made before snapshots: count from now on
                    db.execute("INSERT OR IGNORE INTO working_snapshot(id, generation, rows) VALUES (1, 0, NULL)")
                else:
                    slim = [(r[0], None, None, r[3], r[4], r[5], r[6], None) if r[2] is None and r[7] == r[1] else r for r in rows]
                    db.execute("UPDATE working_snapshot SET rows = ? WHERE generation = ? AND rows IS NULL", (marshal.dumps(slim), generation))
            finally:
                db.execute(f"PRAGMA busy_timeout = {int(waits)}")
        except sqlite3.Error:  # busy, read-only, full: the next status tries again
            pass

    def object_of(self, name: str) -> str | None:
        """The current object of asset `name` (None: no such asset)."""
        r = self.db.execute("SELECT object FROM assets WHERE path = ?", (name,)).fetchone()
        return r[0] if r else None

    def get_many(self, names: list[str]) -> dict[str, Row]:
        """The rows of those of `names` that are assets: one query per 500."""
        return {r[0]: Row._make(r) for r in self._select_in(f"SELECT {COLUMNS} FROM assets WHERE path IN", names)}

    def rows(self, prefix: str | None = None) -> Iterator[Row]:
        if prefix:
            cur = self.db.execute(
                f"SELECT {COLUMNS} FROM assets WHERE path = ? OR (path >= ? AND path < ?) ORDER BY path",
                (prefix, prefix + "/", prefix + "0"),
            )
        else:
            cur = self.db.execute(f"SELECT {COLUMNS} FROM assets ORDER BY path")
        for r in cur:
            yield Row._make(r)

    def generators(self) -> dict[str, str]:
        """Generated asset → its generator id, by path."""
        return dict(self.db.execute("SELECT path, generator FROM assets WHERE generator IS NOT NULL ORDER BY path"))

    def names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT path FROM assets ORDER BY path")]

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM assets").fetchone()[0]

    def set_stat(self, updates: Iterable[tuple[int, int, int, str, str]]) -> None:
        """(size, mtime_ns, ino, object, path) for working files just hashed."""
        self.db.executemany(
            "UPDATE assets SET wt_size = ?, wt_mtime_ns = ?, wt_ino = ?, wt_object = ? WHERE path = ?",
            list(updates),
        )

    # -- lineage ----------------------------------------------------------

    def edges(self) -> list[tuple[str, str, str]]:
        """(child, parent, recorded parent object) for every input edge, in input order."""
        return self.db.execute("SELECT child, parent, object FROM inputs ORDER BY child, pos").fetchall()

    def children_of(self, name: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT child FROM inputs WHERE parent = ? ORDER BY child", (name,))]

    # -- recipe cache -----------------------------------------------------

    def cache_get(self, key: str) -> str | None:
        r = self.db.execute("SELECT object FROM cache WHERE key = ?", (key,)).fetchone()
        return r[0] if r else None

    def cache_put(self, key: str, oid: str, generator: str | None = None) -> None:
        import time

        self.db.execute(
            "INSERT OR REPLACE INTO cache(key, object, generator, time) VALUES (?, ?, ?, ?)",
            (key, oid, generator, time.time()),
        )

    def media_get(self, oid: str) -> dict | None:
        import json

        r = self.db.execute("SELECT facts FROM media WHERE object = ?", (oid,)).fetchone()
        return json.loads(r[0]) if r else None

    def media_put(self, oid: str, facts: dict) -> None:
        import json

        self.db.execute("INSERT OR REPLACE INTO media(object, facts) VALUES (?, ?)", (oid, json.dumps(facts)))

    # -- files exports wrote outside the project ---------------------------

    def export_stat(self, path: str) -> tuple[int, int, int] | None:
        """(size, mtime_ns, ino) of the file an export last wrote at `path`."""
        return self.db.execute("SELECT size, mtime_ns, ino FROM exports WHERE path = ?", (path,)).fetchone()

    def put_export(self, path: str, st: os.stat_result, source: str, oid: str) -> None:
        """Record that an export of `oid` (asset `source`) wrote the file `st` at `path`."""
        self.db.execute("INSERT OR REPLACE INTO exports(path, size, mtime_ns, ino, source, object) VALUES (?, ?, ?, ?, ?, ?)",
                        (path, st.st_size, st.st_mtime_ns, st.st_ino, source, oid))

    def export_rows(self) -> list[tuple[str, int, int, int]]:
        """(path, size, mtime_ns, ino) of every file exports wrote."""
        return self.db.execute("SELECT path, size, mtime_ns, ino FROM exports").fetchall()

    def drop_exports(self, rows: list[tuple[str, int, int, int]]) -> int:
        """Forget these export_rows, each only while it is still exactly
        that: a file an export wrote anew meanwhile keeps its record.
        Returns how many went."""
        with self:
            return self.db.executemany("DELETE FROM exports WHERE path = ? AND size = ? AND mtime_ns = ? AND ino = ?",
                                       rows).rowcount

    def cache_drop(self, key: str) -> None:
        self.db.execute("DELETE FROM cache WHERE key = ?", (key,))

    def cache_items(self) -> list[tuple[str, str]]:
        return self.db.execute("SELECT key, object FROM cache ORDER BY key").fetchall()

    # -- maintenance ------------------------------------------------------

    def clear_assets(self, keep: Iterable[str] = ()) -> None:
        """Drop every asset's rows, except those of the assets in `keep`."""
        import json

        self._local.stamps = None
        self._forget_manifest_digest()
        kept = json.dumps(sorted(keep))
        self.db.execute("DELETE FROM records WHERE path NOT IN (SELECT value FROM json_each(?))", (kept,))
        self.db.execute("DELETE FROM assets WHERE path NOT IN (SELECT value FROM json_each(?))", (kept,))
        self.db.execute("DELETE FROM inputs WHERE child NOT IN (SELECT value FROM json_each(?))", (kept,))

    def check(self) -> list[str]:
        try:
            problems = [r[0] for r in self.db.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as e:
            return [f"{self.path}: {e}"]
        return [] if problems == ["ok"] else [f"{self.path}: {p}" for p in problems]
