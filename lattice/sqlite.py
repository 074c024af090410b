"""Opening the repository's SQLite databases (index, queue, storage catalog)
the one way: WAL mode, NORMAL sync, a busy timeout — and a retry for the one
step SQLite does not retry by itself."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


def connect(path: Path, timeout: float = 60.0, check_same_thread: bool = True, reading: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit). A
    directory lattice may not write to is said so, not called damage.
    `reading`: the command only reads, so a database lattice may not write
    (read-only media, someone else's checkout) is opened as an in-memory
    copy (see read_only_copy) instead of refused."""
    import os

    path = Path(path)
    if reading and not _writable(path):
        return read_only_copy(path)
    try:
        return _connect(path, timeout, check_same_thread)
    except sqlite3.OperationalError:
        if not os.access(path.parent, os.W_OK):
            if reading:
                return read_only_copy(path)
            from lattice.errors import WriteRefused

            raise WriteRefused(
                f"{path.parent} is read-only: lattice keeps its databases there",
                hint="run lattice where you may write (copy the project if it is on read-only media)",
            ) from None
        raise


def _writable(path: Path) -> bool:
    """This process may write the database at `path` (or create it). One
    access(2): a read-only mount says no to root too."""
    import os

    try:
        return os.access(path, os.W_OK) if os.path.exists(path) else os.access(path.parent, os.W_OK)
    except OSError:
        return False


class ReadOnlyCopy(sqlite3.Connection):
    """An in-memory copy of a database lattice may not write: what a reading
    command writes to it (caches: the stat cache, digests, a snapshot; an
    index catching up with the manifest) lives as long as the command."""


def read_only_copy(path: Path) -> ReadOnlyCopy:
    """The database at `path` copied into memory (an empty one where there
    is none yet), never writing beside it. Reading a WAL database takes its
    -shm file: SQLite opens it read-only where that file is there or may be
    made; else, with no -wal file to read, as immutable (no writer has it
    open: a writer would have made the -shm); else (a killed writer's -wal
    and no -shm) from a private copy of both files in the temp folder."""
    import os
    import shutil
    import tempfile
    from contextlib import closing

    memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False, factory=ReadOnlyCopy)
    if not os.path.exists(path):
        return memory
    uri = Path(os.path.abspath(path)).as_uri()
    wal = Path(f"{path}-wal")
    try:
        for query in ("?mode=ro", "?mode=ro&immutable=1"):
            if query.endswith("immutable=1") and wal.exists() and wal.stat().st_size:
                break
            try:
                with closing(sqlite3.connect(uri + query, uri=True)) as source:
                    source.backup(memory)
                return memory
            except sqlite3.OperationalError as e:
                if (getattr(e, "sqlite_errorname", "") or "").startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY")):
                    continue
                raise
        with tempfile.TemporaryDirectory(prefix="lattice-ro-") as scratch:
            copy = Path(scratch, path.name)
            shutil.copyfile(path, copy)
            if wal.exists():
                shutil.copyfile(wal, f"{copy}-wal")
            with closing(sqlite3.connect(copy)) as source:
                source.backup(memory)
        return memory
    except BaseException:
        memory.close()
        raise


# SQLite's I/O errors are taken for a full disk below this much room: growing
# a -shm file takes 32 KiB, a WAL frame a page.
SQLITE_ROOM = 256 * 1024


def storage_failure(e: sqlite3.Error, path: Path | str | None = None):
    """The LatticeError for SQLite errors that mean the disk is full, failing
    or read-only, not that the database is damaged: WriteRefused (exit 13)
    for a full disk or a file or folder lattice may not write, exit 1 for an
    I/O error; None for any other error."""
    from lattice.errors import LatticeError, WriteRefused
    from lattice.fsutil import disk_full

    name = getattr(e, "sqlite_errorname", "") or ""
    where = f"{path}: " if path else ""
    if name.startswith("SQLITE_FULL"):
        return WriteRefused(f"{where}could not write the database ({e})",
                            hint="free some space (`lattice gc` evicts outputs that can be re-made), then run the command again")
    if name.startswith("SQLITE_READONLY"):
        return WriteRefused(f"{where}could not write the database: it is read-only ({e})",
                            hint="give yourself write permission on .lattice/ and the files in it, then run the command again")
    if name.startswith("SQLITE_IOERR"):
        if path is not None and disk_full(Path(path), SQLITE_ROOM):  # e.g. the -shm file could not grow
            return WriteRefused(f"{where}could not read or write the database: no space left on the disk ({e})",
                                hint="free some space (`lattice gc` evicts outputs that can be re-made), then run the command again")
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
