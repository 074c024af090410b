"""Merging a branch, tag or commit into the current branch.

Merge works per asset against the merge base: an asset changed on one side
only is taken from that side; changed differently on both is a conflict,
left at ours until the merge is re-run with --ours or --theirs. The change
itself is made as a switch makes it (lattice.switch.change_state).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lattice import history, history_pending
from lattice.branches import require_name
from lattice.errors import Conflict, InvalidInput, command
from lattice.repo import Repository
from lattice.switch import Worktree, change_state, config_change, record_manifest_edits, records_of_blobs, refuse_dirty, settled_head


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


def merge(repo: Repository, name: str, strategy: str | None = None) -> Merged:
    """Merge branch (or tag, or commit) `name` into the current branch.
    strategy: None (conflicts stay at ours), "ours" or "theirs"."""
    require_name(name, "branch, tag or commit", "`lattice branch` lists branches, `lattice tag` tags, `lattice log` commits")
    with repo.lock:
        repo.finish_interrupted()
        g = history.open_git(repo)
        refuse_dirty(repo, "merge")
        ours = settled_head(repo, g)
        theirs = history.resolve(g, name)
        ours, _, seen = record_manifest_edits(repo, g, ours, theirs)
        into = history.current_branch(g)
        result = Merged(name, into, "up-to-date")
        if theirs.id == ours.id or g.descendant_of(ours.id, theirs.id):
            return result
        base_id = g.merge_base(ours.id, theirs.id)
        base_tree = g[base_id].tree if base_id else None
        if base_id == ours.id:
            changes = history.changed_assets(g, ours.tree, theirs.tree)
            blobs = {n: new for n, (_, new) in changes.items()}
            config = config_change(ours.tree, theirs.tree)
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
        records = records_of_blobs(repo, g, blobs)
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
            history_pending.begin(repo)
            try:
                result.worktree = change_state(repo, g, blobs, config, seen=seen, records=records, commit=(msg, parents))
            except BaseException:
                history_pending.unmark(repo)  # refused before its journal (something in the way): nothing changed
                raise
        elif parents:  # nothing to change: the merge commit is all there is
            history_pending.begin(repo, msg, parents)
        if changing or parents:
            result.commit = history_pending.finish(repo, msg, sorted(blobs), parents)
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
    if o == b:
        return t
    (result.resolved if strategy else result.conflicts).append(history.CONFIG)
    return t if strategy == "theirs" else False


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
