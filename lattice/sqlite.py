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
            from lattice.errors import LatticeError

            raise LatticeError(
                f"{Path(path).parent} is read-only: lattice keeps its databases there",
                hint="run lattice where you may write (copy the project if it is on read-only media)",
            ) from None
        raise


def storage_failure(e: sqlite3.Error, path: Path | str | None = None):
    """A LatticeError (exit 1) for SQLite errors that mean the disk is full or
    failing, not that the database is damaged; None for any other error."""
    name = getattr(e, "sqlite_errorname", "") or ""
    if not name.startswith(("SQLITE_FULL", "SQLITE_IOERR")):
        return None
    from lattice.errors import LatticeError

    where = f"{path}: " if path else ""
    return LatticeError(f"{where}could not read or write the database ({e})",
                        hint="check free space and the disk, then run the command again")


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
