"""One asset's versions: log, recipe diff, restore, pin, and the per-kind
version limits that tell gc which old outputs it may evict.

Everything here reads the asset's manifest file once; history (git) is
never walked per version — the manifest already holds every version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lattice.errors import Conflict, GeneratorFailed, InvalidInput, command
from lattice.records import Version, author, now_iso
from lattice.repo import Repository

# Generated versions whose outputs are kept present, per asset kind.
DEFAULT_LIMITS = {"image": 10, "video": 5, "audio": 5, "vector": 20, "other": 10}


@dataclass(frozen=True)
class VersionInfo:
    number: int
    change: str
    time: str
    author: str
    summary: str  # lattice.recipe.summary of the recipe ("imported" for imports)
    object: str
    present: bool
    current: bool
    pinned: bool
    restored_from: int | None = None
    note: str = ""


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: Any
    new: Any


@dataclass
class Restored:
    path: str
    version: int
    restored_from: int
    object: str
    rendered: bool = False  # the output was absent and was re-made
    pinned: int | None = None  # a pin that keeps dependents on another version
    # Inputs the restored recipe read that have moved on since: [input, the
    # version it read (None: none recorded now), the version it is at]. The
    # asset is stale, and `render` makes it again from them.
    moved_inputs: list[list] = field(default_factory=list)


def asset_log(repo: Repository, name: str, limit: int | None = None, upto: int | None = None) -> list[VersionInfo]:
    """The asset's versions, newest first; with `upto`, from that version
    back to v1 (as `git log REV` starts at REV); an unknown one is refused."""
    from lattice.recipe import summary

    record = repo.record(name)
    cur = len(record.versions)
    upto = record.version(upto).number  # raises for an unknown version, naming those there are
    chosen = record.versions[upto - 1 :: -1][:limit]  # limit None: all
    has = repo.objects.has
    return [
        VersionInfo(
            v.number, v.change, v.time, v.author, summary(v.recipe), v.object, has(v.object),
            v.number == cur, v.number == record.pinned, v.restored_from, v.note,
        )
        for v in chosen
    ]


def diff_versions(a: Version, b: Version) -> list[FieldChange]:
    """What differs between two versions' recipes (and their outputs)."""
    ra, rb = a.recipe, b.recipe
    out: list[FieldChange] = []
    if ra is None or rb is None:
        from lattice.recipe import summary

        if (ra is None) != (rb is None):
            out.append(FieldChange("recipe", summary(ra), summary(rb)))
    else:
        for f in ("generator", "generator_version", "seed", "prompt", "negative_prompt", "deterministic"):
            if getattr(ra, f) != getattr(rb, f):
                out.append(FieldChange("model" if f == "generator" else f, getattr(ra, f), getattr(rb, f)))
        for k in sorted(set(ra.params) | set(rb.params)):
            if ra.params.get(k) != rb.params.get(k):
                out.append(FieldChange(f"params.{k}", ra.params.get(k), rb.params.get(k)))
        if ra.inputs != rb.inputs:
            out.append(FieldChange("inputs", ra.inputs, rb.inputs))
        elif ra.input_objects != rb.input_objects:
            changed = [n for n, x, y in zip(ra.inputs, ra.input_objects, rb.input_objects) if x != y]
            out.append(FieldChange("input versions", changed, changed))
    if a.object != b.object:
        out.append(FieldChange("object", a.object, b.object))
    return out


# -- restore -------------------------------------------------------------------


def restore(repo: Repository, name: str, number: int, force: bool = False) -> Restored:
    """Make version `number` current by adding a version with its object and
    recipe (change "restored"); re-render its output first when the store no
    longer has it; then write it to the working tree."""
    from lattice.media import extension
    from lattice.worktree import materialize, require_writable

    record = repo.record(name)
    old = record.version(number)
    if number == len(record.versions):
        raise InvalidInput(f"{name}@v{number} is already the current version", hint=f"{command('lattice log', name)} lists its versions")
    if not force and working_file_modified(repo, name):
        from lattice.worktree import refuse_in_the_way

        refuse_in_the_way(name, repo.working_path(name))
        raise Conflict(
            f"{name} has changes in the working tree that are not recorded",
            hint=f"record them with {command('lattice add', name)}, or discard them with {command('lattice restore', f'{name}@v{number}', options='--force')}",
        )
    require_writable(repo, name)  # before anything is recorded or rendered
    rendered = False
    if not repo.objects.has(old.object):
        if old.recipe is None:
            raise InvalidInput(
                f"{name}@v{number} was imported and its content is no longer in the store",
                hint="re-add the file if you still have it",
            )
        from lattice.remake import ensure_inputs
        from lattice.produce import produce

        ensure_inputs(repo, old.recipe, command_name="lattice restore")  # its inputs may be evicted too
        oid, cached = produce(repo, old.recipe, extension(name))
        if oid != old.object:
            raise GeneratorFailed(
                f"{name}@v{number}: re-rendered output {oid[:12]} differs from the recorded {old.object[:12]}",
                hint="the generator is not reproducible here; the version was not restored",
            )
        rendered = not cached
    with repo.transaction(f"restore {name} v{number} as v{len(record.versions) + 1}") as tx:
        record = tx.read(name)
        new = Version(
            number=len(record.versions) + 1,
            change="restored",
            time=now_iso(),
            author=author(),
            object=old.object,
            size=old.size,
            media=dict(old.media),
            recipe=old.recipe,
            note=f"restored from v{number}",
            restored_from=number,
        )
        record.versions.append(new)
        tx.put(record)
    materialize(repo, name, new.object, new.size, verify=True)
    return Restored(name, new.number, number, new.object, rendered, record.pinned, _moved_inputs(repo, old.recipe))


def _moved_inputs(repo: Repository, recipe) -> list[list]:
    """[input, the version whose object the recipe read, the version in use
    now] for each input of `recipe` that has moved on since."""
    out = []
    for name, oid in zip(recipe.inputs, recipe.input_objects) if recipe is not None else ():
        record = repo.record(name) if repo.index.get(name) is not None else None
        if record is None or record.effective.object == oid:
            continue
        read = next((v.number for v in record.versions if v.object == oid), None)
        out.append([name, read, record.effective.number])
    return out


def working_file_modified(repo: Repository, name: str) -> bool:
    """True when the working file exists and holds edits: bytes that are no
    recorded version of the asset, nor what lattice last wrote there (an
    older version is no edit, nor one a `git checkout` took back:
    lattice.status.edited)."""
    import os

    from lattice.status import edited

    row = repo.index.get(name)
    path = repo.working_path(name)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    if row is None:
        return True
    return edited(repo, row, path, st)


# -- pin -----------------------------------------------------------------------


def pin(repo: Repository, name: str, number: int | None) -> tuple[int | None, int | None]:
    """Pin the asset at `number` (None: unpin). Returns (old pin, new pin).
    Dependents follow the effective version, so they turn stale by themselves."""
    with repo.transaction(f"pin {name}") as tx:
        record = tx.read(name)
        if record is None:
            repo.record(name)  # raises with the closest names
        if number is not None:
            record.version(number)  # raises for an unknown version
        before = record.pinned
        tx.message = f"pin {name} v{number}" if number else f"unpin {name} (was v{before})"
        record.pinned = number
        tx.put(record)
    return before, number


# -- version limits --------------------------------------------------------------


def limits(config: dict) -> dict[str, int]:
    """Per-kind limits: `[versions] image = 10` in config over the defaults."""
    out = dict(DEFAULT_LIMITS)
    table = config.get("versions", {})
    if not isinstance(table, dict):
        raise InvalidInput(f"config [versions] = {table!r} is not a table",
                           hint=f"write it as a [versions] table of limits per kind ({', '.join(DEFAULT_LIMITS)})")
    for kind, value in table.items():
        if kind not in out or not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidInput(
                f"config [versions] {kind} = {value!r} is not a valid limit",
                hint=f"kinds are {', '.join(DEFAULT_LIMITS)}; limits are whole numbers from 1",
            )
        out[kind] = value
    return out


def evictable_versions(repo: Repository, include_nondeterministic: bool = False) -> list[tuple[str, int, str]]:
    """(asset, version number, object) of older generated versions beyond the
    kind's limit of present outputs. Never the current or pinned version,
    never an import, never an object a kept version of the asset still uses;
    non-deterministic outputs only when asked (they cannot be re-made).
    The recipes stay in the manifest and in history for ever."""
    lim = limits(repo.config)
    has = repo.objects.has
    out = []
    # The index says how many versions each asset has: only assets over the
    # limit are read from the manifest.
    for row in repo.index.rows():
        limit = lim.get(row.kind, lim["other"])
        if row.versions <= limit:
            continue
        record = repo.record(row.path)
        keep_numbers = {len(record.versions), record.pinned}
        kept = 0
        candidates = []
        for v in reversed(record.versions):
            if v.recipe is None or not has(v.object):
                continue
            if v.number in keep_numbers or kept < limit:
                kept += 1
                keep_numbers.add(v.number)
            else:
                candidates.append(v)
        needed = {v.object for v in record.versions if v.number in keep_numbers or v.recipe is None}
        for v in reversed(candidates):
            if v.object in needed or not (v.recipe.deterministic or include_nondeterministic):
                continue
            out.append((record.path, v.number, v.object))
    return out
