"""The typer app: global options and every sub-command. The console script
enters through lattice.cli.entry, which builds this app only when needed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from lattice import __version__
from lattice.cli.common import MAX_JOBS, apply_globals

HELP = """\
A git-like repository for AI-generated media.

Every asset is kept as its recipe (generator, params, seed, inputs), so its
file is a cache that can be deleted, re-made bit for bit, versioned and shared.

Start with `lattice init`, then `lattice add FILES` or `lattice gen PATH --model ID`.

The options -q, --debug and --no-color may also follow the command name.
"""

app = typer.Typer(
    name="lattice",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # help text is plain: `[gc.policy.video]` must survive
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"lattice {__version__}\n")
        raise typer.Exit()


@app.callback()
def main(
    directory: Optional[Path] = typer.Option(None, "-C", help="Run as if started in DIR.", metavar="DIR"),
    debug: bool = typer.Option(False, "--debug", help="Show a traceback on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors and requested data."),
    no_color: bool = typer.Option(False, "--no-color", help="No colour (also: NO_COLOR in the environment)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    apply_globals(directory, debug, quiet, no_color)


from lattice.cli import gen_cmds, repo_cmds, tool_cmds  # noqa: E402  (registers commands)
from lattice.cli.queue_cmd import queue_app, worker_command  # noqa: E402
from lattice.cli import history_cmds  # noqa: E402

repo_cmds.register(app)
gen_cmds.register(app)
tool_cmds.register(app)
history_cmds.register(app)
from lattice.cli import storage_cmds  # noqa: E402

storage_cmds.register(app)
app.add_typer(queue_app)


@app.command()
def worker(
    slots: Optional[int] = typer.Option(None, "--slots", min=0, max=MAX_JOBS, help="CPU slots (default: one per core); one GPU slot per GPU found."),
    once: bool = typer.Option(False, "--once", help="Exit when no runnable job is left; non-zero when a job it ran failed, as `render` does (8 when generators failed, 1 when the causes differ)."),
    json: bool = typer.Option(False, "--json", help="Print the counts of what ran as JSON at the end."),
) -> None:
    """Run queued jobs until stopped. First Ctrl-C: finish running jobs; second: hand them back."""
    import signal

    stats, stopped_by, failed = worker_command(slots=slots, once=once)
    if json:
        from lattice.cli.common import emit_json

        emit_json(stats)
    if stopped_by is not None:  # a clean stop, but a stop by a signal: 130, or 143 for SIGTERM, as every command
        raise typer.Exit(143 if stopped_by == signal.SIGTERM else 130)
    if failed is not None:  # --once in a script: jobs that failed are no success
        raise failed


def command_for(args: list[str]):
    """The click command that runs `args`: app_for's, with -q/--quiet,
    --debug and --no-color also taken after the command name (as in
    `lattice add -q FILE`), where scripts and habits from git put them."""
    from typer.core import TyperGroup, TyperOption

    from lattice.cli.common import OPTIONS

    def setter(attr: str, value):
        def callback(ctx, param, given: bool) -> None:
            if given:
                setattr(OPTIONS, attr, value)
        return callback

    def flags() -> list:
        return [
            TyperOption(param_decls=decls, is_flag=True, expose_value=False, hidden=True, callback=setter(attr, value))
            for decls, attr, value in ((["-q", "--quiet"], "quiet", True), (["--debug"], "debug", True), (["--no-color"], "color", False))
        ]

    def add(command) -> None:
        if isinstance(command, TyperGroup):
            for sub in command.commands.values():
                add(sub)
        elif not {"-q", "--quiet", "--debug", "--no-color"} & {o for p in command.params for o in getattr(p, "opts", ())}:
            command.params.extend(flags())

    root = typer.main.get_command(app_for(args))
    if isinstance(root, TyperGroup):
        for sub in root.commands.values():
            add(sub)
    return root


def app_for(args: list[str]) -> typer.Typer:
    """The app with only the command `args` names, when they name one:
    typer builds every registered command's click object on each start
    (about 30 ms for ~40 commands); the others are not needed to run one."""
    import copy

    from lattice.cli.quick import command_start

    i = command_start(args)
    if i >= len(args):
        return app
    name = args[i]
    commands = [c for c in app.registered_commands if (c.name or typer.main.get_command_name(c.callback.__name__)) == name]
    groups = [t for t in app.registered_groups if t.name == name or t.typer_instance.info.name == name]
    if not commands and not groups:
        return app  # unknown: the full app names the closest commands
    lean = copy.copy(app)
    lean.registered_commands, lean.registered_groups = commands, groups
    return lean
