"""The repository: finding it, creating it, and changing it safely.

Layout of `.lattice/`:

    format          repository format version (unknown versions are refused)
    README          what this directory is
    config.toml     repository config (generators, queue, gc policies)
    manifest/       one TOML file per asset: the recipes (shareable text)
    objects/        content-addressed blobs (a cache of outputs and imports)
    index.db        SQLite index derived from manifest/ (rebuilt when absent, or by fsck --repair)
    index.db-untracked  status's last walk for new files (lattice.untracked), while no folder changed
    queue.db        the durable job queue
    history.git/    git repository of manifest/ and config.toml
    quarantine/     damaged objects moved aside by fsck --repair
    lock            the repository lock (flock; names its holder)

Every change runs in a `Transaction`, in this order: objects are already
written, then manifest files (one synced batch), then the index, then the
history commit — so a crash leaves at most unreferenced objects or an index
that fsck rebuilds.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterable
from pathlib import Path

from lattice.errors import InvalidInput, NotARepository, RepositoryCorrupt, UnknownAsset, closest, command
from lattice.manifest import Manifest
from lattice.paths import shown

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (3 ms of every start)
if TYPE_CHECKING:
    from lattice.records import AssetRecord

DIRNAME = ".lattice"
JOURNAL = "journal"  # .lattice/journal: a switch or merge under way (lattice.switch)
BATCH_JOURNAL = "batch-journal"  # a manifest batch's renames under way (fsutil.AtomicBatch)
HISTORY_PENDING = "history-pending"  # the history commit a change under way means to make (lattice.history_pending)
FORMAT = 1

README_TEXT = """\
This directory is a Lattice repository (https://example.invalid/lattice).

manifest/ and config.toml are the project's recipes: small text, safe to share.
objects/ holds the media itself; everything in it can be re-made from the
recipes or re-imported, so it need not be shared. Do not edit files here by
hand: use the `lattice` command. `lattice fsck` checks this directory.
"""

DEFAULT_CONFIG = """\
# Lattice repository config. See `lattice --help`.

[user]
# name = "Your Name"

# Command generators run a program of yours. A repository whose config
# declares commands runs none of them until you approve it: `lattice trust`.
# [generators.mygen]
# argv = ["python", "gen.py", "--prompt", "{prompt}", "--seed", "{seed}", "--out", "{output}"]
# extensions = ["png"]
"""


# What a project under git should keep out of git: the media store and the
# machine-local state. manifest/, config.toml, format and history.git are the
# shareable recipes.
GITIGNORE_LINES = (
    "# lattice: media and local state (re-made by `lattice render`); share the manifest and history",
    ".lattice/objects/",
    ".lattice/tmp/",
    ".lattice/quarantine/",
    ".lattice/index.db*",
    ".lattice/queue.db*",
    ".lattice/storage.db*",
    ".lattice/lock",
    ".lattice/journal",
    ".lattice/batch-journal",
    ".lattice/history-pending",
)


def git_worktree(path: Path) -> Path | None:
    """The top of the git working tree containing `path`, if any."""
    for d in (path, *path.parents):
        if (d / ".git").exists():
            return d
    return None


def write_gitignore(root: Path) -> list[str]:
    """Append the missing lattice lines to the project's `root/.gitignore`
    (where `.lattice` is); returns those added."""
    from lattice.fsutil import atomic_write

    path = root / ".gitignore"
    text = path.read_text() if path.exists() else ""
    have = set(text.splitlines())
    missing = [line for line in GITIGNORE_LINES if line not in have]
    if missing:
        sep = "" if not text or text.endswith("\n") else "\n"
        atomic_write(path, (text + sep + "\n".join(missing) + "\n").encode())
    return missing


class Repository:
    """`reading`: for a command that only reads. Where lattice may not write
    `.lattice/` (read-only media, someone else's checkout) it then reads it
    as it stands, keeping what it would write (caches, an index catching up
    with the manifest) in memory; see `read_only`."""

    def __init__(self, root: Path, reading: bool = False):
        self.root = Path(root).absolute()
        self.reading = reading
        self.dir = self.root / DIRNAME
        for part in (self.dir, self.dir / "manifest", self.dir / "objects", self.dir / "objects" / "tmp", self.dir / "tmp"):
            if part.is_symlink():  # a clone could point the store or manifest anywhere
                raise RepositoryCorrupt(f"{part} is a symbolic link; lattice never follows one there", hint="replace it with a real directory")
        self._check_format()
        self.manifest = Manifest(self.dir / "manifest")
        self.damaged: list[RepositoryCorrupt] = []  # manifest files sync_index could not read
        # Read-only: the manifest changes a writable lattice would commit to
        # history on opening it (names; True: all, a killed change's catch-up).
        self.history_behind: set[str] | bool = set()

    # -- finding and creating ---------------------------------------------

    @classmethod
    def find(cls, start: Path | None = None, reading: bool = False) -> "Repository":
        """The repository containing `start` (default: the current directory)."""
        here = Path(os.path.abspath(start or os.getcwd()))  # `a/..` is not inside `a`
        for d in (here, *here.parents):
            if (d / DIRNAME).is_dir():
                return cls(d, reading=reading)
        raise NotARepository(f"not inside a lattice repository: {here}")

    @classmethod
    def init(cls, root: Path) -> "Repository":
        """Create `.lattice/` in `root`; refuses inside an existing repository."""
        from lattice.fsutil import atomic_write

        root = Path(os.path.abspath(root))  # `p1/../p3` is not inside p1
        if root.exists() and not root.is_dir():
            raise InvalidInput(f"{root} is a file, not a folder", hint="name a folder for the project")
        for d in (root, *root.parents):
            if (d / DIRNAME).is_dir():
                raise InvalidInput(
                    f"{root} is already inside the lattice repository at {d}",
                    hint="repositories do not nest; use the existing one",
                )
        root.mkdir(parents=True, exist_ok=True)
        staging = root / f"{DIRNAME}.init-{os.getpid()}"
        (staging / "manifest").mkdir(parents=True)
        (staging / "objects").mkdir()
        atomic_write(staging / "README", README_TEXT.encode())
        atomic_write(staging / "config.toml", DEFAULT_CONFIG.encode())
        atomic_write(staging / "format", f"{FORMAT}\n".encode())
        os.replace(staging, root / DIRNAME)  # the repository appears whole or not at all
        repo = cls(root)
        repo.index  # create the index now, so read-only commands find it
        return repo

    def _check_format(self) -> None:
        try:
            text = (self.dir / "format").read_text().strip()
        except FileNotFoundError:
            raise RepositoryCorrupt(f"{self.dir}/format is missing", hint="is this a lattice repository? `lattice fsck` checks it") from None
        if text != str(FORMAT):
            raise RepositoryCorrupt(
                f"{self.dir} has repository format {text!r}; this lattice reads format {FORMAT}",
                hint="use the lattice version that created it, or upgrade lattice",
            )

    # -- parts, opened when first needed ------------------------------------

    @functools.cached_property
    def objects(self):
        from lattice.objects import ObjectStore

        return ObjectStore(self.dir / "objects")

    @functools.cached_property
    def index(self):
        """The index, brought up to date with the manifest files first: a
        clone or `git pull` changes them behind its back, and a crash can
        fall between a manifest write and the index update."""
        from lattice.index_sync import sync_index

        index = self.open_index()
        sync_index(self)
        return index

    def open_index(self):
        """The index, with an interrupted switch, merge or batch finished but
        not yet checked against the manifest files: for a caller that
        computes their digest beside other work and then calls
        lattice.index_sync.sync_index(repo, digest). Anything else wants `index`."""
        if "index" in self.__dict__:
            return self.__dict__["index"]
        index = self._index_file
        self.__dict__["index"] = index  # what recovery's own reads get
        if index.read_only:
            self.refuse_unfinished()
            if os.path.exists(self.dir / HISTORY_PENDING):  # history catches up where .lattice may be written
                from lattice import history_pending

                if (history_pending._intent(self) or {}).get("failed") is not True:  # a failed one waits for a change or fsck --repair
                    self.history_behind = True
            return index
        if os.path.exists(self.dir / JOURNAL):  # a switch or merge was interrupted
            from lattice.switch import recover

            recover(self)
        self.finish_batch()
        self._catch_up_history()
        return index

    @functools.cached_property
    def _index_file(self):
        """The index as opened, before anything is finished or synced."""
        from lattice.index import Index

        return Index(self.dir / "index.db", reading=self.reading)

    @property
    def read_only(self) -> bool:
        """A reading command on a `.lattice/` it may not write: the index is
        an in-memory copy, brought up to date with the manifest there; the
        lock is waited for but not written; history is read as it stands."""
        return self.reading and self._index_file.read_only

    def refuse_unfinished(self) -> None:
        """Refuse (WriteRefused, exit 13) where a switch, merge or manifest
        batch was cut short and only a writable `.lattice/` can finish it:
        the manifest files may be half of one state and half of another."""
        if self.interrupted():
            from lattice.errors import WriteRefused

            what = "a switch or merge" if os.path.exists(self.dir / JOURNAL) else "a change"
            raise WriteRefused(
                f"{self.dir} is read-only, and {what} cut short there needs a writable .lattice to finish",
                hint="run any lattice command once where .lattice may be written (its owner, a read-write mount), then read it here",
            )

    def _catch_up_history(self) -> None:
        """A change a killed process left out of history is committed now
        (lattice.history_pending.catch_up_left_behind); a marker while this thread
        holds the lock is its own change, under way."""
        if os.path.exists(self.dir / HISTORY_PENDING) and not self.lock.held_here():
            from lattice import history_pending

            history_pending.catch_up_left_behind(self)

    def interrupted(self) -> bool:
        """A switch, merge or manifest batch was cut short: opening the index
        finishes it, changing manifest and working files first."""
        return os.path.exists(self.dir / JOURNAL) or os.path.exists(self.dir / BATCH_JOURNAL)

    def finish_interrupted(self) -> None:
        """Finish a switch, merge or manifest batch cut short (opening the
        index does), for a command about to read HEAD or the manifest: a
        switch killed before it moved HEAD would otherwise move it later,
        under the feet of a branch deleted or checked out meanwhile."""
        if self.interrupted():
            self.index

    def finish_batch(self) -> None:
        """Finish the renames of a manifest batch whose process was killed
        midway (its journal is still there): the change then lands whole,
        and sync_index indexes it and commits it under its own message."""
        if not os.path.exists(self.dir / BATCH_JOURNAL):
            return
        if self.read_only:
            self.refuse_unfinished()
        from lattice.fsutil import AtomicBatch

        with self.lock:
            failed = AtomicBatch.roll_forward(self.dir / BATCH_JOURNAL, self.dir)
        if failed:
            from lattice.errors import warn

            warn(f"an interrupted change could not put {len(failed)} manifest file(s) in place: {failed[0]}; `lattice fsck` lists what is left")

    def check_manifest(self) -> None:
        """Raise the first damage sync_index met in a manifest file."""
        self.index
        if self.damaged:
            raise self.damaged[0]

    @functools.cached_property
    def config(self) -> dict:
        import stat
        import tomllib

        path = self.dir / "config.toml"
        try:
            # O_NONBLOCK: a clone's config.toml may be a link to a FIFO, which
            # must not hang the open; then only a regular file is read (not
            # /dev/zero, whose reading never ends).
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return {}
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise RepositoryCorrupt(f"{path} is not a regular file", hint="make it the project's config: a TOML file")
            try:
                return tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise RepositoryCorrupt(f"{path}: {e}", hint="fix the TOML syntax in that file") from None

    @functools.cached_property
    def lock(self):
        from lattice.lock import RepoLock

        return RepoLock(self.dir / "lock", read_only=self.read_only)

    @property
    def tmp(self) -> Path:
        d = self.dir / "tmp"
        d.mkdir(exist_ok=True)
        return d

    # -- assets -------------------------------------------------------------

    def record(self, name: str) -> AssetRecord:
        """The asset's manifest record: from the index's decoded copy while the
        manifest file is unchanged (by stat), else parsed from the TOML."""
        import msgspec

        from lattice.records import AssetRecord

        try:
            st = os.stat(self.manifest.file_of(name))
        except FileNotFoundError:
            raise UnknownAsset(f"no asset named {shown(name)}{closest(name, self.index.names())}") from None
        body = self.index.record_body(name, st)
        if body is not None:
            return msgspec.json.decode(body, type=AssetRecord)
        record = self.manifest.read(name)
        if record is None:
            raise UnknownAsset(f"no asset named {shown(name)}{closest(name, self.index.names())}")
        return record

    def check_not_under_asset(self, names: Iterable[str]) -> None:
        """Refuse `sky.png/x.png` while `sky.png` is an asset, and `shots`
        while `shots/a.png` is one: a name cannot be both a file and a
        folder (see asset_in_the_way)."""
        from lattice.errors import UnsafePath

        found = self.asset_in_the_way(names)
        if found is None:
            return
        name, asset = found
        if name.startswith(asset + "/"):
            raise UnsafePath(f"{name}: {asset} is an asset (a file), so nothing can be tracked under it", hint=f"rename the folder, or {command('lattice checkout', asset)} to bring the file back")
        raise UnsafePath(f"{name}: is a folder of assets ({asset}…), so it cannot be an asset too", hint=f"rename the file, or bring the folder back with {command('lattice checkout', asset)}")

    def asset_in_the_way(self, names: Iterable[str]) -> tuple[str, str] | None:
        """(name, asset) for the first of `names` that lies under an asset
        (`sky.png/x.png`, asset `sky.png`) or is a folder holding one
        (`shots`, asset `shots/a.png`); None when none does. One query per
        500 folders or names (an `add` of 1,000 files in one folder asks three)."""
        names = list(names)
        under: dict[str, str] = {}  # folder → the first name under it
        for name in names:
            parts = name.split("/")
            for i in range(1, len(parts)):
                under.setdefault("/".join(parts[:i]), name)
        assets = self.index.get_many(list(under))
        for prefix, name in under.items():
            if prefix in assets:
                return name, prefix
        # The other way round: a file named like a folder that holds assets.
        for name, inside in self.index.first_under(names).items():
            return name, inside
        return None

    def stray_temps(self, key_locks: bool = False) -> list[Path]:
        """Temp files that interrupted writes leave, wherever lattice writes
        them: the store's, .lattice/tmp (its key locks, one per recipe ever
        made, only with `key_locks`: gc sweeps old ones, see
        lattice.produce.produce), the manifest's, and those beside tracked
        working files (`.sky.png.tmp-PID-N`). Callers judge their age (lstat:
        some are links, maybe dangling)."""
        import re

        from lattice.fsutil import TEMP_MARK

        ours = re.compile(r"\..*" + re.escape(TEMP_MARK) + r"\d+-\d+(\.[^.]*)?")
        out = list(self.objects.stray_temps())
        with contextlib.suppress(FileNotFoundError):
            out += sorted(p for p in (self.dir / "tmp").iterdir() if (key_locks or not p.name.startswith("key-")) and not p.is_dir())
        for dirpath, _, files in os.walk(self.manifest.dir):
            out += [Path(dirpath, f) for f in sorted(files) if ours.fullmatch(f)]
        for folder in sorted({name.rpartition("/")[0] for name in self.index.names()}):
            where = self.root / folder
            try:
                out += [where / f for f in sorted(os.listdir(where)) if ours.fullmatch(f)]
            except OSError:  # gone, or a file now
                continue
        return out

    def working_path(self, name: str) -> Path:
        from lattice.paths import confine

        return confine(self.root, name)

    def transaction(self, message: str) -> "Transaction":
        return Transaction(self, message)



class Transaction:
    """Stages manifest changes under the repository lock and applies them in
    the crash-safe order: manifest batch, index, then commit hooks (history)."""

    def __init__(self, repo: Repository, message: str):
        self.repo = repo
        self.message = message
        self._records: dict[str, tuple[AssetRecord, bytes | None, int]] = {}
        self._removed: set[str] = set()

    def __enter__(self) -> "Transaction":
        self.repo.lock.acquire()
        return self

    def read(self, name: str) -> AssetRecord | None:
        """The record as this transaction sees it (staged, else on disk)."""
        if name in self._records:
            return self._records[name][0]
        if name in self._removed:
            return None
        record, raw = self.repo.manifest.read_raw(name)
        if record is not None:
            self._records[name] = (record, raw, len(record.versions))
        return record

    def put(self, record: AssetRecord) -> None:
        _, raw, count = self._records.get(record.path, (None, None, 0))
        self._records[record.path] = (record, raw, count)
        self._removed.discard(record.path)

    def remove(self, name: str) -> None:
        self._records.pop(name, None)
        self._removed.add(name)

    def changed(self) -> list[str]:
        return sorted(set(self._records) | self._removed)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._apply()
        finally:
            self.repo.lock.release()

    def _apply(self) -> None:
        from lattice.fsutil import AtomicBatch, signals_deferred

        repo = self.repo
        encoded = {}
        for name, (record, raw, count) in self._records.items():
            text = repo.manifest.encode(record, raw, count)
            if text != raw:
                encoded[name] = text
        if not encoded and not self._removed:
            return
        from lattice import history_pending

        repo.index  # checked against the manifest now, before our writes: they are no outside edits
        history_pending.begin(repo, self.message)  # marks the manifest as ahead of history until the commit lands
        # Temp files in the store's scratch lanes: a large batch is written on threads.
        batch = AtomicBatch(repo.dir, scratch=repo.objects.tmp, journal=repo.dir / BATCH_JOURNAL)
        for name, text in encoded.items():
            batch.write(repo.manifest.file_of(name), text)
        batch.prepare()  # Ctrl-C here leaves nothing
        # From the first rename on, the change is made whole (a killed
        # process's journal is finished by the next command): Ctrl-C waits.
        with signals_deferred():
            batch.commit()
            for name in self._removed:
                try:
                    repo.manifest.file_of(name).unlink()
                except FileNotFoundError:
                    pass
            with repo.index as index:
                index.put_many((self._records[name][0], batch.stats[repo.manifest.file_of(name)], False) for name in encoded)
                for name in self._removed:
                    index.remove(name)
            changed = sorted(set(encoded) | self._removed)
            written = {str(repo.manifest.file_of(n)): text for n, text in encoded.items()}
            history_pending.finish(repo, self.message, changed, written=written)  # last: never raises, warns instead
