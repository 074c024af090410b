"""Version history: every change of the manifest is a commit in the bare git
repository `.lattice/history.git`, whose tree holds `manifest/` and
`config.toml` exactly as they are on disk. Objects stay in the lattice store;
git holds only text, so `git --git-dir=.lattice/history.git log` just works.

Commits are cheap on 10,000 assets because only the trees on the paths of
the changed files are rewritten (one TreeBuilder per changed directory), the
rest of the tree is shared with the parent commit by id.

A transaction writes the manifest first and commits last; the marker that
makes that crash-safe, and catching up a commit that never landed, are
`lattice.history_pending`.

pygit2 is imported inside functions: commands that never touch history start
without it.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from lattice.errors import HistoryError, InvalidInput, closest, command, warn
from lattice.paths import shown
from lattice.repo import HISTORY_PENDING, Repository

GITDIR = "history.git"
PENDING = HISTORY_PENDING
MANIFEST = "manifest"
CONFIG = "config.toml"
SUFFIX = ".toml"
DEFAULT_BRANCH = "main"
RECOVERED = "recovered uncommitted changes"


@dataclass(frozen=True)
class CommitInfo:
    commit: str
    date: str  # ISO 8601 in UTC
    author: str
    message: str


# -- opening ---------------------------------------------------------------


def git_dir(repo: Repository) -> Path:
    return repo.dir / GITDIR


def exists(repo: Repository) -> bool:
    return (git_dir(repo) / "HEAD").exists()


_OBJECT_ID = re.compile(rb"[0-9a-f]{64}")


def objects_named(repo: Repository) -> set[str]:
    """Every object id that any manifest file ever committed to history
    names, including versions no branch tip lists any more (a `git checkout`
    of an older manifest, a deleted branch): gc keeps those, as git keeps
    what its history reaches. Each blob's text is scanned, not parsed."""
    if not exists(repo):
        return set()
    import pygit2

    git = open_git(repo, create=False)
    blob = pygit2.enums.ObjectType.BLOB
    found: set[bytes] = set()
    for oid in git.odb:
        kind, data = git.odb.read(oid)
        if kind == blob:
            found.update(_OBJECT_ID.findall(data))
    return {o.decode() for o in found}


def open_git(repo: Repository, create: bool = True):
    """The pygit2 repository (created on first use, so repositories made
    before history existed simply gain one)."""
    import pygit2

    path = git_dir(repo)
    if not (path / "HEAD").exists():
        if not create:
            raise HistoryError(f"{path} does not exist yet", hint="it is created by the first change (`lattice add`, `lattice gen`)")
        pygit2.init_repository(str(path), bare=True, initial_head=DEFAULT_BRANCH)
    if repo.lock.held_here() and not repo.read_only:
        _remove_stale_git_locks(path)
    if not repo.read_only:
        # git carries no empty folder: a history committed into the project's
        # git before it held objects (or refs) comes back without them.
        for part in ("objects", "refs"):
            if not (path / part).is_dir() and not os.path.lexists(path / part):
                (path / part).mkdir()
    try:
        return open_path(path)
    except pygit2.GitError as e:
        raise HistoryError(f"{path} cannot be opened: {e}", hint="`lattice fsck` checks it, `lattice fsck --repair` re-creates it") from None


def open_path(path: Path):
    """The git repository at exactly `path`: never one found above it (a
    history.git that is no git directory would otherwise open the
    project's own .git, and lattice would commit into it)."""
    import pygit2

    return pygit2.Repository(str(path), pygit2.enums.RepositoryOpenFlag.NO_SEARCH)


def _remove_stale_git_locks(path: Path) -> None:
    """Remove the `*.lock` files git (pygit2) writes a ref or HEAD through
    and a killed lattice left behind: each would refuse every later update
    of its ref ("failed to lock file"). Called only with the repository
    lock held, when no other lattice process can be writing history."""
    candidates = [path / "HEAD.lock", path / "packed-refs.lock", path / "config.lock"]
    for folder, _, files in os.walk(path / "refs"):
        candidates += [Path(folder, f) for f in files if f.endswith(".lock")]
    for lock in candidates:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)


def signature(repo: Repository):
    import pygit2

    user = repo.config.get("user") or {}
    from lattice.records import author

    name = str(user.get("name") or author())
    # git refuses an empty e-mail; a local placeholder keeps `git log` readable.
    email = str(user.get("email") or f"{name.replace(' ', '.').lower()}@localhost")
    return pygit2.Signature(name, email)


def head_branch(repo: Repository) -> str | None:
    """The checked-out branch, read from HEAD's file (no pygit2): None when
    history does not exist yet or HEAD is detached or unreadable."""
    try:
        text = (git_dir(repo) / "HEAD").read_text()
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return None
    return text.strip().removeprefix("ref: refs/heads/") if text.startswith("ref: refs/heads/") else None


def current_branch(g) -> str:
    target = g.references["HEAD"].target
    return target.removeprefix("refs/heads/") if isinstance(target, str) else ""


def head_commit(g):
    import pygit2

    return None if g.head_is_unborn else g.head.peel(pygit2.Commit)


# -- committing --------------------------------------------------------------


def commit(repo: Repository, message: str, names: list[str] | None = None, parents_extra: list[str] = (), written: dict[str, bytes] | None = None) -> str | None:
    """Commit the manifest files of `names` (None: every file) and config.toml
    on top of HEAD. Returns the new commit id, or None when nothing changed.
    `written` (file path → text) spares reading back what the caller wrote."""
    g = open_git(repo)
    parent = head_commit(g)
    if parent is None:
        names = None  # the first commit snapshots everything already recorded
    if names is None:
        tree = snapshot_tree(repo, g, written)
    else:
        paths = {f"{MANIFEST}/{n}{SUFFIX}": str(repo.manifest.file_of(n)) for n in names}
        paths[CONFIG] = str(repo.dir / CONFIG)
        tree = update_tree(g, parent.tree, dict(zip(paths, _blobs(g, list(paths.values()), written))))
    if parent is not None and tree == parent.tree.id and not parents_extra:
        return None
    return write_commit(repo, g, tree, message, [parent.id] if parent else [], parents_extra)


OUTSIDE_EDITS = "record manifest edits made outside lattice"


def commit_outside_edits(repo: Repository, names: list[str]) -> str | None:
    """Commit the manifest files of `names`, edited outside lattice (by hand,
    by a script, by a `git checkout` of older ones), as they are. Assets
    left with fewer versions than HEAD records are named in a warning with
    the way back: the commit before this one still holds their records."""
    g = open_git(repo)
    parent = head_commit(g)
    if parent is not None:
        # Only stamps changed for most after a clone or a `touch`: their text
        # is what HEAD holds, and no blob of it is written again.
        names = _differing(repo, parent.tree, names)
        if not names:
            return None
    fewer = _fewer_versions(repo, parent.tree, names) if parent is not None else []
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    made = commit(repo, f"{OUTSIDE_EDITS}: {', '.join(names[:3])}{more}", names=names)
    if made is not None and fewer:
        _warn_fewer_versions(repo, fewer, str(parent.id)[:12], made[:12])
    return made


def _differing(repo: Repository, tree, names: list[str]) -> list[str]:
    """Those of `names` whose manifest file on disk is not the blob `tree` holds."""
    import pygit2

    out = []
    for name in names:
        path = str(repo.manifest.file_of(name))
        try:
            same = tree[f"{MANIFEST}/{name}{SUFFIX}"].id == pygit2.hashfile(path)
        except (KeyError, OSError):  # not in the tree, or gone: commit() sees to it
            same = False
        if not same:
            out.append(name)
    return out


def _fewer_versions(repo: Repository, tree, names: list[str]) -> list[tuple[str, int, int]]:
    """(asset, versions in `tree`, versions on disk) for those of `names`
    whose manifest file on disk lists fewer versions than `tree` records.
    A file either side cannot decode is left to the checks that report it."""
    from lattice.records import decode

    out = []
    for name in names:
        path = repo.manifest.file_of(name)
        try:
            entry = tree[f"{MANIFEST}/{name}{SUFFIX}"]
            was = len(decode(entry.data, path).versions)
            now = len(decode(path.read_bytes(), path).versions)
        except Exception:  # noqa: BLE001 - not in HEAD, gone, or undecodable: nothing to compare
            continue
        if now < was:
            out.append((name, was, now))
    return out


def _warn_fewer_versions(repo: Repository, fewer: list[tuple[str, int, int]], before: str, made: str) -> None:
    import shlex

    listed = ", ".join(f"{name} ({now} of {was} left)" for name, was, now in fewer[:5]) + (f" and {len(fewer) - 5} more" if len(fewer) > 5 else "")
    name = fewer[0][0]
    branch = current_branch(open_git(repo))
    git_dir_arg = shlex.quote(f"--git-dir={os.path.relpath(git_dir(repo))}")
    show = f"{before}:{MANIFEST}/{name}{SUFFIX}"
    back = f"git {git_dir_arg} show {shlex.quote(show)} > {shlex.quote(os.path.relpath(repo.manifest.file_of(name)))}"
    warn(f"manifest edits made outside lattice dropped versions of {listed}; committed on {branch} as they are ({made}); "
         f"the commit before it ({before}) still records them: `lattice diff {before} {made}` lists what changed, "
         f"and on {branch} `{back}` takes {name}'s record back" + (" (likewise for the others)" if len(fewer) > 1 else ""))


def write_commit(repo: Repository, g, tree, message: str, parents: list, extra: list = ()) -> str:
    import pygit2

    if tree is None:
        tree = g.TreeBuilder().write()
    sig = signature(repo)
    all_parents = [*parents, *(pygit2.Oid(hex=str(p)) for p in extra)]
    # create_commit refuses unless HEAD still points at our first parent: a
    # compare-and-swap on the branch, so a racing writer is never overwritten.
    return str(g.create_commit("HEAD", sig, sig, message.strip() + "\n", tree, all_parents))


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def update_tree(g, tree, changes: dict[str, object]):
    """The id of `tree` with each path set to a blob id (None: removed);
    only the trees along the changed paths are rewritten. None when empty."""
    from pygit2.enums import FileMode

    builder = g.TreeBuilder(tree) if tree is not None else g.TreeBuilder()
    below: dict[str, dict] = defaultdict(dict)
    for path, oid in changes.items():
        head, sep, rest = path.partition("/")
        if sep:
            below[head][rest] = oid
        elif oid is None:
            if builder.get(head) is not None:
                builder.remove(head)
        else:
            builder.insert(head, oid, FileMode.BLOB)
    for name, sub in below.items():
        entry = builder.get(name)
        child = g[entry.id] if entry is not None and entry.type_str == "tree" else None
        new = update_tree(g, child, sub)
        if new is None:
            if entry is not None:
                builder.remove(name)
        else:
            builder.insert(name, new, FileMode.TREE)
    return builder.write() if len(builder) else None


def snapshot_tree(repo: Repository, g, written: dict[str, bytes] | None = None):
    """A tree of the manifest and config exactly as on disk (first commit,
    recovery): one walk of the manifest folder."""
    files = {CONFIG: str(repo.dir / CONFIG)}
    _manifest_files(str(repo.manifest.dir), f"{MANIFEST}/", files)
    return update_tree(g, None, dict(zip(files, _blobs(g, list(files.values()), written))))


def _manifest_files(directory: str, prefix: str, out: dict[str, str]) -> None:
    """Tree path → file path of each manifest file under `directory`. Hidden
    entries (temp files) and symlinks are left out, as names() does."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for e in entries:
        if e.name.startswith(".") or e.is_symlink():
            continue
        if e.is_dir():
            _manifest_files(e.path, f"{prefix}{e.name}/", out)
        elif e.name.endswith(SUFFIX):
            out[prefix + e.name] = e.path


def _blobs(g, paths: list[str], written: dict[str, bytes] | None = None) -> list:
    """Blob ids of the files at `paths` (None for a missing file; `written`
    gives the text of some without reading them). Many at once go into one
    pack (gitpack) rather than a loose file each."""
    import pygit2

    from lattice import gitpack

    datas = []
    for path in paths:
        if written and path in written:
            datas.append(written[path])
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            datas.append(None)
            continue
        try:
            datas.append(_read_all(fd))
        finally:
            os.close(fd)
    present = [d for d in datas if d is not None]
    if len(present) < gitpack.PACK_FROM:
        return [None if d is None else g.create_blob(d) for d in datas]
    ids = iter(gitpack.write_blobs(Path(g.path) / "objects", present))
    return [None if d is None else pygit2.Oid(hex=next(ids)) for d in datas]


# -- packing -----------------------------------------------------------------

# `lattice gc` packs history once it holds this many loose objects or packs
# (git's own `gc --auto` defaults are 6,700 and 50; manifest blobs are small).
LOOSE_LIMIT = 1000
PACK_LIMIT = 20


def repack(repo: Repository, force: bool = False) -> int:
    """Pack every history object into one pack (with deltas between the
    versions of each manifest file) and remove the loose objects and older
    packs it replaces, as `git gc` does. Call under the repository lock.
    Returns the objects packed, 0 when there was no need."""
    if not exists(repo):
        return 0
    objects = git_dir(repo) / "objects"
    loose = [Path(e.path) for d in os.scandir(objects) if len(d.name) == 2 and d.is_dir() for e in os.scandir(d.path)]
    before = set((objects / "pack").glob("pack-*.pack"))
    if not force and len(loose) < LOOSE_LIMIT and len(before) < PACK_LIMIT:
        return 0
    g = open_git(repo)
    ids = list(g.odb)  # loose and packed, reachable or not: nothing is dropped

    def add_all(builder) -> None:
        for oid in ids:
            builder.add(oid)

    count = g.pack(pack_delegate=add_all)
    new = set((objects / "pack").glob("pack-*.pack")) - before
    if not new:
        return 0  # the same pack already existed: nothing to replace
    fresh = g.__class__(str(git_dir(repo)))  # reads the new pack with no cached view of the old
    if any(oid not in fresh.odb for oid in ids):
        raise HistoryError("packing history lost objects; nothing was removed", hint="`lattice fsck` checks history")
    for pack in before:
        for part in (pack.with_suffix(".idx"), pack):  # index first: never an index without its pack
            part.unlink(missing_ok=True)
    for path in loose:
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()
        except OSError:
            pass  # not empty yet
    return count


# -- reading ---------------------------------------------------------------


def log(repo: Repository, limit: int | None = None, ref: str | None = None) -> list[CommitInfo]:
    """Commits from HEAD (or `ref`) back, newest first."""
    import pygit2

    if not exists(repo):
        return []
    g = open_git(repo)
    start = resolve(g, ref) if ref else head_commit(g)
    if start is None:
        return []
    out = []
    for c in g.walk(start.id, pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.TIME):
        out.append(_info(c))
        if limit is not None and len(out) >= limit:
            break
    return out


def _info(c) -> CommitInfo:
    import time

    return CommitInfo(
        str(c.id),
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(c.commit_time)),
        f"{c.author.name} <{c.author.email}>",
        c.message.strip(),
    )


def manifest_blobs(g, tree) -> dict[str, object]:
    """Asset name → blob id of its manifest file, in `tree`."""
    out: dict[str, object] = {}
    if tree is None or MANIFEST not in tree:
        return out

    def walk(t, prefix: str) -> None:
        for e in t:
            if e.type_str == "tree":
                walk(g[e.id], prefix + e.name + "/")
            elif e.name.endswith(SUFFIX):
                out[prefix + e.name[: -len(SUFFIX)]] = e.id

    walk(g[tree[MANIFEST].id], "")
    return out


def changed_assets(g, old_tree, new_tree) -> dict[str, tuple[object, object]]:
    """Asset name → (old blob id or None, new blob id or None) for every
    asset whose manifest file differs; identical subtrees are skipped by id."""
    import pygit2

    if old_tree is None and new_tree is None:
        return {}
    # Against the empty tree without writing it: a read-only history reads too.
    if old_tree is None:
        diff = new_tree.diff_to_tree(swap=True)
    elif new_tree is None:
        diff = old_tree.diff_to_tree()
    else:
        diff = g.diff(old_tree, new_tree)
    out = {}
    zero = pygit2.Oid(hex="0" * 40)
    for d in diff.deltas:
        path = d.new_file.path if d.new_file.id != zero else d.old_file.path
        if not (path.startswith(MANIFEST + "/") and path.endswith(SUFFIX)):
            continue
        name = path[len(MANIFEST) + 1 : -len(SUFFIX)]
        out[name] = (d.old_file.id if d.old_file.id != zero else None, d.new_file.id if d.new_file.id != zero else None)
    return out


def config_blob(tree):
    return tree[CONFIG].id if tree is not None and CONFIG in tree else None


# -- refs ------------------------------------------------------------------


def branches(g) -> list[str]:
    """The branches, the current one included before its first commit (a
    fresh repository's `main` exists from then on, but is already taken:
    `lattice switch main` is no switch, `lattice tag main` would shadow it)."""
    names = {r.removeprefix("refs/heads/") for r in g.references if r.startswith("refs/heads/")}
    if g.head_is_unborn and current_branch(g):
        names.add(current_branch(g))
    return sorted(names)


def tags(g) -> list[str]:
    return sorted(r.removeprefix("refs/tags/") for r in g.references if r.startswith("refs/tags/"))


def resolve(g, ref: str):
    """The commit a branch, tag, commit id (prefix) or `HEAD~N` names."""
    import pygit2

    for full in (f"refs/heads/{ref}", f"refs/tags/{ref}"):
        r = g.references.get(full)
        if r is not None:
            return r.peel(pygit2.Commit)
    if ref and not ref.startswith("-"):
        try:
            return g.revparse_single(ref).peel(pygit2.Commit)
        except pygit2.AmbiguousError:
            if _HEX.fullmatch(ref):  # a prefix other objects (manifest blobs) begin too
                found = commits_by_prefix(g, ref)
                if len(found) == 1:
                    return found[0]
                if found:
                    listed = ", ".join(str(c.id)[:12] for c in found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
                    raise InvalidInput(f"commit id {shown(ref)} is ambiguous: {len(found)} commits begin with it ({listed})",
                                       hint="give more of its digits; `lattice log` lists commits with 12") from None
        except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
            pass
    raise InvalidInput(
        f"no branch, tag or commit named {shown(ref)}{closest(ref, branches(g) + tags(g))}",
        hint="`lattice branch` lists branches, `lattice tag` lists tags, `lattice log` lists commits",
    )


_HEX = re.compile(r"[0-9a-f]{4,40}")


def commits_by_prefix(g, prefix: str) -> list:
    """The commits whose id begins with `prefix` (hex), in the whole object
    database: reached by a ref or not (a deleted branch's)."""
    import pygit2

    commit = pygit2.enums.ObjectType.COMMIT
    found = [oid for oid in g.odb if str(oid).startswith(prefix)]
    return sorted((g[oid] for oid in found if g.odb.read_header(oid)[0] == commit), key=lambda c: str(c.id)) if found else []


# git keeps a ref in a file named after it, written through NAME.lock, and
# file systems allow 255 bytes per name.
MAX_REF_NAME = 250


def check_ref_name(g, name: str, kind: str, creating: bool = True) -> str:
    """`name`, refused (InvalidInput) when no branch (kind "heads") or tag
    can have it, and, when `creating`, (HistoryError) when an existing one
    keeps it from being created (lattice.history.ref_clash)."""
    import pygit2

    what = "branch" if kind == "heads" else "tag"
    size = len(name.encode(errors="surrogateescape"))
    if size > MAX_REF_NAME:
        raise InvalidInput(f"{shown(name[:40])}… is not a valid {what} name: it is {size} bytes long; the limit is {MAX_REF_NAME} bytes",
                           hint="use a shorter name")
    # '@' would read as PATH@vN where commands take either (`lattice diff`).
    if not name or name.startswith("-") or name == "HEAD" or "@" in name or not pygit2.reference_is_valid_name(f"refs/{kind}/{name}"):
        raise InvalidInput(f"{shown(name)} is not a valid {what} name", hint="use letters, digits, '-', '_', '.' and '/', as git allows: no '..' or '//', no part starting with '.' or ending in '.lock', no '@', not starting with '-'")
    other = ref_clash(g, name, kind) if creating else None
    if other is not None:
        raise HistoryError(f"cannot create {what} {shown(name)}: {what} {shown(other)} exists, and a name cannot also be a folder of names",
                           hint=f"pick another name, e.g. {command('lattice ' + what, name.replace('/', '-'))}" if "/" in name else "pick another name")
    return name


def ref_clash(g, name: str, kind: str) -> str | None:
    """The branch (kind "heads") or tag that keeps `name` from being
    created: git keeps refs as files, so `feat` and `feat/x` cannot both
    exist. None when there is none."""
    for other in (branches(g) if kind == "heads" else tags(g)):
        if name.startswith(other + "/") or other.startswith(name + "/"):
            return other
    return None


def ensure_head(repo: Repository, g):
    """HEAD's commit, making the first one from the current manifest when the
    history is still empty (branches need something to point at)."""
    head = head_commit(g)
    if head is None:
        write_commit(repo, g, snapshot_tree(repo, g), "snapshot of the existing manifest", [])
        head = head_commit(g)
    return head


# -- checking ----------------------------------------------------------------


def differing(repo: Repository, names: list[str]) -> list[str]:
    """Those of `names` whose manifest file is not as history HEAD has it."""
    import pygit2

    try:
        g = open_git(repo, create=False)
        head = head_commit(g)
        recorded = manifest_blobs(g, head.tree) if head is not None else {}
    except Exception:  # no history readable: every name differs
        return list(names)
    out = []
    for name in names:
        path = repo.manifest.file_of(name)
        if str(pygit2.hashfile(str(path)) if path.exists() else None) != str(recorded.get(name)):
            out.append(name)
    return out
