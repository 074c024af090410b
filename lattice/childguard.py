"""The program every generator process is started through on Linux, so that
it dies with lattice: a `kill -9`, the OOM killer or a CI runner's hard kill
of lattice leaves no ffmpeg or user program running on, holding a CPU or a
GPU and writing into `.lattice/tmp`.

    python -I -S childguard.py STATUS_FD PARENT_PID PROGRAM [ARG...]

lattice (lattice.childproc.start) starts it as the leader of a process
group of its own. It asks the kernel for SIGUSR1 when its parent goes
(prctl PR_SET_PDEATHSIG), starts PROGRAM as its child in the same group,
waits for it and exits as it did: with its exit status, or killed by the
same signal. When lattice dies it kills the whole group: PROGRAM and
whatever PROGRAM started (a shell script's python, ffmpeg's helpers).

Why a program and not prctl in a preexec_fn:
- preexec_fn runs Python between fork and exec, which is unsafe in lattice,
  whose workers are threads; here prctl runs in a fresh single-threaded
  process.
- The kernel sends the death signal when the *thread* that forked the child
  exits, not only the process. A signal that can be caught lets this program
  tell the two apart: only a new parent process (init, or a subreaper)
  means lattice is gone.
- A death signal that is SIGKILL would kill PROGRAM alone; its own children
  would live on. This program stays, and kills the group.
- Lattice may die before prctl runs: the parent is checked after it.

Signals meant to stop the group (SIGINT, SIGTERM, SIGHUP, SIGQUIT, sent
with `kill -TERM -PGID`) are left to PROGRAM, which may clean up as it
likes; this program ignores them and exits as PROGRAM does. Lattice itself
stops a group with SIGKILL.

STATUS_FD is a pipe to lattice: closed once PROGRAM is executing, or given
the errno that starting it failed with (a missing program), so that lattice
raises the same OSError that subprocess.Popen would.

Standard library only, and nothing from lattice: it runs without site
packages, to start fast.
"""

import os
import signal
import sys

PR_SET_PDEATHSIG = 1
ORPHANED = signal.SIGUSR1
EXIT_ORPHANED = 125  # only a parent that is gone could see it
LEFT_TO_PROGRAM = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def main(argv: list[str]) -> None:
    status_fd, parent, program = int(argv[1]), int(argv[2]), argv[3:]
    # Never our parent's group: the group to kill must be our own.
    own_group = os.getpgrp() == os.getpid()

    def orphaned(signum, frame) -> None:
        if os.getppid() == parent:
            return  # the thread that started us ended; lattice lives on
        if own_group:
            os.killpg(0, signal.SIGKILL)  # ourselves included
        os._exit(EXIT_ORPHANED)

    signal.signal(ORPHANED, orphaned)
    # PROGRAM gets them as lattice left them: ignored if they were (nohup).
    given = {sig: signal.SIG_IGN if signal.getsignal(sig) == signal.SIG_IGN else signal.SIG_DFL
             for sig in LEFT_TO_PROGRAM}
    for sig in LEFT_TO_PROGRAM:
        signal.signal(sig, signal.SIG_IGN)
    _ask_for_death_signal()
    if os.getppid() != parent:  # lattice died before prctl: nobody wants PROGRAM
        os._exit(EXIT_ORPHANED)

    env = _original_environ()
    pid = os.fork()  # safe here, unlike in lattice: this process has one thread
    if pid == 0:
        try:
            os.set_inheritable(status_fd, False)  # closed by a successful exec
            # Signals as subprocess leaves them (restore_signals): what
            # Python's start-up or this program ignored back to the default.
            for sig, handler in ((signal.SIGPIPE, signal.SIG_DFL), (signal.SIGXFSZ, signal.SIG_DFL), *given.items()):
                signal.signal(sig, handler)
            os.execvpe(program[0], program, env)
        except OSError as e:
            os.write(status_fd, str(e.errno or 0).encode())
        finally:
            os._exit(127)
    os.close(status_fd)
    _, status = os.waitpid(pid, 0)
    _exit_like(status)


def _ask_for_death_signal() -> None:
    """prctl(PR_SET_PDEATHSIG, ORPHANED). Where it fails (a libc without
    prctl, a Python without ctypes), PROGRAM runs unguarded, as on other
    systems."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(ORPHANED), 0, 0, 0)
    except (ImportError, OSError, AttributeError):
        pass


def _original_environ() -> dict[bytes, bytes]:
    """The environment as lattice gave it: Python's start-up may have added
    to os.environ (LC_CTYPE, when it coerces a C locale)."""
    try:
        with open("/proc/self/environ", "rb") as f:
            block = f.read()
    except OSError:
        return dict(os.environb)
    env = {}
    for entry in block.split(b"\0"):
        key, eq, value = entry.partition(b"=")
        if eq and key:
            env[key] = value
    return env


def _exit_like(status: int) -> None:
    """End this process as PROGRAM ended, so lattice reads the same status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # PROGRAM's crash, not ours: no core file
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL, SIGSTOP: default already
            pass
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)  # a signal whose default is not to die
    os._exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main(sys.argv)
