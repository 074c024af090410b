"""Commands over the repository and the working tree:
init, add, status, ls, show, cat, checkout, fsck."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from lattice.cli import quick
from lattice.cli.common import cwd, echo, emit_json, repo_from_ctx, say

JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")


def init(
    directory: Optional[Path] = typer.Argument(None, help="Project folder (default: the current one)."),
    gitignore: bool = typer.Option(False, "--gitignore", help="Inside a git working tree, add the lines that keep the media store out of git to the project's .gitignore (beside .lattice)."),
    json: bool = JSON,
) -> None:
    """Create a `.lattice/` repository in DIR (or here).

    Inside a git working tree, commit `.lattice/manifest/`, `.lattice/config.toml`,
    `.lattice/format` and `.lattice/history.git`; keep the store and local
    state out of git (`--gitignore` writes those lines). A teammate who clones
    the project runs `lattice render` to re-create every output.
    """
    from lattice.repo import GITIGNORE_LINES, Repository, git_worktree, write_gitignore

    root = (cwd() / directory) if directory else cwd()
    if gitignore and (root / ".lattice").is_dir():
        repo = Repository(root)  # already a repository: just add the lines
    else:
        repo = Repository.init(root)
        if not json:
            say(f"Initialized empty lattice repository in {repo.dir}")
    top = git_worktree(repo.root)
    # Beside .lattice: git anchors `.lattice/objects/` to the folder of the
    # .gitignore that says it, so a project in a subfolder needs its own.
    added = write_gitignore(repo.root) if gitignore and top is not None else []
    if json:
        emit_json({"repository": str(repo.dir), "git_worktree": str(top) if top else None, "gitignore_added": added})
        return
    if top is None:
        if gitignore:
            echo("not inside a git working tree: no .gitignore written", err=True)
        return
    if gitignore:
        say(f"added {len(added)} line(s) to {repo.root / '.gitignore'}" if added else f"{repo.root / '.gitignore'} already has the lattice lines")
    else:
        say(f"This project is under git. Keep the media store out of it with these lines in {repo.root / '.gitignore'} (`lattice init --gitignore` writes them):")
        for line in GITIGNORE_LINES:
            say(f"  {line}")


def add(
    paths: List[str] = typer.Argument(..., help="Files or directories to import (directories recursively)."),
    tag: List[str] = typer.Option([], "--tag", "-t", help="Tag to attach (repeatable)."),
    json: bool = JSON,
) -> None:
    """Import files into the object store and record a version of each.

    Re-adding changed content records a new version; unchanged content
    records nothing. Media facts (size, duration, codec…) are probed and kept.
    Inside directories, files matched by .latticeignore are passed over.
    """
    quick.add(paths, tag, json)


def status(
    json: bool = JSON,
    porcelain: bool = typer.Option(False, "--porcelain", help="Stable two-letter codes for scripts: ?? new, ' M' modified, ' O' outdated, ' D' missing, ' S' stale, ' E' evicted; paths from the project root."),
) -> None:
    """Show new, modified, outdated, missing, stale and evicted assets. Prints nothing when all is clean.
    Outdated: the working file holds another version lattice recorded or wrote there (a git
    pull or checkout moved the manifest); `lattice checkout` or `lattice render` writes the current one.
    New: untracked media files (images, video, audio, vector); other files are added by name
    or with their folder. Files matched by .latticeignore are never listed as new.
    Paths are shown from the current folder, as git does (`../top.png`); --json and
    --porcelain name assets from the project root."""
    quick.status(json, porcelain)


def ls(json: bool = JSON, prefix: Optional[str] = typer.Argument(None, help="Only assets under this folder.")) -> None:
    """List tracked assets with their current version. Paths are shown from the
    current folder, as git ls-files does; --json names assets from the project root."""
    quick.ls(json, prefix)


def show(spec: str = typer.Argument(..., metavar="PATH[@vN]", help="Asset, optionally at a version."), json: bool = JSON) -> None:
    """Show an asset's metadata, recipe and versions (or one version with @vN)."""
    quick.show(spec, json)


NO_REGEN = typer.Option(False, "--no-regen", help="Refuse instead of re-making an output evicted by gc; name the command that would.")


def cat(
    spec: str = typer.Argument(..., metavar="PATH[@vN]", help="Asset, optionally at a version."),
    no_regen: bool = NO_REGEN,
) -> None:
    """Write an asset's bytes (current version, or @vN) to standard output.
    An output evicted by gc is re-made through the queue first."""
    quick.cat(spec, no_regen)


def checkout(
    paths: List[str] = typer.Argument(..., help="Assets (or folders of assets) to restore in the working tree."),
    no_regen: bool = NO_REGEN,
    json: bool = JSON,
) -> None:
    """Re-materialize the recorded current version of assets into the working tree,
    discarding working-file edits. A folder names every asset under it (`.`: all).
    Outputs evicted by gc are re-made through the queue first."""
    from lattice.cli.common import assets_named
    from lattice.worktree import checkout as do_checkout

    repo = repo_from_ctx()
    done = do_checkout(repo, assets_named(repo, paths), regen=not no_regen, notify=lambda m: echo(m, err=True))
    if json:
        emit_json([{"path": name} for name in done])
        return
    for name in done:
        say(f"checked out {name}")


def fsck(
    repair: bool = typer.Option(False, "--repair", help="Rebuild the index, quarantine damaged objects, store again what working files hold, remove stale temp files."),
    json: bool = JSON,
) -> None:
    """Verify every object's hash, every manifest reference and the index.
    Exits 1 when a problem remains. Versions whose bytes this store lacks
    without damage (an older import a clone never got, an output gc evicted
    at your request) are listed as notes (not with -q; --json keeps them)
    and do not fail the check."""
    from lattice.fsck import fsck as do_fsck

    report = do_fsck(repo_from_ctx(reading=not repair), repair=repair)
    if json:
        emit_json({"ok": report.ok, "objects": report.objects, "assets": report.assets, "problems": report.problems,
                   "notes": report.notes})
    else:
        for p in report.problems:
            fixed = f" [repaired: {p.repaired}]" if p.repaired else ""
            echo(f"{p.kind}: {p.subject}: {p.message}{fixed}")
        for p in report.notes:  # no failure: kept from -q's "only errors and requested data"
            fixed = f" [repaired: {p.repaired}]" if p.repaired else ""
            say(f"note: {p.subject}: {p.message}{fixed}")
        if report.ok:
            say(f"ok: {report.assets} assets, {report.objects} objects")
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    for fn in (init, add, status, ls, show, cat, checkout, fsck):
        app.command()(fn)
