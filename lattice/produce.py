"""Producing an output: the object a recipe makes, from the recipe cache or
by running its generator.

A deterministic recipe runs under a lock on its key, so two processes asking
for the same key at once run it once, and its object is entered in the
recipe cache. The generator writes a scratch file in `.lattice/tmp` (where
.lattice may not be written, in a private folder in the system's temp
folder, which `sweep_private_scratch` clears after a killed run) from
readable copies of its input objects; the store then adopts it, with its
media facts. A failing or killed generator leaves nothing behind.
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

from lattice.errors import GeneratorFailed, InvalidInput, LatticeError, WriteRefused
from lattice.records import Recipe
from lattice.repo import Repository

VERIFY_CACHE_HITS_UP_TO = 256 << 20


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


# -- running a generator --------------------------------------------------


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
    from lattice.generators import registry
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


# -- scratch files --------------------------------------------------------


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


# -- media facts ----------------------------------------------------------


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
