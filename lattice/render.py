"""Rendering: turning recipes into outputs, and planning what is out of date.

A step is one asset brought up to date:
  generate     make a new version from a given recipe (`gen`, `regen`)
  update       the asset is stale: re-make it from fresh inputs as a new version
  remake       its output is absent from the store: re-create the recorded version
  materialize  its output is in the store but not in the working tree

Outputs are written to `.lattice/tmp`, adopted into the store, entered in the
recipe cache, then recorded in the manifest, then copied to the working tree;
a failing or killed generator leaves the asset at its previous version.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import msgspec

from lattice.errors import Conflict, GeneratorFailed, InvalidInput, LatticeError, WriteRefused, command
from lattice.paths import shown
from lattice.records import AssetRecord, Recipe, Version, author, now_iso
from lattice.repo import Repository

ACTIONS = ("generate", "update", "remake", "materialize")
UPDATE_TRIES = 3  # an update whose asset another command changed while it rendered starts again, this often
VERIFY_CACHE_HITS_UP_TO = 256 << 20


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


@dataclass
class Hooks:
    """What a job runner lends a step: progress, the slot's environment, and a
    way to learn of child processes so a timeout or cancel can kill them."""

    progress: Callable[[float, str], None] = lambda f, s: None
    env: dict[str, str] = field(default_factory=dict)
    on_process: Callable[[Any], None] = lambda p: None
    timeout: float | None = None
    # True once the job was cancelled, timed out or taken back: a generator
    # that ran in Python (and could not be killed) records nothing then.
    cancelled: Callable[[], bool] = lambda: False
    # Asked just before a version is recorded: False when the job was
    # cancelled (timed out, taken back) meanwhile, though the runner has not
    # noticed yet; True takes it past its commit point (a cancel then leaves it).
    commit: Callable[[], bool] = lambda: True


def _unless_void(name: str, hooks: Hooks) -> None:
    """Stop before recording when the job's run is void (cancelled, timed
    out, reclaimed); else take it past its commit point."""
    if hooks.cancelled() or not hooks.commit():
        raise LatticeError(f"{name}: the job was stopped (cancelled or timed out); nothing recorded")


def registry(repo: Repository):
    """The generators for this repository, loaded once per Repository object
    (scanning entry points costs tens of milliseconds)."""
    reg = repo.__dict__.get("_generators")
    if reg is None:
        from lattice import generators

        reg = repo.__dict__["_generators"] = generators.load(repo.config, repo_root=repo.root)
    return reg


# -- producing an output --------------------------------------------------


def produce(repo: Repository, recipe: Recipe, extension: str, hooks: Hooks | None = None) -> tuple[str, bool]:
    """The object for `recipe`: from the cache when a sound entry exists,
    else by running its generator. Returns (object id, cached).

    A deterministic recipe is produced under a lock on its key, so two
    processes (or slots) asking for the same key at once run it once: the
    second finds the first's result in the cache."""
    from lattice.recipe import recipe_key

    # The stored key is someone's text: trust only the one computed here, so a
    # hand-edited or hostile manifest can never poison another recipe's cache entry.
    key = recipe_key(recipe)
    if recipe.key and recipe.key != key:
        from lattice.errors import RepositoryCorrupt

        raise RepositoryCorrupt(
            f"the recorded recipe key {recipe.key[:12]}… does not match the recipe (it hashes to {key[:12]}…)",
            hint="the manifest was edited by hand; `lattice regen PATH` records a consistent version",
        )
    if not recipe.deterministic:
        return _run_generator(repo, recipe, extension, hooks or Hooks()), False
    from lattice.lock import RepoLock

    key_lock = RepoLock(repo.tmp / f"key-{key[:32]}.lock", timeout=24 * 3600)
    with key_lock:
        cached = _cached(repo, key)
        if cached:
            return cached, True
        oid = _run_generator(repo, recipe, extension, hooks or Hooks())
        with repo.index as index:
            index.cache_put(key, oid, recipe.generator)
    # The lock file stays: unlinking it could let a waiter and a newcomer hold
    # locks on two different files. gc sweeps ones older than its grace
    # period; losing that race costs at most one duplicate (identical) run.
    return oid, False


def _cached(repo: Repository, key: str) -> str | None:
    """The cached object for `key` if it is present and sound; a cache entry
    pointing at a missing or damaged object is a miss, and is dropped."""
    index = repo.index
    cached = index.cache_get(key)
    if not cached:
        return None
    size = repo.objects.content_size(cached)
    # Re-hash what is cheap to re-hash; a multi-GB video is trusted by its
    # presence and size (fsck hashes everything).
    if size is not None and (size > VERIFY_CACHE_HITS_UP_TO or repo.objects.verify(cached) is None):
        return cached
    with index:
        index.cache_drop(key)
    return None


def _run_generator(repo: Repository, recipe: Recipe, extension: str, hooks: Hooks) -> str:
    """Run the recipe's generator and adopt its output into the store."""
    from lattice.media import is_compressed

    with generated_file(repo, recipe, extension, hooks) as out:
        hooks.progress(0.98, "finalizing")
        facts = media_facts(out)
        stored = repo.objects.put_output(out, compress=False if is_compressed(out.name) else None)
    with repo.index as index:
        index.media_put(stored.oid, facts)
    return stored.oid


_redirect_lock = threading.Lock()
_redirected = [0, None]  # generator runs under way, the stdout they replaced


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """sys.stdout is stderr while any generator runs (jobs run on several
    threads: the first to start swaps it, the last to end puts it back)."""
    with _redirect_lock:
        if _redirected[0] == 0:
            _redirected[1], sys.stdout = sys.stdout, sys.stderr
        _redirected[0] += 1
    try:
        yield
    finally:
        with _redirect_lock:
            _redirected[0] -= 1
            if _redirected[0] == 0:
                sys.stdout = _redirected[1]


@contextlib.contextmanager
def generated_file(repo: Repository, recipe: Recipe, extension: str, hooks: Hooks | None = None) -> Iterator[Path]:
    """Run the recipe's generator into a scratch file in `.lattice/tmp` (a
    private folder in the system's temp folder where .lattice may not be
    written: `verify` there) and yield its path; the scratch file and input
    links are removed afterwards (a failing or killed generator leaves
    nothing behind)."""
    from lattice.fsutil import remove_quietly
    from lattice.generators.base import RunContext

    hooks = hooks or Hooks()
    gen = registry(repo).get(recipe.generator)
    if str(gen.version) != recipe.generator_version:
        raise InvalidInput(  # not a failure a retry could fix
            f"the recipe was made with {gen.id} version {recipe.generator_version}, installed is {gen.version}",
            hint="`lattice regen PATH` records a new version with the installed generator",
        )
    with contextlib.ExitStack() as scratch:
        private = _private_scratch(repo, scratch)
        out = (private or repo.tmp) / f"out-{uuid.uuid4().hex}.{extension}"
        scratch.callback(remove_quietly, out)
        inputs = input_files(repo, recipe, scratch, private)
        hooks.progress(0.0, "preparing")
        try:
            with stdout_to_stderr():  # a plug-in's prints must not mix into `--json` on stdout
                gen.run(
                    RunContext(
                        params=dict(recipe.params),
                        seed=recipe.seed,
                        prompt=recipe.prompt,
                        negative_prompt=recipe.negative_prompt,
                        inputs=inputs,
                        output=out,
                        progress=hooks.progress,
                        timeout=hooks.timeout,
                        env=dict(hooks.env),
                        on_process=hooks.on_process,
                        input_names=list(recipe.inputs),
                    )
                )
            try:
                st = os.lstat(out)
            except FileNotFoundError:
                raise GeneratorFailed(f"generator {gen.id} wrote no output") from None
            if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
                what = "an empty file" if stat.S_ISREG(st.st_mode) else "something other than a regular file"
                raise GeneratorFailed(f"generator {gen.id} wrote {what} as its output")
        except GeneratorFailed as e:
            # The same recipe through a deterministic CPU generator fails the
            # same way; a GPU job may have failed for memory another job held.
            e.retryable = e.transient or not gen.deterministic or gen.slot == "gpu"
            raise
        except WriteRefused as e:
            if private is not None:
                # What refused is the system's temp folder, not the project
                # (where `lattice gc` could free some space).
                raise WriteRefused(f"{private.parent}: {e.message.rpartition(': ')[2]}",
                                   hint=f"free some space in {private.parent}, or point TMPDIR at a folder with room "
                                        "(where .lattice may not be written, renders work there), then run the command again") from None
            raise
        except LatticeError:
            raise
        except (Exception, SystemExit) as e:  # a plug-in's own error: one line, the same retry rule
            why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            failed = GeneratorFailed(f"generator {gen.id} failed: {why}", hint="run again with --debug for the traceback")
            failed.retryable = not gen.deterministic or gen.slot == "gpu"
            raise failed from e
        yield out


def _private_scratch(repo: Repository, scratch: contextlib.ExitStack) -> Path | None:
    """Where .lattice may not be written, a private folder in the system's
    temp folder for a render's scratch files, removed with `scratch`; None
    elsewhere (they go in .lattice, beside the store that adopts the output)."""
    if not repo.read_only:
        return None
    import shutil
    import tempfile

    sweep_private_scratch(Path(tempfile.gettempdir()))
    folder = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_SCRATCH}{os.getpid()}-"))
    scratch.callback(shutil.rmtree, folder, ignore_errors=True)
    return folder


PRIVATE_SCRATCH = "lattice-render-"
PRIVATE_SCRATCH_GRACE_S = 3600


def sweep_private_scratch(temp: Path) -> list[Path]:
    """Remove the private scratch folders that renders killed outright
    (SIGKILL, a power cut: no clean-up ran) left in the system's temp
    folder: ours (same owner), named with a process id that is gone, and
    untouched for an hour (a process in another PID namespace sharing the
    folder may look gone). Returns those removed."""
    import re
    import shutil

    from lattice.childproc import alive

    removed = []
    pattern = re.compile(re.escape(PRIVATE_SCRATCH) + r"(\d+)-[^/]*")
    try:
        entries = list(os.scandir(temp))
    except OSError:
        return removed
    cutoff = time.time() - PRIVATE_SCRATCH_GRACE_S
    for e in entries:
        m = pattern.fullmatch(e.name)
        if m is None:
            continue
        try:
            st = e.stat(follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or alive(int(m.group(1))):
                continue
            newest = max([st.st_mtime, *(os.lstat(f.path).st_mtime for f in os.scandir(e.path))])
        except (OSError, ValueError):
            continue
        if newest < cutoff:
            shutil.rmtree(e.path, ignore_errors=True)
            removed.append(Path(e.path))
    return removed


def input_files(repo: Repository, recipe: Recipe, scratch: contextlib.ExitStack, folder: Path | None = None) -> list[Path]:
    """Readable paths for a recipe's input objects, named with their assets'
    extensions, made in `folder` (default: the store's scratch folder); they
    live as long as `scratch`. Where .lattice may not be written, an input
    the store lacks is copied from its working file when that holds its
    bytes (a writable repository stores it back first: ensure_inputs)."""
    from lattice.media import extension

    paths = []
    for name, oid in zip(recipe.inputs, recipe.input_objects):
        if repo.objects.has(oid):
            paths.append(scratch.enter_context(repo.objects.as_file(oid, extension(name), folder)))
            continue
        if repo.read_only:
            path = _from_working_file(repo, name, oid, folder or repo.objects.tmp, scratch)
            if path is not None:
                paths.append(path)
                continue
            record = repo.manifest.read(name)
            numbers = [v.number for v in record.versions if v.object == oid] if record else []
            if numbers:
                from lattice.remake import ensure_present

                ensure_present(repo, name, numbers[-1])  # refuses, as only a write could bring it back
        e = GeneratorFailed(f"input {name} ({oid[:12]}) is not in the store", hint="`lattice render` re-makes evicted inputs first")
        e.retryable = False  # another try finds it no more present
        raise e
    return paths


def _from_working_file(repo: Repository, name: str, oid: str, folder: Path, scratch: contextlib.ExitStack) -> Path | None:
    """A scratch copy of the working file of `name` when it holds `oid`."""
    from lattice.fsutil import remove_quietly
    from lattice.media import extension
    from lattice.remake import copy_working_file

    path = folder / f"in-{uuid.uuid4().hex}.{extension(name)}"
    scratch.callback(remove_quietly, path)
    with open(path, "wb") as f:
        return path if copy_working_file(repo, name, oid, f) is not None else None


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


def probe_object(repo: Repository, oid: str, ext: str) -> dict:
    """Media facts of a stored object, probed under a name with its extension."""
    with repo.objects.as_file(oid, ext) as path:
        return media_facts(path)


def media_facts(path: Path) -> dict:
    """What the manifest keeps of a probe: the facts, not kind and size (kept elsewhere)."""
    from lattice.ffmpeg import probe

    d = msgspec.to_builtins(probe(path))
    d.pop("size", None)
    d.pop("kind", None)
    return d


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
        if v.recipe is None:
            raise GeneratorFailed(f"{name}: v{v.number} was imported; its content cannot be re-made", hint="re-add the file if you still have it")
        from lattice.remake import adopt_working_file

        if adopt_working_file(repo, name, v.object):  # the working file still holds it: no need to run anything
            return Outcome(name, step.action, "cached", v.number, v.object, seconds=time.monotonic() - start)
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
        for t in targets:
            wanted.update(graph.ancestors(t))
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
