"""The `lattice` command: global options, sub-commands, and the one place
errors become `error: …` / `hint: …` lines and exit codes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from lattice import __version__
from lattice.cli.common import OPTIONS

HELP = """\
A git-like repository for AI-generated media.

Every asset is kept as its recipe (generator, params, seed, inputs), so its
file is a cache that can be deleted, re-made bit for bit, versioned and shared.

Start with `lattice init`, then `lattice add FILES` or `lattice gen PATH --model ID`.
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
    if directory is not None:
        target = (Path.cwd() / directory).absolute()
        if not target.is_dir():
            from lattice.errors import UsageError

            raise UsageError(f"-C {directory}: not a directory")
        OPTIONS.cwd = target
    OPTIONS.debug = debug
    OPTIONS.quiet = quiet
    OPTIONS.color = not no_color


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
    slots: Optional[int] = typer.Option(None, "--slots", help="CPU slots (default: one per core); one GPU slot per GPU found."),
    once: bool = typer.Option(False, "--once", help="Exit when no runnable job is left."),
    json: bool = typer.Option(False, "--json", help="Print the counts of what ran as JSON at the end."),
) -> None:
    """Run queued jobs until stopped. First Ctrl-C: finish running jobs; second: hand them back."""
    stats = worker_command(slots=slots, once=once)
    if json:
        from lattice.cli.common import emit_json

        emit_json(stats)


def _route_library_warnings() -> None:
    """The library never prints; its warnings (e.g. history falling behind)
    go to the `lattice` logger, shown here as `warning: …` on stderr."""
    import logging

    class ToStderr(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            sys.stderr.write(f"warning: {record.getMessage()}\n")  # sys.stderr as it is now

    logger = logging.getLogger("lattice")
    if not logger.handlers:
        logger.addHandler(ToStderr())
        logger.propagate = False


def _report(message: str, hint: str | None, code: int) -> int:
    """The one place errors are printed: `error:` and `hint:` lines (a traceback with --debug)."""
    if OPTIONS.debug:
        import traceback

        traceback.print_exc()
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")
    return code


def run(argv: list[str] | None = None) -> int:
    """Entry point of the `lattice` script."""
    from lattice.errors import LatticeError

    from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer 0.28 vendors click

    if "_LATTICE_COMPLETE" in os.environ:
        # add_completion=False leaves typer's shell classes unregistered; the
        # completion scripts in completions/ call back with this variable.
        from typer._completion_classes import completion_init

        completion_init()
    OPTIONS.debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    _route_library_warnings()
    try:
        # Outside standalone mode, click returns a typer.Exit's code instead of raising.
        rv = app(args=argv, prog_name="lattice", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
        if code == 130:  # typer turns Ctrl-C inside a command into Exit(130)
            sys.stderr.write("interrupted\n")
    except LatticeError as e:
        code = _report(e.message, e.hint, e.exit_code)
    except typer.Exit as e:
        code = e.exit_code
    except NoArgsIsHelpError as e:
        e.show()
        code = 2
    except ClickException as e:
        e.show()
        code = e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("interrupted\n")
        code = 130
    except BrokenPipeError:
        # The reader went away (`lattice cat x | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    except OSError as e:  # disk full, permission denied, read-only filesystem…
        where = f"{e.filename}: " if e.filename else ""
        code = _report(f"{where}{e.strerror or e}", "check free space and permissions, then run the command again", 1)
    except Exception as e:
        module = type(e).__module__ or ""
        if module == "sqlite3":
            code = _report(f"a repository database is damaged ({e})", "`lattice fsck` says which; `lattice fsck --repair` rebuilds the index", 5)
        elif "pygit2" in module:
            code = _report(f"the history repository is damaged ({e})", "`lattice fsck` checks it; `lattice fsck --repair` repairs it", 11)
        else:
            code = _report(f"internal error: {type(e).__name__}: {e}", "this is a bug in lattice; run again with --debug and report the traceback", 1)
    if argv is not None:
        return code
    sys.stdout.flush()
    sys.exit(code)
