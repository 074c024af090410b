"""The content-addressed object store.

An object is named by the BLAKE3 of its uncompressed bytes and lives at
`objects/<2 hex>/<62 hex>`, raw, or with a `.zst` suffix when zstd paid for
itself: the file name records the choice, so reads are transparent. Objects
are streamed in fixed chunks (memory stays flat for multi-GB video), written
to a temp file and renamed into place, and made read-only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path

from lattice.errors import ContentChanged, InvalidInput, RepositoryCorrupt
from lattice.fsutil import TEMP_MARK, Writeback, fsync_dir, scratch_files, scratch_temp, write_all

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (3 ms of every start)
if TYPE_CHECKING:
    from typing import BinaryIO

CHUNK = 1 << 20
# From this size on, raw content is copied inside the kernel and hashed from
# the copy, window by window, as it lands (see ObjectStore._put_copied).
COPY_FROM = 32 << 20
COPY_WINDOW = 16 << 20  # a multiple of mmap.ALLOCATIONGRANULARITY
# copy_file_range's answers for "not between these files": stream instead.
_NO_KERNEL_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}
OID_RE = re.compile(r"[0-9a-f]{64}")
DAMAGED_HINT = "`lattice fsck --repair` sets damaged objects aside; re-add the file, or `lattice render` to re-make an output"
# Compress only when the sample shrinks below this fraction of its size.
WORTH_COMPRESSING = 0.9
ZSTD_LEVEL = 3


# What a put stored: oid, bytes of content (size) and on disk (stored),
# whether zstd was used (compressed), and whether the object was not already
# in the store (new). collections' namedtuple: `status` loads this module,
# and dataclasses (with typing and inspect) would cost it 5 ms.
StoredObject = namedtuple("StoredObject", "oid size stored compressed new")


def check_oid(oid: str) -> str:
    """Ids come from manifests other people wrote: validate before they become paths."""
    if not isinstance(oid, str) or not OID_RE.fullmatch(oid):
        raise InvalidInput(f"not an object id: {oid!r}", hint="object ids are 64 lowercase hex digits")
    return oid


class ObjectStore:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.tmp = self.dir / "tmp"
        self._made: set[str] = set()  # folders this process already created

    def _folder(self, path: Path | str) -> None:
        """mkdir -p once per folder and process (10,000 adds, 256 shards)."""
        key = str(path)
        if key not in self._made:
            os.makedirs(key, exist_ok=True)
            self._made.add(key)

    # -- naming ---------------------------------------------------------

    def locate(self, oid: str) -> Path | None:
        """The file holding `oid`, or None when it is absent."""
        found = self._find(oid)
        return Path(found) if found else None

    def _find(self, oid: str) -> str | None:
        check_oid(oid)
        base = f"{self.dir}/{oid[:2]}/{oid[2:]}"
        if os.path.exists(base):
            return base
        return base + ".zst" if os.path.exists(base + ".zst") else None

    def content_size(self, oid: str) -> int | None:
        """Bytes of content (the zstd frame header declares it for compressed objects)."""
        p = self.locate(oid)
        if p is None:
            return None
        if not p.name.endswith(".zst"):
            return p.stat().st_size
        import zstandard

        with open(p, "rb") as f:
            return zstandard.frame_content_size(f.read(18))

    def has(self, oid: str) -> bool:
        return self._find(oid) is not None

    def present(self) -> set[str]:
        """Every object id present, as a set: one directory listing per shard
        instead of a stat per id, for callers that ask `has` of thousands."""
        ids: set[str] = set()
        try:
            shards = os.scandir(self.dir)
        except FileNotFoundError:
            return ids
        with shards:
            for shard in shards:
                if len(shard.name) != 2 or not shard.is_dir():
                    continue
                with os.scandir(shard.path) as entries:
                    for e in entries:
                        name = e.name
                        if TEMP_MARK in name:
                            continue
                        oid = shard.name + (name[:-4] if name.endswith(".zst") else name)
                        # `has` follows symlinks (Path.exists); so does is_file.
                        if OID_RE.fullmatch(oid) and e.is_file():
                            ids.add(oid)
        return ids

    def stored_size(self, oid: str) -> int | None:
        p = self.locate(oid)
        return p.stat().st_size if p else None

    def __iter__(self) -> Iterator[str]:
        """Every object id present (a sorted walk of the shard directories)."""
        if not self.dir.exists():
            return
        for shard in sorted(os.listdir(self.dir)):
            if len(shard) != 2 or not os.path.isdir(self.dir / shard):  # a stray file is no shard
                continue
            for name in sorted(os.listdir(self.dir / shard)):
                if TEMP_MARK in name:
                    continue
                oid = shard + name.removesuffix(".zst")
                if OID_RE.fullmatch(oid):
                    yield oid

    # -- writing --------------------------------------------------------

    def put_file(self, path: str | os.PathLike, compress: bool | None = None, durable: bool = True, st: os.stat_result | None = None) -> StoredObject:
        """Store the file at `path` (whose stat the caller may pass as `st`).
        `compress=None` decides by sampling. Raises ContentChanged if the
        file changes or vanishes while read. Plain file descriptors, no
        buffered file objects: `add` runs this 1,000s of times."""
        import blake3

        try:
            src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ContentChanged(f"{path}: file vanished while being added") from None
        try:
            before = st or os.fstat(src)
            first = os.read(src, CHUNK)
            if compress is None:
                compress = _compresses_well(first)
            if not compress and before.st_size >= COPY_FROM and hasattr(os, "copy_file_range"):  # Linux
                stored = self._put_copied(path, src, before, durable)
                if stored is not None:
                    return stored
                os.lseek(src, len(first), os.SEEK_SET)  # the kernel cannot copy here: stream it
            hasher = blake3.blake3()
            fd, tmp = _mkstemp(self.tmp)
            try:
                with os.fdopen(fd, "wb", buffering=0) as out:
                    sink = _zstd_writer(out, before.st_size) if compress else out
                    writeback = None if compress else Writeback(fd)
                    chunk = first
                    size = 0
                    while chunk:
                        if compress and size + len(chunk) > before.st_size:  # the frame declares the size
                            raise ContentChanged(f"{path}: file changed while being added")
                        hasher.update(chunk)
                        write_all(sink, chunk)
                        size += len(chunk)
                        if writeback:
                            writeback.wrote(len(chunk))
                        chunk = os.read(src, CHUNK)
                    if compress:
                        if size != before.st_size:
                            raise ContentChanged(f"{path}: file changed while being added")
                        sink.flush(_zstd_frame_end())
                    if durable:
                        os.fsync(fd)
                after = os.fstat(src)
                if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or size != before.st_size:
                    raise ContentChanged(f"{path}: file changed while being added")
                return self._publish(tmp, hasher.hexdigest(), size, compress, durable, readonly=True)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        finally:
            os.close(src)

    def _put_copied(self, path, src: int, before: os.stat_result, durable: bool) -> StoredObject | None:
        """Store large raw content the way `cp` copies it: inside the kernel
        (copy_file_range; a reflink where the filesystem shares blocks), one
        window at a time on a thread, while this thread hashes each window
        of the copy as it lands (the bytes stored are the bytes hashed) and
        the disk writes it. None when this filesystem cannot copy so."""
        import queue
        import threading

        import blake3

        size = before.st_size
        fd, tmp = _mkstemp(self.tmp)
        landed: queue.SimpleQueue = queue.SimpleQueue()  # offsets copied up to, then None or an exception
        stop = threading.Event()

        def copy() -> None:
            writeback = Writeback(fd)
            done = 0
            try:
                while done < size and not stop.is_set():
                    n = os.copy_file_range(src, fd, min(COPY_WINDOW, size - done), done, done)
                    if n == 0:  # the file shrank
                        break
                    if durable:
                        writeback.start(done, n)
                    done += n
                    landed.put(done)
                if durable and not stop.is_set():
                    os.fsync(fd)
                landed.put(None)
            except BaseException as e:  # handed to the hashing thread
                landed.put(e)

        copier = threading.Thread(target=copy, name="lattice-copy", daemon=True)
        try:
            reader = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
            try:
                hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
                hashed = 0
                copier.start()
                while (upto := landed.get()) is not None:
                    if isinstance(upto, OSError) and hashed == 0 and upto.errno in _NO_KERNEL_COPY:
                        copier.join()
                        os.close(reader)
                        reader = None
                        os.close(fd)
                        fd = None
                        os.unlink(tmp)
                        return None
                    if isinstance(upto, BaseException):
                        raise upto
                    hashed = _hash_window(hasher, reader, hashed, upto)
            finally:
                stop.set()
                if copier.is_alive():
                    copier.join()
                if reader is not None:
                    os.close(reader)
            os.close(fd)
            fd = None
            after = os.fstat(src)
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or hashed != size:
                raise ContentChanged(f"{path}: file changed while being added")
            return self._publish(tmp, hasher.hexdigest(), size, False, durable, readonly=True)
        except BaseException:
            if fd is not None:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def put_output(self, path: Path, compress: bool | None = None) -> StoredObject:
        """Adopt a finished file written inside the repository (a generator's
        output in `.lattice/tmp`): raw content is renamed into place, not copied."""
        import blake3

        path = Path(path)
        with open(path, "rb") as f:
            first = f.read(CHUNK)
            if compress is None:
                compress = _compresses_well(first)
            if compress:
                f.close()
                stored = self.put_file(path, compress=True)
                os.unlink(path)
                return stored
            h = blake3.blake3()
            h.update(first)
            size = len(first)
            while chunk := f.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
            os.fsync(f.fileno())
        return self._publish(path, h.hexdigest(), size, False, True)

    def put_bytes(self, data: bytes, compress: bool | None = None) -> StoredObject:
        import blake3

        if compress is None:
            compress = _compresses_well(data[:CHUNK])
        fd, tmp = _mkstemp(self.tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                if compress:
                    import zstandard

                    out.write(zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(data))
                else:
                    out.write(data)
                os.fsync(out.fileno())
            return self._publish(tmp, blake3.blake3(data).hexdigest(), len(data), compress, True, readonly=True)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _publish(self, tmp: Path | str, oid: str, size: int, compressed: bool, durable: bool, readonly: bool = False) -> StoredObject:
        """Move a finished temp file into place as object `oid` (`readonly`:
        it was created mode 0444 already)."""
        existing = self.locate(oid)
        if existing is not None:
            os.unlink(tmp)
            # Freshen it: gc's grace period then protects content just re-added.
            with contextlib.suppress(OSError):
                os.utime(existing)
            return StoredObject(oid, size, existing.stat().st_size, existing.name.endswith(".zst"), False)
        shard = os.path.join(self.dir, oid[:2])
        final = os.path.join(shard, oid[2:] + (".zst" if compressed else ""))
        self._folder(shard)
        if not readonly:
            os.chmod(tmp, 0o444)
        stored = os.stat(tmp).st_size if compressed else size
        # Two writers of the same content race harmlessly: both renames put
        # identical bytes under the same name.
        try:
            os.replace(tmp, final)
        except FileNotFoundError:  # the shard was removed behind our back
            os.makedirs(shard, exist_ok=True)
            os.replace(tmp, final)
        if durable:
            fsync_dir(shard)
        return StoredObject(oid, size, stored, compressed, True)

    # -- reading --------------------------------------------------------

    @contextlib.contextmanager
    def open(self, oid: str, limit: int | None = None) -> Iterator[BinaryIO]:
        """A readable stream of the object's content. Compressed objects are
        decompressed with a bounded window, and never beyond `limit` or the
        size the frame declares, so a crafted object cannot exhaust memory or disk."""
        path = self.locate(oid)
        if path is None:
            raise InvalidInput(f"object {oid} is not in the store", hint="`lattice render` re-creates outputs that can be re-made")
        with open(path, "rb") as f:
            if not path.name.endswith(".zst"):
                yield f
                return
            import zstandard

            header = f.read(18)
            try:
                declared = zstandard.frame_content_size(header)
            except zstandard.ZstdError:
                raise RepositoryCorrupt(f"object {oid}: not a valid zstd frame") from None
            if declared < 0:
                raise RepositoryCorrupt(f"object {oid}: zstd frame declares no content size")
            if limit is not None and declared > limit:
                raise RepositoryCorrupt(f"object {oid}: declares {declared} bytes, more than the {limit} expected")
            f.seek(0)
            dctx = zstandard.ZstdDecompressor(max_window_size=1 << 27)
            reader = dctx.stream_reader(f, read_size=CHUNK)
            yield _Bounded(reader, declared, oid)

    def copy_to(self, oid: str, dest: BinaryIO, limit: int | None = None, verify: bool = False) -> int:
        """Write the object's content into an open file; a reflink when raw.
        `verify`: hash the bytes on the way and raise RepositoryCorrupt, after
        writing them, when they are not the object's (callers that must not
        hand on damaged bytes write to a temp file or report the failure)."""
        from lattice.fsutil import clone_or_copy

        check_oid(oid)
        if not verify:
            try:  # most objects are stored raw: try that name first, no stat
                return clone_or_copy(f"{self.dir}/{oid[:2]}/{oid[2:]}", dest)
            except FileNotFoundError:
                pass
        import blake3

        h = blake3.blake3()
        total = 0
        with self.open(oid, limit=limit) as src:
            while chunk := src.read(CHUNK):
                if verify:
                    h.update(chunk)
                dest.write(chunk)
                total += len(chunk)
        if verify and h.hexdigest() != oid:
            raise RepositoryCorrupt(f"object {oid[:12]} is damaged: its bytes hash to {h.hexdigest()[:12]}", hint=DAMAGED_HINT)
        return total

    @contextlib.contextmanager
    def as_file(self, oid: str, extension: str = "", folder: Path | None = None) -> Iterator[Path]:
        """A readable path holding the object's content, named with
        `extension` (tools like ffmpeg pick formats by name): a symlink to the
        stored file when raw, else a decompressed scratch copy; removed after.
        It is made in `folder` (default: the store's scratch folder)."""
        import uuid

        src = self.locate(oid)
        if src is None:
            raise InvalidInput(f"object {oid[:12]} is not in the store", hint="`lattice render` re-makes evicted outputs")
        if folder is None:
            folder = self.tmp
            folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"view{TEMP_MARK}{uuid.uuid4().hex}.{extension or 'bin'}"
        try:
            if src.name.endswith(".zst"):
                with open(path, "wb") as f:
                    self.copy_to(oid, f)
            else:
                os.symlink(src, path)
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def hash_of(self, oid: str) -> str:
        """Re-hash the stored content: equal to `oid` when the object is sound."""
        import blake3

        h = blake3.blake3()
        with self.open(oid) as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return h.hexdigest()

    def verify(self, oid: str) -> str | None:
        """None when sound, else a one-line description of the damage."""
        try:
            actual = self.hash_of(oid)
        except RepositoryCorrupt as e:
            return e.message
        except Exception as e:  # zstd errors, I/O errors: all mean damage
            return f"object {oid}: unreadable ({e})"
        return None if actual == oid else f"object {oid}: content hashes to {actual}"

    # -- removal --------------------------------------------------------

    def quarantine(self, oid: str, into: Path) -> Path | None:
        """Move a damaged object aside (never delete what may be user data)."""
        path = self.locate(oid)
        if path is None:
            return None
        into.mkdir(parents=True, exist_ok=True)
        dest = into / (oid + (".zst" if path.name.endswith(".zst") else ""))
        os.replace(path, dest)
        return dest

    def remove(self, oid: str) -> int:
        """Delete an object (gc only); returns the bytes freed."""
        path = self.locate(oid)
        if path is None:
            return 0
        size = path.stat().st_size
        os.unlink(path)
        return size

    def stray_temps(self) -> list[Path]:
        """What killed writes left in the scratch folder and its lanes (the
        manifest's batches write there too)."""
        return scratch_files(self.tmp)


class _Bounded:
    """Stops a decompressing stream at the size its frame declared."""

    def __init__(self, reader, declared: int, oid: str):
        self._r, self._left, self._oid = reader, declared, oid

    def read(self, n: int = CHUNK) -> bytes:
        import zstandard

        try:
            data = self._r.read(n if n > 0 else CHUNK)
        except zstandard.ZstdError as e:
            raise RepositoryCorrupt(f"object {self._oid[:12]} is damaged: {e}", hint=DAMAGED_HINT) from None
        if len(data) > self._left:
            raise RepositoryCorrupt(f"object {self._oid}: decompresses past its declared size")
        self._left -= len(data)
        return data


def _mkstemp(directory: Path) -> tuple[int, str]:
    """A new read-only (0444) temp file for an object, open for writing, in
    this thread's lane of the scratch folder (threads writing objects at once
    then do not queue on one folder)."""
    return scratch_temp(directory, "obj", 0o444)


def _hash_window(hasher, fd: int, start: int, end: int) -> int:
    """Hash bytes start..end of the file `fd` through a read-only mapping
    (no copy into Python; unmapped after, so memory stays flat); returns
    `end`. A mapping starts on a page boundary: after a short copy, `start`
    may not."""
    import mmap

    base = start - start % mmap.ALLOCATIONGRANULARITY
    with mmap.mmap(fd, end - base, offset=base, access=mmap.ACCESS_READ) as window, memoryview(window) as view:
        hasher.update(view[start - base :])
    return end


def _compresses_well(sample: bytes) -> bool:
    if len(sample) < 512:
        return False
    import zstandard

    return len(zstandard.ZstdCompressor(level=1).compress(sample)) < WORTH_COMPRESSING * len(sample)


def _zstd_writer(out: BinaryIO, size: int):
    import zstandard

    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
    # write() then returns the bytes it took in (put_file loops on it).
    return cctx.stream_writer(out, size=size, closefd=False, write_return_read=True)


def _zstd_frame_end() -> int:
    import zstandard

    return zstandard.FLUSH_FRAME
