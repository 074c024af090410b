"""The working tree: walking it for files (`add DIR`, `status`), and
materializing recorded versions into it (`checkout`, `cat`).

The working file is always a copy (a reflink where the filesystem allows),
never a hard link, so editing it can never corrupt the store.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Container, Iterable, Iterator
from pathlib import Path

from lattice.errors import Conflict, InvalidInput, command
from lattice.fsutil import stamp
from lattice.paths import RESERVED, check_name, confine
from lattice.repo import Repository

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (3 ms of every start)
if TYPE_CHECKING:
    from typing import BinaryIO

# A file modified within this window of being hashed may change again within
# the same mtime tick, so its stat is not trusted for the cache (git's "racy" case).
RACY_WINDOW_NS = 100_000_000


def settled(stamp_ns: int, now_ns: int) -> bool:
    """Nothing can change any more under this stamp (an mtime or ctime) unseen,
    as seen at `now_ns`: it is older than RACY_WINDOW_NS and than the tick of
    the filesystem that gave it. A filesystem that keeps whole seconds (ext3
    with small inodes, HFS+, some network mounts) or two (FAT) gives stamps
    without a fraction, and a change later in that second or two keeps the
    same stamp: so a stamp that ends in zeros counts as that coarse."""
    return now_ns - stamp_ns > RACY_WINDOW_NS + _tick(stamp_ns)


def _tick(stamp_ns: int) -> int:
    """The coarsest tick `stamp_ns` may have been rounded to: 10**k for its
    k trailing zero digits, or two seconds where it has no fraction (FAT)."""
    if stamp_ns % 1_000_000_000 == 0:
        return 2_000_000_000
    tick = 1
    while stamp_ns % (tick * 10) == 0:
        tick *= 10
    return tick


# What the walk tells `passed` of a folder it may not list.
UNREADABLE = "a folder lattice may not read (give yourself read permission to see what is in it)"


def walk(root: Path, base: str = "", media_only: bool = False,
         skip: Callable[[str, bool], bool] | None = None, known: Container[str] = (),
         passed: Callable[[str, str], None] | None = None, listed: list | None = None) -> Iterable[str]:
    """Files under `root/base` as asset names, skipping `.lattice/`, `.git/`
    and hidden entries. Symlinked directories are not entered; what is no
    file to record (a FIFO, a device, a link to nothing or out of the
    project, a name that is not UTF-8) is passed over, and told to
    `passed(name, why)`. `skip(name, is_dir)` passes over a file, or a
    folder and all in it (its name then ends with "/"); names in `known`
    (status: the tracked ones) are passed over before any other test. Names
    come out sorted per directory, a directory's files before its
    sub-directories. `listed` gets (folder, (mtime_ns, ctime_ns, inode, size)) of
    each folder listed, its stat taken before the listing, and of each linked
    folder passed over, followed (lattice.untracked)."""
    from lattice.media import is_media

    start = os.path.join(root, base) if base else os.fspath(root)
    prefix = base.replace(os.sep, "/") + "/" if base else ""
    return _walk(root, start, prefix, is_media if media_only else None, skip, known, passed, listed)


def _walk(root: Path, directory: str, prefix: str, media: Callable[[str], bool] | None,
          skip: Callable[[str, bool], bool] | None, known: Container[str],
          passed: Callable[[str, str], None] | None, listed: list | None) -> Iterable[str]:
    # Depth first with a stack of its own, not by recursion: a tree 1,000
    # folders deep is no RecursionError. Each stack item is the iterator of
    # a folder's sub-folders still to walk.
    stack: list[Iterator[tuple[str, str]]] = [iter([(directory, prefix)])]
    while stack:
        following = next(stack[-1], None)
        if following is None:
            stack.pop()
            continue
        directory, prefix = following
        dirs = yield from _folder(root, directory, prefix, media, skip, known, passed, listed)
        if dirs:  # each tested against `skip` when its turn comes, as the walk goes
            subs = [(d.path, prefix + d.name + "/") for d in sorted(dirs, key=_name)]
            stack.append(sub for sub in subs if skip is None or not skip(sub[1], True))


def _folder(root: Path, directory: str, prefix: str, media: Callable[[str], bool] | None,
            skip: Callable[[str, bool], bool] | None, known: Container[str],
            passed: Callable[[str, str], None] | None, listed: list | None):
    """Yield the files of one folder to offer; return its sub-folders to walk."""
    # os.scandir, not os.walk + os.path.islink: the entry types come with the
    # listing, so a tree of 10,000 files costs no stat per file.
    try:
        if listed is not None:
            st = os.stat(directory)
            listed.append((directory, (st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_size)))
        with os.scandir(directory) as it:
            entries = list(it)
    except PermissionError:
        if passed is not None:  # said, as git says "could not open directory"
            passed(prefix or "./", UNREADABLE)
        return []
    except OSError:
        return []  # vanished since it was listed: skipped, as os.walk does
    files, dirs = [], []
    for e in entries:
        try:
            is_dir = e.is_dir()
        except OSError:
            is_dir = False
        if not is_dir:
            files.append(e)
        elif not e.name.startswith(".") and e.name not in RESERVED:
            if not _is_symlink(e):
                dirs.append(e)
                continue
            if listed is not None:
                # A linked folder is not entered; but should what it leads to
                # become a file, that is a file to offer, and no folder listed
                # here changed (an ignored link is not even told to `passed`):
                # its stamp, followed, goes with the listing (zeros, which
                # no stamp matches, where it leads nowhere now).
                listed.append((e.path, stamp(e.path) or (0, 0, 0, 0)))
            if passed is not None and (skip is None or not skip(prefix + e.name + "/", True)):
                passed(prefix + e.name + "/", "a linked folder: lattice tracks files by their real path, so add them there")
    if known:  # one comprehension: status passes over 10,000 tracked names here
        files = [e for e in files if prefix + e.name not in known]
    for e in sorted(files, key=_name):
        f = e.name
        if f.startswith(".") or (media is not None and not media(f)):
            continue
        name = prefix + f
        if skip is not None and skip(name, False):
            continue
        why = _not_a_file(root, e, name)
        if why:
            if passed is not None:
                passed(name, why)
            continue
        yield name
    return dirs


def _not_a_file(root: Path, entry: os.DirEntry, name: str) -> str | None:
    """Why a walk passes over this entry (None: it is a file to offer). A
    FIFO or a device would hang a read or never end; a name that is not
    UTF-8 cannot be recorded; a link must stay inside the project."""
    try:
        check_name(name)  # a control character, bytes that are not UTF-8, a folder named *.toml
    except InvalidInput as e:
        return e.message
    try:
        regular = entry.is_file()  # follows a link: a dangling one or a loop is no file
    except OSError:
        regular = False
    if not regular:
        return "a symbolic link to nothing (or to itself)" if _is_symlink(entry) else "not a regular file (a FIFO, socket or device)"
    if _is_symlink(entry):
        try:
            confine(root, name)
        except InvalidInput as e:
            return e.message.removeprefix(f"{name}: ")
    return None


def _name(entry: os.DirEntry) -> str:
    return entry.name


def _is_symlink(entry: os.DirEntry) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False



# A folder standing where an asset's working file belongs: status calls it
# modified (it holds no recorded version), but it is no edit `lattice add`
# could record, so what will not write over it says to move it aside.
IN_THE_WAY = "a folder is in the way of its working file"
MOVE_ASIDE = "move the folder aside, then run the command again"


def in_the_way(path) -> bool:
    """A folder (or a link to one) stands where a working file belongs."""
    return os.path.isdir(path)


def refuse_in_the_way(name: str, path) -> None:
    """Conflict (exit 12, as for unrecorded edits) when a folder stands at
    `name`'s working file: said before any hint to `lattice add` it."""
    if in_the_way(path):
        raise Conflict(f"{name}: {IN_THE_WAY}", hint=MOVE_ASIDE)


def materialize(repo: Repository, name: str, oid: str, size: int | None = None, verify: bool = False) -> None:
    """Write object `oid` to the working path of `name`, atomically. `verify`
    (checkout): hash the bytes on the way, so that a damaged object never
    replaces the file; an output just made and stored needs no second hash,
    and unverified copies can share blocks with the store (reflink)."""
    from lattice.fsutil import atomic_file

    from lattice.paths import check_creatable

    path = repo.working_path(name)
    require_object(repo, name, oid)
    refuse_in_the_way(name, path)
    check_creatable(repo.root, name)  # a file where one of its folders belongs
    with atomic_file(path, durable=False) as f:
        repo.objects.copy_to(oid, f, limit=size, verify=verify)
    st = os.stat(path)
    with repo.index as index:
        index.set_stat([(st.st_size, st.st_mtime_ns, st.st_ino, oid, name)])
    _touch(repo, oid)


def require_writable(repo: Repository, name: str) -> None:
    """Refuse (WriteRefused, exit 13) before anything is recorded when the
    folder that will hold `name`'s working file (the nearest one there is:
    the rest will be made) cannot be written: a version recorded without
    its file is a half-done command. A full disk is only met when writing."""
    import errno

    from lattice.errors import refused_write

    folder = repo.working_path(name).parent
    while not folder.exists() and folder != repo.root:
        folder = folder.parent
    if os.access(folder, os.W_OK):
        return
    try:
        readonly = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        readonly = False
    code = errno.EROFS if readonly else errno.EACCES
    raise refused_write(OSError(code, os.strerror(code), str(folder)))


def _touch(repo: Repository, oid: str) -> None:
    from lattice.storage_db import touch  # gc evicts least recently used outputs first

    touch(repo, oid)


def require_object(repo: Repository, name: str, oid: str) -> None:
    if repo.objects.has(oid):
        return
    row = repo.index.get(name)
    if row is not None and row.generator:
        raise InvalidInput(
            f"{name}: its output {oid[:12]} is not in the store",
            hint=f"re-make it with {command('lattice render', name)}",
        )
    raise InvalidInput(
        f"{name}: its content {oid[:12]} is missing from the store",
        hint="`lattice fsck` reports lost objects; re-add the file if you still have it",
    )


def checkout(repo: Repository, names: Iterable[str], regen: bool = True, notify=None,
             command_name: str = "lattice checkout") -> list[str]:
    """Re-materialize the current version of each asset; returns the names written.
    An output evicted by gc is re-made through the queue first (unless
    regen=False), as `command_name`."""
    from lattice.remake import ensure_present

    done = []
    for name in names:
        record = repo.record(name)
        refuse_in_the_way(name, repo.working_path(name))  # before a re-make it would throw away
        ensure_present(repo, name, None, regen=regen, notify=notify, command_name=command_name)
        materialize(repo, name, record.current.object, record.current.size, verify=True)
        done.append(name)
    return done


def cat(repo: Repository, name: str, number: int | None, out: BinaryIO, regen: bool = True, notify=None,
        command_name: str = "lattice cat") -> int:
    """Write the bytes of `name` at version `number` (default: current) to
    `out`. An object the store lacks comes from the working file when it
    holds those bytes (stored back first where .lattice may be written),
    else is re-made through the queue, as `command_name` (refused where it may not)."""
    from lattice.remake import copy_working_file, ensure_present

    record = repo.record(name)
    version = record.version(number)
    if repo.read_only and not repo.objects.has(version.object):
        written = copy_working_file(repo, name, version.object, out)
        if written is not None:
            return written
    ensure_present(repo, name, version.number, regen=regen, notify=notify, command_name=command_name)
    require_object(repo, name, version.object)
    _touch(repo, version.object)
    return repo.objects.copy_to(version.object, out, limit=version.size, verify=True)
