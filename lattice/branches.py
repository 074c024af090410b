"""Branches, tags, switch, merge and diff between two states of the project.

Refs live in `.lattice/history.git` like git's: HEAD is a symbolic ref to
`refs/heads/<branch>` (default `main`), tags are lightweight refs. Switching
and merging rewrite only the manifest files that differ between the two
trees, update the index for those assets, then bring the working tree along:
present outputs are copied in, absent ones are left to `lattice render`, and
a working file with unrecorded edits is never overwritten or deleted.

Merge works per asset against the merge base: an asset changed on one side
only is taken from that side; changed differently on both is a conflict,
left at ours until the merge is re-run with --ours or --theirs.
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

from lattice import history
from lattice.errors import Conflict, HistoryError, InvalidInput, RepositoryCorrupt, closest, command
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


@dataclass
class Merged:
    branch: str
    into: str
    status: str  # up-to-date, fast-forward, merged, conflicts
    taken: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    commit: str | None = None
    worktree: Worktree = field(default_factory=Worktree)


@dataclass
class RefDiff:
    old: str
    new: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[dict] = field(default_factory=list)  # {path, old_versions, new_versions}
    config_changed: bool = False


# -- branches and tags ---------------------------------------------------------


def list_branches(repo: Repository) -> tuple[list[str], str]:
    """(branch names, current branch)."""
    if not history.exists(repo):
        return [], history.DEFAULT_BRANCH
    g = history.open_git(repo)
    return history.branches(g), history.current_branch(g)


def create_branch(repo: Repository, name: str) -> str:
    _require_name(name, "branch", "name the branch to create, e.g. `lattice branch sketch`; `lattice branch` alone lists branches")
    with repo.lock:
        g = history.open_git(repo)
        history.check_ref_name(g, name, "heads")
        if name in history.branches(g):
            raise HistoryError(f"branch {shown(name)} already exists", hint=f"switch to it with {command('lattice switch', name, paths=False)}")
        _refuse_shadowing(g, name, "branch")
        head = history.ensure_head(repo, g)
        g.references.create(f"refs/heads/{name}", head.id)
        return str(head.id)


@dataclass
class Deleted:
    branch: str
    was: str  # the commit it pointed at
    unmerged: int  # its commits no other branch or tag has (deleted with force)


def delete_branch(repo: Repository, name: str, force: bool = False) -> Deleted:
    """Delete a branch. As in git, refused unless every commit on it is on
    another branch or tag too, or `force`: a commit only it has is the only
    record of what it added, and gc sweeps content no ref records."""
    _require_name(name, "branch", "`lattice branch` lists the branches")
    with repo.lock:
        g = history.open_git(repo)
        _require_branch(g, name)
        if name == history.current_branch(g):
            others = [b for b in history.branches(g) if b != name]
            to = command("lattice switch", others[0], paths=False) if others else "`lattice branch NAME` creates one, `lattice switch NAME` switches to it"
            raise Conflict(f"cannot delete branch {shown(name)}: it is the current branch",
                           hint=f"switch to another branch first ({to}), then delete it")
        ref = g.references[f"refs/heads/{name}"]
        was = str(ref.target)
        unmerged = _commits_only_on(g, ref.name)
        if unmerged and not force:
            commits = "1 commit" if unmerged == 1 else f"{unmerged} commits"
            raise Conflict(f"branch {shown(name)} is not merged: {commits} on it {'is' if unmerged == 1 else 'are'} on no other branch or tag",
                           hint=f"merge it first ({command('lattice merge', name, paths=False)} on the branch that should keep them), "
                                f"or delete it and its commits with {command('lattice branch -D', name, paths=False)}")
        ref.delete()
        return Deleted(name, was, unmerged)


def _commits_only_on(g, ref_name: str) -> int:
    """How many commits reachable from ref `ref_name` no other branch or tag reaches."""
    import pygit2

    walker = g.walk(g.references[ref_name].peel(pygit2.Commit).id, pygit2.enums.SortMode.NONE)
    for other in g.references:
        if other != ref_name and other.startswith(("refs/heads/", "refs/tags/")):
            walker.hide(g.references[other].peel(pygit2.Commit).id)
    return sum(1 for _ in walker)


def list_tags(repo: Repository) -> list[str]:
    return history.tags(history.open_git(repo)) if history.exists(repo) else []


def create_tag(repo: Repository, name: str) -> str:
    _require_name(name, "tag", "name the tag, e.g. `lattice tag v1`; `lattice tag` alone lists tags")
    with repo.lock:
        g = history.open_git(repo)
        history.check_ref_name(g, name, "tags")
        if name in history.tags(g):
            raise HistoryError(f"tag {shown(name)} already exists", hint="tags never move; pick another name")
        _refuse_shadowing(g, name, "tag")
        head = history.ensure_head(repo, g)
        g.references.create(f"refs/tags/{name}", head.id)
        return str(head.id)


def _refuse_shadowing(g, name: str, what: str) -> None:
    """A branch and a tag of one name: the name would reach the branch
    alone (`lattice diff NAME HEAD`), so the second is refused."""
    if what == "tag" and name in history.branches(g):
        raise HistoryError(f"cannot create tag {shown(name)}: a branch has that name, which would always mean the branch, never the tag",
                           hint="pick another name for the tag; `lattice branch` lists the branches")
    if what == "branch" and name in history.tags(g):
        raise HistoryError(f"cannot create branch {shown(name)}: a tag has that name, which would then mean the branch, no longer the tag",
                           hint="pick another name for the branch; `lattice tag` lists the tags")


def _require_name(name: str, what: str, hint: str) -> None:
    """An empty name (a script's unset $NAME) names nothing: refused before
    anything is opened or created."""
    if not name:
        raise InvalidInput(f"the {what} name is empty", hint=hint)


def _require_branch(g, name: str) -> None:
    if name not in history.branches(g):
        history.check_ref_name(g, name, "heads")  # a name no branch can have: say that, not "create it"
        if name in history.tags(g):  # a branch of its name would shadow it: not "create one"
            raise InvalidInput(
                f"no branch named {shown(name)}: {shown(name)} is a tag, and only branches are switched to or deleted",
                hint=f"`lattice branch` lists branches; {command('lattice diff', name, 'HEAD', paths=False)} lists how the tag differs from here, "
                     f"{command('lattice merge', name, paths=False)} brings its changes into the current branch",
            )
        raise InvalidInput(
            f"no branch named {shown(name)}{closest(name, history.branches(g))}",
            hint=f"`lattice branch` lists branches; {command('lattice branch', name, paths=False)} creates one",
        )


# -- switch --------------------------------------------------------------------


def switch(repo: Repository, name: str, force: bool = False) -> Switched:
    _require_name(name, "branch", "`lattice branch` lists the branches to switch to")
    with repo.lock:
        g = history.open_git(repo)
        _require_branch(g, name)
        previous = history.current_branch(g)
        if name == previous:
            return Switched(name, previous, 0, Worktree())
        if not force:
            refuse_dirty(repo, "switch")
        head = _settled_head(repo, g)
        target = history.resolve(g, name)
        head, changes, seen = _record_manifest_edits(repo, g, head, target)
        blobs = {n: new for n, (_, new) in changes.items()}
        wt = change_state(repo, g, blobs, _config_change(head.tree, target.tree), head=f"ref:refs/heads/{name}", seen=seen)
        return Switched(name, previous, len(changes), wt)


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

    def some(names: list[str]) -> str:
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    why, todo = [], []
    if edits:
        why.append(f"unrecorded changes in {some(edits)}")
        # Commands to copy and run: the first few names, the rest left to status.
        them = "it" if len(edits) == 1 else "them"
        first = edits[:3]
        rest = f" (the first {len(first)} of {len(edits)}: `lattice status` lists them all)" if len(edits) > len(first) else ""
        todo.append(f"record {them} with {command('lattice add', *first)}, "
                    f"discard {them} with {command('lattice checkout', *first)}{rest}")
    if blocked:
        why.append(f"{'a folder is' if len(blocked) == 1 else 'folders are'} in the way of the working file of {some(blocked)}")
        todo.append(f"move the folder{'s' if len(blocked) > 1 else ''} aside")
    force = ", or pass --force to switch and leave " + ("it as it is" if len(modified) == 1 else "them as they are")
    raise Conflict(f"cannot {what}: {'; '.join(why)}", hint="; ".join(todo) + (force if what == "switch" else ""))


def _settled_head(repo: Repository, g):
    """HEAD, after committing any recorded change history missed (a crash or
    damaged history): switching must never drop a recorded version."""
    history.catch_up(repo)
    # A hand edit of config.toml is a change like any other: record it on
    # this branch before the target's config replaces it.
    history.commit(repo, "config.toml edited", names=[])
    return history.ensure_head(repo, g)


def _record_manifest_edits(repo: Repository, g, head, target) -> tuple:
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


def _config_change(old_tree, new_tree):
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
    the journal makes the change certain (history.mark)."""
    known = repo.index.get_many(list(blobs))
    before = {n: known.get(n) for n in blobs}
    with repo.index:
        _park(repo, list(blobs), seen or {})
        repo.index.trim_parked()
        if records is None:
            records = _records_of_blobs(repo, g, blobs)
    verb = "switch" if head is not None and head.startswith("ref:") else "merge"
    wt, write, delete, emptied = _plan_worktree(repo, before, records, verb)
    journal = Journal({n: str(b) if b is not None else None for n, b in blobs.items()},
                      str(config) if config not in (False, None) else config, write, delete, head, emptied)
    from lattice.fsutil import atomic_write

    atomic_write(repo.dir / JOURNAL, msgspec.json.encode(journal))
    if commit is not None:
        history.mark(repo, *commit)
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
            records = _records_of_blobs(repo, g, journal.blobs)
            _apply(repo, g, journal, records)
        except Exception as e:
            raise RepositoryCorrupt(
                f"an interrupted switch or merge could not be finished: {getattr(e, 'message', None) or e}",
                hint="`lattice fsck --repair` sets the journal aside and checks the rest",
            ) from None
        try:  # a merge's commit, which the killed process never made
            history.catch_up(repo)
        except Exception as e:
            from lattice.errors import warn

            warn(f"the interrupted change was finished, but not committed to history: {history._why(e)}; `lattice fsck --repair` commits it")


def _apply(repo: Repository, g, journal: Journal, records: dict, before: dict | None = None) -> None:
    """Carry out a journal: manifest files rewritten in place (history holds
    every byte, so the journal, not a temp file per asset, makes this
    crash-safe), one filesystem sync, working files replaced the way git
    replaces them (unlink, create; several at once, as git's parallel
    checkout does), index, HEAD, and the journal removed."""
    from lattice.fsutil import in_threads, sync_filesystem
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
    stats = [st for st in in_threads(replace, items) if st is not None]
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


def _records_of_blobs(repo: Repository, g, blobs: dict) -> dict:
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
                from lattice.paths import check_creatable

                check_creatable(repo.root, name, leaving=delete)
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


# -- merge ---------------------------------------------------------------------


def merge(repo: Repository, name: str, strategy: str | None = None) -> Merged:
    """Merge branch (or tag, or commit) `name` into the current branch.
    strategy: None (conflicts stay at ours), "ours" or "theirs"."""
    _require_name(name, "branch, tag or commit", "`lattice branch` lists branches, `lattice tag` tags, `lattice log` commits")
    with repo.lock:
        g = history.open_git(repo)
        refuse_dirty(repo, "merge")
        ours = _settled_head(repo, g)
        theirs = history.resolve(g, name)
        ours, _, seen = _record_manifest_edits(repo, g, ours, theirs)
        into = history.current_branch(g)
        result = Merged(name, into, "up-to-date")
        if theirs.id == ours.id or g.descendant_of(ours.id, theirs.id):
            return result
        base_id = g.merge_base(ours.id, theirs.id)
        base_tree = g[base_id].tree if base_id else None
        if base_id == ours.id:
            changes = history.changed_assets(g, ours.tree, theirs.tree)
            blobs = {n: new for n, (_, new) in changes.items()}
            config = _config_change(ours.tree, theirs.tree)
            result.worktree = change_state(repo, g, blobs, config, head=f"commit:{theirs.id}", seen=seen)
            result.status, result.taken, result.commit = "fast-forward", sorted(changes), str(theirs.id)
            return result
        mine = history.changed_assets(g, base_tree, ours.tree)
        theirs_changes = history.changed_assets(g, base_tree, theirs.tree)
        blobs: dict = {}
        for asset, (_, new) in sorted(theirs_changes.items()):
            if asset not in mine:
                blobs[asset] = new
                result.taken.append(asset)
            elif mine[asset][1] == new:
                continue
            elif strategy == "theirs":
                blobs[asset] = _take_theirs(repo, g, asset, mine[asset][1], new, name)
                result.resolved.append(asset)
            elif strategy == "ours":
                result.resolved.append(asset)
            else:
                result.conflicts.append(asset)
        _refuse_file_and_folder(repo, blobs, name, into)
        config = _merge_config(base_tree, ours.tree, theirs.tree, strategy, result)
        records = _records_of_blobs(repo, g, blobs)
        _refuse_cycles(repo, blobs, records, name)
        changing = bool(blobs) or config is not False
        if result.conflicts:
            result.status = "conflicts"
            msg = f"merge {name} into {into}: took {len(result.taken)}, left {len(result.conflicts)} conflicts at ours"
            parents = []
        else:
            result.status = "merged"
            msg = f"merge {name} into {into}" + (f" ({strategy} on {len(result.resolved)} conflicts)" if result.resolved else "")
            parents = [str(theirs.id)]
        if changing:
            # The marker names the merge commit once the journal is written:
            # a process killed after it is caught up as this merge, second
            # parent and all; a merge that fails before it left nothing.
            history.begin(repo)
            result.worktree = change_state(repo, g, blobs, config, seen=seen, records=records, commit=(msg, parents))
        elif parents:  # nothing to change: the merge commit is all there is
            history.begin(repo, msg, parents)
        if changing or parents:
            result.commit = history.finish(repo, msg, sorted(blobs), parents)
        return result


def _refuse_file_and_folder(repo: Repository, blobs: dict, branch: str, into: str) -> None:
    """An asset that one side added under a name the other side uses as a
    folder of assets (`x.png` and `x.png/a.png`): no working tree can hold
    both, and no asset is ever removed, so the merge is refused before it
    changes anything."""
    known = repo.index.get_many(list(blobs))
    found = repo.asset_in_the_way([n for n, blob in blobs.items() if blob is not None and n not in known])
    if found is None:
        return
    theirs, ours = found
    if theirs.startswith(ours + "/"):
        what = f"{ours} is a file on {into} and a folder on {branch} ({theirs})"
    else:
        what = f"{theirs} is a file on {branch} and a folder on {into} ({ours})"
    raise Conflict(f"cannot merge {branch} into {into}: {what}; a name cannot be both",
                   hint="nothing was changed; lattice never removes an asset, so bring across what you need under other names "
                        f"(`lattice gen`, `lattice add`); {command('lattice diff', into, branch, paths=False)} lists how the two differ")


def _refuse_cycles(repo: Repository, blobs: dict, records: dict, branch: str) -> None:
    """Each side's recipes form a DAG, but an asset made from another on one
    branch and the other made from it on the other close a cycle together,
    which no render could ever finish: refuse before changing anything.
    `records`: the merged records of the assets in `blobs`."""
    from lattice.lineage import Graph

    edges = [e for e in repo.index.edges() if e[0] not in blobs]
    for name, record in records.items():
        recipe = record.current.recipe
        if recipe is not None:
            edges += [(name, p, o) for p, o in zip(recipe.inputs, recipe.input_objects)]
    cycle = Graph(edges, {}).cycle()
    if cycle:
        name = cycle[0]
        generator = records[name].current.recipe.generator if name in records else repo.index.get(name).generator
        raise InvalidInput(f"merging {branch} would make a cycle in the lineage: {' -> '.join(cycle)}",
                           hint=f"on the branch where {name} is made from {cycle[-2]}, {Graph.breaking(cycle, generator)}; then merge again")


def _merge_config(base_tree, ours_tree, theirs_tree, strategy, result: Merged):
    b, o, t = (history.config_blob(x) for x in (base_tree, ours_tree, theirs_tree))
    if t == b or t == o:
        return False
    if o == b or strategy == "theirs":
        return t
    if strategy != "ours":
        result.conflicts.append(history.CONFIG)
    return False


def _take_theirs(repo: Repository, g, name: str, ours_oid, theirs_oid, branch: str):
    """Their record, keeping our versions: ours, then theirs' versions that
    ours lacks, renumbered after ours — nothing recorded is dropped, and
    their current version becomes current. Returns a blob id (None: removed)."""
    import msgspec

    from lattice.records import decode

    if theirs_oid is None or ours_oid is None:
        return theirs_oid
    path = repo.manifest.file_of(name)
    ours, theirs = decode(g[ours_oid].data, path), decode(g[theirs_oid].data, path)
    common = 0
    while common < min(len(ours.versions), len(theirs.versions)) and ours.versions[common] == theirs.versions[common]:
        common += 1
    shift = len(ours.versions) - common

    def renumber(n: int | None) -> int | None:
        return n + shift if n is not None and n > common else n

    added = [
        msgspec.structs.replace(
            v, number=v.number + shift, restored_from=renumber(v.restored_from),
            note=(v.note + "; " if v.note else "") + f"merged from {branch} v{v.number}",
        )
        for v in theirs.versions[common:]
    ]
    merged = msgspec.structs.replace(theirs, versions=ours.versions + added, pinned=renumber(theirs.pinned))
    return g.create_blob(repo.manifest.encode(merged))


# -- diff between states ---------------------------------------------------------


def names_a_state(repo: Repository, ref: str) -> bool:
    """Whether `ref` is a branch, tag or commit of history (or, before the
    first commit, the current branch or HEAD)."""
    g = history.open_git(repo, create=False) if history.exists(repo) else None
    if g is None or g.head_is_unborn:
        return ref in (history.head_branch(repo) or history.DEFAULT_BRANCH, "HEAD")
    try:
        history.resolve(g, ref)
    except InvalidInput:
        return False
    return True


def diff_refs(repo: Repository, old: str, new: str) -> RefDiff:
    from lattice.records import decode

    g = history.open_git(repo, create=False) if history.exists(repo) else None
    if g is None or g.head_is_unborn:
        # No commit yet. As `lattice branch` shows, the current branch is
        # all there is (it exists from its first commit on): its names are
        # one state, which differs from nothing; any other name is unknown.
        current = history.head_branch(repo) or history.DEFAULT_BRANCH
        for ref in (old, new):
            if ref not in (current, "HEAD"):
                raise InvalidInput(f"no branch, tag or commit named {shown(ref)}{closest(ref, [current])}",
                                   hint=f"the history is empty until the first change (`lattice add`, `lattice gen`); until then there is only {current}")
        return RefDiff(old, new)
    a, b = history.resolve(g, old), history.resolve(g, new)
    out = RefDiff(old, new)
    for name, (x, y) in sorted(history.changed_assets(g, a.tree, b.tree).items()):
        if x is None:
            out.added.append(name)
        elif y is None:
            out.removed.append(name)
        else:
            ra, rb = (decode(g[o].data, repo.manifest.file_of(name)) for o in (x, y))
            out.changed.append({"path": name, "old_versions": len(ra.versions), "new_versions": len(rb.versions)})
    out.config_changed = history.config_blob(a.tree) != history.config_blob(b.tree)
    return out
