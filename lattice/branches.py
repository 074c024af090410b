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

import os
from dataclasses import dataclass, field

from lattice import history
from lattice.errors import Conflict, HistoryError, closest
from lattice.repo import Repository


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
    with repo.lock:
        g = history.open_git(repo)
        history.check_ref_name(g, name, "heads")
        if name in history.branches(g):
            raise HistoryError(f"branch {name!r} already exists", hint=f"switch to it with `lattice switch {name}`")
        head = history.ensure_head(repo, g)
        g.references.create(f"refs/heads/{name}", head.id)
        return str(head.id)


def delete_branch(repo: Repository, name: str) -> str:
    with repo.lock:
        g = history.open_git(repo)
        _require_branch(g, name)
        if name == history.current_branch(g):
            raise HistoryError(f"cannot delete {name!r}: it is the current branch", hint="switch to another branch first")
        ref = g.references[f"refs/heads/{name}"]
        was = str(ref.target)
        ref.delete()
        return was


def list_tags(repo: Repository) -> list[str]:
    return history.tags(history.open_git(repo)) if history.exists(repo) else []


def create_tag(repo: Repository, name: str) -> str:
    with repo.lock:
        g = history.open_git(repo)
        history.check_ref_name(g, name, "tags")
        if name in history.tags(g):
            raise HistoryError(f"tag {name!r} already exists", hint="tags never move; pick another name")
        head = history.ensure_head(repo, g)
        g.references.create(f"refs/tags/{name}", head.id)
        return str(head.id)


def _require_branch(g, name: str) -> None:
    if name not in history.branches(g):
        raise HistoryError(
            f"no branch named {name!r}{closest(name, history.branches(g))}",
            hint=f"`lattice branch` lists branches; `lattice branch {name}` creates one",
        )


# -- switch --------------------------------------------------------------------


def switch(repo: Repository, name: str, force: bool = False) -> Switched:
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
        changes = history.changed_assets(g, head.tree, target.tree)
        before = {n: repo.index.get(n) for n in changes}
        records = write_state(repo, g, {n: new for n, (_, new) in changes.items()}, _config_change(head.tree, target.tree))
        g.set_head(f"refs/heads/{name}")
        return Switched(name, previous, len(changes), update_worktree(repo, before, records))


def refuse_dirty(repo: Repository, what: str) -> None:
    from lattice.status import status

    modified = [e.path for e in status(repo, untracked=False) if e.state == "modified"]
    if modified:
        more = f" and {len(modified) - 5} more" if len(modified) > 5 else ""
        raise Conflict(
            f"cannot {what}: unrecorded changes in {', '.join(modified[:5])}{more}",
            hint="record them with `lattice add PATH`, discard them with `lattice checkout PATH`"
            + (", or pass --force to switch and leave them as they are" if what == "switch" else ""),
        )


def _settled_head(repo: Repository, g):
    """HEAD, after committing any recorded change history missed (a crash or
    damaged history): switching must never drop a recorded version."""
    if (repo.dir / history.PENDING).exists():
        history.commit(repo, history.RECOVERED)
        os.unlink(repo.dir / history.PENDING)
    # A hand edit of config.toml is a change like any other: record it on
    # this branch before the target's config replaces it.
    history.commit(repo, "config.toml edited", names=[])
    return history.ensure_head(repo, g)


def _config_change(old_tree, new_tree):
    old, new = history.config_blob(old_tree), history.config_blob(new_tree)
    return new if old != new else False


def write_state(repo: Repository, g, blobs: dict, config) -> dict:
    """Make the manifest files of `blobs` (name → blob id, None: remove) and,
    unless `config` is False, config.toml match the history's text; then
    update the index for just those assets. Returns the records written."""
    from lattice.fsutil import AtomicBatch
    from lattice.manifest import decode

    records = {}
    with AtomicBatch(repo.dir) as batch:
        for name, oid in blobs.items():
            if oid is None:
                continue
            path = repo.manifest.file_of(name)  # validates names that came from history
            data = g[oid].data
            records[name] = decode(data, path)
            if records[name].path != name:
                raise HistoryError(f"history's {path.name} records asset {records[name].path!r}", hint="`lattice fsck` checks history")
            batch.write(path, data)
        if config is not False:
            batch.write(repo.dir / history.CONFIG, g[config].data if config is not None else b"")
    for name, oid in blobs.items():
        if oid is None:
            try:
                repo.manifest.file_of(name).unlink()
            except FileNotFoundError:
                pass
    with repo.index as index:
        for name, record in records.items():
            index.put(record, repo.manifest.file_of(name).stat())
        for name, oid in blobs.items():
            if oid is None:
                index.remove(name)
    repo.__dict__.pop("config", None)  # re-read on next use
    return records


def update_worktree(repo: Repository, before: dict, records: dict) -> Worktree:
    """Bring the working files of the assets in `before` (name → index row
    before the change) to their new current versions (`records`; absent:
    the asset was removed)."""
    from lattice.status import differs

    wt = Worktree()
    stats = []
    for name in sorted(before):
        old = before[name]
        record = records.get(name)
        path = repo.working_path(name)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        clean = st is not None and old is not None and not differs(old, path, st)
        if st is not None and not clean:
            wt.kept.append(name)
        elif record is None:
            if st is not None:
                os.unlink(path)
                wt.removed.append(name)
        elif st is not None and old.object == record.current.object:
            continue
        elif repo.objects.has(record.current.object):
            stats.append(_write_working_file(repo, name, path, record.current))
            wt.materialized.append(name)
        else:
            if st is not None:  # the old version's bytes would read as an edit
                os.unlink(path)
            wt.absent.append(name)
    with repo.index as index:  # one index transaction for the whole batch
        index.set_stat(stats)
    return wt


def _write_working_file(repo: Repository, name: str, path, version) -> tuple:
    """lattice.worktree.materialize without its per-file index transaction."""
    from lattice.errors import InvalidInput
    from lattice.fsutil import atomic_file

    if path.is_dir():
        raise InvalidInput(f"{name}: a directory is in the way", hint="move it aside, then run the command again")
    with atomic_file(path, durable=False) as f:
        repo.objects.copy_to(version.object, f, limit=version.size)
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns, st.st_ino, version.object, name)


# -- merge ---------------------------------------------------------------------


def merge(repo: Repository, name: str, strategy: str | None = None) -> Merged:
    """Merge branch (or tag, or commit) `name` into the current branch.
    strategy: None (conflicts stay at ours), "ours" or "theirs"."""
    with repo.lock:
        g = history.open_git(repo)
        refuse_dirty(repo, "merge")
        ours = _settled_head(repo, g)
        theirs = history.resolve(g, name)
        into = history.current_branch(g)
        result = Merged(name, into, "up-to-date")
        if theirs.id == ours.id or g.descendant_of(ours.id, theirs.id):
            return result
        base_id = g.merge_base(ours.id, theirs.id)
        base_tree = g[base_id].tree if base_id else None
        if base_id == ours.id:
            changes = history.changed_assets(g, ours.tree, theirs.tree)
            before = {n: repo.index.get(n) for n in changes}
            records = write_state(repo, g, {n: new for n, (_, new) in changes.items()}, _config_change(ours.tree, theirs.tree))
            g.head.set_target(theirs.id, f"merge {name}: fast-forward")
            result.status, result.taken, result.commit = "fast-forward", sorted(changes), str(theirs.id)
            result.worktree = update_worktree(repo, before, records)
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
        config = _merge_config(base_tree, ours.tree, theirs.tree, strategy, result)
        before = {n: repo.index.get(n) for n in blobs}
        records = {}
        if blobs or config is not False:
            history.begin(repo)
            records = write_state(repo, g, blobs, config)
        if result.conflicts:
            result.status = "conflicts"
            msg = f"merge {name} into {into}: took {len(result.taken)}, left {len(result.conflicts)} conflicts at ours"
            result.commit = history.finish(repo, msg, sorted(blobs)) if blobs or config is not False else None
        else:
            result.status = "merged"
            msg = f"merge {name} into {into}" + (f" ({strategy} on {len(result.resolved)} conflicts)" if result.resolved else "")
            if not (blobs or config is not False):
                history.begin(repo)
            result.commit = history.finish(repo, msg, sorted(blobs), [str(theirs.id)])
        result.worktree = update_worktree(repo, before, records)
        return result


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

    from lattice.manifest import decode

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


def diff_refs(repo: Repository, old: str, new: str) -> RefDiff:
    from lattice.manifest import decode

    g = history.open_git(repo, create=False)
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
