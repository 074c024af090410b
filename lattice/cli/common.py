"""What every command shares: the global options, finding the repository,
and printing text, JSON and errors. Heavy modules (rich) load only when a
command actually draws something."""

from __future__ import annotations

import os
import sys
from pathlib import Path


class Options:
    """The global options of one run. A plain class, not a dataclass: the
    dataclasses module (and the inspect module it loads) costs every
    command 8 ms of start-up."""

    __slots__ = ("cwd", "debug", "quiet", "color")

    def __init__(self) -> None:
        self.cwd: Path | None = None  # -C DIR; None: the process's directory, read when first needed
        self.debug = False
        self.quiet = False
        self.color = True


OPTIONS = Options()

# The most parallel jobs or worker slots (-j, --slots). Each is a thread and,
# while it runs, a generator process: past a few hundred no machine lattice
# runs on gains anything, and `-j 100000000` (a typo) would allocate until
# memory ran out. A fixed number, not a multiple of the CPU count, so the
# limit is the same on every machine, as are the help text and man pages.
MAX_JOBS = 256


def a_number(ctx, param, value):
    """A float option's callback: click's ranges let nan through (it compares
    false with every bound), and time.sleep(nan) then fails."""
    if value is not None and value != value:
        from typer import BadParameter

        describe = getattr(param.type, "_describe_range", None)  # click's own words for the range
        raise BadParameter(f"{value} is not a number" + (f" in the range {describe()}" if describe else "") + ".")
    return value


def reset_options() -> None:
    """Fresh global options for one run of a command: a program calling
    lattice.cli.entry.run twice must not carry the first call's -C over,
    nor the folder its output named paths from."""
    OPTIONS.__init__()
    name_paths_from_root()


def name_paths_from_root() -> None:
    """Human output names paths from the project root again (the library's
    way), where an earlier run in this process set another folder."""
    paths = sys.modules.get("lattice.paths")  # not imported: nothing set, and `--version` need not load it
    if paths is not None:
        paths.show_paths_from("")


def apply_globals(directory: str | Path | None, debug: bool, quiet: bool, no_color: bool) -> None:
    """Record the global options (-C, --debug, --quiet, --no-color)."""
    if directory is not None:
        # Resolved as chdir would: `-C ..` and symlinks name the real folder.
        target = Path(os.path.realpath(os.path.join(_process_cwd(), directory)))
        if not target.is_dir():
            from lattice.errors import UsageError

            raise UsageError(f"-C {directory}: not a directory", hint="name an existing folder: the project or one inside it")
        OPTIONS.cwd = target
    OPTIONS.debug = debug
    OPTIONS.quiet = quiet
    OPTIONS.color = not no_color


def repo_from_ctx(reading: bool = False):
    """The repository around the working directory (`-C DIR` applied).
    `reading`: the command only reads it, so it works where `.lattice/` may
    not be written (read-only media; see lattice.repo.Repository).
    Human-facing output then names paths from that folder (lattice.paths.here)."""
    from lattice.paths import show_paths_from
    from lattice.repo import Repository

    repo = Repository.find(cwd(), reading=reading)
    show_paths_from(cwd().relative_to(repo.root).as_posix())  # find() walks up from cwd(): always inside
    return repo


def assets_named(repo, paths: list[str]) -> list[str]:
    """Asset names for paths typed by the user: an asset, or a folder for
    every asset under it (`.` at the root: all), as git takes `checkout DIR`.
    A folder with no assets under it is refused; a path that is neither stays
    as typed, for the caller's unknown-asset error with its closest names."""
    from lattice.paths import name_for

    names: dict[str, None] = {}
    for p in paths:
        if os.path.normpath(os.path.join(cwd(), p)) == str(repo.root):
            names.update(dict.fromkeys(repo.index.names()))
            continue
        name = name_for(repo.root, p, cwd(), stored=True).rstrip("/")
        under = [r.path for r in repo.index.rows(name)] if repo.index.get(name) is None else [name]
        if not under and os.path.isdir(os.path.join(cwd(), p)):
            from lattice.errors import UnknownAsset
            from lattice.paths import shown

            raise UnknownAsset(f"no assets under {shown(name)}/", hint="`lattice ls` lists the assets")
        names.update(dict.fromkeys(under or [name]))
    return list(names)


def cwd() -> Path:
    """Where the command runs: -C DIR, else the process's directory."""
    if OPTIONS.cwd is None:
        OPTIONS.cwd = _process_cwd()
    return OPTIONS.cwd


def _process_cwd() -> Path:
    try:
        return Path.cwd()
    except FileNotFoundError:
        from lattice.errors import UsageError

        raise UsageError("the current directory no longer exists", hint="cd to an existing directory, or pass -C DIR") from None


def echo(text: str = "", err: bool = False) -> None:
    """Data a command was asked for (a listing, a report): printed even with
    --quiet, which promises "only errors and requested data"."""
    stream = sys.stderr if err else sys.stdout
    try:
        stream.write(text + "\n")
    except OSError as e:
        raise output_refused(e, err) or e


def output_refused(e: OSError, err: bool = False):
    """WriteRefused naming standard output (or error) when writing to it
    failed for want of room (`lattice ls > /dev/full`): else the error names
    no file, and the project would be blamed. None for other errors (a
    reader gone away is BrokenPipeError, handled where it is caught)."""
    import errno

    from lattice.errors import WriteRefused

    if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO):
        return None
    return WriteRefused(f"standard {'error' if err else 'output'}: {os.strerror(e.errno).lower()}",
                        hint="send it where it can be written (another file or disk), then run the command again")


def say(text: str = "", err: bool = False) -> None:
    """What a command did or is doing ("added …", "switched to …"):
    suppressed by --quiet."""
    if not OPTIONS.quiet:
        echo(text, err)


def note_pinned(path: str, pinned: int, current: int | None = None) -> None:
    """After a command made a new current version of a pinned asset (restore,
    gen, regen): the working file has the new version, while dependents and
    exports stay on the pin until it is removed."""
    from lattice.errors import command
    from lattice.paths import shown

    now = f"has v{current}" if current else "will have the new version"
    echo(f"note: {shown(path)} is pinned at v{pinned}: the working file {now}, but dependents and exports keep using v{pinned}"
         f" ({command('lattice unpin', path)} makes them follow the current version)", err=True)


def emit_json(obj: object) -> None:
    """One JSON document on stdout (dataclasses and msgspec structs welcome)."""
    import msgspec

    try:
        sys.stdout.buffer.write(msgspec.json.encode(obj, enc_hook=_enc) + b"\n")
        sys.stdout.flush()
    except OSError as e:
        raise output_refused(e) or e


def _enc(obj: object) -> object:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise NotImplementedError(type(obj))


def color_enabled(stream=None) -> bool:
    stream = stream or sys.stdout
    return OPTIONS.color and not os.environ.get("NO_COLOR") and stream.isatty()  # no-color.org: set and not empty


def console(stderr: bool = False):
    """A rich Console that honours NO_COLOR, --no-color and non-terminals."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    enabled = color_enabled(stream)
    return Console(
        file=stream,
        no_color=not enabled,
        color_system="auto" if enabled else None,
        highlight=False,
        quiet=OPTIONS.quiet and not stderr,
    )


def progress_bar(description: str, total: int | None = None):
    """A rich progress bar on stderr, or a silent stand-in when stderr is not
    a terminal (CI logs get no animation)."""
    if OPTIONS.quiet or not sys.stderr.isatty():
        return _NoProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console(stderr=True),
        transient=True,
    )


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        return None


def human_size(n: int | float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
