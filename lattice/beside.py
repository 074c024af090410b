"""A second core for a loop of system calls: a forked child computes a
function's (small, marshal-able) result while this process goes on.

Python threads cannot overlap such loops: the GIL is taken back between
each 2 µs stat, and two threads doing so run slower than one. So `status`
checks the manifest files in a child while it checks the working files
itself, as git's preload-index stats on several threads.

Where a fork would be unsafe or useless (threads running, one usable core,
not Linux) or the child fails, the function simply runs here when its
result is asked for: the result, and any error, are then the usual ones.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import signal
import sys
from collections.abc import Callable


def can_fork() -> bool:
    """Forking is safe (no other thread holds a lock the child might need)
    and worth it (another core to run on)."""
    if not sys.platform.startswith("linux"):
        return False
    # No thread was started through `threading` if nothing imported it
    # (importing it for the question costs 0.8 ms of `status`).
    threading = sys.modules.get("threading")
    return (threading is None or threading.active_count() == 1) and len(os.sched_getaffinity(0)) > 1


class Beside:
    """`with Beside(fn) as work: …; value = work.result()`. Leaving the block
    without the result stops and reaps the child."""

    def __init__(self, fn: Callable[[], object]):
        self.fn = fn
        self.pid: int | None = None
        self.fd: int | None = None
        if can_fork():
            self._start()

    @property
    def forked(self) -> bool:
        return self.pid is not None

    def _start(self) -> None:
        r, w = os.pipe()
        try:
            pid = os.fork()
        except OSError:  # out of processes or memory: run here instead
            os.close(r)
            os.close(w)
            return
        if pid == 0:  # the child: compute, hand the result over, never return
            code = 1
            try:
                os.close(r)
                with open(w, "wb") as f:
                    f.write(marshal.dumps(self.fn()))
                code = 0
            except BaseException:  # noqa: BLE001 - any failure: the parent computes it itself
                pass
            finally:
                os._exit(code)  # no atexit handlers, no flush of the parent's buffered output
        os.close(w)
        self.pid, self.fd = pid, r

    def result(self):
        if self.pid is None:
            return self.fn()
        with open(self.fd, "rb") as f:
            self.fd = None
            data = f.read()
        try:
            _, status = os.waitpid(self.pid, 0)
            done = os.waitstatus_to_exitcode(status) == 0
        except ChildProcessError:  # SIGCHLD ignored by whoever started us: reaped already
            done = True  # a cut-off result does not load
        self.pid = None
        if done and data:
            try:
                return marshal.loads(data)
            except (EOFError, ValueError, TypeError):
                pass
        return self.fn()  # the child failed: here, its error is raised as usual

    def __enter__(self) -> Beside:
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = None
