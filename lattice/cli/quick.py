"""`status`, `ls`, `add`, `show`, `cat`, `hooks check` and `switch`: the
commands scripts, editors and pre-commit hooks call in loops, and the one
whose speed is measured against git's, runnable without typer (see
lattice.cli.entry).

The typer definitions in repo_cmds and history_cmds (help, completion, man
pages) call the same functions below. `parse` accepts only the plain forms: the global
options, then the command and its own flags. Anything else (`--help`, a
typo, `-qC DIR`) returns None and goes through typer, which parses and
reports it exactly as for every other command.
"""

from __future__ import annotations

from collections.abc import Callable

from lattice.cli.common import apply_globals, echo, emit_json, human_size, repo_from_ctx, say

GLOBAL_FLAGS = {"--debug": "debug", "-q": "quiet", "--quiet": "quiet", "--no-color": "no_color"}


def command_start(args: list[str]) -> int:
    """Where the command name is in `args`: past the global flags and `-C DIR`."""
    i = 0
    while i < len(args) and (args[i] in GLOBAL_FLAGS or args[i] == "-C"):
        i += 2 if args[i] == "-C" else 1
    return i


def status(json: bool = False, porcelain: bool = False) -> None:
    """Plain lines name paths from the current folder, as `git status` does;
    --json and --porcelain name assets from the project root."""
    from lattice.paths import here
    from lattice.status import PORCELAIN, status as do_status

    repo = repo_from_ctx(reading=True)
    entries = do_status(repo)
    repo.index.close()
    if json:
        emit_json([e._asdict() for e in entries])
    elif porcelain:
        for e in entries:
            echo(f"{PORCELAIN[e.state]} {e.path}")
    else:
        for e in entries:
            echo(f"{e.state + ':':<10} {here(e.path)}")
        _explain_links(repo, [e.path for e in entries if e.state == "modified"])
        _explain_gone(repo, [e.path for e in entries if e.state == "missing"])
        _mention_queued_work(repo)


def _explain_links(repo, modified: list[str]) -> None:
    """A link out of the project reads as modified whatever it holds: say
    why, with the hint switch and checkout give when they refuse it."""
    from lattice.status import link_out

    folders: dict[str, str] = {}  # each folder resolved once: thousands may be modified
    for name in modified:
        refused = link_out(repo, name, folders)
        if refused is not None:
            say(f"hint: {refused.hint}", err=True)


def _explain_gone(repo, missing: list[str]) -> None:
    """A missing output whose bytes nothing can bring back: checkout refuses
    it, so say what works instead (its hint)."""
    from lattice.paths import here
    from lattice.status import cannot_bring_back

    for name, hint in cannot_bring_back(repo, missing):
        say(f"hint: {here(name)}: {hint}", err=True)


def _mention_queued_work(repo) -> None:
    """Work left to workers (`--detach`) is not in the manifest yet: say so."""
    if not (repo.dir / "queue.db").exists():
        return
    from lattice.errors import LatticeError
    from lattice.queue import repo_queue

    try:
        with repo_queue(repo.dir, repo.config, reading=True) as queue:
            counts = queue.counts()
    except LatticeError:  # a courtesy line: a broken config.toml is reported by the commands that use it
        return
    active = counts.get("queued", 0) + counts.get("running", 0)
    if active:
        echo(f"({active} job(s) queued or running; `lattice queue ls` shows them, `lattice worker` runs them)", err=True)


def ls(json: bool = False, prefix: str | None = None) -> None:
    """Plain lines name paths from the current folder, as `git ls-files`
    does; --json names assets from the project root."""
    import os

    from lattice.cli.common import cwd
    from lattice.paths import here, name_for

    repo = repo_from_ctx(reading=True)
    repo.check_manifest()
    if prefix is not None and os.path.normpath(os.path.join(cwd(), prefix)) == str(repo.root):
        prefix = None  # `.` at the root: everything
    rows = list(repo.index.rows(name_for(repo.root, prefix, cwd(), stored=True) if prefix is not None else None))
    repo.index.close()
    if json:
        emit_json(
            [
                {
                    "path": r.path, "kind": r.kind, "version": r.versions, "pinned": r.pinned,
                    "object": r.object, "size": r.size, "generator": r.generator, "tags": r.tag_list,
                }
                for r in rows
            ]
        )
        return
    for r in rows:
        source = r.generator or "imported"
        pin = f" (pinned v{r.pinned})" if r.pinned else ""
        echo(f"{here(r.path)}  v{r.versions}{pin}  {r.kind}  {human_size(r.size)}  {source}")


def add(paths: list[str], tags: list[str], json: bool = False) -> None:
    from lattice.add import add as do_add
    from lattice.cli.common import cwd, progress_bar

    repo = repo_from_ctx()
    with progress_bar("hashing") as bar:
        task = bar.add_task("adding", total=None)
        results = do_add(repo, paths, tags=tags, cwd=cwd(), progress=lambda i, n, name: bar.update(task, completed=i, total=n))
    if json:
        emit_json(results)
        return
    for r in results:
        if r.status == "unchanged":
            say(f"unchanged  {r.path} (v{r.version})")
        else:
            say(f"{r.status:<10} {r.path} v{r.version} {r.object[:12]} {human_size(r.size)}")


def show(spec: str, json: bool = False) -> None:
    import msgspec

    from lattice.cli.common import cwd
    from lattice.paths import asset_spec

    repo = repo_from_ctx(reading=True)
    name, number = asset_spec(repo, spec, cwd())
    record = repo.record(name)
    selected = [record.version(number)] if number else record.versions
    if json:
        data = msgspec.to_builtins(record)
        data["versions"] = [dict(msgspec.to_builtins(v), stored=repo.objects.stored_size(v.object), present=repo.objects.has(v.object)) for v in selected]
        data["current"] = len(record.versions)
        emit_json(data)
        return
    echo(f"asset:    {record.path}")
    echo(f"kind:     {record.kind}")
    if record.tags:
        echo(f"tags:     {', '.join(record.tags)}")
    if record.pinned:
        echo(f"pinned:   v{record.pinned}")
    for v in selected:
        stored = repo.objects.stored_size(v.object)
        where = f"stored {human_size(stored)}" if stored is not None else "not in store"
        echo(f"\nv{v.number}  {v.change}  {v.time}  {v.author}" + ("  (current)" if v.number == len(record.versions) else ""))
        echo(f"  object:  {v.object}")
        echo(f"  size:    {human_size(v.size)} ({where})")
        if v.media:
            echo("  media:   " + ", ".join(f"{k}={val}" for k, val in v.media.items()))
        if v.recipe:
            r = v.recipe
            echo(f"  recipe:  {r.generator} v{r.generator_version} seed={r.seed}" + ("" if r.deterministic else " (non-deterministic)"))
            if r.prompt:
                echo(f"  prompt:  {r.prompt}")
            if r.params:
                echo("  params:  " + ", ".join(f"{k}={val}" for k, val in r.params.items()))
            if r.inputs:
                echo("  inputs:  " + ", ".join(r.inputs))
        if v.note:
            echo(f"  note:    {v.note}")


def cat(spec: str, no_regen: bool = False) -> None:
    import sys

    from lattice.cli.common import cwd, output_refused
    from lattice.paths import asset_spec
    from lattice.worktree import cat as do_cat

    repo = repo_from_ctx(reading=True)
    name, number = asset_spec(repo, spec, cwd())
    try:
        do_cat(repo, name, number, sys.stdout.buffer, regen=not no_regen, notify=lambda m: echo(m, err=True))
        sys.stdout.buffer.flush()
    except OSError as e:
        # No file named, and room where the repository is: it was our output.
        from lattice.fsutil import disk_full

        if e.filename is None and not disk_full(repo.dir):
            raise output_refused(e) or e
        raise


def hooks_check(json: bool = False) -> int:
    """Exit code 1 when something is not up to date (git's pre-commit hook)."""
    from lattice.hooks import check
    from lattice.paths import here

    found = check(repo_from_ctx(reading=True))
    if json:
        emit_json(found)
    else:
        for f in found:
            # history's files are named as git names them, from the top of its working tree
            path = f.path if f.problem == "history-not-staged" else here(f.path)
            echo(f"{f.problem}: {path}: {f.fix}", err=True)
        if found:
            echo(f"lattice: {len(found)} problem(s) found; commit refused", err=True)
    return 1 if found else 0


def switch(name: str, force: bool = False, json: bool = False) -> None:
    from lattice.switch import switch as do_switch

    s = do_switch(repo_from_ctx(), name, force=force)
    if json:
        return emit_json(s)
    if s.previous == s.branch:
        return say(f"already on {s.branch}")
    differ = "1 asset differs" if s.changed == 1 else f"{s.changed} assets differ"
    say(f"switched to {s.branch} ({differ} from {s.previous})")
    worktree_lines(s.worktree)


def worktree_lines(wt) -> None:
    """What a switch or merge did not do to the working tree, on stderr."""
    for p in wt.kept:
        echo(f"kept (unrecorded edits): {p}", err=True)
    if wt.absent:
        n = len(wt.absent)
        echo(f"{n} output{' is' if n == 1 else 's are'} not in the store: `lattice render` re-makes {'it' if n == 1 else 'them'}", err=True)
        for p in wt.absent[:10]:
            echo(f"  {p}", err=True)


# command (a sub-command after a space) → (its flags, its options that take a
# value (a spelling → the option's name), the fewest and most arguments, how
# to run it with the flags given, each valued option's values, and the
# arguments; it returns the exit code, None for 0)
TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (3 ms of every start)
if TYPE_CHECKING:  # subscripting Callable costs 1 ms of every command's start
    Action = Callable[[set[str], dict[str, list[str]], list[str]], "int | None"]
COMMANDS: dict[str, tuple[set[str], dict[str, str], int, float, Action]] = {
    "hooks check": ({"--json"}, {}, 0, 0, lambda flags, _, __: hooks_check("--json" in flags)),
    "status": ({"--json", "--porcelain"}, {}, 0, 0, lambda flags, _, __: status("--json" in flags, "--porcelain" in flags)),
    "ls": ({"--json"}, {}, 0, 1, lambda flags, _, args: ls("--json" in flags, args[0] if args else None)),
    "add": ({"--json"}, {"--tag": "--tag", "-t": "--tag"}, 1, float("inf"),
            lambda flags, values, args: add(args, values.get("--tag", []), "--json" in flags)),
    "switch": ({"--force", "--json"}, {}, 1, 1, lambda flags, _, args: switch(args[0], "--force" in flags, "--json" in flags)),
    "show": ({"--json"}, {}, 1, 1, lambda flags, _, args: show(args[0], "--json" in flags)),
    "cat": ({"--no-regen"}, {}, 1, 1, lambda flags, _, args: cat(args[0], "--no-regen" in flags)),
}

# Commands that only read, close what they open and start no thread: they
# may end without the interpreter's teardown (see lattice.cli.entry).
READING = {"status", "ls"}


def _version() -> int:
    import sys

    from lattice import __version__

    sys.stdout.write(f"lattice {__version__}\n")
    return 0


def parse(args: list[str]) -> Callable[[], int] | None:
    """A runnable for `args` when they are a plain use of a command in
    COMMANDS (or `--version` alone), else None."""
    if args == ["--version"]:  # what scripts ask to see that lattice is there
        return _version
    options: dict = {"directory": None, "debug": False, "quiet": False, "no_color": False}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        arg = args[i]
        if arg == "-C" and i + 1 < len(args) and args[i + 1] and not args[i + 1].startswith("-"):
            options["directory"] = args[i + 1]
            i += 2
        elif arg in GLOBAL_FLAGS:
            options[GLOBAL_FLAGS[arg]] = True
            i += 1
        else:
            return None
    if i < len(args) - 1 and f"{args[i]} {args[i + 1]}" in COMMANDS:
        name, i = f"{args[i]} {args[i + 1]}", i + 1
    elif i < len(args) and args[i] in COMMANDS:
        name = args[i]
    else:
        return None
    known, valued, least, most, action = COMMANDS[name]
    flags, values, positional = set(), {}, []
    rest = iter(args[i + 1 :])
    for arg in rest:
        option, eq, value = arg.partition("=")
        if arg in known:
            flags.add(arg)
        elif arg in GLOBAL_FLAGS:  # `lattice add -q FILE`, as typer's path takes it too
            options[GLOBAL_FLAGS[arg]] = True
        elif option in valued and (not eq or option.startswith("--")):  # click reads `-t=x` as "=x"
            if not eq:
                value = next(rest, None)
            if not value or value.startswith("-"):
                return None  # missing, or a dash-led value: typer says what it makes of it
            values.setdefault(valued[option], []).append(value)
        elif arg.startswith("-"):
            return None
        else:
            positional.append(arg)
    if not least <= len(positional) <= most:
        return None

    def command() -> int:
        apply_globals(**options)
        return action(flags, values, positional) or 0

    command.reading = name in READING  # type: ignore[attr-defined]
    return command
