"""Commands for working with other tools: watch, and hooks for git,
pre-commit and CI."""

from __future__ import annotations

from typing import List, Optional

import typer

from lattice.cli import quick
from lattice.cli.common import MAX_JOBS, cwd, echo, emit_json, repo_from_ctx, say

JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")


def watch(
    # A burst of saves ends within seconds: a minute of quiet is already
    # more than anyone waits for a re-render (and a huge number overflows the watcher).
    debounce: int = typer.Option(400, "--debounce", min=0, max=60_000, help="Milliseconds of quiet that end a burst of saves."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, max=MAX_JOBS, help="Parallel jobs."),
    json: bool = typer.Option(False, "--json", help="Print one JSON object per cycle."),
) -> None:
    """Re-render when an imported source file or the config changes (Ctrl-C stops).

    An edited source is recorded as a new version (change type `edited`),
    then everything downstream re-renders through the queue.
    """
    import msgspec

    from lattice.cli.common import console
    from lattice.watch import watch as do_watch

    repo = repo_from_ctx()
    out = console(stderr=True)

    def on_cycle(cycle) -> None:
        if json:
            emit_json(msgspec.to_builtins(cycle))
            return
        for name in cycle.recorded:
            out.print(f"[bold]edited[/bold] {name}: recorded a new version")
        if cycle.config_changed:
            out.print("config changed: re-planning the project")
        if cycle.error:
            out.print(f"[red]error:[/red] {cycle.error}")
        for o in cycle.outcomes:
            style = "red" if o.status in ("failed", "cancelled", "skipped") else "green"
            detail = f": {o.error.splitlines()[0]}" if o.error else ""
            out.print(f"[{style}]{o.status:<12}[/{style}] {o.name}{detail}")

    try:
        out.print(f"watching {repo.root} (Ctrl-C stops)")  # from here on, Ctrl-C says "stopped"
        do_watch(repo, on_cycle, debounce_ms=debounce, slots=jobs)
    except KeyboardInterrupt:
        out.print("stopped")
        # Stopped by a signal, as every command is: 130 (143 for SIGTERM,
        # which lattice.cli.entry turns into a KeyboardInterrupt too).
        raise typer.Exit(130) from None


hooks_app = typer.Typer(name="hooks", help="Checks for git hooks, pre-commit and CI.", no_args_is_help=True, add_completion=False, rich_markup_mode=None)


@hooks_app.command("check")
def hooks_check(json: bool = JSON) -> None:
    """Fail (exit 1) when an asset is stale, missing, outdated, modified
    without being recorded, or has an incomplete recipe, or when a commit
    stages history's refs without the objects they need (`git commit -a`
    leaves them out). Used by the `lattice-check` hook. Files are named
    from the current folder (--json: each `path` from the project root)."""
    code = quick.hooks_check(json)
    if code:
        raise typer.Exit(code)


@hooks_app.command("large-media")
def hooks_large_media(
    files: List[str] = typer.Argument(None, help="Files being committed (pre-commit passes the staged ones)."),
    max_size: str = typer.Option("1M", "--max-size", help="Media larger than this must be tracked by lattice, not git."),
    json: bool = JSON,
) -> None:
    """Fail (exit 1) when large media files are staged into git instead of
    being tracked by lattice, naming the command that tracks each."""
    from lattice.gc import parse_size
    from lattice.hooks import large_media
    from lattice.paths import here

    found = large_media(repo_from_ctx(), files or [], parse_size(max_size, "--max-size"), cwd())
    if json:
        emit_json(found)
    else:
        for f in found:
            echo(f"{here(f.path)}: {f.fix}", err=True)
    if found:
        raise typer.Exit(1)


@hooks_app.command("install")
def hooks_install(
    force: bool = typer.Option(False, "--force", help="Replace an existing pre-commit hook."),
    json: bool = JSON,
) -> None:
    """Write a plain git pre-commit hook running `lattice hooks check` (for
    people who do not use the pre-commit framework). Refuses to overwrite a
    different existing hook."""
    from lattice.hooks import install

    path = install(repo_from_ctx(), force=force)
    if json:
        emit_json({"installed": str(path)})
    else:
        say(f"installed {path}")


def register(app: typer.Typer) -> None:
    app.command()(watch)
    app.add_typer(hooks_app)
