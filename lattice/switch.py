"""Switching branches, and the journaled change of the checked-out state that
switch and merge share.

A change rewrites only the manifest files that differ between the two
trees, updates the index for those assets, then brings the working tree
along: present outputs are copied in, absent ones are left to `lattice
render`, and a working file with unrecorded edits is never overwritten or
deleted. What it will do is written to a journal first, so that a crash
mid-way is finished by the next command (recover).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import msgspec

from lattice import history, history_pending
from lattice.branches import require_branch, require_name
from lattice.errors import Conflict, HistoryError, InvalidInput, RepositoryCorrupt, command
from lattice.paths import here, shown
from lattice.repo import JOURNAL, Repository


@dataclass
class Worktree:
    materialized: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # unrecorded edits left as they are
    absent: list[str] = field(default_factory=list)  # outputs to re-make with `lattice render`


@dataclass
class Switched:
    branch: str
    previous: str
    changed: int
    worktree: Worktree


# -- switch --------------------------------------------------------------------


def switch(repo: Repository, name: str, force: bool = False) -> Switched:
    require_name(name, "branch", "`lattice branch` lists the branches to switch to")
    with repo.lock:
        repo.finish_interrupted()
        g = history.open_git(repo)
        require_branch(g, name)
        previous = history.current_branch(g)
        if name == previous:
            return Switched(name, previous, 0, Worktree())
        if not force:
            refuse_dirty(repo, "switch")
        head = settled_head(repo, g)
        target = history.resolve(g, name)
        head, changes, seen = record_manifest_edits(repo, g, head, target)
        blobs = {n: new for n, (_, new) in changes.items()}
        wt = change_state(repo, g, blobs, config_change(head.tree, target.tree), head=f"ref:refs/heads/{name}", seen=seen)
    _warn_superseded(repo, previous, name)
    return Switched(name, previous, len(changes), wt)


def _warn_superseded(repo: Repository, left: str | None, now: str) -> None:
    """Jobs queued on the branch left (`--detach`, or a command still
    waiting) record nothing while another is checked out: said once, not
    refused -- switching back before they finish keeps their work."""
    from lattice.errors import warn
    from lattice.jobs import queued_on

    if not left:
        return
    ids = queued_on(repo, left)
    if ids:
        warn(f"{len(ids)} job(s) queued on {left} ({_some(list(map(str, ids)))}) will be superseded: they record nothing while {now} is checked out; "
             f"{command('lattice switch', left, paths=False)} before they finish keeps their work")


def _some(names: list[str]) -> str:
    """The first five names, and how many more."""
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def refuse_dirty(repo: Repository, what: str) -> None:
    """Conflict over unrecorded edits, and over folders standing where
    working files belong (no edit to record: to be moved aside)."""
    from lattice.status import modified as unrecorded
    from lattice.worktree import in_the_way

    modified = unrecorded(repo)
    if not modified:
        return
    blocked = [n for n in modified if in_the_way(repo.working_path(n))]
    edits = [n for n in modified if n not in blocked]

    why, todo = [], []
    if edits:
        why.append(f"unrecorded changes in {_some(edits)}")
        # Commands to copy and run: the first few names, the rest left to status.
        them = "it" if len(edits) == 1 else "them"
        first = edits[:3]
        rest = f" (the first {len(first)} of {len(edits)}: `lattice status` lists them all)" if len(edits) > len(first) else ""
        todo.append(f"record {them} with {command('lattice add', *first)}, "
                    f"discard {them} with {command('lattice checkout', *first)}{rest}")
    if blocked:
        why.append(f"{'a folder is' if len(blocked) == 1 else 'folders are'} in the way of the working file of {_some(blocked)}")
        todo.append(f"move the folder{'s' if len(blocked) > 1 else ''} aside")
    force = ", or pass --force to switch and leave " + ("it as it is" if len(modified) == 1 else "them as they are")
    raise Conflict(f"cannot {what}: {'; '.join(why)}", hint="; ".join(todo) + (force if what == "switch" else ""))


# -- changing the checked-out state (switch and merge) -------------------------


def settled_head(repo: Repository, g):
    """HEAD, after committing any recorded change history missed (a crash or
    damaged history): switching must never drop a recorded version."""
    history_pending.catch_up(repo)
    # A hand edit of config.toml is a change like any other: record it on
    # this branch before the target's config replaces it.
    history.commit(repo, "config.toml edited", names=[])
    return history.ensure_head(repo, g)


def record_manifest_edits(repo: Repository, g, head, target) -> tuple:
    """(HEAD, the assets that differ between it and `target`: name → (its
    blob in HEAD, in target), the (stat, blob id) of their manifest files as
    read), after committing on this branch the manifest files among them
    that were edited outside lattice (by hand, by a script): a switch or
    merge would otherwise write the target's text over an edit no history
    holds. Like a hand edit of config.toml, it is a change."""
    from lattice.gitpack import blob_id

    changes = history.changed_assets(g, head.tree, target.tree)
    edited, seen = [], {}
    for name, (old, _) in changes.items():
        found = _manifest_bytes(repo, name)
        if found is None:  # gone: nothing to lose
            continue
        seen[name] = (found[0], blob_id(found[1]))
        if old is None or seen[name][1] != str(old):
            edited.append(name)
    if edited:
        history.commit_outside_edits(repo, edited)
        head = history.ensure_head(repo, g)
        changes = history.changed_assets(g, head.tree, target.tree)
    return head, changes, seen


def _manifest_bytes(repo: Repository, name: str) -> tuple[os.stat_result, bytes] | None:
    """(stat, bytes) of an asset's manifest file; None when there is none, or
    it is changing under us."""
    path = repo.manifest.file_of(name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise RepositoryCorrupt(f"{path} is a symbolic link; manifest files never are", hint="replace it with the file from history (`lattice fsck --repair`)") from None
    try:
        st = os.fstat(fd)
        data = os.read(fd, st.st_size + 1)
    finally:
        os.close(fd)
    return (st, data) if len(data) == st.st_size else None


def config_change(old_tree, new_tree):
    old, new = history.config_blob(old_tree), history.config_blob(new_tree)
    return new if old != new else False


class Journal(msgspec.Struct):
    """What a switch or merge is about to do, written durably before it
    touches a file. Every blob and object it names is already stored, so
    when a crash interrupts the change, the next command re-applies it
    (recover): the manifest is never left half one branch, half another."""

    blobs: dict[str, Optional[str]]  # manifest file of asset → git blob id (None: remove)
    config: Union[str, None, bool]  # config.toml's blob id; None: empty; False: unchanged
    write: dict[str, tuple[str, int]]  # working file of asset → (object, size) to write
    delete: list[str]  # working files to remove
    head: Optional[str] = None  # "ref:refs/heads/B" (switch) or "commit:ID" (fast-forward)
    # Folders to remove once the deletes have emptied them, deepest first: an
    # asset's file goes where they were (`x.png/a.png` leaving, `x.png` coming).
    emptied: list[str] = msgspec.field(default_factory=list)


def change_state(repo: Repository, g, blobs: dict, config, head: str | None = None, seen: dict | None = None,
                 records: dict | None = None, commit: tuple[str, list[str]] | None = None) -> Worktree:
    """Make the manifest files of `blobs` (asset → blob id, None: remove) and,
    unless `config` is False, config.toml match history's text; bring their
    working files along; move HEAD as `head` says. Journaled: see Journal.
    `seen`: the (stat, blob id) of manifest files the caller just read;
    `records`: the records of `blobs`, when the caller already has them;
    `commit`: (message, extra parents) of the commit to catch up as, once
    the journal makes the change certain (history_pending.mark)."""
    known = repo.index.get_many(list(blobs))
    before = {n: known.get(n) for n in blobs}
    with repo.index:
        _park(repo, list(blobs), seen or {})
        repo.index.trim_parked()
        if records is None:
            records = records_of_blobs(repo, g, blobs)
    verb = "switch" if head is not None and head.startswith("ref:") else "merge"
    wt, write, delete, emptied = _plan_worktree(repo, before, records, verb)
    journal = Journal({n: str(b) if b is not None else None for n, b in blobs.items()},
                      str(config) if config not in (False, None) else config, write, delete, head, emptied)
    from lattice.fsutil import atomic_write

    atomic_write(repo.dir / JOURNAL, msgspec.json.encode(journal))
    if commit is not None:
        history_pending.mark(repo, *commit)
    _apply(repo, g, journal, records, before)
    return wt


def recover(repo: Repository) -> None:
    """Finish a switch or merge a crash interrupted (its journal is still
    there): every step is re-done, which is harmless for those already done."""
    if repo.read_only:
        repo.refuse_unfinished()
    with repo.lock:
        if "index" not in repo.__dict__:
            repo.index  # opening the index finishes a journal itself (Repository.index): once, not twice
            return
        try:
            data = (repo.dir / JOURNAL).read_bytes()
        except FileNotFoundError:
            return  # finished by the process that held the lock
        try:
            journal = msgspec.json.decode(data, type=Journal)
            g = history.open_git(repo)
            records = records_of_blobs(repo, g, journal.blobs)
            edited = _edited_since(repo, journal)
            journal.write = {n: w for n, w in journal.write.items() if n not in edited}
            journal.delete = [n for n in journal.delete if n not in edited]
            _apply(repo, g, journal, records)
        except Exception as e:
            raise RepositoryCorrupt(
                f"an interrupted switch or merge could not be finished: {getattr(e, 'message', None) or e}",
                hint="`lattice fsck --repair` sets the journal aside and checks the rest",
            ) from None
        if edited:
            from lattice.errors import warn

            warn(f"finishing an interrupted switch or merge, kept {_some(sorted(edited))}: "
                 "edited since it was cut short; `lattice status` lists them")
        try:  # a merge's commit, which the killed process never made
            history_pending.catch_up(repo)
        except Exception as e:
            from lattice.errors import warn

            warn(f"the interrupted change was finished, but not committed to history: {history_pending._why(e)}; `lattice fsck --repair` commits it")


def _edited_since(repo: Repository, journal: Journal) -> set[str]:
    """The working files a journal replaces or removes that hold neither
    what it writes there nor what the index records (the version before
    the change, until the change ends): edits made after the change was cut
    short, which finishing it keeps, as a switch keeps unrecorded edits."""
    from lattice.paths import confined
    from lattice.status import hash_file, held

    names = [*journal.write, *journal.delete]
    rows = repo.index.get_many(names)
    folders: dict[str, str] = {}
    edited = set()
    for name in names:
        path = confined(repo.root, name, folders)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not stat.S_ISREG(st.st_mode):
            continue  # a folder: never replaced (_apply's writes pass over it)
        row = rows.get(name)
        state, found = held(repo, row, path, st) if row is not None else ("modified", hash_file(path))
        target = journal.write.get(name, (None,))[0]
        if state == "modified" and found != target and not (target is not None and _begins(repo, target, path, st.st_size)):
            edited.add(name)
    return edited


def _begins(repo: Repository, oid: str, path: str, size: int) -> bool:
    """Whether the file at `path` (`size` bytes) holds the start of object
    `oid`: its write cut short by the kill that left the journal."""
    from lattice.objects import CHUNK

    try:
        with repo.objects.open(oid) as src, open(path, "rb") as f:
            while size > 0:
                mine = f.read(min(CHUNK, size))
                theirs = b""
                while len(theirs) < len(mine) and (more := src.read(len(mine) - len(theirs))):
                    theirs += more
                if not mine or theirs != mine:
                    return False
                size -= len(mine)
    except (InvalidInput, OSError):  # evicted since, or gone
        return False
    return True


def _apply(repo: Repository, g, journal: Journal, records: dict, before: dict | None = None) -> None:
    """Carry out a journal: manifest files rewritten in place (history holds
    every byte, so the journal, not a temp file per asset, makes this
    crash-safe), one filesystem sync, working files replaced the way git
    replaces them (unlink, create; several at once where that pays, as
    git's parallel checkout does), index, HEAD, and the journal removed."""
    from lattice.fsutil import in_threads_when_slow, sync_filesystem
    from lattice.paths import confined

    manifest_stats = {}
    for name, blob in journal.blobs.items():
        if blob is None:
            repo.manifest.remove(name)
        else:
            manifest_stats[name] = repo.manifest.overwrite(name, g[blob].data)
    if journal.config is not False:
        repo.manifest.overwrite_file(repo.dir / history.CONFIG, g[journal.config].data if journal.config else b"")
        repo.__dict__.pop("config", None)  # re-read on next use
    sync_filesystem(repo.dir)
    folders: dict[str, str] = {}  # confined() resolves each folder once
    for name in journal.delete:
        # Gone already, or (the journal re-done after a crash) its writes put
        # a file where this one's folder was, or a folder where it was.
        with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
            os.unlink(confined(repo.root, name, folders))
    for name in journal.emptied:
        with contextlib.suppress(OSError):  # gone, or not empty: a file made there since (the write below skips it)
            os.rmdir(confined(repo.root, name, folders))
    _remove_emptied_folders(repo.root, journal.delete, keep=journal.write)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW

    def replace(item: tuple) -> tuple | None:
        name, path, oid, size = item
        try:
            os.unlink(path)
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:  # no file, or no folder yet
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, flags, 0o644)
        except IsADirectoryError:  # a folder made there since the plan: left as it is
            return None
        with open(fd, "wb", buffering=0) as f:
            try:
                repo.objects.copy_to(oid, f, limit=size)
            except InvalidInput:  # evicted since (a journal re-done late): left to `lattice render`
                os.unlink(path)
                return None
            st = os.fstat(fd)
        return st.st_size, st.st_mtime_ns, st.st_ino, oid, name

    items = [(name, confined(repo.root, name, folders), oid, size) for name, (oid, size) in journal.write.items()]
    # Several at once only where that pays: large files, or a disk slow to
    # create them (5,000 assets, 1,000 differing: 480 against 540 ms on ext4).
    stats = [st for st in in_threads_when_slow(replace, items, slow_s=150e-6) if st is not None]
    with repo.index as index:  # one index transaction for the whole change
        index.put_many((record, manifest_stats[name], before[name] if before else False) for name, record in records.items())
        for name, blob in journal.blobs.items():
            if blob is None:
                index.remove(name)
        index.set_stat(stats)
    if journal.head is not None:
        kind, _, target = journal.head.partition(":")
        if kind == "ref":
            g.set_head(target)
        else:
            import pygit2

            g.head.set_target(pygit2.Oid(hex=target), "fast-forward")
    os.unlink(repo.dir / JOURNAL)


def _remove_emptied_folders(root: Path, deleted: list[str], keep: Iterable[str]) -> None:
    """Remove the folders the deleted working files left empty, as git does
    when a switch takes files away: each file's folder and the folders
    above it, deepest first, except those a file to be written goes in.
    rmdir removes only an empty folder: one holding anything else stays."""
    from lattice.errors import UnsafePath
    from lattice.paths import confined

    kept = {parent for name in keep for parent in _parents(name)}
    emptied = {parent for name in deleted for parent in _parents(name)} - kept
    folders: dict[str, str] = {}
    for folder in sorted(emptied, key=lambda f: -f.count("/")):  # deepest first
        # Not empty, gone, a link, or reached through one: what holds it stays.
        with contextlib.suppress(OSError, UnsafePath):
            os.rmdir(confined(root, folder, folders))


def _parents(name: str) -> Iterator[str]:
    """`a/b/c.png` → `a/b`, `a`."""
    while "/" in name:
        name = name.rpartition("/")[0]
        yield name


def _park(repo: Repository, names: list[str], seen: dict) -> None:
    """Keep the decoded records of these assets' manifest files, about to be
    replaced, under the files' git blob ids: switching back then needs no
    TOML parse. Only records the index holds for exactly these bytes.
    `seen`: (stat, blob id) of files already read."""
    from lattice.gitpack import blob_id

    stats, blobs = {}, {}
    for name in names:
        if name in seen:
            stats[name], blobs[name] = seen[name]
            continue
        found = _manifest_bytes(repo, name)
        if found is not None:  # else gone, or changing under us: not worth keeping
            stats[name], blobs[name] = found[0], blob_id(found[1])
    repo.index.park_many((blobs[name], body) for name, body in repo.index.record_bodies(stats).items())


def records_of_blobs(repo: Repository, g, blobs: dict) -> dict:
    """Asset → its record in history's manifest blob (asset → blob id; None
    skipped): parked JSON when this repository had it before, else the TOML
    parsed."""
    from lattice.records import AssetRecord, decode

    wanted = {name: str(oid) for name, oid in blobs.items() if oid is not None}
    parked = repo.index.unpark_many(list(wanted.values()))
    records = {}
    for name, oid in wanted.items():
        path = repo.manifest.file_of(name)  # validates names that came from history
        body = parked.get(oid)
        record = msgspec.json.decode(body, type=AssetRecord) if body is not None else decode(g[oid].data, path)
        if record.path != name:
            raise HistoryError(f"history's {path.name} records asset {shown(record.path)}", hint="`lattice fsck` checks history")
        records[name] = record
    return records


def _plan_worktree(repo: Repository, before: dict, records: dict, verb: str = "switch") -> tuple[Worktree, dict, list, list]:
    """What to do with the working files of the assets in `before` (name →
    index row before the change) given their new records (absent: the asset
    was removed): (the report, files to write, files to delete, folders to
    remove once those are gone). A working file with unrecorded edits is
    kept as it is; one to be removed or replaced whose object the store
    lacks (gc evicted it) is stored back first (_stored). A folder where an asset's file is to go (`x.png/` of
    asset `x.png/a.png`, leaving) is removed when the deletes empty it; one
    holding anything else refuses the change before it starts."""
    from lattice.paths import confined
    from lattice.status import held

    wt = Worktree()
    write: dict[str, tuple[str, int]] = {}
    delete: list[str] = []
    in_the_way: dict[str, list[str]] = {}  # asset → the folders at its name, deepest first
    folders: dict[str, str] = {}
    for name in sorted(before):
        old = before[name]
        record = records.get(name)
        path = confined(repo.root, name, folders)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode) and record is not None and not os.path.islink(path):
            if old is not None:
                # The user's folder where this branch's file was (`switch
                # --force`, which said it would leave it as it is): kept.
                wt.kept.append(name)
            else:  # a folder of assets leaving, and this asset's file coming
                in_the_way[name] = []  # planned below, once every file leaving is known
            continue
        state, found = held(repo, old, path, st) if st is not None and old is not None else ("modified", "")
        if st is not None and state == "modified":
            wt.kept.append(name)
        elif st is not None and record is not None and old.object == record.current.object:
            continue
        elif st is not None and not _stored(repo, name, found):
            wt.kept.append(name)  # changed while it was being stored: an edit now
        elif record is None:
            if st is not None:
                delete.append(name)
                wt.removed.append(name)
        elif repo.objects.has(record.current.object):
            if st is None:  # a file there already proves its folders are folders
                _require_folders(repo, name, delete, verb)
            write[name] = (record.current.object, record.current.size)
            wt.materialized.append(name)
        else:
            if st is not None:  # the old version's bytes would read as an edit
                delete.append(name)
            wt.absent.append(name)
    if in_the_way:
        leaving = set(delete)
        for name in in_the_way:
            in_the_way[name] = _emptied_folders(repo, name, leaving, verb)
            record = records[name]
            if repo.objects.has(record.current.object):
                write[name] = (record.current.object, record.current.size)
                wt.materialized.append(name)
            else:
                wt.absent.append(name)
        wt.materialized.sort()
        wt.absent.sort()
    return wt, write, delete, [d for name in sorted(in_the_way) for d in in_the_way[name]]


def _require_folders(repo: Repository, name: str, leaving: list[str], verb: str) -> None:
    """Refuse the change before it starts when a file stands where a folder
    of `name` must go: something in the way, as a folder where a file must
    go is (_emptied_folders), so the same Conflict (exit 12)."""
    from lattice.errors import UnsafePath
    from lattice.paths import check_creatable

    try:
        check_creatable(repo.root, name, leaving=leaving)
    except UnsafePath as e:
        raise Conflict(f"cannot {verb}: {e.message}", hint=f"nothing was changed; {e.hint}") from None


def _stored(repo: Repository, name: str, oid: str) -> bool:
    """Whether the store holds `oid`, the object the working file of `name`
    holds, before the file is removed or replaced: gc evicts an output from
    the store while its working file keeps it, the only copy then. Such a
    file is stored back first (only these are read), so that switching back
    brings it back. False when it changed meanwhile."""
    if repo.objects.has(oid):
        return True
    from lattice.remake import adopt_working_file

    return adopt_working_file(repo, name, oid)


def _emptied_folders(repo: Repository, name: str, leaving: set[str], verb: str) -> list[str]:
    """The folder at asset `name` and those in it, deepest first, when it
    holds nothing but files in `leaving` (files of assets this change
    removes); else Conflict naming what else is there."""
    top = os.path.join(repo.root, name)
    found, others = [], []
    for dirpath, dirnames, filenames in os.walk(top):
        rel = os.path.relpath(dirpath, repo.root).replace(os.sep, "/")
        found.append(rel)
        for d in list(dirnames):
            if os.path.islink(os.path.join(dirpath, d)):  # a link is an entry to keep, not a folder to walk
                others.append(f"{rel}/{d}")
        others += [f"{rel}/{f}" for f in filenames if f"{rel}/{f}" not in leaving]
    if others:
        more = f" and {len(others) - 5} more" if len(others) > 5 else ""
        raise Conflict(f"cannot {verb}: {name} would be a file, but {name}/ is a folder here holding {', '.join(sorted(others)[:5])}{more}",
                       hint=f"nothing was changed; move what is in {here(name)}/ aside, then run the command again")
    return found[::-1]
