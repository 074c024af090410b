"""The repository lock: one writer of the manifest and index at a time.

It is an flock(2) on `.lattice/lock`, so the kernel drops it the moment its
holder dies: a killed process never leaves a lock that needs a manual
unlock. The holder writes `host:pid` into the file so a waiting process can
name who it waits for.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
from pathlib import Path

from lattice.errors import LockTimeout

DEFAULT_TIMEOUT = float(os.environ.get("LATTICE_LOCK_TIMEOUT", "60"))


class RepoLock:
    """Re-entrant for the thread holding it; other threads of the process
    (worker slots) wait for it like other processes do."""

    def __init__(self, path: Path, timeout: float | None = None, read_only: bool = False):
        self.path = Path(path)
        self.timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        # For a reading command on a `.lattice/` it may not write: the lock
        # file is opened for reading (flock needs no more) and not written;
        # where there is none, no writer has ever held it.
        self.read_only = read_only
        self._fd: int | None = None
        self._depth = 0
        self._owner: int | None = None  # the thread holding it
        self._thread = threading.RLock()

    def held_here(self) -> bool:
        """This thread holds the lock: no other lattice process or thread
        is writing the repository."""
        return self._depth > 0 and self._owner == threading.get_ident()

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def acquire(self, timeout: float | None = None) -> None:
        timeout = self.timeout if timeout is None else timeout
        if not self._thread.acquire(timeout=timeout):
            raise LockTimeout("the repository is locked by another thread of this process")
        if self._depth:
            self._depth += 1
            return
        try:
            self._flock(timeout)
        except BaseException:
            self._thread.release()
            raise

    def _flock(self, timeout: float) -> None:
        if self.read_only:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except (FileNotFoundError, PermissionError):  # no writer's lock to wait for, or none this user may see
                self._hold(None)
                return
        else:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            except OSError:
                if not self.read_only:
                    raise
                os.close(fd)  # a filesystem that locks no file opened for reading: nothing to wait for
                self._hold(None)
                return
            if time.monotonic() >= deadline:
                os.close(fd)
                raise LockTimeout(
                    f"the repository is locked by {self.holder()}",
                    hint="wait for that command to finish; a lock left by a killed process is released automatically",
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        if not self.read_only:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}\n".encode(), 0)
        self._hold(fd)

    def _hold(self, fd: int | None) -> None:
        self._fd = fd
        self._depth = 1
        self._owner = threading.get_ident()

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; False at once if somebody does,
        or if the lock file may not be opened (someone else's project)."""
        try:
            self.acquire(timeout=0)
            return True
        except (LockTimeout, OSError):
            return False

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
            if self._fd is not None:
                if not self.read_only:
                    os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None
        self._thread.release()

    def __enter__(self) -> "RepoLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
