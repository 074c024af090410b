"""Asset names: paths relative to the project root, confined to it.

A name never starts with `/`, never has a `..` or empty component, never
enters `.lattice/` or `.git/`, and never resolves through a symlink to a
place outside the project. Names read from a manifest (which may come from
someone else's clone) are checked the same way before they touch the disk.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path, PurePosixPath

from lattice.errors import UnsafePath

RESERVED = (".lattice", ".git")
# File systems allow 255 bytes per name; the manifest adds ".toml".
MAX_COMPONENT = 250


def check_name(name: str) -> str:
    """Validate an asset name as stored in a manifest."""
    p = PurePosixPath(name)
    if not name or p.is_absolute() or "\\" in name:
        raise UnsafePath(f"asset name {name!r} is not a relative path")
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        raise UnsafePath(f"asset name {name!r} contains a control character (newline, tab…)", hint="rename the file")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafePath(f"asset name {name!r} contains an empty, '.' or '..' component")
    if parts[0] in RESERVED:
        raise UnsafePath(f"asset name {name!r} is inside {parts[0]}/, which lattice never tracks")
    if any(part.startswith(".") for part in parts):
        raise UnsafePath(f"asset name {name!r} has a hidden (dot) component; lattice does not track hidden files", hint="rename it without the leading dot")
    if any(len(part.encode()) > MAX_COMPONENT for part in parts):
        raise UnsafePath(f"asset name {name[:60]!r}… has a component longer than {MAX_COMPONENT} bytes", hint="use a shorter file or folder name")
    return name


def name_for(root: Path, user_path: str | os.PathLike, cwd: Path | None = None) -> str:
    """Turn a path typed by the user (relative to `cwd`) into an asset name."""
    root = Path(root)
    if not str(user_path):
        raise UnsafePath("an empty path names no file", hint="name a file or folder, e.g. `.` for the whole project")
    raw = Path(user_path)
    absolute = Path(os.path.normpath((cwd or Path.cwd()) / raw))
    try:
        rel = absolute.relative_to(root)
    except ValueError:
        raise UnsafePath(f"{user_path}: outside the project at {root}") from None
    if str(rel) == ".":
        raise UnsafePath(f"{user_path}: is the project root, not a file in it")
    name = check_name(rel.as_posix())
    confine(root, name)
    return name


def check_creatable(root: Path, name: str) -> None:
    """Refuse a new file under a folder name that is already a file
    (`sky.png/x.png` while `sky.png` is an image)."""
    parts = name.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        p = Path(root, *parts[:i])
        if os.path.lexists(p) and not p.is_dir():
            raise UnsafePath(f"{name}: {'/'.join(parts[:i])} is a file, so nothing can be created under it")


def confine(root: Path, name: str) -> Path:
    """The working-tree path of `name`, refusing symlinks that lead outside."""
    root = Path(root)
    path = root / name
    real_root = _realpath_of_root(str(root))
    real = os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        raise UnsafePath(f"{name}: a symlink leads outside the project (to {real})")
    rel = os.path.relpath(real, real_root).split(os.sep)
    if rel[0] in RESERVED:
        raise UnsafePath(f"{name}: resolves into {rel[0]}/, which lattice never tracks")
    return path


@functools.lru_cache(maxsize=16)
def _realpath_of_root(root: str) -> str:
    return os.path.realpath(root)


def split_version(spec: str) -> tuple[str, int | None]:
    """`sky.png@v3` → ('sky.png', 3); `sky.png` → ('sky.png', None)."""
    from lattice.errors import InvalidInput

    head, sep, tail = spec.rpartition("@")
    if not sep:
        return spec, None
    digits = tail[1:] if tail[:1] in ("v", "V") else tail
    if not digits.isdigit() or int(digits) < 1:
        raise InvalidInput(f"{spec!r}: the version after '@' must look like v3", hint="versions are numbered from v1")
    return head, int(digits)
