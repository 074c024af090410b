"""Where an export goes, and putting it there without losing a user's file.

lattice.export renders; this module decides and guards the destination.
An existing file outside the project is replaced only when it is exactly
what an earlier export from this repository wrote there (the index keeps
each such file's stat), or with --force (which replaces a sidecar beside
it too): never bytes lattice did not write unasked. A folder the
filesystem refuses is said before any job (exit 13). gc forgets the
records of such files gone or changed since (stale_export_records), and
sweeps the temps killed exports left beside them (stale_temps).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from lattice.errors import InvalidInput, UnsafePath, WriteRefused, command, refused_write
from lattice.export import FORMATS, NAME_MAX, SIDECAR, ExportGenerator, carries_recipe, fits_name
from lattice.repo import Repository


# -- checking the target before any job ------------------------------------------------


@dataclass
class Target:
    path: Path  # where the file (or frames directory) goes
    asset: str | None  # its asset name when it is recorded in the project


def _through_link(out) -> UnsafePath:
    return UnsafePath(f"-o {out}: is a symbolic link; an export never writes through one",
                      hint="remove the link or name another output")


def _check_name_lengths(out: str, parts, beside: str = "") -> None:
    if any(len(part.encode()) > NAME_MAX for part in parts):
        raise InvalidInput(f"-o {out}: a name{beside} is longer than the {NAME_MAX} bytes a file system allows",
                           hint="name a shorter output")


def resolve_target(repo: Repository, out: str | None, source: str, fmt: str, cwd: Path, kind: str,
                   force: bool = False) -> Target:
    """Where the export goes; refuses `.lattice/`, a symlink as the target,
    a name that cannot be made (under a file, too long), a sidecar that
    is not an earlier export's and (outside the project) a file no earlier
    export wrote, unless `force` (never frames'), and (inside the project)
    a name that leaves it through a symlink."""
    from lattice.paths import check_creatable, check_name, confine

    ext = FORMATS[fmt][0]
    stem = Path(source).name.rsplit(".", 1)[0]
    default = f"{stem}-frames" if fmt == "frames" else f"{stem}-export.{ext}"
    if out is not None and not out.strip():  # `-o "$OUT"` with OUT unset: not the default name
        raise InvalidInput(f"-o {out!r}: the output name is empty",
                           hint=f"name the output, or leave -o out for {default} here")
    if not out:
        out = default
    path = Path(os.path.normpath(cwd / out))
    _check_name_lengths(out, path.parts[1:])  # before any stat, which fails on such a name
    if path.is_symlink():
        raise _through_link(out)
    parent = Path(os.path.realpath(path.parent))
    root = Path(os.path.realpath(repo.root))
    final = parent / path.name
    if final == Path(os.path.realpath(repo.dir)) or Path(os.path.realpath(repo.dir)) in (parent, *parent.parents):
        raise UnsafePath(f"-o {out}: is inside .lattice/, which only lattice writes")
    inside = root in (parent, *parent.parents)
    if inside and final != root:  # folders inside the project are made as needed, but never under a file
        check_creatable(root, final.relative_to(root).as_posix())
    elif not parent.is_dir():
        if os.path.lexists(parent):
            raise InvalidInput(f"-o {out}: the folder {parent} is a file, so nothing can be created under it",
                               hint="name an output in a folder, or move that file aside")
        raise InvalidInput(f"-o {out}: the folder {parent} does not exist", hint="create it first, or name another output")
    if parent.is_dir():
        _check_writable(out, parent)
    sidecar = fmt == "frames" or not (inside or carries_recipe(fmt, kind))
    if sidecar:
        _check_name_lengths(out, [final.name + SIDECAR], f" (with its {SIDECAR} sidecar)")
    if fmt == "frames":
        _check_frames_dir(repo, final, out, source, root, Path(os.path.realpath(cwd)))
        _check_sidecar(repo, final, out, source, fmt, root)
        return Target(final, None)
    if final.is_dir():
        raise InvalidInput(f"-o {out}: is a directory", hint=f"name a file, e.g. -o {out.rstrip('/')}/{Path(source).stem}.{ext}")
    from lattice.media import MEDIA, extension

    named = extension(final.name)
    if ext and named in MEDIA and not fits_name(fmt, named):
        raise InvalidInput(f"-o {out}: a .{named} name for --format {fmt}", hint=f"name it .{ext}, or pick --format to match")
    if not inside:
        _check_outside_file(repo, final, force)
        if sidecar:
            _check_sidecar(repo, final, out, source, fmt, root, force)
        return Target(final, None)
    name = check_name(final.relative_to(root).as_posix())
    confine(repo.root, name)
    repo.check_not_under_asset([name])
    if name == source:
        raise InvalidInput(f"-o {out}: is the asset being exported", hint="name another output")
    if ext and not name.lower().endswith("." + ext):
        raise InvalidInput(f"-o {out}: an export inside the project needs the .{ext} extension of --format {fmt}",
                           hint=f"name it .{ext}, e.g. -o {Path(out).with_suffix('.' + ext)}")
    row = repo.index.get(name)
    if row is None and os.path.lexists(final):
        raise InvalidInput(f"{name} already exists and is not tracked; exporting would overwrite it",
                           hint="move it aside or name another output")
    if row is not None:
        _check_export_target(repo, name, row, final)
    return Target(final, name)


# What to do about a folder an export may not write to (lattice.errors._REFUSED
# says it for the project's own files).
_ELSEWHERE = {
    errno.EACCES: "name an output where you may write, or give yourself write permission there",
    errno.EPERM: "name an output where you may write, or give yourself write permission there",
    errno.EROFS: "name an output on storage you may write to, or remount it read-write",
    errno.ENOSPC: "free some space there, or name an output on another disk",
    errno.EDQUOT: "free some space there, or name an output on another disk",
}


def _check_writable(out: str, folder: Path) -> None:
    """The folder an export goes to takes a new file: one is made there and
    removed at once (what the job does first), so that a folder the
    filesystem refuses (read-only, no permission, full, or one like /proc
    that takes no files) is said before any job, with exit 13."""
    from lattice.fsutil import create_temp

    try:
        fd, tmp = create_temp(folder, ".lattice-export")
    except OSError as e:
        refused = refused_in(e, folder, out)
        if refused is None:
            raise
        raise refused from None
    os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def refused_in(e: OSError, folder: Path, out: str | None = None) -> WriteRefused | None:
    """The error for a file that could not be made in `folder`:
    WriteRefused (exit 13), which the queue never retries, when the
    filesystem refused it; None for anything else."""
    where = f"-o {out}: " if out is not None else ""
    refused = refused_write(e, folder)
    if refused is not None:
        return WriteRefused(f"{where}{refused.message}", hint=_ELSEWHERE.get(e.errno, refused.hint))
    if isinstance(e, FileNotFoundError) and folder.is_dir():  # /proc, /sys: a folder that takes no new files
        return WriteRefused(f"{where}{folder}: the filesystem takes no new files there ({e.strerror})",
                            hint="name an output on a disk, such as in your home folder")
    return None


def _check_outside_file(repo: Repository, final: Path, force: bool) -> None:
    """An existing file outside the project is replaced only when it is
    exactly what an earlier export from this repository wrote there (its
    stat still matches the record), or with `force`: a typo in -o must never
    cost the user a file of their own, nor an edit of an export."""
    try:
        st = os.lstat(final)
    except (FileNotFoundError, NotADirectoryError):
        return
    if not stat.S_ISREG(st.st_mode):  # a device, pipe or socket (links and folders are refused before)
        raise InvalidInput(f"{final} exists and is not a regular file; an export never replaces one", hint="name another output")
    if force:
        return
    recorded = repo.index.export_stat(str(final))
    if recorded == (st.st_size, st.st_mtime_ns, st.st_ino):
        return
    why = "has changed since an earlier export wrote it" if recorded else "already exists and no earlier export wrote it"
    raise InvalidInput(f"{final} {why}; exporting would overwrite it",
                       hint="move it aside or name another output, or pass --force to replace it")


def _check_export_target(repo: Repository, name: str, row, final: Path) -> None:
    """A tracked asset may be exported over only when it is itself an
    export (a new version of it), and only when its working file holds
    nothing unrecorded."""
    from lattice.errors import Conflict
    from lattice.status import edited

    if row.generator != ExportGenerator.id:
        made = f"made by {row.generator}" if row.generator else "imported"
        raise InvalidInput(f"{name} is a tracked asset ({made}); exporting would replace it",
                           hint="name another output; -o may name an earlier export to add a version of it")
    try:
        st = os.stat(final)
    except (FileNotFoundError, NotADirectoryError):
        return
    if edited(repo, row, final, st):
        raise Conflict(f"{name} holds unrecorded changes; exporting would overwrite them",
                       hint=f"discard them with {command('lattice checkout', name)}, or record them with "
                            f"{command('lattice add', name)} and name another output (an export never replaces an edit)")


FRAME_FILE = re.compile(r"frame_\d{5,}\.png")


def _check_frames_dir(repo: Repository, final: Path, out: str, source: str, root: Path, cwd: Path) -> None:
    """A frames export replaces a directory: only ever one that holds nothing
    but an earlier frames export of the same source (its sidecar says so)
    and no tracked asset; never the project or the cwd."""
    for precious in (root, cwd):
        if final == precious or final in precious.parents:
            raise UnsafePath(f"-o {out}: would replace {precious}", hint="name a new directory for the frames, e.g. -o shot-frames")
    if root in final.parents:
        rel = final.relative_to(root).as_posix()
        tracked = sorted(n for n in repo.index.names() if n == rel or n.startswith(rel + "/"))
        if tracked:
            raise InvalidInput(f"-o {out}: holds tracked assets ({', '.join(tracked[:3])}); a frames export would replace them",
                               hint="name a new directory for the frames, e.g. -o shot-frames")
        repo.check_not_under_asset([rel])
    if not final.exists():
        return
    if not final.is_dir():
        raise InvalidInput(f"-o {out}: exists and is not a directory", hint="frames are written into a directory: name a new one")
    strangers = [p.name for p in final.iterdir() if not FRAME_FILE.fullmatch(p.name)]
    if strangers:
        raise InvalidInput(
            f"-o {out}: holds files that are not frames ({', '.join(sorted(strangers)[:3])})",
            hint="frames replace only an earlier frame sequence: name a new directory",
        )
    if any(final.iterdir()) and _sidecar_source(final, frames=True) != source:
        raise InvalidInput(f"-o {out}: holds frames that are not an earlier frames export of {source}; exporting would overwrite them",
                           hint="name a new directory for the frames, or move these aside")


def _check_sidecar(repo: Repository, final: Path, out: str, source: str, fmt: str, root: Path,
                   force: bool = False) -> None:
    """The `<out>.lattice.json` an export writes replaces only the sidecar
    of an earlier export of the same source (frames for frames), or with
    `force` any regular file beside a file exported outside the project
    (as --force replaces the file itself): never a tracked file, a link or
    a folder."""
    side = Path(str(final) + SIDECAR)
    try:
        st = os.lstat(side)
    except (FileNotFoundError, NotADirectoryError):
        return
    tracked = root in side.parents and repo.index.get(side.relative_to(root).as_posix()) is not None
    frames = fmt == "frames"
    forcible = not (tracked or frames) and stat.S_ISREG(st.st_mode)
    if forcible and force:
        return
    if tracked or not stat.S_ISREG(st.st_mode) or _sidecar_source(final, frames=frames) != source:
        if tracked:
            what = "is a tracked asset"
        elif stat.S_ISLNK(st.st_mode):
            what = "is a symbolic link"
        elif not stat.S_ISREG(st.st_mode):
            what = "is not a regular file"
        else:
            what = f"is not the sidecar of an earlier {'frames ' if frames else ''}export of {source}"
        raise InvalidInput(f"-o {out}: {side.name} exists and {what}; exporting would overwrite it",
                           hint="move it aside or name another output, or pass --force to replace it" if forcible
                           else "move it aside, or name another output")


def _sidecar_source(final: Path, *, frames: bool) -> str | None:
    """The asset an earlier export to `final` was made from, by the sidecar
    it wrote beside it (a frames export's when `frames`, else a file's);
    None when there is none."""
    try:
        meta = json.loads(Path(str(final) + SIDECAR).read_text())["lattice"]
        return meta["asset"] if (meta["export"]["format"] == "frames") == frames else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


# -- temps that killed exports left beside their outputs --------------------------------


STALE_TEMP_AGE = 3600.0  # seconds untouched before a dead process's temp beside an export is removed


def sweep_stale_temps(out: Path) -> None:
    """Remove what an export to `out` that was killed left beside it
    (stale_temps). Inside the project gc sweeps such temps; outside it, this
    and gc's sweep beside the files the index records are the only cleanup.
    Best effort: never fails the export."""
    for path in stale_temps([out]):
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.lstat(path).st_mode):  # a frames export's
                shutil.rmtree(path)
            else:
                path.unlink()


def stale_temps(outs: Iterable[Path], now: float | None = None) -> list[Path]:
    """What exports to `outs` that were killed (SIGKILL, a crash) left
    beside them: temps named as temp_path_near names them for those very
    outputs (`.stem.tmp-PID-N.ext`; a frames export's is a directory, named
    alike by temp_dir_near), whose process is gone from this machine
    and which nothing has touched for STALE_TEMP_AGE (an export on another
    machine sharing the folder keeps writing to its temp, and its pid means
    nothing here). One listing per folder."""
    import time

    from lattice.childproc import alive

    wanted: dict[Path, set[tuple[str, str]]] = {}
    for out in outs:
        wanted.setdefault(out.parent, set()).add((out.stem, out.suffix))
    now = time.time() if now is None else now
    found = []
    for folder, names in wanted.items():
        try:
            listing = os.listdir(folder)
        except OSError:
            continue
        for n in listing:
            pid = _temp_pid(n, names)
            if pid is None:
                continue
            path = folder / n
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)) and now - st.st_mtime >= STALE_TEMP_AGE and not alive(pid):
                found.append(path)
    return sorted(found)


_TEMP_TAIL = re.compile(r"(\d+)-\d+(.*)")


def _temp_pid(name: str, outs: set[tuple[str, str]]) -> int | None:
    """The pid in `name` when it is temp_path_near's name for an output
    whose (stem, suffix) is in `outs`: `.{stem}.tmp-{pid}-{n}{suffix}`,
    with `.{stem}` cut to fit 255 bytes as fsutil.create_temp cuts it for a
    long name."""
    from lattice.fsutil import TEMP_MARK

    if not name.startswith("."):
        return None
    at = name.find(TEMP_MARK, 1)
    while at != -1:  # a stem may hold the mark itself: try each place
        m = _TEMP_TAIL.fullmatch(name, at + len(TEMP_MARK))
        if m and ((name[1:at], m[2]) in outs or _cut_from(name, at, m[2], outs)):
            return int(m[1])
        at = name.find(TEMP_MARK, at + 1)
    return None


def _cut_from(name: str, at: int, suffix: str, outs: set[tuple[str, str]]) -> bool:
    """Whether `name[:at]` is exactly what create_temp cut `.{stem}` to for
    an output in `outs` with this suffix, its tail `name[at:]`."""
    room = NAME_MAX - len(name[at:].encode())
    return any(sfx == suffix and len(("." + stem).encode()) > room
               and ("." + stem).encode()[:room].decode(errors="ignore") == name[:at] for stem, sfx in outs)


# -- placing a finished file outside the project, and its record -------------------------


def place_outside(repo: Repository, tmp: Path, out: Path, *, force: bool, source: str, oid: str, fmt: str,
                   sidecar: bytes | None = None) -> None:
    """Publish a finished export outside the project, write its `sidecar`
    (when given) and record the file written, under the index's write lock:
    the checks made before the job was queued are made again, so a file or
    sidecar that appeared or was edited meanwhile is not replaced unasked,
    and two exports racing to one path take turns."""
    from lattice.fsutil import atomic_write, publish

    with open(tmp, "rb+") as f:  # publish's slow part, outside the lock
        os.fsync(f.fileno())
    failed = None
    with repo.index:
        _check_outside_file(repo, out, force)
        if sidecar is not None:
            _check_sidecar(repo, out, str(out), source, fmt, Path(os.path.realpath(repo.root)), force)
        st = os.stat(tmp)  # the rename keeps size, mtime and inode
        publish(tmp, out)
        repo.index.put_export(str(out), st, source, oid)
        if sidecar is not None:
            try:  # inside the lock: a racing export's sidecar never lands beside our file
                atomic_write(Path(str(out) + SIDECAR), sidecar)
            except OSError as e:  # the file is in place: its record must stay
                failed = e
    if failed is not None:
        raise failed


def place_frames(repo: Repository, tmp: Path, out: Path, old: Path, *, source: str, sidecar: bytes | None) -> None:
    """Put a finished frames directory `tmp` in place of `out` (moving an
    earlier one aside to `old`, for the caller to remove) and write its
    sidecar, under the index's write lock, after the checks made before the
    job was queued are made again: a file saved into the old directory
    meanwhile, or a link, a file or other frames put at its name, is never
    removed, and two exports racing to one directory take turns."""
    from lattice.fsutil import atomic_write, fsync_dir

    root = Path(os.path.realpath(repo.root))
    with repo.index:
        if os.path.islink(out):
            raise _through_link(out)
        _check_frames_dir(repo, out, str(out), source, root, root)
        _check_sidecar(repo, out, str(out), source, "frames", root)
        if os.path.lexists(out):
            os.replace(out, old)  # a directory cannot be replaced in one rename: move the old one aside first
        os.replace(tmp, out)
        fsync_dir(out.parent)
        if sidecar is not None:  # inside the lock: a racing export's sidecar never lands beside our frames
            atomic_write(Path(str(out) + SIDECAR), sidecar)


def stale_export_records(rows: Iterable[tuple[str, int, int, int]]) -> list[tuple[str, int, int, int]]:
    """Those of the index's records of files exports wrote (`rows`, as
    Index.export_rows gives them) that no export may replace unasked any
    more: the file is gone from its folder, or it is not what the export
    wrote (the user replaced or edited it). A record whose folder is
    missing is kept: that may be a disk not mounted now. One lstat per
    record: gc asks, not each export (an export to a path replaces that
    path's record)."""
    stale = []
    for row in rows:
        path, size, mtime_ns, ino = row
        try:
            st = os.lstat(path)
        except NotADirectoryError:  # a file where its folder was
            stale.append(row)
            continue
        except FileNotFoundError:
            if os.path.isdir(os.path.dirname(path)):
                stale.append(row)
            continue
        except OSError:  # unreadable now: maybe not later
            continue
        if (st.st_size, st.st_mtime_ns, st.st_ino) != (size, mtime_ns, ino):
            stale.append(row)
    return stale
