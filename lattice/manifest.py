"""The parameter manifest on disk: one human-readable TOML file per asset.

`.lattice/manifest/<asset name>.toml` holds the asset's kind, tags, pin and
every version: change type, time, author, output object, media facts and
the full recipe (lattice.records: the structs and their TOML text). The
files are the source of truth (the SQLite index is derived from them) and
they are what the history repository commits.
"""

from __future__ import annotations

import errno
import functools
import marshal
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from lattice.errors import RepositoryCorrupt
from lattice.fsutil import write_all
from lattice.paths import check_name

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (3 ms of every start)
if TYPE_CHECKING:
    from lattice.records import AssetRecord

SUFFIX = ".toml"


def stamps_digest(stamps: dict, sort: bool = False) -> str:
    """A digest of manifest files' stamps (name → (mtime_ns, size, inode)),
    in the order given or, with `sort`, by name. Marshal format 2 has no
    back-references, so equal dicts in equal order give equal bytes.
    Commands compare the listing's order (free); a writer stores the sorted
    one, as it cannot know where the filesystem lists a new or renamed file."""
    import blake3

    if sort:
        stamps = {name: stamps[name] for name in sorted(stamps)}
    return blake3.blake3(marshal.dumps(stamps, 2)).hexdigest()


class Manifest:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self._sound_folders: set[str] = set()
        self._files: dict[str, Path] = {}

    def file_of(self, name: str) -> Path:
        """The TOML file of asset `name`, refusing a folder that a symlink (which
        a clone may carry) leads out of the manifest directory."""
        path = self._files.get(name)
        if path is not None:
            return path
        path = self.dir / (check_name(name, stored=True) + SUFFIX)
        folder = name.rpartition("/")[0]
        if folder and folder not in self._sound_folders:
            real = os.path.realpath(path.parent)
            if real != self._real_dir and not real.startswith(self._real_dir + os.sep):
                from lattice.errors import UnsafePath

                raise UnsafePath(f"{name}: its manifest folder leads outside .lattice/manifest (to {real})", hint="remove the symlink inside .lattice/manifest")
            # Checked once per folder and process, existing or not yet (an
            # `add` of 1,000 files into a new folder asks 1,000 times first).
            self._sound_folders.add(folder)
        self._files[name] = path  # a switch asks for each of 1,000 files four times
        return path

    @functools.cached_property
    def _real_dir(self) -> str:
        return os.path.realpath(self.dir)

    def exists(self, name: str) -> bool:
        return self.file_of(name).exists()

    def read(self, name: str) -> AssetRecord | None:
        return self.read_raw(name)[0]

    def read_raw(self, name: str) -> tuple[AssetRecord | None, bytes | None]:
        """The record and the text it was parsed from (for cheap appends)."""
        path = self.file_of(name)
        try:
            # O_NOFOLLOW: a clone may carry a symlink pointing anywhere.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None, None
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            raise RepositoryCorrupt(f"{path} is a symbolic link; manifest files never are", hint="replace it with the file from history (`lattice fsck --repair`)") from None
        with open(fd, "rb") as f:
            data = f.read()
        from lattice.records import decode

        return decode(data, path), data

    def overwrite(self, name: str, data: bytes) -> os.stat_result:
        """Write `name`'s manifest file in place, not through a temp file and a
        rename: for a switch of 1,000 assets the renames cost more than all
        else. Only for changes that are journaled (switch.Journal), which a
        crash midway leaves to be re-done. Returns the file's stat."""
        return self.overwrite_file(self.file_of(name), data)

    @staticmethod
    def overwrite_file(path: Path, data: bytes) -> os.stat_result:
        # Write over the old bytes, then cut the tail: truncating to zero
        # first frees the blocks and makes ext4 flush each file on close.
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, flags, 0o644)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            raise RepositoryCorrupt(f"{path} is a symbolic link; manifest files never are", hint="remove it, then run the command again") from None
        try:
            write_all(fd, data)
            os.ftruncate(fd, len(data))
            return os.fstat(fd)
        finally:
            os.close(fd)

    def remove(self, name: str) -> None:
        try:
            os.unlink(self.file_of(name))
        except FileNotFoundError:
            pass

    def stamps(self) -> dict[str, tuple[int, int, int]]:
        """Asset name → (mtime_ns, size, inode) of its manifest file, for every
        asset. Each entry is one lstat relative to its open folder: no path
        walk from the root per file, a fifth of the cost on 10,000 files."""
        out: dict[str, tuple[int, int, int]] = {}
        lstat, isdir, cut = os.lstat, stat.S_ISDIR, -len(SUFFIX)
        stack = [("", str(self.dir))]
        while stack:
            prefix, directory = stack.pop()
            try:
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            except (FileNotFoundError, NotADirectoryError):
                continue  # gone since it was listed
            try:
                for name in os.listdir(fd):
                    if name[0] == ".":
                        continue
                    try:
                        st = lstat(name, dir_fd=fd)
                    except FileNotFoundError:
                        continue
                    if isdir(st.st_mode):  # a symlink is not followed
                        stack.append((prefix + name + "/", directory + "/" + name))
                    elif name.endswith(SUFFIX):
                        out[prefix + name[:cut]] = (st.st_mtime_ns, st.st_size, st.st_ino)
            finally:
                os.close(fd)
        return out

    def names(self) -> Iterator[str]:
        """Every asset name, from the file tree (the slow path: the index is the fast one)."""
        base = str(self.dir)
        for dirpath, dirnames, filenames in os.walk(self.dir):
            dirnames.sort()
            for f in sorted(filenames):
                if f.endswith(SUFFIX) and not f.startswith("."):
                    rel = os.path.relpath(os.path.join(dirpath, f), base)
                    yield rel[: -len(SUFFIX)].replace(os.sep, "/")

    @staticmethod
    def encode(record: AssetRecord, old: bytes | None = None, old_count: int = 0) -> bytes:
        """TOML text for `record` (lattice.records.encode)."""
        from lattice.records import encode

        return encode(record, old, old_count)
