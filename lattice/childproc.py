"""Run one child program the way every generator must: an argv list (never a
shell), its own process group (so a timeout or a cancel kills it and whatever
it spawned), tied to this process on Linux (so a SIGKILL of lattice kills it
too: lattice.childguard), stdin closed, and the tail of its stderr kept for
the error."""

from __future__ import annotations

import errno
import os
import re
import signal
import sys
from typing import TYPE_CHECKING, Any, Callable

from lattice.errors import GeneratorFailed

if TYPE_CHECKING:
    import subprocess

STDERR_TAIL = 15

# Where children are started through lattice.childguard, to die with us.
# Elsewhere (macOS, Windows) a lattice killed by SIGKILL leaves its running
# generator to finish on its own, and its group to be killed by hand.
GUARDED = sys.platform.startswith("linux") and bool(sys.executable)
_GUARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "childguard.py")


def start(argv: list[str], **popen_kwargs: Any) -> subprocess.Popen:
    """subprocess.Popen(argv, start_new_session=True, **popen_kwargs): the
    child leads a process group of its own, for a timeout or a cancel to
    kill. Where GUARDED, the group also dies when this process does, by
    whatever signal: the Popen is then lattice.childguard's, the leader of
    the group, which exits as the program does (not with `executable` or
    `shell`, which the guard does not take). Raises OSError, as Popen does,
    when the program cannot be started."""
    import subprocess

    if not GUARDED or "executable" in popen_kwargs or popen_kwargs.get("shell"):
        return subprocess.Popen(argv, start_new_session=True, **popen_kwargs)
    read_end, write_end = os.pipe()
    try:
        pass_fds = (*popen_kwargs.pop("pass_fds", ()), write_end)
        proc = subprocess.Popen([sys.executable, "-I", "-S", _GUARD, str(write_end), str(os.getpid()), *argv],
                                start_new_session=True, pass_fds=pass_fds, **popen_kwargs)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    proc.args = argv
    try:
        status = b""
        while chunk := os.read(read_end, 64):  # until the guard has started the program, or failed to
            status += chunk
    except BaseException:
        _kill_group(proc, None)
        proc.wait()
        raise
    finally:
        os.close(read_end)
    if status:
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        err = int(status)
        raise OSError(err, os.strerror(err), argv[0])
    return proc


def run_child(
    argv: list[str],
    *,
    name: str,
    timeout: float | None = None,
    on_process: Callable[[Any], None] | None = None,
    on_stdout_line: Callable[[str], None] | None = None,
    cwd: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
    summary: str = "last",
) -> None:
    """Run `argv` to completion. Raises GeneratorFailed naming `name` when it
    cannot start, times out (after killing its group) or exits non-zero; the
    message quotes the `summary` ("first" or "last") line of its stderr, the
    hint its last lines. ffmpeg names the cause first; a Python traceback last.
    A child that failed saying the disk is full raises WriteRefused (exit 13)."""
    import collections
    import subprocess
    import threading

    try:
        proc = start(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if on_stdout_line else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
        )
    except OSError as e:
        busy = e.errno in (errno.EAGAIN, errno.ENOMEM, errno.ETXTBSY)  # out of processes or memory, binary being replaced
        raise GeneratorFailed(f"cannot start {name}: {e.strerror or e}", hint=f"command: {argv[0]}", transient=busy) from None
    if on_process is not None:
        on_process(proc)

    # stderr drains in its own thread so a chatty child never blocks on a full
    # pipe; stdout (when wanted) is read here so callbacks run in this thread.
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
    first: list[str] = []
    drain = threading.Thread(target=_drain, args=(proc.stderr, tail, first), daemon=True)
    drain.start()
    timed_out = threading.Event()
    timer = None
    if timeout is not None:
        timer = threading.Timer(timeout, _kill_group, args=(proc, timed_out))
        timer.daemon = True
        timer.start()
    try:
        if on_stdout_line is not None:
            _follow_stdout(proc, on_stdout_line)
        rc = proc.wait()
        # What it left running in its group (a background helper holding our
        # pipes) ends with it: the run is over when the generator exits.
        _kill_group(proc, None)
    except BaseException:
        _kill_group(proc, None)
        proc.wait()
        raise
    finally:
        if timer is not None:
            timer.cancel()
        # A grandchild that outlived the group kill could hold stderr open;
        # do not wait on it forever.
        drain.join(timeout=2)
        if proc.stdout is not None:
            proc.stdout.close()
    if timed_out.is_set():
        raise GeneratorFailed(
            f"{name} timed out after {timeout:g} s", hint="raise the timeout, or make the output smaller", transient=True
        )
    if rc != 0:
        lines = list(tail)
        full = next((code for code in (errno.ENOSPC, errno.EDQUOT) if any(os.strerror(code) in line for line in lines)), None)
        if full is not None:  # the disk, not the generator: exit 13, as for lattice's own writes
            from lattice.errors import refused_write

            raise refused_write(OSError(full, os.strerror(full)), where=cwd)
        status = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
        pick = _LOG_PREFIX.sub("", first[0] if summary == "first" else lines[-1]) if lines else ""
        raise GeneratorFailed(f"{name} failed ({status})" + (f": {pick}" if pick else ""), hint="\n".join(lines) or None,
                              transient=killed_by_signal(rc))


def alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (True when unsure: it
    may be another user's, or no valid pid)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return not _zombie(pid)


def started(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (Linux's
    /proc/PID/stat): with the pid, it names one process even after the pid
    is reused. None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        # after "PID (COMM) ", the 20th field is starttime; COMM may hold spaces and parentheses
        return int(stat[stat.rfind(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _zombie(pid: int) -> bool:
    """Whether `pid` has exited and only waits for its parent to reap it
    (a container with no init does not): gone in all but its number. Linux
    only; elsewhere, False."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # "PID (COMM) STATE ...": COMM may hold spaces and parentheses.
    return stat[stat.rfind(b")") + 2:][:1] == b"Z"


def killed_by_signal(rc: int) -> bool:
    """Whether exit status `rc` says the child was killed (the OOM killer, a
    shutdown), so another try may pass. Python sees such a child as -N. A
    shell in between (a command generator's wrapper script) reports it as
    128 + N; of that range only SIGKILL (137) and SIGTERM (143) count, since
    programs exit there for their own errors too: ffmpeg with the low byte
    of its negative error code (AVERROR_EXTERNAL, a failed encoder: 187)."""
    return rc < 0 or rc in (128 + signal.SIGKILL, 128 + signal.SIGTERM)


# ffmpeg's "[libx264 @ 0x55d8...] " context prefix: noise in a one-line error.
_LOG_PREFIX = re.compile(r"^(?:\[[^\]]* @ 0x[0-9a-f]+\] )+")


def _follow_stdout(proc, on_line) -> None:
    """Call `on_line` for each line the child prints, in this thread, until
    it exits: not until the pipe closes, which a process it left in the
    background (a daemon in a session of its own) would keep open. The
    reader stops too, so that closing the pipe then does not wait on it
    (a file object's close waits for a read under way in another thread)."""
    import queue
    import select
    import threading
    import time

    lines: queue.Queue = queue.Queue()
    exited = threading.Event()
    fd = proc.stdout.fileno()

    def pump() -> None:
        pending, stop_at = b"", None
        try:
            while True:
                ready = select.select([fd], [], [], 0.1)[0]
                if exited.is_set():
                    stop_at = stop_at or time.monotonic() + 0.5  # what it wrote before exiting, then no more
                    if not ready or time.monotonic() > stop_at:
                        break
                if not ready:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                *complete, pending = (pending + chunk).split(b"\n")
                pending = pending[-65536:]  # a progress line is short; a line without end is not kept whole
                for raw in complete:
                    lines.put(raw.decode("utf-8", "replace").rstrip("\r"))
            if pending:
                lines.put(pending.decode("utf-8", "replace").rstrip("\r"))
        except (OSError, ValueError):  # the pipe went away
            pass
        finally:
            lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        while True:
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                if proc.poll() is not None:
                    exited.set()
                continue
            if line is None:
                return
            on_line(line)
    finally:
        exited.set()
        reader.join(timeout=2)


# Control characters a generator prints (an ESC, a NUL) are shown, not obeyed.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


# A line kept for the error is cut here: a program that prints megabytes on
# one line must not make an error of that size (printed, and kept in the queue).
LINE_KEPT = 1000


def _drain(stream, tail, first) -> None:
    for raw in stream:
        if len(raw) > LINE_KEPT:
            raw = raw[:LINE_KEPT] + f"… ({len(raw) - LINE_KEPT} more bytes)".encode()
        line = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", raw.decode("utf-8", "replace").rstrip())
        if line.strip():
            tail.append(line)
            if not first:
                first.append(line)
    stream.close()


def _kill_group(proc, flag) -> None:
    if flag is not None:
        if proc.returncode is not None:  # finished just as the timer fired
            return
        flag.set()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
