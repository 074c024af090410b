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
from lattice.repo import Repository

DEFAULT_LARGE = 1 << 20  # 1 MiB
HOOK_MARK = "# installed by `lattice hooks install`"


def hook_script(project: str = ".") -> str:
    """The pre-commit hook for a lattice project at `project`, relative to
    the top of the git working tree, where git runs its hooks."""
    import shlex

    inside = project != "."
    return f"""#!/bin/sh
{HOOK_MARK}
# Refuses a commit while lattice assets are stale, missing, modified without
# being recorded, or have an incomplete recipe; and while large media is staged.
{f"cd {shlex.quote(project)} || exit 1{chr(10)}" if inside else ""}lattice hooks check || exit 1
git diff --cached --name-only --diff-filter=AM{" --relative" if inside else ""} -z | xargs -0 -r lattice hooks large-media --
"""


@dataclass
class Finding:
    path: str
    problem: str  # stale, missing, evicted, modified, modified-output, incomplete-recipe, large-media
    fix: str


def check(repo: Repository) -> list[Finding]:
    """Everything that makes a commit of this project not reproducible."""
    from lattice.render import registry
    from lattice.status import status

    found: list[Finding] = []
    for e in status(repo, untracked=False):
        if e.state == "evicted":  # the recipe is all a commit needs: the output is a cache
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
                found.append(Finding(path, "incomplete-recipe", f"generator {generator!r} is not installed here: install its plug-in"))
        for child, parent, _ in repo.index.edges():
            if parent not in names:
                found.append(Finding(child, "incomplete-recipe", f"input {parent!r} is not an asset: re-add it or `lattice gen` it"))
    found.sort(key=lambda f: f.path)
    return history_not_staged(repo) + found


def _git(top: Path, *args: str, data: bytes | None = None) -> bytes:
    # The environment git gives a hook is kept: GIT_INDEX_FILE names the
    # index the commit is being made from (`git commit -a` writes its own).
    return subprocess.run(["git", *args], cwd=top, input=data, capture_output=True, check=True, timeout=120).stdout


def history_not_staged(repo: Repository) -> list[Finding]:
    """A history ref staged for the commit of the enclosing git repository
    whose new commits need objects that are not staged with it: `git commit
    -a` takes the changed ref file but not the new, untracked object files,
    and a clone then has a branch naming a commit it lacks. Only commits the
    ref did not reach in git's HEAD are walked, and only when some object
    file of history is not staged at all."""
    from lattice import history

    if not history.exists(repo):
        return []
    try:
        top = Path(_git(repo.root, "rev-parse", "--show-toplevel").decode().strip())
        rel = Path(os.path.relpath(os.path.realpath(history.git_dir(repo)), os.path.realpath(top))).as_posix()
        if rel.startswith("../"):
            return []
        refs = [f"{rel}/refs", f"{rel}/packed-refs", f"{rel}/HEAD"]
        staged = _blob_ids(_git(top, "ls-files", "-s", "-z", "--", *refs), 1)
        if not staged or not _git(top, "ls-files", "-o", "-z", "--", f"{rel}/objects"):
            return []
        try:
            committed = _blob_ids(_git(top, "ls-tree", "-r", "-z", "HEAD", "--", *refs), 2)
        except subprocess.CalledProcessError:  # no commit yet
            committed = {}
        changed = {path: blob for path, blob in staged.items() if committed.get(path) != blob}
        if not changed:
            return []
        new = {path: _ids_in(_git(top, "cat-file", "blob", blob)) for path, blob in changed.items()}
        old = {i for blob in committed.values() for i in _ids_in(_git(top, "cat-file", "blob", blob))}
        index = set(_git(top, "ls-files", "-z", "--", f"{rel}/objects").decode(errors="surrogateescape").split("\0"))
    except (OSError, subprocess.SubprocessError, ValueError):
        return []  # not in a git working tree, or git cannot tell
    g = history.open_git(repo, create=False)
    packed: set[str] | None = None

    def is_staged(oid) -> bool:
        nonlocal packed
        oid = str(oid)
        if f"{rel}/objects/{oid[:2]}/{oid[2:]}" in index:
            return True
        if packed is None:
            packed = set()
            for name in index:
                if name.endswith(".idx") and name[:-4] + ".pack" in index:
                    packed |= _pack_ids(top / name)
        return oid in packed

    found = []
    for path, ids in sorted(new.items()):
        for tip in sorted(set(ids) - old):
            missing = _unstaged_objects(g, tip, old, is_staged)
            if missing:
                found.append(Finding(path, "history-not-staged", f"it names history commit {tip[:12]}, but {missing} of the objects "
                                     f"that commit needs are not staged (a clone would lack them): `git add {rel}`"))
    return found


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


def _pack_ids(idx: Path) -> set[str]:
    """The object ids a version 2 pack index lists."""
    try:
        data = idx.read_bytes()
    except OSError:
        return set()
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
    hook = (repo.root / out / "pre-commit").resolve()
    script = hook_script(os.path.relpath(os.path.realpath(repo.root), os.path.realpath(top)))
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
