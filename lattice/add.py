"""`lattice add`: import files into the store and record a version of each."""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import msgspec

from lattice.errors import ContentChanged, InvalidInput
from lattice.paths import confine, confined, name_for, require_path
from lattice.records import AssetRecord, Version, author, now_iso
from lattice.repo import Repository
from lattice.worktree import settled, walk


# Files below this size are stored one after another while that is fast
# (lattice.fsutil.in_threads_when_slow); larger ones on threads, which
# overlap their reads, hashing and writes.
SMALL_FILE = 1 << 20
# A 64 KiB file is stored in about 0.23 ms where creating a file is quick.
SLOW_STORE_S = 1e-3


class AddResult(msgspec.Struct):
    path: str
    status: str  # "added", "updated", "unchanged"
    version: int
    object: str
    size: int


def expand(repo: Repository, paths: Iterable[str], cwd: Path | None = None) -> list[str]:
    """Asset names for the files and directories given (directories recursively;
    dot-files and files matched by .latticeignore found while walking are
    skipped, unless already tracked; a file or folder named is never skipped)."""
    from lattice import ignore

    cwd = cwd or Path.cwd()
    ignored = ignore.load(repo.root)
    def ignored_here(name: str, is_dir: bool) -> bool:
        """The index is asked only about the few names ignored."""
        if not ignored(name):
            return False
        if is_dir:  # as in git (and status), nothing in an ignored folder is offered, but its assets are re-added
            return not repo.index.first_under([name.rstrip("/")])
        return repo.index.get(name) is None

    skip = ignored_here if ignored is not None else None
    names: dict[str, None] = {}
    for p in paths:
        require_path(p)
        absolute = Path(os.path.normpath(cwd / p))
        if absolute == repo.root:
            base = ""
        else:
            base = name_for(repo.root, p, cwd)
        full = repo.root / base if base else repo.root
        if not os.path.lexists(full):
            raise InvalidInput(f"{p}: no such file or directory", hint="paths are relative to the current folder; `lattice status` lists the files not yet added")
        if full.is_dir():
            named_ignored = ignored is not None and base and ignored(base + "/")  # named, so added anyway
            found = 0
            for name in walk(repo.root, base, skip=None if named_ignored else skip, passed=_passed):
                names[name] = None
                found += 1
            if not found:
                _nothing_in(repo, p, base)
        elif full.is_file():
            names[base] = None
        elif os.path.islink(full):  # to nothing, or to itself
            raise InvalidInput(f"{p}: a symbolic link to nothing (or to itself)",
                               hint="point the link at a file in the project, or remove it")
        else:
            raise InvalidInput(f"{p}: not a regular file or directory (a FIFO, socket or device)",
                               hint="lattice records regular files: save the content to one and add that")
    return list(names)


def _nothing_in(repo: Repository, p: str, base: str) -> None:
    """A folder named that holds no file to add is said, not passed over in
    silence (as `add DIR` says each file it skips): most of all a folder
    standing where an asset's working file belongs, which `add` cannot record."""
    from lattice.errors import command, warn
    from lattice.worktree import IN_THE_WAY

    shown = os.path.join(p, "")
    if base and repo.index.get(base) is not None:
        warn(f"nothing added from {shown}: {base} is an asset, and {IN_THE_WAY}; move the folder aside, "
             f"then {command('lattice checkout', base)} writes the file")
    else:
        warn(f"nothing added from {shown}: it holds no file to add")


def _passed(name: str, why: str) -> None:
    from lattice.errors import warn
    from lattice.paths import shown

    warn(f"skipped {shown(name)}: {why}")


def add(
    repo: Repository,
    paths: Iterable[str],
    tags: Iterable[str] = (),
    cwd: Path | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[AddResult]:
    from lattice.ffmpeg import probe, probe_many
    from lattice.fsutil import AtomicBatch, in_threads, in_threads_when_slow, sync_filesystem
    from lattice.media import is_compressed

    tags = list(dict.fromkeys(tags))
    if any(not t.strip() for t in tags):
        raise InvalidInput("--tag needs a non-empty tag", hint="for example --tag plate")
    names = expand(repo, paths, cwd)
    repo.check_not_under_asset(names)
    # Few files: fsync each. Many: one syncfs for the whole batch.
    batch = len(names) >= AtomicBatch.SYNCFS_FROM
    index = repo.index
    now = time.time_ns()
    folders: dict[str, str] = {}  # confined() resolves each folder once
    known = index.get_many(names)
    started = itertools.count()

    def located(name: str) -> tuple[str, Path, os.stat_result]:
        path = confined(repo.root, name, folders)
        try:
            return name, path, os.stat(path)
        except FileNotFoundError:
            raise ContentChanged(f"{name}: file vanished while being added") from None

    def store(item: tuple[str, Path, os.stat_result]) -> tuple[object, os.stat_result]:
        name, path, st = item
        if progress:
            progress(next(started), len(names), name)
        row = known.get(name)
        if row and row.wt_object == row.object and (row.wt_size, row.wt_mtime_ns, row.wt_ino) == (st.st_size, st.st_mtime_ns, st.st_ino):
            stored = row.object
        else:
            stored = repo.objects.put_file(path, compress=False if is_compressed(name) else None, durable=not batch, st=st)
        return stored, st

    if batch:
        _import_meanwhile("pygit2", "tomli_w")
    # Objects first, outside the lock: writing them is safe concurrently, and
    # until a manifest names them they are just unreferenced blobs.
    items = [located(name) for name in names]
    small = [item for item in items if item[2].st_size < SMALL_FILE]
    large = [item for item in items if item[2].st_size >= SMALL_FILE]
    done = in_threads_when_slow(store, small, SLOW_STORE_S) + in_threads(store, large)
    by_name = dict(zip((item[0] for item in small + large), done))
    hashed = {name: by_name[name] for name in names}
    stat_updates = [
        (st.st_size, st.st_mtime_ns, st.st_ino, stored.oid, name)
        for name, (stored, st) in hashed.items()
        if not isinstance(stored, str) and settled(st.st_mtime_ns, now)
    ]
    if progress:
        progress(len(names), len(names), "")
    if batch:
        sync_filesystem(repo.dir)
    # Media facts outside the lock too, and the ffmpeg probes several at once:
    # only for content the index does not already hold as current.
    fresh = [name for name in names if _oid(hashed[name][0]) != getattr(known.get(name), "object", None)]
    with _vanished(repo):
        facts = dict(zip(fresh, probe_many([os.path.join(repo.root, name) for name in fresh])))
        # The probes read the working files after they were stored: facts
        # of other content (or of none) must not be recorded with the object.
        for name in fresh:
            st, now_st = hashed[name][1], os.stat(os.path.join(repo.root, name))
            if (now_st.st_size, now_st.st_mtime_ns, now_st.st_ino) != (st.st_size, st.st_mtime_ns, st.st_ino):
                raise ContentChanged(f"{name}: file changed while being added")

    results: list[AddResult] = []
    changed: list[str] = []
    when, who = now_iso(), author()
    with repo.transaction(f"add {_summary(names)}") as tx:
        for name in names:
            stored, st = hashed[name]
            oid = _oid(stored)
            if not repo.objects.has(oid):
                # gc may have evicted identical content between our write and this lock.
                oid = repo.objects.put_file(confine(repo.root, name)).oid
            record = tx.read(name)
            if record is not None and record.current.object == oid:
                if tags and not set(tags) <= set(record.tags):
                    record.tags = sorted(set(record.tags) | set(tags))
                    tx.put(record)
                    changed.append(name)
                results.append(AddResult(name, "unchanged", len(record.versions), oid, st.st_size))
                continue
            if name not in facts:  # changed by another add meanwhile
                with _vanished(repo):
                    facts[name] = probe(repo.root / name)
            media = facts[name]
            version = Version(
                number=len(record.versions) + 1 if record else 1,
                change="edited" if record else "imported",
                time=when,
                author=who,
                object=oid,
                size=st.st_size,
                media=_media_dict(media),
            )
            if record is None:
                record = AssetRecord(path=name, kind=media.kind, tags=sorted(tags), versions=[version])
            else:
                record.versions.append(version)
                record.kind = media.kind
                record.tags = sorted(set(record.tags) | set(tags))
            tx.put(record)
            changed.append(name)
            results.append(AddResult(name, "added" if version.number == 1 else "updated", version.number, oid, st.st_size))
        if changed:  # history names what changed, not what was named
            tx.message = f"add {_summary(changed)}"
    with index:
        index.set_stat(stat_updates)
    _warn_unreadable([(r.path, facts[r.path]) for r in results if r.status != "unchanged" and r.path in facts])
    return results


def _import_meanwhile(*modules: str) -> None:
    """Import what the end of a large add needs (the history commit's pygit2,
    the manifest's TOML writer: 30-60 ms) on a thread, while this one waits
    on the disk for the objects. An import that fails is left to fail again
    where the module is used, with that place's message."""
    import importlib
    import threading

    def load() -> None:
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception:
                pass

    threading.Thread(target=load, name="lattice-imports", daemon=True).start()


def _warn_unreadable(added: list[tuple[str, object]]) -> None:
    """Say which added images and videos ffmpeg found no picture (nor sound)
    in: a text file named .png is recorded by its extension, and every
    generator and export of it will be refused."""
    from lattice.errors import warn
    from lattice.paths import shown

    for name, media in added:
        if media.kind in ("image", "video") and not media.width and not media.audio_codec:
            warn(f"{shown(name)}: no {media.kind} ffmpeg can read; it is recorded by its extension, "
                 "and generators and exports will refuse it")


@contextlib.contextmanager
def _vanished(repo: Repository) -> Iterator[None]:
    """A file deleted while it is probed is a change under our feet (exit 7)."""
    try:
        yield
    except FileNotFoundError as e:
        name = os.path.relpath(e.filename, repo.root) if e.filename else "a file"
        raise ContentChanged(f"{name}: file vanished while being added") from None


def _oid(stored) -> str:
    """The object id of a put_file result, or of an id the stat cache gave."""
    return stored if isinstance(stored, str) else stored.oid


def _media_dict(media) -> dict:
    d = msgspec.to_builtins(media)
    d.pop("size", None)
    d.pop("kind", None)
    return d


def _summary(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{len(names)} files"
