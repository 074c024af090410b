"""`.lattice/storage.db`: the facts the storage catalog keeps for gc and du
(lattice.catalog), the log of gc runs, and when each object was last used,
recorded on every materialization and read (`touch`; gc evicts the least
recently used outputs first). Its own module: `cat` and `checkout` touch,
and should not load the catalog (with dataclasses) to do so."""

from __future__ import annotations

import sqlite3
import time

from lattice.repo import Repository

_SCHEMA = """
CREATE TABLE IF NOT EXISTS used(object TEXT PRIMARY KEY, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS wtfacts(name TEXT PRIMARY KEY, stamp TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS gitfacts(blob TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, objects INTEGER NOT NULL,
    bytes INTEGER NOT NULL, detail TEXT NOT NULL
);
"""


def storage_db(repo: Repository) -> sqlite3.Connection:
    """`.lattice/storage.db`: derived and disposable except the run log."""
    from lattice.sqlite import connect

    db = connect(repo.dir / "storage.db", reading=repo.reading)
    db.executescript(_SCHEMA)
    return db


_TOUCH_DBS: dict[tuple[str, int], sqlite3.Connection] = {}


def touch(repo: Repository, oid: str) -> None:
    """Record that `oid` was just used (materialized or read). One connection
    per thread and repository: a render materializes thousands of files."""
    import threading

    if repo.read_only:  # a cache of when objects were used: nothing to keep
        return
    key = (str(repo.dir), threading.get_ident())
    try:
        db = _TOUCH_DBS.get(key) or _TOUCH_DBS.setdefault(key, storage_db(repo))
        db.execute("INSERT OR REPLACE INTO used(object, time) VALUES (?, ?)", (oid, time.time()))
    except sqlite3.Error:
        pass  # a busy or damaged usage table must never fail a checkout
