"""Checks for git hooks and CI: is the project up to date and reproducible,
and is large media being committed to git instead of tracked by lattice.

Both read the index, so they stay fast on 10,000 assets. They are used by
`lattice hooks check`, `lattice hooks large-media`, the pre-commit framework
(`.pre-commit-hooks.yaml`) and the plain git hook `lattice hooks install` writes.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from lattice.errors import Conflict, InvalidInput, command
from lattice.paths import shown
from lattice.repo import Repository

DEFAULT_LARGE = 1 << 20  # 1 MiB
HOOK_MARK = "# installed by `lattice hooks install`"


def hook_script(project: str = ".") -> str:
    """The pre-commit hook for a lattice project at `project`, relative to
    the top of the git working tree, where git runs its hooks."""
    inside = project != "."
    return f"""#!/bin/sh
{HOOK_MARK}
# Refuses a commit while lattice assets are stale, missing, modified without
# being recorded, or have an incomplete recipe; and while large media is staged.
{_enter(project) if inside else ""}lattice hooks check || exit 1
git diff --cached --name-only --diff-filter=AM{" --relative" if inside else ""} -z | xargs -0 -r lattice hooks large-media --
"""


def _enter(project: str) -> str:
    """Lines of the hook that go into the project. git runs a hook at the
    top of its working tree, in a `git worktree` with GIT_DIR set and no
    GIT_WORK_TREE (the work tree is then where git runs): both are made
    absolute and exported first, or git in the project takes it for the top."""
    import shlex

    return (
        'if [ -n "${GIT_DIR:-}" ]; then\n'
        '  GIT_WORK_TREE=$(cd "${GIT_WORK_TREE:-.}" && pwd -P) && GIT_DIR=$(cd "$GIT_DIR" && pwd -P) || exit 1\n'
        "  export GIT_DIR GIT_WORK_TREE\n"
        "fi\n"
        f"cd {shlex.quote(project)} || exit 1\n"
    )


@dataclass
class Finding:
    path: str
    problem: str  # stale, missing, evicted, modified, modified-output, incomplete-recipe, large-media
    fix: str


def check(repo: Repository) -> list[Finding]:
    """Everything that makes a commit of this project not reproducible."""
    from lattice.generators import registry
    from lattice.status import cannot_bring_back, status

    found: list[Finding] = []
    entries = status(repo, untracked=False)
    gone = dict(cannot_bring_back(repo, [e.path for e in entries if e.state == "missing"]))
    for e in entries:
        if e.state == "evicted":  # the recipe is all a commit needs: the output is a cache
            continue
        if e.path in gone:  # checkout refuses it: say what works
            found.append(Finding(e.path, e.state, gone[e.path]))
            continue
        fix = {
            "modified": f"record it with {command('lattice add', e.path)} or discard it with {command('lattice checkout', e.path)}",
            "outdated": f"{command('lattice checkout', e.path)} (or `lattice render`) writes its current version",
            "missing": f"{command('lattice checkout', e.path)} (or `lattice render`)",
            "stale": "`lattice render`",
        }[e.state]
        found.append(Finding(e.path, e.state, fix))
    # status already covers everything `render` would do (stale, evicted,
    # missing); one pass over the working tree is enough. Recipes are asked
    # of the index in two queries, and the generators loaded only if any.
    generated = repo.index.generators()
    if generated:
        reg = registry(repo)
        names = set(repo.index.names())
        for path, generator in generated.items():
            if generator not in reg:
                found.append(Finding(path, "incomplete-recipe", f"generator {shown(generator)} is not installed here: install its plug-in"))
        for child, parent, _ in repo.index.edges():
            if parent not in names:
                found.append(Finding(child, "incomplete-recipe", f"input {shown(parent)} is not an asset: re-add it or `lattice gen` it"))
    found.sort(key=lambda f: f.path)
    return history_not_staged(repo) + found


def _git(top: Path, *args: str, data: bytes | None = None, env: dict | None = None) -> bytes:
    # The environment git gives a hook is kept: GIT_INDEX_FILE names the
    # index the commit is being made from (`git commit -a` writes its own).
    return subprocess.run(["git", *args], cwd=top, input=data, capture_output=True, check=True, timeout=120, env=env).stdout


def _git_env(root: Path) -> dict:
    """The environment for asking git about the commit being made. git runs
    a hook with GIT_DIR set and, in a `git worktree`, no GIT_WORK_TREE: the
    work tree is then the directory git started in, and a hook that went into
    the project first would take the project for the top. With GIT_DIR and
    no GIT_WORK_TREE, the top is found from the project as git finds it
    without GIT_DIR, when that names the same git directory."""
    env = dict(os.environ)
    gd = env.get("GIT_DIR")
    if gd and not env.get("GIT_WORK_TREE"):
        probe = {k: v for k, v in env.items() if k not in ("GIT_DIR", "GIT_WORK_TREE")}
        with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
            found, top = _git(root, "rev-parse", "--absolute-git-dir", "--show-toplevel", env=probe).decode().splitlines()
            if os.path.realpath(found) == os.path.realpath(gd):
                env.update(GIT_DIR=found, GIT_WORK_TREE=top)
    return env


def _pairs(listing: bytes) -> list[tuple[str, str]]:
    """(status, path) of `git diff-index --name-status -z`."""
    parts = listing.decode(errors="surrogateescape").split("\0")
    return [(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]


def _blobs(top: Path, ids: Iterable[str], env: dict) -> dict[str, bytes]:
    """The contents of blobs, in one `git cat-file --batch`."""
    ids = sorted(set(ids))
    if not ids:
        return {}
    out = _git(top, "cat-file", "--batch", data="".join(f"{i}\n" for i in ids).encode(), env=env)
    found, at = {}, 0
    for i in ids:
        nl = out.index(b"\n", at)
        head = out[at:nl].split()
        if len(head) < 3:  # missing
            at = nl + 1
            continue
        size = int(head[2])
        found[i] = out[nl + 1 : nl + 1 + size]
        at = nl + 1 + size + 1
    return found


def _refs(files: dict[str, str], contents: dict[str, bytes], rel: str) -> dict[str, str]:
    """Ref name → value ("HEAD" included; a symbolic one as `ref: NAME`) that
    history's ref files hold: loose ref files over packed-refs, as git reads them."""
    refs: dict[str, str] = {}
    packed = files.get(f"{rel}/packed-refs")
    if packed is not None:
        for line in contents.get(packed, b"").decode(errors="replace").splitlines():
            fields = line.split()
            if len(fields) == 2 and len(fields[0]) == 40 and not line.startswith(("#", "^")):
                refs[fields[1]] = fields[0]
    for path, blob in files.items():
        name = path[len(rel) + 1 :]
        if name == "HEAD" or name.startswith("refs/"):
            value = contents.get(blob, b"").decode(errors="replace").strip()
            if value:
                refs[name] = value
    return refs


def history_not_staged(repo: Repository) -> list[Finding]:
    """History as the commit of the enclosing git repository would hold it,
    when that commit changes anything in history: a ref that history has but
    the commit would not (`git pack-refs` deletes loose ref files and writes
    an untracked packed-refs), a ref whose new commits need objects that are
    not staged (`git commit -a` takes the changed ref file but not the new,
    untracked object files), and object files deleted whose objects are not
    staged elsewhere (a repack deletes the loose objects and writes an
    untracked pack). Only commits a ref did not reach in git's HEAD are
    walked, and only when some object file of history is untracked."""
    from lattice import history

    if not history.exists(repo):
        return []
    try:
        env = _git_env(repo.root)
        top = Path(_git(repo.root, "rev-parse", "--show-toplevel", env=env).decode().strip())
        rel = Path(os.path.relpath(os.path.realpath(history.git_dir(repo)), os.path.realpath(top))).as_posix()
        if rel.startswith("../"):
            return []
        try:
            changes = _pairs(_git(top, "diff-index", "--cached", "--no-renames", "--name-status", "-z", "HEAD", "--", rel, env=env))
            head = True
        except subprocess.CalledProcessError:  # no commit yet
            changes = [("A", p) for p in _git(top, "ls-files", "-z", "--", rel, env=env).decode(errors="surrogateescape").split("\0") if p]
            head = False
        if not changes:
            return []  # the commit changes nothing of history
        staged = _blob_ids(_git(top, "ls-files", "-s", "-z", "--", rel, env=env), 1)
        refpaths = [f"{rel}/refs", f"{rel}/packed-refs", f"{rel}/HEAD"]
        committed = _blob_ids(_git(top, "ls-tree", "-r", "-z", "HEAD", "--", *refpaths, env=env), 2) if head else {}
        isref = lambda p: p in (f"{rel}/packed-refs", f"{rel}/HEAD") or p.startswith(f"{rel}/refs/")  # noqa: E731
        staged_refs = {p: b for p, b in staged.items() if isref(p)}
        contents = _blobs(top, [*staged_refs.values(), *committed.values()], env)
        will, had = _refs(staged_refs, contents, rel), _refs(committed, contents, rel)
        deleted = [p for st, p in changes if st == "D" and p.startswith(f"{rel}/objects/")]
        new_tips = {v for v in will.values() if len(v) == 40} - set(had.values())
        untracked = bool(new_tips) and bool(_git(top, "ls-files", "-o", "-z", "--", f"{rel}/objects", env=env))
        gone: set[str] = set()
        for p in deleted:
            name = p[len(rel) + len("/objects/") :]
            if len(name) == 41 and name[2] == "/":
                gone.add(name.replace("/", ""))
            elif name.startswith("pack/") and name.endswith((".idx", ".pack")):
                idx = p.rsplit(".", 1)[0] + ".idx"
                with contextlib.suppress(subprocess.CalledProcessError):
                    gone |= _idx_ids(_git(top, "cat-file", "blob", f"HEAD:{idx}", env=env))
    except (OSError, subprocess.SubprocessError, ValueError):
        return []  # not in a git working tree, or git cannot tell
    g = history.open_git(repo, create=False)
    now = _history_refs(g, history.git_dir(repo))
    packed: set[str] | None = None

    def is_staged(oid) -> bool:
        nonlocal packed
        oid = str(oid)
        if f"{rel}/objects/{oid[:2]}/{oid[2:]}" in staged:
            return True
        if packed is None:
            packed = set()
            for name in staged:
                if name.startswith(f"{rel}/objects/pack/") and name.endswith(".idx") and name[:-4] + ".pack" in staged:
                    with contextlib.suppress(subprocess.SubprocessError, OSError):
                        packed |= _idx_ids(_git(top, "cat-file", "blob", staged[name], env=env))
        return oid in packed

    hint = f"`git add -A {rel}`"
    found = []
    for name, value in sorted(now.items()):
        if name not in will:
            found.append(Finding(f"{rel}/{name}", "history-not-staged", f"history has {name} ({value[:12]}), but the commit would not "
                                 f"(its ref file is deleted or not staged, or packed-refs is not staged; a clone would lack it): {hint}"))
    if untracked:
        paths = {}
        for path, blob in staged_refs.items():  # name each new tip by the ref file that holds it
            for tip in _ids_in(contents.get(blob, b"")):
                paths.setdefault(tip, path)
        for tip in sorted(new_tips, key=lambda t: (paths.get(t, ""), t)):
            missing = _unstaged_objects(g, tip, set(had.values()), is_staged)
            if missing:
                found.append(Finding(paths.get(tip, f"{rel}/refs"), "history-not-staged", f"it names history commit {tip[:12]}, but {missing} of the objects "
                                     f"that commit needs are not staged (a clone would lack them): {hint}"))
    if gone:
        lost = 0
        for oid in gone:
            if not is_staged(oid):
                with contextlib.suppress(ValueError, KeyError):
                    lost += oid in g.odb
        if lost:
            found.append(Finding(f"{rel}/objects", "history-not-staged", f"the commit deletes history object files, but {lost} of the objects they held "
                                 f"are not staged in another file (a repack wrote them into a pack that is not staged; a clone would lack them): {hint}"))
    return found


def _history_refs(g, gitdir: Path) -> dict[str, str]:
    """Ref name → value that history has now, loose and packed, and its HEAD."""
    refs = {}
    for name in g.references:
        with contextlib.suppress(KeyError, ValueError):
            target = g.references[name].target
            refs[name] = str(target) if not isinstance(target, str) else f"ref: {target}"
    with contextlib.suppress(OSError):
        head = (gitdir / "HEAD").read_text(errors="replace").strip()
        if head:
            refs["HEAD"] = head
    return refs


def _blob_ids(listing: bytes, field: int) -> dict[str, str]:
    """Path → blob id of `git ls-files -s -z` (field 1) or `git ls-tree -z` (field 2)."""
    out = {}
    for entry in listing.decode(errors="surrogateescape").split("\0"):
        if "\t" in entry:
            meta, path = entry.split("\t", 1)
            out[path] = meta.split()[field]
    return out


def _ids_in(text: bytes) -> list[str]:
    """The commit ids a ref file, packed-refs or a detached HEAD names."""
    import re

    return re.findall(r"^([0-9a-f]{40})\b", text.decode(errors="replace"), re.M)


def _idx_ids(data: bytes) -> set[str]:
    """The object ids a version 2 pack index lists."""
    if data[:8] != b"\377tOc\0\0\0\2":
        return set()
    count = int.from_bytes(data[8 + 255 * 4 : 8 + 256 * 4], "big")
    start = 8 + 256 * 4
    return {data[start + 20 * i : start + 20 * (i + 1)].hex() for i in range(count)}


def _unstaged_objects(g, tip: str, old: set[str], is_staged) -> int:
    """How many objects of the commits from `tip` back to those `old` reaches
    are not staged: each commit, and the trees and blobs where its tree
    differs from its first parent's. 0 when `tip` is not in history here
    (nothing to tell)."""
    import pygit2

    try:
        walker = g.walk(tip)
    except (KeyError, ValueError, pygit2.GitError):
        return 0
    for o in old:
        with contextlib.suppress(KeyError, ValueError, pygit2.GitError):
            walker.hide(o)
    missing = set()

    def tree(new, base) -> None:
        if base is not None and new.id == base.id:
            return
        if not is_staged(new.id):
            missing.add(new.id)
        for e in new:
            before = base[e.name] if base is not None and e.name in base else None
            if before is not None and before.id == e.id:
                continue
            if e.type_str == "tree":
                tree(g[e.id], g[before.id] if before is not None and before.type_str == "tree" else None)
            elif e.type_str == "blob" and not is_staged(e.id):
                missing.add(e.id)

    try:
        for c in walker:
            if not is_staged(c.id):
                missing.add(c.id)
            tree(c.tree, c.parents[0].tree if c.parents else None)
    except (KeyError, ValueError, pygit2.GitError):
        return len(missing) or 1  # history here lacks an object too: not staged either
    return len(missing)


def large_media(repo: Repository, files: Iterable[str], limit: int = DEFAULT_LARGE, cwd: Path | None = None) -> list[Finding]:
    """Staged files that are media over `limit` bytes: they belong in lattice, not git."""
    from lattice.media import is_media

    found = []
    base = cwd or Path.cwd()
    for f in files:
        path = Path(os.path.normpath(base / f))
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        if size <= limit or not is_media(path.name):
            continue
        try:
            rel = path.relative_to(repo.root).as_posix()
        except ValueError:
            rel = str(path)
        tracked = repo.index.get(rel) is not None
        untrack = command("git rm --cached", rel)
        fix = (
            f"it is tracked by lattice already: {untrack} and add it to .gitignore"
            if tracked
            else f"track it with {command('lattice add', rel)}, then {untrack} and add it to .gitignore"
        )
        found.append(Finding(rel, "large-media", f"{size} bytes staged into git; {fix}"))
    return found


def install(repo: Repository, force: bool = False) -> Path:
    """Write a plain git pre-commit hook; never clobber a different hook."""
    from lattice.fsutil import atomic_write

    try:
        out, top = subprocess.run(
            ["git", "rev-parse", "--git-path", "hooks", "--show-toplevel"], cwd=repo.root, capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError, ValueError):
        raise InvalidInput(f"{repo.root} is not inside a git working tree", hint="`git init` first; the hook runs on `git commit`") from None
    link = repo.root / out / "pre-commit"
    hook = link.resolve()
    script = hook_script(os.path.relpath(os.path.realpath(repo.root), os.path.realpath(top)))
    if link.is_symlink() and not hook.exists() and not force:
        # A hook manager's link whose script is gone: writing through it
        # would create a file wherever the link points.
        raise Conflict(f"{link} is a link to {os.readlink(link)}, which does not exist",
                       hint="remove the link, or point it at a hook you then add `lattice hooks check` to")
    if hook.exists():
        current = hook.read_text(errors="replace")
        if current == script:
            return hook
        if not force and HOOK_MARK not in current:  # one we wrote, maybe older, is replaced
            raise Conflict(
                f"{hook} already exists and is not lattice's",
                hint="add `lattice hooks check` to it yourself, or use the pre-commit framework's `lattice-check` hook",
            )
    atomic_write(hook, script.encode(), mode=0o755)
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return hook
