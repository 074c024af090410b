"""The one way Lattice writes files: temp file in the same directory, fsync,
rename, fsync the directory. A crash leaves either the old file or the new
one, plus at most a stray `*.tmp-*` that fsck reports and gc sweeps."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (3 ms of every start)
if TYPE_CHECKING:
    from typing import BinaryIO

TEMP_MARK = ".tmp-"
_serial = itertools.count()  # thread-safe in CPython
_pid = os.getpid()  # a system call each time otherwise; a forked child re-reads it


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


def create_temp(directory: str | Path, prefix: str, mode: int = 0o600, suffix: str = "") -> tuple[int, str]:
    """A new file `directory/<prefix>.tmp-<pid>-<n><suffix>` opened for writing, as
    (fd, path). Cheaper than tempfile.mkstemp (no random names) and as safe:
    O_EXCL, and a name left by a dead process with our pid is skipped."""
    return _claim_temp(directory, prefix, suffix, lambda tmp: os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode))


def _claim_temp(directory: str | Path, prefix: str, suffix: str, make: Callable[[str], object]) -> tuple:
    """(make(name), name) for the first temp name `make` creates without
    FileExistsError: `directory/<prefix>.tmp-<pid>-<n><suffix>`."""
    while True:
        tail = f"{TEMP_MARK}{_pid}-{next(_serial)}{suffix}"
        # A name may take 255 bytes: a long prefix (a long file name) is cut.
        cut = prefix.encode()[: 255 - len(tail.encode())].decode(errors="ignore")
        tmp = f"{directory}/{cut}{tail}"
        try:
            return make(tmp), tmp
        except FileExistsError:
            continue


# Creating files in one folder queues on that folder (ext4, measured here:
# four threads creating 1,000 files in one folder gain nothing, in a folder
# each they take half the time), while renaming them into one folder is
# cheap. So threads that create many files (`add` of large files) make
# them in a scratch folder of their own, then rename them into place.
SCRATCH_LANES = 8
_lanes_made: set[str] = set()


def lane(base: str | Path) -> str:
    """This thread's scratch folder under `base` (made on first use):
    `base/<n>`, n < SCRATCH_LANES. Two threads may share one; names never clash."""
    import threading

    path = f"{base}/{threading.get_native_id() % SCRATCH_LANES}"
    if path not in _lanes_made:
        os.makedirs(path, exist_ok=True)
        if os.path.islink(path):  # never write through a link planted in the store
            from lattice.errors import RepositoryCorrupt

            raise RepositoryCorrupt(f"{path} is a symbolic link; lattice never follows one there", hint="remove it; lattice makes the folder again")
        _lanes_made.add(path)
    return path


def scratch_temp(base: str | Path, prefix: str, mode: int = 0o600) -> tuple[int, str]:
    """create_temp in this thread's lane of `base`, made again if it was
    removed behind a long-running process's back."""
    try:
        return create_temp(lane(base), prefix, mode)
    except FileNotFoundError:
        _lanes_made.clear()
        return create_temp(lane(base), prefix, mode)


def scratch_files(base: Path) -> list[Path]:
    """Files (and links) in `base` and its lanes: what killed writes leave."""
    out = []
    with contextlib.suppress(FileNotFoundError):
        for p in base.iterdir():
            if p.is_symlink() or not p.is_dir():
                out.append(p)
            elif p.name.isdigit():
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    out += [q for q in p.iterdir() if q.is_symlink() or not q.is_dir()]
    return sorted(out)


def write_all(out: int | BinaryIO, data: bytes) -> None:
    """Write all of `data` to a file descriptor or an unbuffered file, whose
    single writes may take only part of it."""
    write = (lambda b: os.write(out, b)) if isinstance(out, int) else out.write
    view = memoryview(data)
    while view:
        view = view[write(view) :]


class Writeback:
    """Start the disk writes of a large file as it is written, instead of
    leaving them all to the final fsync: at most two windows stay dirty, so
    the writer is never throttled for a gigabyte of dirty pages and the fsync
    finds little left to do (Linux sync_file_range; a no-op elsewhere).
    Measured here on a 1 GiB add: 0.64-0.91 s against 0.93-1.17 s."""

    WINDOW = 8 << 20
    _call = None  # libc's sync_file_range, looked up on first use

    def __init__(self, fd: int):
        self.fd, self.written, self.started = fd, 0, 0

    def wrote(self, n: int) -> None:
        self.written += n
        if self.written - self.started < self.WINDOW:
            return
        call = Writeback._call if Writeback._call is not None else Writeback._lookup()
        if call:
            self._check(call(self.fd, self.started, self.written - self.started, 2))  # SYNC_FILE_RANGE_WRITE
            if self.started >= self.WINDOW:  # wait for the window before: WAIT_BEFORE | WRITE | WAIT_AFTER
                # Raise a write error here: the wait marks it seen, so the final fsync would not.
                self._check(call(self.fd, self.started - self.WINDOW, self.WINDOW, 7))
        self.started = self.written

    def start(self, offset: int, n: int) -> None:
        """Start the disk writes of `n` bytes from `offset`, without waiting
        (for a copier that leaves the wait to its final fsync)."""
        call = Writeback._call if Writeback._call is not None else Writeback._lookup()
        if call:
            self._check(call(self.fd, offset, n, 2))  # SYNC_FILE_RANGE_WRITE

    @staticmethod
    def _check(result: int) -> None:
        if result != 0:
            import ctypes

            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    @staticmethod
    def _lookup():
        Writeback._call = False
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).sync_file_range
            fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            Writeback._call = fn
        except (ImportError, OSError, AttributeError):  # not Linux, or no ctypes
            pass
        return Writeback._call


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o644, durable: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces `path` atomically when the block ends
    without an exception, and is removed when it raises."""
    path = Path(path)
    try:
        fd, tmp = create_temp(path.parent, f".{path.name}")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = create_temp(path.parent, f".{path.name}")
    try:
        with open(fd, "wb") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: Path, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    with atomic_file(path, mode=mode, durable=durable) as f:
        f.write(data)


def stamp(path: str) -> tuple[int, int, int, int] | None:
    """(mtime_ns, ctime_ns, inode, size) of what `path` leads to, None where
    it leads nowhere: a folder's stamp moves whenever a name in it is
    added, removed or renamed (lattice.untracked)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_size


def remove_quietly(*paths) -> None:
    """Remove scratch files that may or may not exist (or a folder a
    generator wrote where its output file belonged)."""
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            import shutil

            shutil.rmtree(p, ignore_errors=True)


def temp_path_near(path: Path) -> Path:
    """A fresh temporary name in `path`'s directory, for writers (ffmpeg, a
    generator) that need a path rather than a file object."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp(path.parent, f".{path.stem}", suffix=path.suffix)
    os.close(fd)
    return Path(tmp)


def temp_dir_near(path: Path) -> Path:
    """A new, empty directory beside `path`, named as temp_path_near names a
    file (`.<stem>.tmp-<pid>-<n><suffix>`): what a killed writer left is
    known by its name and pid (lattice.export_target.stale_temps)."""
    path = Path(path)
    return Path(_claim_temp(path.parent, f".{path.stem}", path.suffix, os.mkdir)[1])


def publish(tmp: Path, path: Path, mode: int = 0o644) -> None:
    """Move a finished temporary file into place atomically and durably."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


def clone_or_copy(src: Path, dst_file: BinaryIO) -> int:
    """Copy `src` into the open `dst_file` and return the bytes copied:
    copy_file_range(2), which shares blocks copy-on-write where the
    filesystem can (btrfs, XFS) and copies inside the kernel elsewhere."""
    fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        copied = 0
        try:
            dst_file.flush()
            out = dst_file.fileno()
            while copied < size and (n := os.copy_file_range(fd, out, size - copied)):
                copied += n
        except (OSError, ValueError, AttributeError):  # a pipe, another filesystem, an in-memory file; not Linux
            while chunk := os.read(fd, 1 << 20):
                dst_file.write(chunk)
                copied += len(chunk)
        return copied
    finally:
        os.close(fd)


# Files replaced or removed at once by `in_threads`: where each call waits
# on the filesystem (its journal, a discard, inodes freed moments before),
# a few overlap well even on two cores (1,000 unlink + create: 2x faster
# with 4). For small files merely created, see in_threads_when_slow.
FILE_WORKERS = 4


def in_threads(fn: Callable, items: list, workers: int = FILE_WORKERS, from_items: int = 32) -> list:
    """[fn(item) for item in items], run by `workers` threads once there are
    `from_items` or more: for file operations, whose system calls release the
    GIL. The first exception in the order of `items` is raised once the
    calls already started have ended; those not started are dropped."""
    if len(items) < from_items or workers < 2:
        return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def in_threads_when_slow(fn: Callable, items: list, slow_s: float, chunk: int = 32) -> list:
    """[fn(item) for item in items], on this thread a chunk at a time, until
    a chunk (after the first, which pays for imports and folders made once)
    takes longer than `slow_s` a call: the rest then go to `in_threads`. For
    many small files, whose system calls are short on a journaled disk, and
    threads handing the GIL back and forth at each one were slower (1,000
    files of 64 KiB added on ext4: 0.59 s on one thread, 0.97 s on four);
    where creating a file waits long in the kernel (ext4 without a journal
    just after many files were removed steps over each freed inode, one
    lookup apiece), threads overlap the waits and were several times faster."""
    import time

    done: list = []
    for at in range(0, len(items), chunk):
        part = items[at : at + chunk]
        started = time.perf_counter()
        done += map(fn, part)
        if at and time.perf_counter() - started > slow_s * len(part):
            return done + in_threads(fn, items[at + chunk :])
    return done


def sync_filesystem(path: Path) -> None:
    """Flush every dirty page of the filesystem holding `path`: one syncfs(2)
    makes a whole batch of files durable, far cheaper than an fsync each."""
    import ctypes

    fd = os.open(path, os.O_RDONLY)
    try:
        # The process's own symbols hold libc's: ctypes.util.find_library
        # would run `ldconfig -p` (2 ms) on each call.
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    except (OSError, AttributeError):
        os.sync()
    finally:
        os.close(fd)


class AtomicBatch:
    """Write many small files atomically as a group: every temp file is
    written and made durable (`prepare`, which Ctrl-C may cut short: `abort`
    removes them), then every rename happens and is made durable (`commit`).
    With a `journal` path, a batch of several files writes the list of its
    renames there, durably, before the first one: a process killed midway
    leaves the journal, and `roll_forward` finishes the renames, so the
    group lands whole or not at all. Small batches fsync each file; large
    ones sync the filesystem once (syncfs), far cheaper than thousands of
    fsyncs but costly when other processes have dirty pages. The files are
    written in `scratch` when given (see `lane`; a folder on the same
    filesystem whose strays gc and fsck sweep), on threads only when writing
    them proves slow (see in_threads_when_slow: 1,000 manifest files took
    60 ms on one thread and 130-150 ms on four on a journaled disk).
    `stats` then holds each file's stat as written (a rename keeps it)."""

    SYNCFS_FROM = 32

    def __init__(self, root: Path, scratch: Path | None = None, journal: Path | None = None):
        self.root = Path(root)
        self.scratch = scratch
        self.journal = journal
        self.stats: dict[Path, os.stat_result] = {}
        self._staged: list[tuple[Path, bytes, int]] = []
        self._pending: list[tuple[str, Path]] = []
        self._folders: set[Path] = set()
        self._devices: dict[str, bool] = {}
        self._large = False

    def write(self, path: Path, data: bytes, mode: int = 0o644) -> None:
        path = Path(path)
        folder = path.parent
        if folder not in self._folders:
            folder.mkdir(parents=True, exist_ok=True)
            self._folders.add(folder)
        self._staged.append((path, data, mode))

    def _create(self, item: tuple[Path, bytes, int], durable: bool) -> None:
        path, data, mode = item
        if self.scratch is not None and self._same_device(path.parent):
            fd, tmp = scratch_temp(self.scratch, f".{path.name}", mode)
        else:
            fd, tmp = create_temp(path.parent, f".{path.name}", mode)
        self._pending.append((tmp, path))  # before writing: abort removes it
        try:
            write_all(fd, data)
            if durable:
                os.fsync(fd)
            self.stats[path] = os.fstat(fd)
        finally:
            os.close(fd)

    def _same_device(self, folder: Path) -> bool:
        """Renames cross no filesystem: a scratch folder on another one (a
        store mounted elsewhere) gives way to a temp file beside the target."""
        key = str(folder)
        if key not in self._devices:
            try:
                self._devices[key] = os.stat(folder).st_dev == os.stat(self.scratch).st_dev
            except FileNotFoundError:  # the scratch folder is made on first use
                os.makedirs(self.scratch, exist_ok=True)
                self._devices[key] = os.stat(folder).st_dev == os.stat(self.scratch).st_dev
        return self._devices[key]

    def prepare(self) -> None:
        """Write every staged file to a durable temp file."""
        staged, self._staged = self._staged, []
        if not staged:
            return
        self._large = len(staged) + len(self._pending) >= self.SYNCFS_FROM
        try:
            in_threads_when_slow(lambda item: self._create(item, durable=not self._large), staged, slow_s=150e-6)
            if self._large:
                sync_filesystem(self.root)
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        """Rename every prepared file into place, durably. Once the journal
        is written the batch is decided: a failure later leaves it for
        `roll_forward`, never a half-removed batch."""
        self.prepare()
        pending = self._pending
        if not pending:
            return
        journal = self.journal if len(pending) > 1 else None
        if journal is not None:
            import json

            if journal.exists():  # one this process failed to finish: it goes first
                self.roll_forward(journal, self.root)
            # Paths relative to root: a moved or copied repository replays its own.
            atomic_write(journal, json.dumps([[os.path.relpath(tmp, self.root), os.path.relpath(path, self.root)]
                                              for tmp, path in pending]).encode())
        try:
            for tmp, path in pending:
                os.replace(tmp, path)
        except BaseException:
            if journal is None:
                self.abort()
            raise
        if self._large:
            sync_filesystem(self.root)
        else:
            for directory in {path.parent for _, path in pending}:
                fsync_dir(directory)
        if journal is not None:
            os.unlink(journal)
        pending.clear()

    @staticmethod
    def roll_forward(journal: Path, root: Path) -> list[str]:
        """Finish the renames of a batch a killed process left in `journal`
        (those already done are passed over), then remove it. Returns the
        files it could not put in place (their temp files stay, for fsck to
        report). A journal that is not one, or names a path outside `root`,
        is RepositoryCorrupt: nothing is renamed."""
        import json

        from lattice.errors import RepositoryCorrupt

        try:
            pairs = json.loads(Path(journal).read_bytes())
        except FileNotFoundError:
            return []
        except ValueError:
            pairs = None
        if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) and _inside(x) for x in p) for p in pairs
        ):
            raise RepositoryCorrupt(f"{journal} is damaged or names paths outside {root}",
                                    hint="`lattice fsck --repair` sets it aside")
        failed = []
        for tmp, path in pairs:
            try:
                os.replace(os.path.join(root, tmp), os.path.join(root, path))
            except FileNotFoundError:
                continue  # renamed before the process died
            except OSError as e:
                failed.append(f"{path}: {e.strerror or e}")
        sync_filesystem(root)
        os.unlink(journal)
        return failed

    def abort(self) -> None:
        self._staged.clear()
        for tmp, _ in self._pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._pending.clear()

    def __enter__(self) -> "AtomicBatch":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _inside(relative: str) -> bool:
    """A path relative to a folder that stays inside it."""
    return bool(relative) and not os.path.isabs(relative) and ".." not in Path(relative).parts


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait for the end of the block, then act as they
    would have: for the few steps that must all happen once the first has
    (a batch's renames, its index and history). A no-op off the main thread,
    where Python delivers no signals."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    import signal

    caught: list[int] = []
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old[sig] = signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if caught:
            from lattice.errors import warn

            warn("the change under way was completed before stopping")
            handler = old[caught[0]]
            if callable(handler):
                handler(caught[0], None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), caught[0])


def disk_full(path: Path, room: int = 1) -> bool:
    """The filesystem holding `path` (a file or folder) has less than `room`
    bytes left for this process (root may use the reserved blocks); False
    where that cannot be told."""
    try:
        st = os.statvfs(path if os.path.isdir(path) else os.path.dirname(path) or ".")
    except OSError:
        return False
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return free * st.f_frsize < room
