"""Commands over versions and history: log, diff, restore, pin, unpin,
branch, switch, tag, merge."""

from __future__ import annotations

from typing import Optional

import typer

from lattice.cli.common import cwd, echo, emit_json, note_pinned, repo_from_ctx, say

JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")


def _spec(repo, spec: str) -> tuple[str, int | None]:
    from lattice.paths import asset_spec

    return asset_spec(repo, spec, cwd())


def _versioned(repo, spec: str, verb: str) -> tuple[str, int]:
    from lattice.errors import InvalidInput, command

    name, number = _spec(repo, spec)
    if number is None:
        raise InvalidInput(f"{verb} needs a version: {spec}@vN", hint=f"{command('lattice log', name)} lists its versions")
    return name, number


def log(
    path: Optional[str] = typer.Argument(None, metavar="PATH[@vN]",
                                         help="An asset: list its versions instead of the project's history; PATH@vN lists vN and the versions before it."),
    n: Optional[int] = typer.Option(None, "-n", "--max-count", help="Show at most N entries.", min=1),
    json: bool = JSON,
) -> None:
    """Show the project's history (commits), or one asset's versions, newest first.

    As `git log REV` starts at REV, `lattice log PATH@vN` starts at vN; a
    version the asset does not have is refused (exit 4)."""
    repo = repo_from_ctx(reading=True)
    if path is None:
        from lattice.history import log as history_log

        commits = history_log(repo, n)
        _say_history_behind(repo)
        if json:
            emit_json(commits)
        for c in [] if json else commits:
            echo(f"{c.commit[:12]}  {c.date}  {c.author.split(' <')[0]}  {c.message.splitlines()[0]}")
        return
    from lattice.errors import UnknownAsset
    from lattice.versions import asset_log

    name, number = _spec(repo, path)
    try:
        versions = asset_log(repo, name, n, number)
    except UnknownAsset as e:
        raise _ref_not_asset(repo, path) or e
    if json:
        emit_json(versions)
        return
    for v in versions:
        marks = ", ".join(m for m, on in (("current", v.current), ("pinned", v.pinned)) if on)
        state = "present" if v.present else "evicted"
        echo(f"v{v.number:<4} {v.change:<11} {v.time}  {v.author}  {v.object[:12]} {state}" + (f" ({marks})" if marks else ""))
        echo(f"      {v.summary}" + (f"  [from v{v.restored_from}]" if v.restored_from else ""))


def _ref_not_asset(repo, path: str):
    """`lattice log feat`, where feat is a branch or tag and no asset: say
    what log takes, and how to see that branch."""
    from lattice.branches import list_branches, list_tags
    from lattice.errors import UnknownAsset, command

    branches, current = list_branches(repo)
    kind = "branch" if path in branches else "tag" if path in list_tags(repo) else None
    if kind is None:
        return None
    if path == current:  # nothing to compare it with, nothing to switch to
        return UnknownAsset(f"no asset named {path}: {path} is the current branch, and `lattice log PATH` lists an asset's versions",
                            hint="`lattice log` shows its history")
    hint = f"{command('lattice diff', current, path, paths=False)} compares it with {current}"
    if kind == "branch":
        hint += f"; {command('lattice switch', path, paths=False)}, then `lattice log`, shows its history"
    return UnknownAsset(f"no asset named {path}: {path} is a {kind}, and `lattice log PATH` lists an asset's versions", hint=hint)


def _say_history_behind(repo) -> None:
    """On a read-only `.lattice`, history lacks the commit a writable one
    would make first (manifest edits made outside lattice, a killed change):
    say so, since the log cannot show it."""
    from lattice import history
    from lattice.errors import warn

    if not repo.read_only:
        return
    repo.index  # synced with the manifest: what it finds edited is what history lacks
    behind = repo.history_behind
    if behind is True:
        what = "a change a killed command recorded"
    else:
        edits = history.differing(repo, sorted(behind)) if behind else []
        if not edits:
            return
        what = f"manifest edits made outside lattice ({', '.join(edits[:3])}{' …' if len(edits) > 3 else ''})"
    warn(f"history does not have {what} yet: {repo.dir} is read-only; the next lattice command where it may be written commits it")


def diff(
    old: str = typer.Argument(..., metavar="A", help="PATH@vN, or a branch, tag or commit."),
    new: str = typer.Argument(..., metavar="B", help="PATH@vN (or @vN for the same asset), or a branch, tag or commit."),
    json: bool = JSON,
) -> None:
    """Compare two versions' recipes (PATH@v1 PATH@v2), or list the assets
    added, removed and changed between two branches, tags or commits."""
    repo = repo_from_ctx(reading=True)
    if "@" in old or "@" in new:
        _diff_versions(repo, old, new, json)
        return
    from lattice.branches import diff_refs

    d = diff_refs(repo, old, new)
    if json:
        emit_json(d)
        return
    for p in d.added:
        echo(f"A  {p}")
    for p in d.removed:
        echo(f"D  {p}")
    for c in d.changed:
        echo(f"M  {c['path']} (v{c['old_versions']} -> v{c['new_versions']})")
    if d.config_changed:
        echo("M  .lattice/config.toml")


def _diff_versions(repo, old: str, new: str, json: bool) -> None:
    from lattice.versions import diff_versions

    from lattice.paths import split_version

    for ref, version in ((old, new), (new, old)):
        if "@" not in ref:
            _refuse_state_and_version(repo, ref, version, old, new)
    a_name, a_num = _spec(repo, old)
    # `@vN`: the same asset, whose name is already resolved (from any folder).
    b_name, b_num = split_version(a_name + new) if new.startswith("@") else _spec(repo, new)
    if new.startswith("@") and b_num is None and repo.index.get(b_name) is None:  # `@`, `@latest`
        from lattice.errors import InvalidInput, command
        from lattice.paths import shown

        raise InvalidInput(f"{shown(new)}: {shown(new[1:])} is not a version" if new[1:] else f"{shown(new)}: the version is missing after the @",
                           hint=f"versions are written @v1, @v2, …; {command('lattice log', a_name)} lists them")
    a = repo.record(a_name).version(a_num)
    b = repo.record(b_name).version(b_num)
    changes = diff_versions(a, b)
    if json:
        emit_json({"old": f"{a_name}@v{a.number}", "new": f"{b_name}@v{b.number}", "changes": changes})
        return
    echo(f"--- {a_name}@v{a.number}\n+++ {b_name}@v{b.number}")
    for c in changes:
        echo(f"{c.field}: {_short(c.old)} -> {_short(c.new)}")
    if not changes:
        echo("(same recipe and output)")


def _refuse_state_and_version(repo, ref: str, version: str, old: str, new: str) -> None:
    """`lattice diff main a.png@v1`: a state of the project (a branch, tag
    or commit) and a version of one asset are not two of a kind. A name
    that is an asset is that asset (its current version)."""
    from lattice.branches import names_a_state
    from lattice.errors import InvalidInput, LatticeError, command
    from lattice.paths import here

    if repo.index.get(_spec(repo, ref)[0]) is not None or not names_a_state(repo, ref):
        return
    try:  # the asset's own name: `me@home.png` is no version of `me`
        asset = here(_spec(repo, version)[0])
    except LatticeError:
        asset = version.rpartition("@")[0]  # as typed
    asset = asset or "PATH"
    states = (ref, "HEAD") if ref != "HEAD" else ("HEAD~1", "HEAD")
    from lattice.paths import shown

    raise InvalidInput(f"cannot compare {shown(old)} with {shown(new)}: {shown(ref)} is a branch, tag or commit, {shown(version)} a version of an asset",
                       hint=f"compare two versions with {command('lattice diff', f'{asset}@v1', f'{asset}@v2', paths=False)}, "
                            f"or two states of the project with {command('lattice diff', *states, paths=False)}")


def _short(value) -> str:
    if isinstance(value, str) and len(value) == 64:
        return value[:12]  # an object id
    return repr(value) if isinstance(value, str) else str(value)


def restore(
    spec: str = typer.Argument(..., metavar="PATH@vN", help="The version to make current again."),
    force: bool = typer.Option(False, "--force", help="Overwrite unrecorded edits of the working file."),
    json: bool = JSON,
) -> None:
    """Make an old version current by recording it as a new version (history is
    never rewritten). Re-renders the output if it was evicted."""
    from lattice.versions import restore as do_restore

    repo = repo_from_ctx()
    name, number = _versioned(repo, spec, "restore")
    r = do_restore(repo, name, number, force=force)
    if json:
        emit_json(r)
        return
    how = " (re-rendered)" if r.rendered else ""
    say(f"restored {r.path} v{r.restored_from} as v{r.version} {r.object[:12]}{how}")
    if r.pinned:
        note_pinned(r.path, r.pinned, r.version)
    if r.moved_inputs:
        _note_moved_inputs(r)


def _note_moved_inputs(r) -> None:
    """A restored output made from inputs that have moved on is stale: the
    next render makes it again from them, unless they are restored too."""
    from lattice.errors import command
    from lattice.paths import shown

    read = ", ".join(f"{shown(i)} v{was}" if was else shown(i) for i, was, _ in r.moved_inputs)
    now = ", ".join(f"{shown(i)} is at v{at}" for i, _, at in r.moved_inputs)
    back = [f"{i}@v{was}" for i, was, _ in r.moved_inputs if was]
    again = f"; {command('lattice restore', back[0])} brings {'that input' if len(back) == 1 else 'the first'} back too" if back else ""
    echo(f"note: {shown(r.path)} v{r.version} is made from {read}, and {now}: it is stale, and `lattice render` "
         f"makes it again from the current input{'s' if len(r.moved_inputs) > 1 else ''}{again}", err=True)


def pin(spec: str = typer.Argument(..., metavar="PATH@vN", help="The version dependents and exports should use."), json: bool = JSON) -> None:
    """Pin an asset at a version: dependents and exports use it while new versions are added."""
    from lattice.versions import pin as do_pin

    repo = repo_from_ctx()
    name, number = _versioned(repo, spec, "pin")
    before, _ = do_pin(repo, name, number)
    if json:
        emit_json({"path": name, "pinned": number, "was": before})
    else:
        say(f"pinned {name} at v{number}" + (f" (was v{before})" if before and before != number else ""))


def unpin(path: str = typer.Argument(..., help="Asset."), json: bool = JSON) -> None:
    """Remove an asset's pin: dependents follow its current version again."""
    from lattice.versions import pin as do_pin

    repo = repo_from_ctx()
    name, _ = _spec(repo, path)
    before, _ = do_pin(repo, name, None)
    if json:
        emit_json({"path": name, "pinned": None, "was": before})
    else:
        say(f"unpinned {name}" + (f" (was v{before})" if before else " (it was not pinned)"))


def branch(
    name: Optional[str] = typer.Argument(None, help="Create a branch with this name (at the current commit unless START is given)."),
    start: Optional[str] = typer.Argument(None, metavar="START",
                                          help="Where the new branch starts: a branch, a tag, or a commit id (at least 7 hex digits; `lattice log` lists them)."),
    delete: Optional[str] = typer.Option(None, "--delete", "-d", metavar="NAME",
                                         help="Delete a branch; refused (exit 12) while it is the current branch or has commits that no other branch or tag has."),
    force_delete: Optional[str] = typer.Option(None, "-D", metavar="NAME", help="Delete a branch even with such commits (-d NAME --force)."),
    force: bool = typer.Option(False, "--force", "-f", help="With -d: delete the branch even with such commits."),
    json: bool = JSON,
) -> None:
    """List branches (current one marked *), create one, or delete one.

    `lattice branch NAME START` creates NAME at a branch, tag or commit
    without switching to it, as `git branch NAME START`; `lattice switch
    NAME` then checks it out.

    As in git, -d refuses a branch with commits that no other branch or tag
    has; -D deletes it anyway, and gc may then sweep what only they recorded."""
    from lattice import branches as b
    from lattice.errors import UsageError

    if delete is not None and force_delete is not None:
        raise UsageError("-d and -D exclude each other", hint="-D NAME is -d NAME --force")
    if force and delete is None and force_delete is None:
        raise UsageError("--force goes with -d NAME", hint="`lattice branch -d NAME --force`, or `lattice branch -D NAME`")
    _create_or_delete("branch", name, delete, "-d")
    _create_or_delete("branch", name, force_delete, "-D")
    if force_delete is not None:
        delete, force = force_delete, True
    repo = repo_from_ctx(reading=delete is None and name is None)
    # `is not None`: an empty name (a script's unset $NAME) is refused, not read as "list".
    if delete is not None:
        d = b.delete_branch(repo, delete, force=force)
        if json:
            return emit_json({"deleted": delete, "was": d.was, "unmerged": d.unmerged})
        lost = f"; {d.unmerged} commit{'s' if d.unmerged > 1 else ''} no other branch or tag has" if d.unmerged else ""
        return say(f"deleted branch {delete} (was {d.was[:12]}{lost})")
    if name is not None:
        c = b.create_branch(repo, name, start)
        if json:
            return emit_json(c)
        # Where it started, unless the id printed says it already.
        where = "" if start is None or c.at.startswith(start) else f" ({start})" if c.start_kind == "commit" else f" ({c.start_kind} {start})"
        return say(f"created branch {name} at {c.at[:12]}{where}")
    names, current = b.list_branches(repo)
    names = names or [current]  # a new repository's branch exists from its first commit on
    if json:
        return emit_json({"current": current, "branches": names})
    for n in names:
        echo(f"{'*' if n == current else ' '} {n}")


def _create_or_delete(kind: str, name: str | None, delete: str | None, flag: str) -> None:
    """UsageError (exit 2) for `lattice KIND -d X Y`: a name to create
    given with one to delete is refused, never ignored."""
    from lattice.errors import UsageError

    if delete is not None and name is not None:
        raise UsageError(f"a {kind} to create and {flag} exclude each other",
                         hint=f"`lattice {kind} {flag} NAME` deletes one, `lattice {kind} NAME` creates one")


def switch(
    name: str = typer.Argument(..., help="Branch to switch to."),
    force: bool = typer.Option(False, "--force", help="Switch even with unrecorded edits; edited files are left as they are."),
    json: bool = JSON,
) -> None:
    """Switch to a branch: update the manifest and the working tree to it."""
    from lattice.cli.quick import switch as run_switch

    run_switch(name, force, json)


def tag(
    name: Optional[str] = typer.Argument(None, help="Tag the current commit with this name."),
    delete: Optional[str] = typer.Option(None, "--delete", "-d", metavar="NAME",
                                         help="Delete a tag. History keeps its commits, and gc what they name; only its protection of the versions current there ends."),
    json: bool = JSON,
) -> None:
    """List tags, tag the current commit, or delete a tag (-d, as `git tag -d`)."""
    from lattice import branches as b

    _create_or_delete("tag", name, delete, "-d")
    repo = repo_from_ctx(reading=name is None and delete is None)
    if delete is not None:  # an empty name is refused, not read as "list"
        d = b.delete_tag(repo, delete)
        if json:
            return emit_json({"deleted": delete, "was": d.was, "unmerged": d.unmerged})
        say(f"deleted tag {delete} (was {d.was[:12]})")
        if d.unmerged:
            from lattice.errors import command

            commits = "its commit is" if d.unmerged == 1 else f"its {d.unmerged} commits are"
            echo(f"note: {commits} on no branch or tag now; history keeps {'it' if d.unmerged == 1 else 'them'}, "
                 f"and {command('lattice branch', 'NAME', d.was[:12], paths=False)} starts a branch there", err=True)
        return
    if name is not None:  # an empty name is refused, not read as "list"
        at = b.create_tag(repo, name)
        return emit_json({"created": name, "at": at}) if json else say(f"tagged {at[:12]} as {name}")
    names = b.list_tags(repo)
    if json:
        return emit_json(names)
    for n in names:
        echo(n)


def merge(
    name: str = typer.Argument(..., help="Branch (or tag, or commit) to merge into the current branch."),
    ours: bool = typer.Option(False, "--ours", help="Resolve conflicts by keeping this branch's version."),
    theirs: bool = typer.Option(False, "--theirs", help="Resolve conflicts by taking the other branch's version (ours stay in the version list)."),
    json: bool = JSON,
) -> None:
    """Merge per asset: changed on one side → taken; changed on both → conflict,
    left at ours (exit 1) until re-run with --ours or --theirs."""
    from lattice.merge import merge as do_merge
    from lattice.cli.quick import worktree_lines
    from lattice.errors import UsageError, command

    if ours and theirs:
        raise UsageError("--ours and --theirs exclude each other", hint="pick one side to resolve conflicts with")
    m = do_merge(repo_from_ctx(), name, "ours" if ours else "theirs" if theirs else None)
    if json:
        emit_json(m)
    elif m.status == "up-to-date":
        say("already up to date")
    else:
        head = f"{m.status}: {name} into {m.into}" + (f" ({m.commit[:12]})" if m.commit else "")
        say(head)
        for p in m.taken:
            say(f"  took     {p}")
        for p in m.resolved:
            say(f"  resolved {p}")
        for p in m.conflicts:
            echo(f"  CONFLICT {p} (left at ours)", err=True)
        worktree_lines(m.worktree)
        if m.conflicts:
            echo(f"hint: keep ours with {command('lattice merge', name, options='--ours', paths=False)} (pick a version first with `lattice restore PATH@vN`),"
                 f" or take theirs with {command('lattice merge', name, options='--theirs', paths=False)}", err=True)
    if m.conflicts:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    for fn in (log, diff, restore, pin, unpin, branch, switch, tag, merge):
        app.command()(fn)
