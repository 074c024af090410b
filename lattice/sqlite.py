"""Opening the repository's SQLite databases (index, queue, storage catalog)
the one way: WAL mode, NORMAL sync, a busy timeout — and a retry for the one
step SQLite does not retry by itself."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


def connect(path: Path, timeout: float = 60.0, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit)."""
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
