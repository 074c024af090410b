"""The new files `status` lists, with an untracked cache as git keeps one
(`core.untrackedCache`): the walk of the working tree is skipped while no
folder it listed has changed.

A folder's mtime and ctime move whenever a name in it is added, removed or
renamed, or its permissions change; a file written in place touches only
its own stamps. So the walk's answer stands while every folder it listed
keeps its stat, the manifest (the tracked names) and `.latticeignore` are
as they were, and each file it found is still a plain file. A folder whose
stamp was taken within RACY_WINDOW_NS of the walk could still change within
the same clock tick unnoticed, so such a walk is not kept; nor one within a
second or two of a stamp without a fraction, from a filesystem that keeps
whole seconds (lattice.worktree.settled).

The cache is `.lattice/index.db-untracked`: derived, like the index, and
kept out of git by the same `.lattice/index.db*` line.
"""

from __future__ import annotations

import marshal
import os
import stat
import time
from collections.abc import Collection

from lattice import __version__, ignore
from lattice.fsutil import stamp
from lattice.repo import Repository

CACHE = "index.db-untracked"
VERSION = 3


def new_files(repo: Repository, tracked: Collection[str], digest: str, passed: list[tuple[str, str]]) -> tuple[list[str], bytes | None]:
    """The untracked media files under the project, sorted per folder as
    the walk gives them, and the cache to `keep` for the next status (None:
    nothing to keep). `tracked` are the asset names, `digest` the
    manifest's stamps digest they come from (what the cache is valid for);
    folders it may not read, and files `add` would refuse, go to `passed`
    as (name, why)."""
    root = str(repo.root)
    cache = os.path.join(repo.dir, CACHE)
    rules = stamp(os.path.join(root, ignore.FILE))
    key = (VERSION, __version__, root, digest, rules, _identity())  # a release may count other files as media
    found = _cached(cache, key, root)
    if found is not None:
        return found, None
    listed: list[tuple[str, tuple[int, int, int, int]]] = []
    started = time.time_ns()
    passed_files: list[str] = []
    found = _walk(repo, tracked, passed, listed, passed_files)
    from lattice.worktree import settled  # imported by the walk already

    kept = all(settled(mtime, started) and settled(ctime, started) for _, (mtime, ctime, _, _) in [*listed, ("", rules or (0, 0, 0, 0))])
    # What was passed over is told again each time.
    return found, marshal.dumps((*key, listed, found)) if not passed and not passed_files and kept else None


def _identity() -> tuple:
    """Who walks, as far as what it may read goes: a walk by someone who
    may read a folder (root; another user's group) lists files that one who
    may not is told it cannot see. Root's access is its capabilities (a
    container, `setpriv` may take them away)."""
    who = (os.geteuid(), os.getegid(), tuple(sorted(os.getgroups())))
    if who[0] != 0:
        return who
    try:
        with open("/proc/self/status", "rb") as f:
            caps = [line for line in f.read().splitlines() if line.startswith(b"CapEff:")]
    except OSError:
        caps = []
    return (*who, caps[0].decode(errors="replace") if caps else "")


def _read(cache: str) -> bytes:
    """The cache file's bytes: a regular file, not followed through a link,
    never waited on (a FIFO) and never read past its size (/dev/zero)."""
    fd = os.open(cache, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(cache)
        return os.read(fd, st.st_size)
    finally:
        os.close(fd)


def _cached(cache: str, key: tuple, root: str) -> list[str] | None:
    """The cached answer, if it is still the walk's; else None."""
    try:
        saved = marshal.loads(_read(cache))
        if type(saved) is not tuple or len(saved) != len(key) + 2 or saved[: len(key)] != key:
            return None
        listed, found = saved[len(key)], saved[len(key) + 1]
        if type(listed) is not list or type(found) is not list:
            return None
        for folder, was in listed:
            if type(folder) is not str or stamp(folder) != was:  # an int would stat a descriptor
                return None
        for name in found:
            try:
                if not stat.S_ISREG(os.lstat(os.path.join(root, name)).st_mode):
                    return None  # now a link, a folder, ...: the walk judges it
            except OSError:
                return None
    except Exception:  # noqa: BLE001 - none yet, cut short, damaged in any way: a derived file, so walk
        return None
    return found


def keep(repo: Repository, data: bytes) -> None:
    """Keep a walk's answer (from new_files) for the next status, where
    `.lattice/` may be written. The temp file is made in `.lattice/tmp`,
    which gc sweeps; no fsync: a cache cut short by a crash does not load,
    and the walk is made again."""
    from lattice.fsutil import create_temp, remove_quietly, write_all

    if repo.read_only:
        return
    try:
        fd, tmp = create_temp(repo.tmp, CACHE)
    except OSError:  # refused all the same: walk each time
        return
    try:
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(repo.dir, CACHE))
    except BaseException as e:  # Ctrl-C, SIGTERM too: no stray temp for fsck to report
        remove_quietly(tmp)
        if not isinstance(e, OSError):
            raise


def _walk(repo: Repository, tracked: Collection[str], passed: list[tuple[str, str]], listed: list,
          passed_files: list[str]) -> list[str]:
    from lattice.errors import InvalidInput
    from lattice.paths import check_name, shown
    from lattice.worktree import UNREADABLE, walk

    ignored = ignore.load(repo.root)
    # The walk passes over tracked names first: 10,000 tracked files cost
    # no media or ignore test.
    skip = (lambda name, is_dir: ignored(name)) if ignored is not None else None  # noqa: E731

    def unreadable(name: str, why: str) -> None:
        # A folder it may not read, and a media file whose name `add` refuses
        # (the walk tests names of untracked files only: none in a clean
        # tree); not the links and special files it passes over, as ever.
        # A linked folder's target is stamped with the listing; but a link
        # to nothing becomes a file when its target appears, which changes
        # no folder here: such a walk is not cached.
        if why == UNREADABLE:
            passed.append((name, why))
            return
        if name.endswith("/"):  # a linked folder (check_name refuses the "/")
            return
        passed_files.append(name)
        try:
            check_name(name)
        except InvalidInput:
            passed.append((shown(name), why))

    return list(walk(repo.root, media_only=True, skip=skip, known=tracked, passed=unreadable, listed=listed))
