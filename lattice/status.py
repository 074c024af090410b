"""`lattice status`: how the working tree and the store differ from the manifest.

States, one per path, most actionable first:
  modified  the working file holds edits no recorded version has (or is
            a folder, or a link out of the project, where the file belongs)
  outdated  the working file holds another version lattice recorded or
            wrote there (a `git pull` or `git checkout` moved the manifest
            on, or back): `lattice checkout` or `lattice render` writes the
            current one
  stale     its recipe's inputs changed since its output was made
  evicted   its output is not in the store but can be re-made (`lattice render`)
  missing   the working file was deleted (`lattice checkout` brings it back;
            where nothing can, lattice.status.cannot_bring_back says what works)
  new       a media file under the project that lattice does not track
"""

from __future__ import annotations

import functools
import os
import time
from collections import namedtuple
from collections.abc import Iterator

from lattice.repo import Repository

STATES = ("modified", "outdated", "stale", "evicted", "missing", "new")
# From this many assets on, status lists the object store once instead of
# asking it about each object.
PRESENT_LISTING_FROM = 256
PORCELAIN = {"modified": " M", "outdated": " O", "stale": " S", "evicted": " E", "missing": " D", "new": "??"}


# collections' namedtuple, not typing's: typing costs 3 ms of status's start
Entry = namedtuple("Entry", "path state")


def status(repo: Repository, untracked: bool = True) -> list[Entry]:
    from lattice.beside import Beside
    from lattice.index_sync import sync_index

    # The manifest check (a stat per manifest file) and the walk for new
    # files run on a second core while this one checks the working files
    # against the index as it stands; a manifest that moved on under the
    # index (a `git pull`) is synced and the working files looked at again.
    # The child starts first: it needs neither SQLite nor the index, which
    # this process loads meanwhile; unless a cut-short change is to be
    # finished, which the child must see done.
    if repo.interrupted():
        repo.open_index()
    with Beside(functools.partial(_manifest_and_new, repo, untracked)) as beside:
        index = repo.open_index()
        entries, refresh = _tracked(repo, index)
        digest, new, passed, walked = beside.result()
    if walked is not None:
        from lattice.untracked import keep

        keep(repo, walked)
    if passed:
        from lattice.errors import warn

        for name, why in passed:  # told here: the child's own output would interleave
            warn(f"skipped {name}: {why}")
    if sync_index(repo, digest):
        entries, refresh = _tracked(repo, index)
    repo.check_manifest()
    if refresh:
        with index:
            index.set_stat(refresh)
    else:
        index.save_working_rows()
    entries.extend(Entry(n, "new") for n in new)
    entries.sort(key=lambda e: e.path)
    return entries


def _manifest_and_new(repo: Repository, untracked: bool) -> tuple[str, list[str], list[tuple[str, str]], bytes | None]:
    """The digest of the manifest files' stamps (what sync_index compares),
    the untracked media files (none unless `untracked`), the folders the
    walk could not read, with why, and the walk to keep (lattice.untracked)."""
    from lattice.manifest import stamps_digest
    from lattice.untracked import new_files

    seen = repo.manifest.stamps()
    digest = stamps_digest(seen)
    passed: list[tuple[str, str]] = []
    new, walked = new_files(repo, seen.keys(), digest, passed) if untracked else ([], None)
    return digest, new, passed, walked


def _tracked(repo: Repository, index) -> tuple[list[Entry], list[tuple]]:
    """The tracked assets' states, and the stat cache rows to refresh
    (working files hashed and found to hold their object)."""
    from lattice.lineage import Graph
    from lattice.worktree import settled

    rows = index.working_rows(named=False)
    stale = Graph.from_index(index).stale()
    entries: list[Entry] = []
    refresh = []
    now = time.time_ns()
    # Plain strings, not Path objects, in the per-row loop: it runs 10,000 times.
    root = os.path.join(repo.root, "")
    # Only outputs can be evicted (an import without its object is fsck's
    # business): past a few hundred of them, listing the store's shards
    # beats a stat per object.
    outputs = sum(1 for row in rows if row[2])  # its generator
    present = repo.objects.present() if outputs > PRESENT_LISTING_FROM else set()
    links: set[str] = set()
    for row, st in working_stats(root, rows, links):
        name, oid, generator, deterministic, wt_size, wt_mtime_ns, wt_ino, wt_object = row
        state = None
        if links and name in links and link_out(repo, name) is not None:
            # What it points to is not lattice's to replace, and switch,
            # checkout and render refuse it: in the way, whatever it holds.
            entries.append(Entry(name, "modified"))
            continue
        # stat_matches, inlined: this loop runs 10,000 times.
        if st is not None and (st.st_mtime_ns != wt_mtime_ns or st.st_size != wt_size or st.st_ino != wt_ino or wt_object != oid):
            if oid is None:  # the snapshot leaves out an import's ids where its stat cache held its object
                oid = wt_object = index.object_of(name) or ""
            found = hash_file(root + name)
            if found != oid:
                state = "outdated" if kept(repo, name, found, st, (wt_size, wt_mtime_ns, wt_ino, wt_object)) else "modified"
            elif settled(st.st_mtime_ns, now):
                refresh.append((st.st_size, st.st_mtime_ns, st.st_ino, found, name))
        if state is None and name in stale:
            state = "stale"
        if state is None and generator and oid not in present and not repo.objects.has(oid):
            # Re-creatable outputs are a cache; a non-deterministic one without its object is lost.
            state = "evicted" if deterministic else "missing" if st is None else None
        if state is None and st is None:
            state = "missing"
        if state:
            entries.append(Entry(name, state))
    return entries, refresh


def cannot_bring_back(repo: Repository, missing: list[str]) -> list[tuple[str, str]]:
    """(name, hint) for each of the `missing` outputs whose bytes are gone
    and that nothing can re-make (lattice.remake.refuse_unless_remakeable:
    evicted for good, lost), with the hint checkout would refuse them with.
    It reads their records: give it status's missing assets, never every one."""
    if not missing:  # the usual case: status imports nothing more for it
        return []
    from lattice.errors import LatticeError
    from lattice.remake import refuse_unless_remakeable

    out = []
    for_good = None  # the gc run log, read once for them all
    for name in missing:
        try:
            v = repo.record(name).current
        except LatticeError:  # unreadable: fsck's business
            continue
        if v.recipe is None or repo.objects.has(v.object):  # an import without its bytes is fsck's business too
            continue
        if for_good is None and not v.recipe.deterministic:
            from lattice.gc import evicted_for_good

            for_good = evicted_for_good(repo)
        try:
            refuse_unless_remakeable(repo, f"{name}@v{v.number}", name, name, v, for_good=for_good)
        except LatticeError as e:
            if e.hint:
                out.append((name, e.hint))
    return out


def working_stats(root: str, rows: list, links: set[str] | None = None) -> Iterator[tuple]:
    """(row, the stat of its working file, or None where there is none) for
    rows sorted by path, the path first (`root` ends with a separator). Each folder is opened
    once and each file is a stat relative to it, not a path walk from the root.
    A symbolic link is followed; `links`, when given, gets the names of those."""
    from stat import S_ISLNK

    folder, fd = None, None
    try:
        for row in rows:
            parent, _, leaf = row[0].rpartition("/")
            if parent != folder:
                if fd is not None:
                    os.close(fd)
                    fd = None
                folder, fd = parent, _open_folder(root + parent)
            try:
                st = os.stat(leaf, dir_fd=fd, follow_symlinks=False) if fd is not None else None
                if st is not None and S_ISLNK(st.st_mode):
                    if links is not None:
                        links.add(row[0])
                    st = os.stat(leaf, dir_fd=fd)
            except (FileNotFoundError, NotADirectoryError):
                st = None
            yield row, st
    finally:
        if fd is not None:
            os.close(fd)


def link_out(repo: Repository, name: str, folders: dict[str, str] | None = None):
    """The refusal (UnsafePath, exit 4, with its hint) every command that
    writes the working file of `name` gives when it is a symbolic link
    leading out of the project, which lattice never writes through nor
    replaces; None when it is not one. `folders`: as confined() takes it,
    one dict for a loop over many names."""
    from lattice.errors import UnsafePath
    from lattice.paths import confined

    try:
        confined(repo.root, name, folders)
    except UnsafePath as e:
        return e
    return None


def _open_folder(path: str) -> int | None:
    """A descriptor of the folder at `path`, None where there is none."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        return None


def modified(repo: Repository) -> list[str]:
    """Assets whose working file holds unrecorded edits: what a switch or
    merge must not overwrite (status without the rest of its states)."""
    repo.check_manifest()
    root = os.path.join(repo.root, "")
    rows = repo.index.working_rows()
    return [row.path for row, st in working_stats(root, rows) if st is not None and edited(repo, row, root + row.path, st)]


def stat_matches(row, st: os.stat_result) -> bool:
    """The stat cache says the working file still holds the recorded object."""
    return row.wt_object == row.object and (row.wt_size, row.wt_mtime_ns, row.wt_ino) == (
        st.st_size,
        st.st_mtime_ns,
        st.st_ino,
    )


def hash_file(path) -> str:
    """BLAKE3 of a working file. A directory (or other non-file) standing
    where the file belongs hashes to "", which matches no object."""
    import blake3

    from lattice.objects import CHUNK

    if not os.path.isfile(path):
        return ""
    h = blake3.blake3()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def kept(repo: Repository, name: str, found: str, st: os.stat_result, cached: tuple) -> bool:
    """The working file (stat `st`), whose bytes hash to `found`, is not the
    user's alone, so overwriting it loses nothing: it holds a recorded
    version of the asset, or it is as lattice last wrote or recorded it
    there and the store still has those bytes (`cached`: the row's stat
    cache, (wt_size, wt_mtime_ns, wt_ino, wt_object)) -- a version the
    manifest now checked out does not list, after a `git checkout` took it
    back. Merely being in the store is not enough: an interrupted `add`
    leaves an edit's bytes there, referenced by nothing (and caches no
    stat). The cache must match in its stat and in the bytes, so an edit
    since, even of the same size within the same mtime tick, is an edit;
    and one whose object gc evicted is the only copy left."""
    from lattice.errors import LatticeError

    if not found:
        return False
    size, mtime_ns, ino, oid = cached
    if found == oid and (st.st_size, st.st_mtime_ns, st.st_ino) == (size, mtime_ns, ino) and repo.objects.has(found):
        return True
    try:
        return found in {v.object for v in repo.record(name).versions}
    except LatticeError:  # unreadable: nothing counts as recorded
        return False


def working_state(repo: Repository, row, path, st: os.stat_result) -> str | None:
    """What the working file at `path` (stat `st`) holds against the row's
    current object: None for that object (the stat cache first, a hash only
    when it disagrees); "outdated" for another version lattice recorded or
    wrote there (the manifest moved under it: a `git pull` or `git
    checkout`), which may be overwritten; "modified" for bytes only the file
    keeps."""
    return held(repo, row, path, st)[0]


def held(repo: Repository, row, path, st: os.stat_result) -> tuple[str | None, str]:
    """(working_state, the object the working file holds): the row's
    object when the stat cache vouches for it, else the file's hash."""
    if stat_matches(row, st):
        return None, row.object
    found = hash_file(path)
    if found == row.object:
        return None, found
    cached = (row.wt_size, row.wt_mtime_ns, row.wt_ino, row.wt_object)
    return "outdated" if kept(repo, row.path, found, st, cached) else "modified", found


def edited(repo: Repository, row, path, st: os.stat_result) -> bool:
    """The working file holds edits: bytes only it keeps, never overwritten."""
    return working_state(repo, row, path, st) == "modified"
