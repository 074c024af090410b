"""Every error a user can meet, each with a message, a hint and an exit code.

One handler at the top of the CLI prints `error: <message>` and
`hint: <hint>` and exits with the class's code; a traceback is shown only
with `--debug`. The exit codes are part of the CLI contract (README).
"""

from __future__ import annotations

import errno
import os


class LatticeError(Exception):
    """Something went wrong."""

    exit_code = 1
    hint: str | None = None

    def __init__(self, message: str | None = None, hint: str | None = None):
        self.message = message or (self.__doc__ or "").strip()
        if hint is not None:
            self.hint = hint
        super().__init__(self.message)


class UsageError(LatticeError):
    """The command line was not understood."""

    exit_code = 2


class NotARepository(LatticeError):
    """Not inside a lattice repository."""

    exit_code = 3
    hint = "run `lattice init` to create one, or `-C DIR` to point at one"


class InvalidInput(LatticeError):
    """An argument names something that does not exist or is not allowed."""

    exit_code = 4


class UnsafePath(InvalidInput):
    """A path leaves the project or enters `.lattice/`."""

    # Every command reads the paths it is given from the current folder
    # (lattice.paths.name_for), as git does.
    hint = "name files inside the project; paths are read from the current folder"


class UnknownAsset(InvalidInput):
    """No such asset."""

    hint = "`lattice ls` lists the assets"


class RepositoryCorrupt(LatticeError):
    """The repository's files are damaged or of an unknown format."""

    exit_code = 5
    hint = "run `lattice fsck` to see what is damaged, `lattice fsck --repair` to fix what can be fixed"


class LockTimeout(LatticeError):
    """The repository is locked by another process."""

    exit_code = 6


class ContentChanged(LatticeError):
    """A file changed or vanished while it was being read."""

    exit_code = 7
    hint = "wait until the file is completely written, then run the command again"


class GeneratorFailed(LatticeError):
    """A generator failed."""

    exit_code = 8
    # Whether the queue may run the job again. A deterministic generator's
    # failure repeats itself, so lattice.produce clears this for it.
    retryable = True

    def __init__(self, message: str | None = None, hint: str | None = None, stderr_tail: str = "", *, transient: bool = False):
        super().__init__(message, hint)
        self.stderr_tail = stderr_tail  # the last lines the generator wrote to stderr
        self.transient = transient  # timed out or killed: may pass on another try, whatever the generator


class TrustRequired(LatticeError):
    """The repository config declares commands that have not been approved."""

    exit_code = 9
    hint = "review `.lattice/config.toml`, then run `lattice trust`"


class QueueError(LatticeError):
    """The job queue cannot do that."""

    exit_code = 10


class HistoryError(LatticeError):
    """The version history cannot do that."""

    exit_code = 11


class Conflict(LatticeError):
    """The change conflicts with the state of the working tree or history."""

    exit_code = 12


class WriteRefused(LatticeError):
    """The filesystem refused a write (permission denied, read-only filesystem, disk full)."""

    exit_code = 13
    hint = "check the permissions and free space there, then run the command again"


# What each errno of a refused write is called, and what to do about it.
_REFUSED = {
    errno.EACCES: ("permission denied", "give yourself write permission there (or run as its owner), then run the command again"),
    errno.EPERM: ("operation not permitted", "give yourself write permission there (or run as its owner), then run the command again"),
    errno.EROFS: ("read-only filesystem", "copy the project to storage you may write to, or remount it read-write"),
    errno.ENOSPC: ("no space left on the device", "free some space (`lattice gc` evicts outputs that can be re-made), then run the command again"),
    errno.EDQUOT: ("disk quota exceeded", "free some space (`lattice gc` evicts outputs that can be re-made), then run the command again"),
}


def refused_write(e: OSError, where: str | os.PathLike | None = None) -> WriteRefused | None:
    """A WriteRefused (exit 13) naming the path for an OSError that means
    the filesystem refused us (permission, read-only, full); None for any
    other OSError. A temp file that could not be made is named by its
    folder: that is what must become writable. An error that names no path
    (a write to an open file) is named by `where`. A file lattice may not
    read is said to be one, with the hint that fits."""
    if e.errno not in _REFUSED:
        return None
    what, hint = _REFUSED[e.errno]
    path = e.filename if e.filename is not None else where
    if path is not None:
        path = os.fsdecode(path)
        head, tail = os.path.split(path)
        if ".tmp-" in tail and head:  # lattice.fsutil.TEMP_MARK: a temp beside its target
            path = head
        elif e.errno in (errno.EACCES, errno.EPERM) and _unreadable(path):
            what, hint = f"{what} (lattice may not read it)", "give yourself read permission there, then run the command again"
    return WriteRefused(f"{path}: {what}" if path else what, hint=hint)


def _unreadable(path: str) -> bool:
    """A file or folder that is there but may not be read: the refusal was
    of a read."""
    if not os.path.lexists(path):
        return False
    try:
        os.close(os.open(path, os.O_RDONLY))
    except PermissionError:
        return True
    except OSError:
        pass
    return False


def job_failed(exit_code: int | None, message: str, hint: str | None = None) -> LatticeError:
    """The error for work that failed in a queued job, which the queue keeps
    as its text and exit code: of the class with that code (GeneratorFailed
    when the code is unknown)."""
    by_code = {c.exit_code: c for c in (LatticeError, UsageError, InvalidInput, RepositoryCorrupt, LockTimeout,
                                        ContentChanged, GeneratorFailed, TrustRequired, QueueError, HistoryError,
                                        Conflict, WriteRefused)}
    return by_code.get(exit_code, GeneratorFailed)(message, hint)


def exit_code_of(e: BaseException) -> int | None:
    """The exit code an exception stands for: a LatticeError's own; None for
    anything else (a bug, an unexpected failure)."""
    return e.exit_code if isinstance(e, LatticeError) else None


# Where library warnings go (a change recorded, but history fell behind).
# The library never prints: by default they go to the `lattice` logger; the
# CLI points them at stderr without loading logging on every start.
warning_sink = None


def warn(message: str) -> None:
    """Report something the user should know that did not stop the command."""
    if warning_sink is not None:
        return warning_sink(message)
    import logging

    logging.getLogger("lattice").warning(message)


def closest(name: str, candidates, n: int = 3) -> str:
    """A ' (did you mean: a, b?)' suffix naming the closest valid names."""
    import difflib

    near = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    return f" (did you mean: {', '.join(near)}?)" if near else ""


def command(prefix: str, *names: str, options: str = "", after: str = "", paths: bool = True) -> str:
    """A command a hint suggests, in backticks: `prefix` (`lattice add`) with
    each name quoted for the shell (`'my shot.png'`), and `--` before the
    names when one starts with '-', so that it is never read as an option;
    `options` go after the names, or before the `--`; `after` (` > FILE`)
    ends the line. The names are asset names (`sub/a.png`, `sub/a.png@v2`),
    written as paths from the folder the command runs in (`a.png` from
    `sub/`, see lattice.paths.here), which is how every command reads the
    paths it is given; `paths=False` for other names (a branch, a tag, a
    commit, a path as the user typed it), written as they are."""
    import shlex

    if paths:
        from lattice.paths import here

        names = tuple(here(n) for n in names)
    quoted = " ".join(shlex.quote(n) for n in names)
    opts = f" {options}" if options else ""
    if any(n.startswith("-") for n in names):
        return f"`{prefix}{opts} -- {quoted}{after}`"
    return f"`{prefix} {quoted}{opts}{after}`"
