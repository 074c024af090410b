"""Keeping the index in step with the manifest files.

A clone, a `git pull` or a hand edit changes manifest files behind lattice's
back, and a crash can fall between a manifest write and the index update:
opening the index (Repository.index) re-indexes every file whose stat
differs from what the index last saw, refuses a file cut short (fewer
versions than were recorded, unless history holds that very text), and
commits the outside edits to history on the current branch (where .lattice
may not be written, it notes them in `repo.history_behind` instead).
"""

from __future__ import annotations

import contextlib
import os

from lattice.errors import RepositoryCorrupt
from lattice.repo import BATCH_JOURNAL, HISTORY_PENDING, JOURNAL

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (3 ms of every start)
if TYPE_CHECKING:
    from lattice.repo import Repository


def sync_index(repo: Repository, digest: str | None = None) -> list[str]:
    """Re-index the assets whose manifest file differs (by stat) from
    what the index last saw; drop those whose file is gone. Costs one
    walk of the manifest folder and one value read (the stored digest of
    the stamps; a full comparison after a change that did not store
    one); returns the names re-indexed. `digest`: that of the stamps in
    listing order, already computed (status has it computed beside)."""
    from lattice.manifest import stamps_digest

    index = repo.index
    stored = index.manifest_digest()
    if digest is not None and digest == stored:
        return []  # as below, with no stamps to track: a write of ours just stores no digest
    seen = repo.manifest.stamps()
    digest = stamps_digest(seen)
    if digest == stored:  # the common case: one value read
        index.track_stamps(seen)
        return []
    # Else a write stored it (sorted by name), or a change forgot it.
    written = stored is not None and stamps_digest(seen, sort=True) == stored
    known = seen if written else index.manifest_stamps()
    if seen == known:  # compared in C
        import sqlite3  # loaded by the index already; not at start-up, which status forks early in

        with contextlib.suppress(sqlite3.OperationalError), index:  # a read-only index just stays slower
            index.set_manifest_digest(digest)
        index.track_stamps(seen)
        return []
    changed = [n for n, stamp in seen.items() if known.get(n) != stamp]
    removed = [n for n in known if n not in seen]
    if not changed and not removed:
        return []
    with repo.lock:
        switching, batch = os.path.exists(repo.dir / JOURNAL), os.path.exists(repo.dir / BATCH_JOURNAL)
        if switching or batch:
            # A switch, merge or batch died while we waited for its lock:
            # its manifest files may be half written. Finish it, then look again.
            if repo.read_only:
                repo.refuse_unfinished()
            if switching:
                from lattice.switch import recover

                recover(repo)
            repo.finish_batch()
            return sync_index(repo)
        names = _reindex(repo, changed, removed)
        # A deleted file is left out: fsck reports it, --repair restores it.
        edits = [n for n in names if n not in removed]
        if not repo.read_only:
            _record_outside_edits(repo, edits)
        elif repo.history_behind is not True and edits and _history_started(repo):
            repo.history_behind |= set(edits)  # history catches up where .lattice may be written
        return names


def _record_outside_edits(repo: Repository, names: list[str]) -> None:
    """Commit manifest files changed behind lattice's back (a hand edit,
    a `git pull`) on the current branch, as soon as they are seen: a
    later switch would otherwise carry them to another branch. A change
    of ours that a killed process left out of history is caught up under
    its own message instead."""
    from lattice import history, history_pending

    if not names or not _history_started(repo):
        return  # no history yet, and no change of ours that meant to start it
    try:
        if not history_pending.catch_up(repo):
            history.commit_outside_edits(repo, names)
    except Exception as e:  # the index is right; the next change (or fsck --repair) catches history up
        from lattice.errors import warn

        with contextlib.suppress(OSError):
            history_pending.mark(repo)
        warn(f"manifest edits made outside lattice are not in history yet: {history_pending._why(e)}")


def _history_started(repo: Repository) -> bool:
    """History exists, or a change of ours meant to start it."""
    return os.path.exists(repo.dir / "history.git" / "HEAD") or os.path.exists(repo.dir / HISTORY_PENDING)


def _reindex(repo: Repository, changed: list[str], removed: list[str]) -> list[str]:
    """sync_index's writes, under the repository lock."""
    index = repo.index
    with index:
        fresh = []
        for name in changed:
            try:
                record = repo.manifest.read(name)
                row = index.get(name)
                if record is not None and row is not None and len(record.versions) < row.versions and not _committed(repo, name):
                    # Versions are only ever appended: fewer means a cut
                    # file, unless history holds this very text (a `git
                    # checkout` or `git stash` brought an older state back).
                    raise RepositoryCorrupt(
                        f"{repo.manifest.file_of(name)}: holds {len(record.versions)} version(s), but v{row.versions} was recorded: truncated?",
                        hint="`lattice fsck --repair` restores it from history",
                    )
            except RepositoryCorrupt as e:
                # Keep the last good entry; commands that trust the
                # manifest refuse (check_manifest), fsck explains.
                repo.damaged.append(e)
                continue
            if record is not None:
                fresh.append((record, os.stat(repo.manifest.file_of(name)), row))
        index.put_many(fresh)
        for name in removed:
            index.remove(name)
    return [record.path for record, _, _ in fresh] + removed  # not the damaged ones


def _committed(repo: Repository, name: str) -> bool:
    """History holds the manifest file of `name` exactly as it is now."""
    from lattice import history
    from lattice.gitpack import blob_id

    try:
        data = repo.manifest.file_of(name).read_bytes()
        return blob_id(data) in history.open_git(repo, create=False)
    except Exception:  # no history, or none readable: nothing vouches for the file
        return False
