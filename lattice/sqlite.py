"""Opening the repository's SQLite databases (index, queue, storage catalog)
the one way: WAL mode, NORMAL sync, a busy timeout — and a retry for the one
step SQLite does not retry by itself."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


def connect(path: Path, timeout: float = 60.0, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit). A
    directory lattice may not write to is said so, not called damage."""
    import os

    try:
        return _connect(Path(path), timeout, check_same_thread)
    except sqlite3.OperationalError:
        if not os.access(Path(path).parent, os.W_OK):
            from lattice.errors import WriteRefused

            raise WriteRefused(
                f"{Path(path).parent} is read-only: lattice keeps its databases there",
                hint="run lattice where you may write (copy the project if it is on read-only media)",
            ) from None
        raise


def storage_failure(e: sqlite3.Error, path: Path | str | None = None):
    """The LatticeError for SQLite errors that mean the disk is full, failing
    or read-only, not that the database is damaged: WriteRefused (exit 13)
    for a full disk or a file or folder lattice may not write, exit 1 for an
    I/O error; None for any other error."""
    from lattice.errors import LatticeError, WriteRefused

    name = getattr(e, "sqlite_errorname", "") or ""
    where = f"{path}: " if path else ""
    if name.startswith("SQLITE_FULL"):
        return WriteRefused(f"{where}could not write the database ({e})",
                            hint="free some space (`lattice gc` evicts outputs that can be re-made), then run the command again")
    if name.startswith("SQLITE_READONLY"):
        return WriteRefused(f"{where}could not write the database: it is read-only ({e})",
                            hint="give yourself write permission on .lattice/ and the files in it, then run the command again")
    if name.startswith("SQLITE_IOERR"):
        return LatticeError(f"{where}could not read or write the database ({e})",
                            hint="check free space and the disk, then run the command again")
    return None


def failing_database(start: Path) -> Path | None:
    """For a write SQLite refused without naming the file (read-only, disk
    full): the first database of the repository around `start` that this
    process may not write, else the `.lattice` folder that holds them (and
    their -wal and -shm files); None outside a repository."""
    import os

    for folder in (start, *start.parents):
        lattice_dir = folder / ".lattice"
        if lattice_dir.is_dir():
            for p in sorted(lattice_dir.iterdir()):
                if p.name.endswith((".db", ".db-wal", ".db-shm")) and not os.access(p, os.W_OK):
                    return p
            return lattice_dir
    return None


def _connect(path: Path, timeout: float, check_same_thread: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=check_same_thread)
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            # Switching a new database to WAL needs an exclusive lock and
            # answers "database is locked" without waiting when two processes
            # create the file at once: wait here instead.
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                conn.close()
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn
