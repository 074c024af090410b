"""The new files `status` lists, with an untracked cache as git keeps one
(`core.untrackedCache`): the walk of the working tree is skipped while no
folder it listed has changed.

A folder's mtime and ctime move whenever a name in it is added, removed or
renamed, or its permissions change; a file written in place touches only
its own stamps. So the walk's answer stands while every folder it listed
keeps its stat, the manifest (the tracked names) and `.latticeignore` are
as they were, and each file it found is still a plain file. A folder whose
stamp was taken within RACY_WINDOW_NS of the walk could still change within
the same clock tick unnoticed, so such a walk is not kept.

The cache is `.lattice/index.db-untracked`: derived, like the index, and
kept out of git by the same `.lattice/index.db*` line.
"""

from __future__ import annotations

import marshal
import os
import stat
import time
from typing import Collection

from lattice import ignore
from lattice.repo import Repository

CACHE = "index.db-untracked"
VERSION = 2


def new_files(repo: Repository, tracked: Collection[str], digest: str, passed: list[tuple[str, str]]) -> tuple[list[str], bytes | None]:
    """The untracked media files under the project, sorted per folder as
    the walk gives them, and the cache to `keep` for the next status (None:
    nothing to keep). `tracked` are the asset names, `digest` the
    manifest's stamps digest they come from (what the cache is valid for);
    folders it may not read, and files `add` would refuse, go to `passed`
    as (name, why)."""
    root = str(repo.root)
    cache = os.path.join(repo.dir, CACHE)
    rules = _stamp(os.path.join(root, ignore.FILE))
    key = (VERSION, root, digest, rules)
    found = _cached(cache, key, root)
    if found is not None:
        return found, None
    listed: list[tuple[str, tuple[int, int, int, int]]] = []
    started = time.time_ns()
    passed_files: list[str] = []
    found = _walk(repo, tracked, passed, listed, passed_files)
    racy = started - _racy_window()
    settled = all(max(mtime, ctime) < racy for _, (mtime, ctime, _, _) in [*listed, ("", rules or (0, 0, 0, 0))])
    # What was passed over is told again each time.
    return found, marshal.dumps((*key, listed, found)) if not passed and not passed_files and settled else None


def _racy_window() -> int:
    from lattice.worktree import RACY_WINDOW_NS

    return RACY_WINDOW_NS


def _stamp(path: str) -> tuple[int, int, int, int] | None:
    """(mtime_ns, ctime_ns, inode, size) of `path`, None where there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_size


def _cached(cache: str, key: tuple, root: str) -> list[str] | None:
    """The cached answer, if it is still the walk's; else None."""
    try:
        with open(cache, "rb") as f:
            saved = marshal.loads(f.read())
        if saved[:4] != key:
            return None
        listed, found = saved[4], saved[5]
    except (OSError, EOFError, ValueError, TypeError, IndexError):  # none yet, or cut short: walk
        return None
    for folder, was in listed:
        if _stamp(folder) != tuple(was):
            return None
    for name in found:
        try:
            if not stat.S_ISREG(os.lstat(os.path.join(root, name)).st_mode):
                return None  # now a link, a folder, ...: the walk judges it
        except OSError:
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
    except OSError:
        remove_quietly(tmp)


def _walk(repo: Repository, tracked: Collection[str], passed: list[tuple[str, str]], listed: list,
          passed_files: list[str]) -> list[str]:
    from lattice.errors import InvalidInput
    from lattice.paths import check_name
    from lattice.paths import shown
    from lattice.worktree import UNREADABLE, walk

    ignored = ignore.load(repo.root)
    # The walk passes over tracked names first: 10,000 tracked files cost
    # no media or ignore test.
    skip = (lambda name, is_dir: ignored(name)) if ignored is not None else None  # noqa: E731

    def unreadable(name: str, why: str) -> None:
        # A folder it may not read, and a media file whose name `add` refuses
        # (the walk tests names of untracked files only: none in a clean
        # tree); not the links and special files it passes over, as ever.
        # But a link to nothing becomes a file when its target appears,
        # which changes no folder here: such a walk is not cached.
        if not name.endswith("/"):
            passed_files.append(name)
        if why == UNREADABLE:
            passed.append((name, why))
            return
        try:
            check_name(name)
        except InvalidInput:
            passed.append((shown(name), why))

    return list(walk(repo.root, media_only=True, skip=skip, known=tracked, passed=unreadable, listed=listed))
