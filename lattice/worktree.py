"""Materializing recorded versions into the working tree (`checkout`, `cat`).

The working file is always a copy (a reflink where the filesystem allows),
never a hard link, so editing it can never corrupt the store.
"""

from __future__ import annotations

import os
from typing import BinaryIO, Iterable

from lattice.errors import InvalidInput
from lattice.repo import Repository


def materialize(repo: Repository, name: str, oid: str, size: int | None = None) -> None:
    """Write object `oid` to the working path of `name`, atomically."""
    from lattice.fsutil import atomic_file

    path = repo.working_path(name)
    require_object(repo, name, oid)
    if path.is_dir():
        raise InvalidInput(f"{name}: a directory is in the way", hint="move it aside, then run the command again")
    with atomic_file(path, durable=False) as f:
        repo.objects.copy_to(oid, f, limit=size)
    st = os.stat(path)
    with repo.index as index:
        index.set_stat([(st.st_size, st.st_mtime_ns, st.st_ino, oid, name)])
    _touch(repo, oid)


def _touch(repo: Repository, oid: str) -> None:
    from lattice.catalog import touch  # gc evicts least recently used outputs first

    touch(repo, oid)


def require_object(repo: Repository, name: str, oid: str) -> None:
    if repo.objects.has(oid):
        return
    row = repo.index.get(name)
    if row is not None and row.generator:
        raise InvalidInput(
            f"{name}: its output {oid[:12]} is not in the store",
            hint=f"re-make it with `lattice render {name}`",
        )
    raise InvalidInput(
        f"{name}: its content {oid[:12]} is missing from the store",
        hint="`lattice fsck` reports lost objects; re-add the file if you still have it",
    )


def checkout(repo: Repository, names: Iterable[str], regen: bool = True, notify=None) -> list[str]:
    """Re-materialize the current version of each asset; returns the names written.
    An output evicted by gc is re-made through the queue first (unless regen=False)."""
    from lattice.remake import ensure_present

    done = []
    for name in names:
        record = repo.record(name)
        ensure_present(repo, name, None, regen=regen, notify=notify)
        materialize(repo, name, record.current.object, record.current.size)
        done.append(name)
    return done


def cat(repo: Repository, name: str, number: int | None, out: BinaryIO, regen: bool = True, notify=None) -> int:
    from lattice.remake import ensure_present

    record = repo.record(name)
    version = record.version(number)
    ensure_present(repo, name, version.number, regen=regen, notify=notify)
    require_object(repo, name, version.object)
    _touch(repo, version.object)
    return repo.objects.copy_to(version.object, out, limit=version.size)
