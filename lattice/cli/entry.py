"""Where the `lattice` command starts, and the one place errors become
`error: …` / `hint: …` lines and exit codes.

Building the typer app costs about 0.1 s, a third of a no-op `status` on
10,000 assets; the commands scripts and hooks call in loops (lattice.cli.quick)
run without it when their arguments are plain. Everything else, and every
unusual argument, goes through typer.
"""

from __future__ import annotations

import gc
import os
import sys

from lattice.cli.common import OPTIONS, cwd, name_paths_from_root, output_refused, reset_options


def _warning_to_stderr(message: str) -> None:
    """Library warnings (e.g. history falling behind) as `warning: …` lines."""
    sys.stderr.write(f"warning: {message}\n")  # sys.stderr as it is now


def _report(message: str, hint: str | None, code: int) -> int:
    """The one place errors are printed: `error:` and `hint:` lines (a traceback with --debug)."""
    if OPTIONS.debug:
        import traceback

        traceback.print_exc()
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")
    return code


def _sanitize_std_fds() -> None:
    """Make stdout and stderr blocking; put /dev/null where stdin, stdout or stderr is closed (`lattice status
    >&-`), as git does: else the next file opened takes descriptor 1 and
    output, ours or ffmpeg's, lands in it."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            if fd and not os.get_blocking(fd):
                # Left non-blocking by whoever made it (a terminal a program
                # left so, a parent's pipe): Python's buffered writer then
                # drops what a full pipe will not take, and exits 0.
                os.set_blocking(fd, True)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))


_TERMINATED = False


def _terminate_like_ctrl_c() -> None:
    """SIGTERM (`kill`, a CI timeout, a service manager) takes Ctrl-C's way
    out: jobs cancelled, generator processes killed, temp files removed."""
    import signal

    def terminate(signum, frame):
        global _TERMINATED
        _TERMINATED = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)


def _discard_output() -> None:
    """What is left of our output goes to /dev/null, so that the exit's own
    flush fails no second time."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _reader_gone() -> int:
    """The reader of our output went away (`lattice cat x | head`): no
    message, and the exit status of a Unix tool killed by SIGPIPE (141, as
    git and cat give), never 0: the output was cut, and a check cut short
    (`render --check | head` under pipefail) must not pass. Later writes
    (the final flush) go nowhere."""
    _discard_output()
    return 141  # 128 + SIGPIPE


def run(argv: list[str] | None = None) -> int:
    """Entry point of the `lattice` script."""
    from lattice import errors
    from lattice.cli import quick
    from lattice.errors import LatticeError

    args = list(sys.argv[1:] if argv is None else argv)
    _sanitize_std_fds()
    if argv is None:  # the real command, not a test calling run([...])
        _terminate_like_ctrl_c()
    reset_options()
    OPTIONS.debug = "--debug" in args
    errors.warning_sink = _warning_to_stderr
    command = None if "_LATTICE_COMPLETE" in os.environ else quick.parse(args)
    reading = getattr(command, "reading", False)
    if reading and argv is None:
        # A short reading command makes no garbage cycles worth a pass of
        # the collector over its 10,000 index rows (2 ms of `status`).
        gc.disable()
    try:
        code = command() if command is not None else _run_typer(args)
    except LatticeError as e:
        code = _report(e.message, e.hint, e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("terminated\n" if _TERMINATED else "interrupted\n")
        code = 143 if _TERMINATED else 130
    except BrokenPipeError:
        code = _reader_gone()
    except OSError as e:
        refused = errors.refused_write(e, where=cwd())  # permission denied, read-only filesystem, disk full: 13
        if refused is not None:
            code = _report(refused.message, refused.hint, refused.exit_code)
        else:
            where = f"{e.filename}: " if e.filename else ""
            code = _report(f"{where}{e.strerror or e}", "check the path and the disk, then run the command again", 1)
    except Exception as e:
        module = type(e).__module__ or ""
        if module == "sqlite3":
            from lattice.sqlite import failing_database, storage_failure

            refused = (getattr(e, "sqlite_errorname", "") or "").startswith(("SQLITE_READONLY", "SQLITE_FULL", "SQLITE_IOERR"))
            full = storage_failure(e, failing_database(cwd()) if refused else None)
            if full is not None:
                code = _report(full.message, full.hint, full.exit_code)
            else:
                code = _report(f"a repository database is damaged ({e})", "`lattice fsck` says which; `lattice fsck --repair` rebuilds the index", 5)
        elif "pygit2" in module:
            code = _report(f"the history repository is damaged ({e})", "`lattice fsck` checks it; `lattice fsck --repair` repairs it", 11)
        else:
            code = _report(f"internal error: {type(e).__name__}: {e}", "this is a bug in lattice; run again with --debug and report the traceback", 1)
    if argv is not None:
        name_paths_from_root()  # for the library calls of the program that called run([...])
        return code
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left before our last bytes
        code = _reader_gone()
    except OSError as e:  # our last bytes found no room (`> /dev/full`)
        refused = output_refused(e)
        code = _report(refused.message, refused.hint, refused.exit_code) if refused else _report(str(e), None, 1)
        _discard_output()
    if reading:
        # Its files and databases are closed and its children reaped: skip
        # the interpreter's teardown, which frees every object one at a time
        # (10 ms of an 80 ms `status` on 10,000 assets).
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _command_path(root, args: list[str]) -> str:
    """`lattice queue show`: the command `args` name, found by walking the
    click groups past the global options."""
    from lattice.cli.quick import command_start

    path, command, i = ["lattice"], root, command_start(args)
    while i < len(args) and args[i] in (getattr(command, "commands", None) or {}):
        command = command.commands[args[i]]
        path.append(args[i])
        i += 1
    return " ".join(path)


def _run_typer(args: list[str]) -> int:
    """Parse and run `args` with the full typer app; usage errors are
    printed by click, in its words, with exit code 2."""
    import typer
    from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer 0.28 vendors click

    from lattice.cli.main import command_for

    if "_LATTICE_COMPLETE" in os.environ:
        # add_completion=False leaves typer's shell classes unregistered; the
        # completion scripts in completions/ call back with this variable.
        from typer._completion_classes import completion_init

        completion_init()
    root = command_for(args)
    try:
        # Outside standalone mode, click returns a typer.Exit's code instead of raising.
        rv = root.main(args=args, prog_name="lattice", standalone_mode=False)
    except typer.Exit as e:
        return e.exit_code
    except SystemExit:
        if type(sys.stdout).__name__ == "PacifyFlushWrapper":  # click's own EPIPE exit, always 1
            sys.stdout = sys.stdout.wrapped
            return _reader_gone()
        raise
    except NoArgsIsHelpError as e:
        e.show()
        return 2
    except ClickException as e:
        # Click's usage block, in the one form every error takes here.
        # Click's parser leaves ctx unset for an option missing its value.
        where = getattr(getattr(e, "ctx", None), "command_path", None) or _command_path(root, args)
        return _report(e.format_message(), f"`{where} -h` shows what it takes", e.exit_code)
    except typer.Abort:
        raise KeyboardInterrupt from None
    code = rv if isinstance(rv, int) else 0
    # Typer turns Ctrl-C inside a command into Exit(130); `worker` and
    # `watch` exit 130 or 143 themselves after stopping cleanly.
    if code in (130, 143):
        terminated = _TERMINATED or code == 143
        sys.stderr.write("terminated\n" if terminated else "interrupted\n")
        code = 143 if terminated else 130
    return code
