"""Rendering: the steps that bring assets up to date, and planning what is
out of date.

A step is one asset brought up to date:
  generate     make a new version from a given recipe (`gen`, `regen`)
  update       the asset is stale: re-make it from fresh inputs as a new version
  remake       its output is absent from the store: re-create the recorded version
  materialize  its output is in the store but not in the working tree

Outputs are made by lattice.produce (written to `.lattice/tmp`, adopted into
the store, entered in the recipe cache), then recorded in the manifest, then
copied to the working tree; a failing or killed generator leaves the asset at
its previous version.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import msgspec

from lattice.errors import Conflict, GeneratorFailed, InvalidInput, LatticeError, command
from lattice.paths import shown
from lattice.produce import Hooks, probe_object, produce
from lattice.records import AssetRecord, Recipe, Version, author, now_iso
from lattice.repo import Repository

ACTIONS = ("generate", "update", "remake", "materialize")
UPDATE_TRIES = 3  # an update whose asset another command changed while it rendered starts again, this often


@dataclass
class Step:
    name: str
    action: str
    recipe: Recipe | None = None  # for generate
    change: str = ""
    note: str = ""
    deps: list[str] = field(default_factory=list)  # names of steps that must finish first
    generator: str = ""
    kind: str = ""
    base: int = -1  # for generate: the version count it was planned on (-1: any)
    branch: str = ""  # the branch it was queued on ("": any): it never records on another
    refill: bool = False  # remake: only the store lacks it; the working file holds it (`render --check` passes)
    keep: str = ""  # the object the working file holds that the store lacks (gc evicted it): stored back before the file is replaced


@dataclass
class Outcome:
    name: str
    action: str
    status: str  # rendered, cached, unchanged, materialized, superseded, failed, cancelled, skipped
    version: int | None = None
    object: str | None = None
    error: str = ""
    seconds: float = 0.0
    exit_code: int | None = None  # failed or skipped: why, as the CLI's exit code (lattice.errors); None: unknown
    pinned: int | None = None  # generate: the asset's pin, the version its dependents and exports keep using
    hint: str = ""  # failed: what its error said to do about it ("": nothing)
    job: int | None = None  # the queue's job that ran (or failed) it; None: none was queued (refused up front)


def _unless_void(name: str, hooks: Hooks) -> None:
    """Stop before recording when the job's run is void (cancelled, timed
    out, reclaimed); else take it past its commit point."""
    if hooks.cancelled() or not hooks.commit():
        raise LatticeError(f"{name}: the job was stopped (cancelled or timed out); nothing recorded")


# -- recording ------------------------------------------------------------


class Superseded(LatticeError):
    """The state a step was planned on is gone: it records nothing."""

    exit_code = 12


# Why a step is skipped rather than write a new version over a working file.
EDITED = "working file was modified; `lattice add` records it, `lattice checkout` discards it"


def why_kept(path) -> str:
    """Why a step skips a working file that holds no recorded version: an
    edit (EDITED), or a folder standing where the file belongs."""
    from lattice.worktree import IN_THE_WAY, in_the_way

    return f"{IN_THE_WAY}; move the folder aside, then `lattice render` writes it" if in_the_way(path) else EDITED


def require_base(name: str, base: int, record: AssetRecord | None) -> None:
    """A step planned on v`base` of the asset (-1: any) never stacks a
    version on another state (a job left behind by a killed command, run
    after a newer gen): Superseded."""
    now = len(record.versions) if record else 0
    if base >= 0 and now != base:
        raise Superseded(f"{name} changed (v{base} → v{now}) since this job was queued; nothing recorded")


def record_version(repo: Repository, name: str, recipe: Recipe, oid: str, change: str, note: str = "",
                   message: str = "", branch: str = "", base: int = -1) -> Version:
    """Append a version with this output to the asset (creating it). With
    `branch`, only while that branch is checked out (checked under the lock,
    where a switch cannot slip in): a job queued on one branch never records
    on the branch a switch brought meanwhile."""
    from lattice.history import head_branch
    from lattice.media import extension, kind_of_extension

    media = repo.index.media_get(oid)
    if media is None:
        media = probe_object(repo, oid, extension(name))
        with repo.index as index:
            index.media_put(oid, media)
    with repo.transaction(message or f"render {name}") as tx:
        now = head_branch(repo) if branch else None
        if now is not None and now != branch:
            raise Superseded(f"{name}: queued on branch {branch}, but {now} is checked out now; nothing recorded",
                             hint=f"{command('lattice switch', branch, paths=False)}, then run the command again")
        record = tx.read(name)
        require_base(name, base, record)  # again, under the lock: two jobs may have started on one state
        if change == "initial" and record is not None:  # another job made it first
            change = "modified"
        version = Version(
            number=len(record.versions) + 1 if record else 1,
            change=change or ("initial" if record is None else "modified"),
            time=now_iso(),
            author=author(),
            object=oid,
            size=repo.objects.content_size(oid) or 0,
            media=media,
            recipe=recipe,
            note=note,
        )
        if record is None:
            record = AssetRecord(path=name, kind=kind_of_extension(extension(name)), versions=[version])
        else:
            record.versions.append(version)
        tx.put(record)
    return version


# -- steps ----------------------------------------------------------------


def run_step(repo: Repository, step: Step, hooks: Hooks | None = None) -> Outcome:
    """Carry out one step. Raises on failure (the job runner records it)."""
    try:
        return _run_step(repo, step, hooks)
    except Superseded as e:
        return Outcome(step.name, step.action, "superseded", error=e.message)


def _run_step(repo: Repository, step: Step, hooks: Hooks | None = None) -> Outcome:
    from lattice.media import extension
    from lattice.pipeline import require_unedited
    from lattice.worktree import materialize

    hooks = hooks or Hooks()
    start = time.monotonic()
    name = step.name
    ext = extension(name)
    if step.keep and not repo.objects.has(step.keep):
        from lattice.remake import adopt_working_file

        if not adopt_working_file(repo, name, step.keep):
            raise Conflict(f"{name}: its working file changed after render looked at it", hint=f"run {command('lattice render', name)} again")
    if step.action == "materialize":
        record = repo.record(name)
        if record.current.recipe is not None and not repo.objects.has(record.current.object):
            # The version moved on since this was planned (a `git pull`) to one not made here yet.
            return run_step(repo, Step(name, "remake"), hooks)
        materialize(repo, name, record.current.object, record.current.size)
        return Outcome(name, step.action, "materialized", len(record.versions), record.current.object, seconds=time.monotonic() - start)
    if step.action == "remake":
        record = repo.record(name)
        v = record.current
        from lattice.remake import adopt_working_file, refuse_unless_remakeable

        if adopt_working_file(repo, name, v.object):  # the working file still holds it: no need to run anything
            return Outcome(name, step.action, "cached", v.number, v.object, seconds=time.monotonic() - start)
        # Nothing can re-make an import, an output gc evicted at the user's
        # request, or one the installed generator cannot make: said as cat says it.
        refuse_unless_remakeable(repo, f"{name}@v{v.number}", name, name, v)
        oid, cached = produce(repo, v.recipe, ext, hooks)
        if oid != v.object:
            from lattice.remake import output_differs

            raise output_differs(name, name, oid, v.object)
        materialize(repo, name, oid, v.size)
        return Outcome(name, step.action, "cached" if cached else "rendered", v.number, oid, seconds=time.monotonic() - start)
    if step.action == "update":
        for again in range(UPDATE_TRIES):
            record = repo.record(name)
            recipe, changed = refreshed_recipe(repo, record)
            if not changed:  # a cascade whose upstream came out the same, or this step's own run, killed after recording
                if not repo.objects.has(record.current.object):
                    return run_step(repo, Step(name, "remake"), hooks)
                _catch_up_file(repo, name, record)
                return Outcome(name, step.action, "unchanged", len(record.versions), record.current.object, seconds=time.monotonic() - start)
            oid, cached = produce(repo, recipe, ext, hooks)
            require_unedited(repo, name)  # edited while it rendered: keep the edits, record nothing
            note = "inputs changed: " + ", ".join(changed)
            _unless_void(name, hooks)
            try:
                v = record_version(repo, name, recipe, oid, "modified", note, f"render {name} v{len(record.versions) + 1}: {note}",
                                   step.branch, base=len(record.versions))
            except Superseded:
                # Another command recorded a version while this one rendered
                # (a regen): made from the recipe it replaced, this output
                # would undo it. Start again from the version current now;
                # a switch to another branch, or an asset that keeps changing, records nothing.
                now = repo.manifest.read(name)
                if now is None or len(now.versions) == len(record.versions) or again == UPDATE_TRIES - 1:
                    raise
                continue
            _write_recorded(repo, name, v, hooks)
            return Outcome(name, step.action, "cached" if cached else "rendered", v.number, oid, seconds=time.monotonic() - start)
    if step.action == "generate":
        assert step.recipe is not None
        recipe = step.recipe
        if recipe.inputs:  # inputs may have been re-made by earlier steps of the same plan
            recipe = _with_inputs(repo, recipe)
        record = repo.manifest.read(name)
        if (record is not None and step.base >= 0 and len(record.versions) == step.base + 1
                and record.current.recipe is not None and record.current.recipe.key == recipe.key):
            # This very job recorded it, and was killed before it wrote the file.
            _catch_up_file(repo, name, record)
            return Outcome(name, step.action, "unchanged", len(record.versions), record.current.object,
                           seconds=time.monotonic() - start, pinned=record.pinned)
        require_base(name, step.base, record)  # before the render, to spare it
        oid, cached = produce(repo, recipe, ext, hooks)
        record = repo.manifest.read(name)
        if record is not None and record.current.object == oid and record.current.recipe == recipe:
            # The same recipe made the same output: nothing new to record.
            materialize(repo, name, oid, record.current.size)
            return Outcome(name, step.action, "unchanged", len(record.versions), oid, seconds=time.monotonic() - start, pinned=record.pinned)
        require_base(name, step.base, record)  # superseded first: then its file may lag behind
        require_unedited(repo, name)
        _unless_void(name, hooks)
        v = record_version(repo, name, recipe, oid, step.change, step.note, step.note, step.branch, step.base)
        _write_recorded(repo, name, v, hooks)
        return Outcome(name, step.action, "cached" if cached else "rendered", v.number, oid, seconds=time.monotonic() - start,
                       pinned=record.pinned if record else None)
    raise InvalidInput(f"unknown render action {step.action!r}")


def _catch_up_file(repo: Repository, name: str, record: AssetRecord) -> None:
    """Write the working file of the recorded current version where it lags
    behind (missing, or another version of ours: a run killed between
    recording and writing); an edit stays."""
    from lattice.status import working_state
    from lattice.worktree import materialize

    row = repo.index.get(name)
    path = repo.working_path(name)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    if row is not None and row.object == record.current.object and (st is None or working_state(repo, row, path, st) == "outdated"):
        materialize(repo, name, record.current.object, record.current.size)


class NotWritten(LatticeError):
    """A version was recorded, but its working file could not be written. A
    retry would find the version there and record nothing: not retried. Its
    exit code is its cause's (13 when the filesystem refused the write)."""

    retryable = False


def _write_recorded(repo: Repository, name: str, version: Version, hooks: Hooks) -> None:
    from lattice.errors import exit_code_of, refused_write
    from lattice.queue.schema import RECORDED_STAGE
    from lattice.worktree import materialize

    hooks.progress(1.0, RECORDED_STAGE)  # past its commit point: a Ctrl-C now leaves it to finish
    try:
        materialize(repo, name, version.object, version.size)
    except (OSError, LatticeError) as e:
        cause = (refused_write(e) or e) if isinstance(e, OSError) else e
        why = cause.message.removeprefix(f"{name}: ") if isinstance(cause, LatticeError) else e.strerror or str(e)
        failed = NotWritten(
            f"{name} v{version.number} was recorded, but its working file could not be written: {why}",
            hint=f"fix that (permissions, free space, a file where a folder belongs), then {command('lattice checkout', name)} writes it",
        )
        failed.exit_code = exit_code_of(cause) or NotWritten.exit_code
        raise failed from None


def refreshed_recipe(repo: Repository, record: AssetRecord) -> tuple[Recipe, list[str]]:
    """The current recipe with its inputs' current effective objects."""
    old = record.current.recipe
    if old is None:
        raise GeneratorFailed(f"{record.path} was imported; it has no recipe to re-render")
    new = _with_inputs(repo, old)
    changed = [n for n, a, b in zip(old.inputs, old.input_objects, new.input_objects) if a != b]
    return new, changed


def _with_inputs(repo: Repository, recipe: Recipe) -> Recipe:
    from lattice.recipe import recipe_key

    objects = []
    for name in recipe.inputs:
        row = repo.index.get(name)
        if row is None:
            e = GeneratorFailed(f"input {shown(name)} is no longer an asset",
                                hint="re-add or re-make it, or `lattice gen` this asset from other inputs")
            e.retryable = False  # another try finds it no more an asset
            raise e
        objects.append(row.effective)
    new = msgspec.structs.replace(recipe, input_objects=objects)
    new.key = recipe_key(new)
    return new


# -- planning -------------------------------------------------------------


def plan(repo: Repository, targets: list[str] | None = None) -> tuple[list[Step], list[Outcome]]:
    """Steps that bring generated assets up to date, in dependency order, and
    the assets skipped (a modified working file is never overwritten)."""
    from lattice.lineage import Graph
    from lattice.status import held

    repo.check_manifest()
    index = repo.index
    rows = {r.path: r for r in index.rows()}
    graph = Graph.from_index(index)
    stale = graph.stale()
    wanted = set(rows)
    if targets:
        for t in targets:
            if t not in rows:
                from lattice.errors import UnknownAsset, closest

                raise UnknownAsset(f"no asset named {shown(t)}{closest(t, rows)}")
        wanted = set(targets)
        for t in targets:  # an input no longer an asset has no step: its dependent fails (pipeline.ready_to_queue)
            wanted.update(a for a in graph.ancestors(t) if a in rows)
    steps: dict[str, Step] = {}
    skipped: list[Outcome] = []
    for name in wanted:
        row = rows[name]
        path = repo.root / name
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        state, found = held(repo, row, path, st) if st is not None else (None, "")
        if state == "modified":  # edits only the file holds: never overwritten
            if row.generator:
                skipped.append(Outcome(name, "", "skipped", error=why_kept(path)))
            continue
        outdated = state == "outdated"  # another version of ours, left by a git pull or checkout
        # Its bytes may be the only copy left (gc evicted that version):
        # the step stores them back before it replaces the file.
        keep = found if outdated and not repo.objects.has(found) else ""
        if not row.generator:  # an import: only brought up to date
            if outdated and repo.objects.has(row.object):
                steps[name] = Step(name, "materialize", kind=row.kind, keep=keep)
            continue
        if name in stale:
            action = "update"
        elif not repo.objects.has(row.object):
            action = "remake"
        elif st is None or outdated:
            action = "materialize"
        else:
            continue
        # gc evicted only the store's copy when the working file holds the
        # current version: the step takes it back from there, and the
        # working tree is not out of date.
        refill = action == "remake" and st is not None and not outdated
        steps[name] = Step(name, action, generator=row.generator, kind=row.kind, refill=refill, keep=keep)
    # What depends on a skipped asset waits for it: made now, it would come
    # out "unchanged" and stay stale.
    waiting = {o.name for o in skipped}
    ordered = []
    for name in graph.order(steps):
        parent = next((p for p, _ in graph.parents.get(name, ()) if p in waiting), None)
        if parent is not None and steps[name].action == "update":
            skipped.append(Outcome(name, "", "skipped", error=f"its input {parent} was skipped"))
            waiting.add(name)
            del steps[name]
        else:
            ordered.append(name)
    for name in ordered:
        steps[name].deps = [p for p, _ in graph.parents.get(name, ()) if p in steps]
    return [steps[n] for n in ordered], skipped
