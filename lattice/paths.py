"""Asset names: paths relative to the project root, confined to it.

A name never starts with `/`, never has a `..` or empty component, never
enters `.lattice/` or `.git/`, and never resolves through a symlink to a
place outside the project. Names read from a manifest (which may come from
someone else's clone) are checked the same way before they touch the disk.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from lattice.errors import UnsafePath

RESERVED = (".lattice", ".git")
# File systems allow 255 bytes per name; the manifest adds ".toml".
MAX_COMPONENT = 250


@functools.cache
def _control() -> re.Pattern:
    """Compiled on first use: 0.7 ms that `status` need not pay."""
    return re.compile("[\x00-\x1f\x7f\ud800-\udfff]")  # surrogates: bytes that were not UTF-8


def shown(name: str) -> str:
    """A name as a one-line message shows it: a newline or a tab as `\\n`,
    `\\t`, bytes that are not UTF-8 as `\\xff`, an empty name as `''`."""
    if name.isprintable():
        return name or "''"
    raw = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in raw)


# The folder human-facing output names paths from, as the parts of its path
# from the project root (none: the root). The CLI sets it to the folder a
# command runs in (lattice.cli.common.repo_from_ctx); the library alone names
# assets from the root, as --json and --porcelain always do.
_shown_from: tuple[str, ...] = ()


def show_paths_from(folder: str) -> None:
    """Make here() name paths from `folder`, a path from the project root
    (`sub/dir`; "" or "." for the root itself)."""
    global _shown_from
    _shown_from = tuple(p for p in folder.split("/") if p not in ("", "."))


def here(name: str) -> str:
    """An asset name (or `NAME@vN`, or any path from the project root) as a
    path from the folder the command runs in, as `git status` names files
    from a subfolder: `sub/a.png` is `a.png` from `sub/`, `top.png` is
    `../top.png`. What a person reads or types back: status's lines, the
    commands hints suggest. Unchanged at the root, and for an absolute path.
    A name that is the folder itself or one above it (an asset whose file a
    folder now stands in) steps out past it, `../a.png`, never `.` or `..`,
    which a command reads as every asset under that folder."""
    if not _shown_from or name.startswith("/"):
        return name
    parts = name.split("/")
    same = 0
    while same < min(len(_shown_from), len(parts)) and parts[same] == _shown_from[same]:
        same += 1
    if same == len(parts):
        same -= 1
    return "/".join([".."] * (len(_shown_from) - same) + parts[same:])


def check_name(name: str, stored: bool = False) -> str:
    """Validate an asset name as stored in a manifest. (Runs once per asset
    per command, 10,000s of times: plain string tests, no Path objects.)
    `stored`: a name read from a manifest, which may end in @vN: new assets
    are refused such names (they read as versions), older ones stay readable."""
    if not name or name[0] == "/":
        raise UnsafePath(f"asset name {shown(name)} is not a relative path" if name else "an empty asset name is not a relative path")
    if "\\" in name:  # a folder separator on Windows: one name would be two paths
        raise UnsafePath(f"asset name {shown(name)} contains a backslash, which lattice does not allow in names",
                         hint="rename the file without the backslash")
    if _control().search(name):
        if re.search("[\ud800-\udfff]", name):
            raise UnsafePath(f"asset name {shown(name)} is not valid UTF-8", hint="rename the file")
        raise UnsafePath(f"asset name {shown(name)} contains a control character (newline, tab…)", hint="rename the file")
    parts = name.split("/")
    if "" in parts or "." in parts or ".." in parts:
        raise UnsafePath(f"asset name {shown(name)} contains an empty, '.' or '..' component")
    if any(part.endswith(".toml") for part in parts[:-1]):
        # The manifest keeps asset `x` in `x.toml`: a folder so named would be
        # both that file and the folder of `x.toml/…`'s records.
        raise UnsafePath(f"asset name {shown(name)}: a folder whose name ends in .toml cannot hold assets", hint="rename the folder")
    if parts[0] in RESERVED:
        raise UnsafePath(f"asset name {shown(name)} is inside {parts[0]}/, which lattice never tracks")
    if "/." in "/" + name:
        raise UnsafePath(f"asset name {shown(name)} has a hidden (dot) component; lattice does not track hidden files", hint="rename it without the leading dot")
    if len(name) > MAX_COMPONENT // 4 and any(len(part.encode()) > MAX_COMPONENT for part in parts):
        raise UnsafePath(f"asset name {shown(name[:60])}… has a component longer than {MAX_COMPONENT} bytes", hint="use a shorter file or folder name")
    if not stored and "@" in name and _version_digits(name.rpartition("@")[2]) is not None:
        # `b.png@v1` names version 1 of b.png wherever a version may be given.
        head, _, tail = name.rpartition("@")
        folder, slash, leaf = head.rpartition("/")
        stem, dot, ext = leaf.rpartition(".")
        renamed = f"{folder}{slash}{stem}-{tail}{dot}{ext}" if stem else f"{head}-{tail}"
        raise UnsafePath(f"asset name {shown(name)} ends in @{tail}, which reads as version {int(_version_digits(tail))} of {head}",
                         hint=f"rename the file so that it does not end in @vN or @N, e.g. {renamed}")
    return name


def _version_digits(tail: str) -> str | None:
    """The version number in what follows a name's last '@' (`v3`, `V3`,
    `3`), or None when it is not one."""
    digits = tail[1:] if tail[:1] in ("v", "V") else tail
    return digits if digits.isdigit() else None


def require_path(user_path: str | os.PathLike) -> None:
    """Refuse an empty path: `lattice add "$UNSET"` must not mean the whole project."""
    if not str(user_path):
        raise UnsafePath("an empty path names no file", hint="name a file or folder, e.g. `.` for the whole project")


def name_for(root: Path, user_path: str | os.PathLike, cwd: Path | None = None, stored: bool = False) -> str:
    """Turn a path typed by the user (relative to `cwd`) into an asset name
    (`stored`: of an asset that exists, see check_name)."""
    root = Path(root)
    require_path(user_path)
    raw = Path(user_path)
    absolute = Path(os.path.normpath((cwd or Path.cwd()) / raw))
    try:
        rel = absolute.relative_to(root)
    except ValueError:
        try:  # typed through a link to the project (`$PWD/a.png` in a linked folder)
            rel = Path(os.path.realpath(absolute.parent), absolute.name).relative_to(_realpath_of_root(os.fspath(root)))
        except ValueError:
            raise UnsafePath(f"{user_path}: outside the project at {root}") from None
    if str(rel) == ".":
        raise UnsafePath(f"{user_path}: is the project root, not a file in it")
    name = check_name(rel.as_posix(), stored)
    confine(root, name)
    return name


def check_creatable(root: Path, name: str, leaving: list[str] | set[str] | tuple = ()) -> None:
    """Refuse a new file under a folder name that is already a file
    (`sky.png/x.png` while `sky.png` is an image), unless that file is in
    `leaving` (names of files removed before this one is made)."""
    parts = name.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        p = Path(root, *parts[:i])
        if os.path.lexists(p) and not p.is_dir() and "/".join(parts[:i]) not in leaving:
            raise UnsafePath(f"{name}: {'/'.join(parts[:i])} is a file, so nothing can be created under it",
                             hint=f"move {here('/'.join(parts[:i]))} aside, then run the command again")


def confine(root: Path, name: str) -> Path:
    """The working-tree path of `name`, refusing symlinks that lead outside
    or into `.lattice/` and `.git/` (loops over many names: `confined`)."""
    return Path(confined(root, name))


def confined(root: Path | str, name: str, folders: dict[str, str] | None = None) -> str:
    """confine() as a string, for loops over thousands of names: callers
    pass one `folders` dict for the loop, so each folder is resolved and
    checked once and each file costs one lstat."""
    real_root = _realpath_of_root(os.fspath(root))
    folder, _, leaf = name.rpartition("/")
    base = folders.get(folder) if folders is not None else None
    if base is None:
        base = _inside(name, real_root, os.path.realpath(os.path.join(real_root, folder)) if folder else real_root)
        if base != os.path.join(real_root, folder).rstrip(os.sep):
            # A linked folder inside the project: one file, two names. As git
            # does, a file is tracked by its real path only.
            real_name = os.path.relpath(base, real_root).replace(os.sep, "/") + "/" + leaf
            raise UnsafePath(f"{name}: {folder} is, or goes through, a symbolic link; lattice tracks a file by its real path",
                             hint=f"name it {real_name}")
        if folders is not None:
            folders[folder] = base
    real = os.path.join(base, leaf)
    if os.path.islink(real):
        try:
            _inside(name, real_root, os.path.realpath(real))
        except UnsafePath as e:  # not a path typed wrong: a link where a file belongs
            raise UnsafePath(e.message, hint=f"{here(name)} is a symbolic link: put a copy of the file it points to in its place, or remove it") from None
    elif base == real_root and leaf in RESERVED:
        raise UnsafePath(f"{name}: resolves into {leaf}/, which lattice never tracks")
    return os.path.join(root, name)


def _inside(name: str, real_root: str, real: str) -> str:
    """`real` (a resolved path) when it lies in the project outside the
    reserved folders; else UnsafePath naming `name`."""
    if real != real_root and not real.startswith(real_root + os.sep if real_root != os.sep else os.sep):
        raise UnsafePath(f"{name}: a symlink leads outside the project (to {real})")
    first = real[len(real_root) :].lstrip(os.sep).partition(os.sep)[0]
    if first in RESERVED:
        raise UnsafePath(f"{name}: resolves into {first}/, which lattice never tracks")
    return real


@functools.lru_cache(maxsize=16)
def _realpath_of_root(root: str) -> str:
    return os.path.realpath(root)


def split_version(spec: str) -> tuple[str, int | None]:
    """`sky.png@v3` → ('sky.png', 3); `sky.png` and `me@home.png` (no
    version after the '@') → the whole spec, None."""
    from lattice.errors import InvalidInput

    head, sep, tail = spec.rpartition("@")
    digits = _version_digits(tail)
    if not sep or digits is None:
        return spec, None
    if int(digits) < 1:
        raise InvalidInput(f"{shown(spec)}: there is no version {shown(tail)}", hint="versions are numbered from v1")
    return head, int(digits)


def asset_spec(repo, spec: str, cwd: Path) -> tuple[str, int | None]:
    """`PATH[@vN]` as typed → (asset name, version or None). A name that is
    itself an asset (`take@v2.png`; `x@v2` only in a manifest older than
    check_name's refusal of such names) is that asset."""
    try:
        whole = name_for(repo.root, spec, cwd, stored=True)
    except UnsafePath:
        whole = None
    if whole is not None and repo.index.get(whole) is not None:
        return whole, None
    path, number = split_version(spec)
    head, sep, tail = spec.rpartition("@")
    if number is None and sep and repo.index.get(name_for(repo.root, head, cwd, stored=True)) is not None:
        from lattice.errors import InvalidInput, command

        # `sky.png@latest`, `sky.png@`: an asset, then no version number.
        raise InvalidInput(f"{shown(spec)}: {shown(tail)} is not a version" if tail else f"{shown(spec)}: the version is missing after the @",
                           hint=f"versions are written {shown(head)}@v1, {shown(head)}@v2, …; {command('lattice log', head, paths=False)} lists them")
    return name_for(repo.root, path, cwd, stored=True), number
