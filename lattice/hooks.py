"""Checks for git hooks and CI: is the project up to date and reproducible,
and is large media being committed to git instead of tracked by lattice.

Both read the index, so they stay fast on 10,000 assets. They are used by
`lattice hooks check`, `lattice hooks large-media`, the pre-commit framework
(`.pre-commit-hooks.yaml`) and the plain git hook `lattice hooks install` writes.
"""

from __future__ import annotations

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
    return found


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
