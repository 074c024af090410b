"""Branches and tags (listing, creating, deleting, the checks on their names)
and the difference between two states of the project.

Refs live in `.lattice/history.git` like git's: HEAD is a symbolic ref to
`refs/heads/<branch>` (default `main`), tags are lightweight refs. Moving
between them is `lattice.switch`; bringing one into another, `lattice.merge`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lattice import history
from lattice.errors import Conflict, HistoryError, InvalidInput, closest, command
from lattice.paths import shown
from lattice.repo import Repository


# -- branches and tags ---------------------------------------------------------


def list_branches(repo: Repository) -> tuple[list[str], str]:
    """(branch names, current branch)."""
    if not history.exists(repo):
        return [], history.DEFAULT_BRANCH
    g = history.open_git(repo)
    return history.branches(g), history.current_branch(g)


@dataclass
class Created:
    created: str  # the branch
    at: str  # the commit it points at
    start: str | None = None  # START as given (None: the current commit)
    start_kind: str | None = None  # "branch", "tag" or "commit"


def create_branch(repo: Repository, name: str, start: str | None = None) -> Created:
    """Create branch `name` at `start` (a branch, a tag, a commit id or an
    unambiguous prefix of at least 7 of its hex digits, `HEAD~N`), or at
    the current commit; as `git branch NAME START`, it does not switch."""
    require_name(name, "branch", "name the branch to create, e.g. `lattice branch sketch`; `lattice branch` alone lists branches")
    if start is not None and not start:
        raise InvalidInput(f"the start of branch {shown(name)} is empty",
                           hint=f"name a branch, tag or commit to start it at, or leave it out: {command('lattice branch', name, paths=False)} starts it at the current commit")
    with repo.lock:
        repo.finish_interrupted()
        g = history.open_git(repo)
        history.check_ref_name(g, name, "heads")
        if name in history.branches(g):
            raise HistoryError(f"branch {shown(name)} already exists", hint=f"switch to it with {command('lattice switch', name, paths=False)}")
        _refuse_shadowing(g, name, "branch")
        if start is None:
            at, kind = history.ensure_head(repo, g), None
        else:
            at, kind = _start_commit(g, name, start)
        g.references.create(f"refs/heads/{name}", at.id)
        return Created(name, str(at.id), start, kind)


_SHORT_HEX = re.compile(r"[0-9a-f]{1,6}")


def _start_commit(g, name: str, start: str) -> tuple:
    """(the commit START names, what it is: "branch", "tag" or "commit")."""
    if g.head_is_unborn:
        raise InvalidInput(f"cannot start branch {shown(name)} at {shown(start)}: the history has no commit yet",
                           hint=f"the first change (`lattice add`, `lattice gen`) makes one; {command('lattice branch', name, paths=False)} "
                                "without a start branches from the state there is")
    kind = "branch" if start in history.branches(g) else "tag" if start in history.tags(g) else "commit"
    if kind == "commit" and _SHORT_HEX.fullmatch(start):
        raise InvalidInput(f"{shown(start)} is too short to name a commit: give at least 7 hex digits of its id",
                           hint="`lattice log` lists commits (12 digits of each id); `lattice branch` and `lattice tag` list the names to start at")
    return history.resolve(g, start), kind


@dataclass
class Deleted:
    branch: str
    was: str  # the commit it pointed at
    unmerged: int  # its commits no other branch or tag has (deleted with force)


def delete_branch(repo: Repository, name: str, force: bool = False) -> Deleted:
    """Delete a branch. As in git, refused unless every commit on it is on
    another branch or tag too, or `force`: a commit only it has is the only
    record of what it added, and gc sweeps content no ref records."""
    require_name(name, "branch", "`lattice branch` lists the branches")
    with repo.lock:
        repo.finish_interrupted()
        g = history.open_git(repo)
        require_branch(g, name)
        if name == history.current_branch(g):
            others = [b for b in history.branches(g) if b != name]
            to = command("lattice switch", others[0], paths=False) if others else "`lattice branch NAME` creates one, `lattice switch NAME` switches to it"
            raise Conflict(f"cannot delete branch {shown(name)}: it is the current branch",
                           hint=f"switch to another branch first ({to}), then delete it")
        ref = g.references[f"refs/heads/{name}"]
        was = str(ref.target)
        unmerged = _commits_only_on(g, ref.name)
        if unmerged and not force:
            commits = "1 commit" if unmerged == 1 else f"{unmerged} commits"
            raise Conflict(f"branch {shown(name)} is not merged: {commits} on it {'is' if unmerged == 1 else 'are'} on no other branch or tag",
                           hint=f"merge it first ({command('lattice merge', name, paths=False)} on the branch that should keep them), "
                                f"or delete it and its commits with {command('lattice branch -D', name, paths=False)}")
        ref.delete()
        return Deleted(name, was, unmerged)


def _commits_only_on(g, ref_name: str) -> int:
    """How many commits reachable from ref `ref_name` no other branch or tag reaches."""
    import pygit2

    walker = g.walk(g.references[ref_name].peel(pygit2.Commit).id, pygit2.enums.SortMode.NONE)
    for other in g.references:
        if other != ref_name and other.startswith(("refs/heads/", "refs/tags/")):
            walker.hide(g.references[other].peel(pygit2.Commit).id)
    return sum(1 for _ in walker)


def list_tags(repo: Repository) -> list[str]:
    return history.tags(history.open_git(repo)) if history.exists(repo) else []


def create_tag(repo: Repository, name: str) -> str:
    require_name(name, "tag", "name the tag, e.g. `lattice tag v1`; `lattice tag` alone lists tags")
    with repo.lock:
        repo.finish_interrupted()
        g = history.open_git(repo)
        history.check_ref_name(g, name, "tags")
        if name in history.tags(g):
            raise HistoryError(f"tag {shown(name)} already exists", hint="tags never move; pick another name")
        _refuse_shadowing(g, name, "tag")
        head = history.ensure_head(repo, g)
        g.references.create(f"refs/tags/{name}", head.id)
        return str(head.id)


@dataclass
class DeletedTag:
    tag: str
    was: str  # the commit it pointed at
    unmerged: int  # its commits no branch or other tag has any more (history keeps them)


def delete_tag(repo: Repository, name: str) -> DeletedTag:
    """Delete a tag, as `git tag -d`. Nothing is lost with it: history keeps
    its commits (a branch can start at one again), and gc keeps every
    object a manifest file in history names; only the protection of the
    versions current or pinned at the tag ends, as if it had never been."""
    require_name(name, "tag", "`lattice tag` lists the tags")
    with repo.lock:
        repo.finish_interrupted()
        g = history.open_git(repo, create=False) if history.exists(repo) else None
        require_tag(g, name)
        ref = g.references[f"refs/tags/{name}"]
        try:
            was, unmerged = str(history.resolve(g, name).id), _commits_only_on(g, ref.name)
        except Exception:  # noqa: BLE001 - a tag naming a commit history lacks: deleted all the same
            was, unmerged = str(ref.target), 0
        ref.delete()
        return DeletedTag(name, was, unmerged)


def require_tag(g, name: str) -> None:
    """InvalidInput unless `name` is a tag (`g` None: no history, no tags),
    saying when it is a branch instead."""
    tags = history.tags(g) if g is not None else []
    if name in tags:
        return
    if g is not None and name in history.branches(g):
        raise InvalidInput(f"no tag named {shown(name)}: {shown(name)} is a branch",
                           hint=f"`lattice tag` lists the tags; {command('lattice branch -d', name, paths=False)} deletes the branch")
    raise InvalidInput(f"no tag named {shown(name)}{closest(name, tags)}", hint="`lattice tag` lists the tags")


def _refuse_shadowing(g, name: str, what: str) -> None:
    """A branch and a tag of one name: the name would reach the branch
    alone (`lattice diff NAME HEAD`), so the second is refused."""
    if what == "tag" and name in history.branches(g):
        raise HistoryError(f"cannot create tag {shown(name)}: a branch has that name, which would always mean the branch, never the tag",
                           hint="pick another name for the tag; `lattice branch` lists the branches")
    if what == "branch" and name in history.tags(g):
        raise HistoryError(f"cannot create branch {shown(name)}: a tag has that name, which would then mean the branch, no longer the tag",
                           hint="pick another name for the branch; `lattice tag` lists the tags")


def require_name(name: str, what: str, hint: str) -> None:
    """An empty name (a script's unset $NAME) names nothing: refused before
    anything is opened or created."""
    if not name:
        raise InvalidInput(f"the {what} name is empty", hint=hint)


def require_branch(g, name: str) -> None:
    """InvalidInput unless `name` is a branch, saying what it is instead (a
    tag, a name no branch can have, the closest branch)."""
    if name not in history.branches(g):
        # A name no branch can have: say that, not "create it".
        history.check_ref_name(g, name, "heads", creating=False)
        if name in history.tags(g):  # a branch of its name would shadow it: not "create one"
            head, tagged = history.head_commit(g), history.resolve(g, name)
            if head is not None and (tagged.id == head.id or g.descendant_of(head.id, tagged.id)):
                # An older state (a release tagged earlier): merging it brings nothing.
                bring = "`lattice restore PATH@vN` brings back an asset's version from then"
            else:
                bring = f"{command('lattice merge', name, paths=False)} brings its changes into the current branch"
            raise InvalidInput(
                f"no branch named {shown(name)}: {shown(name)} is a tag, and only branches are switched to or deleted",
                hint=f"`lattice branch` lists branches; {command('lattice diff', name, 'HEAD', paths=False)} lists how the tag differs from here, {bring}",
            )
        # Where `feat` exists, `feat/x` cannot be created: no "creates one" then.
        create = "" if history.ref_clash(g, name, "heads") else f"; {command('lattice branch', name, paths=False)} creates one"
        raise InvalidInput(f"no branch named {shown(name)}{closest(name, history.branches(g))}", hint=f"`lattice branch` lists branches{create}")


# -- diff between states ---------------------------------------------------------


@dataclass
class RefDiff:
    old: str
    new: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[dict] = field(default_factory=list)  # {path, old_versions, new_versions}
    config_changed: bool = False


def names_a_state(repo: Repository, ref: str) -> bool:
    """Whether `ref` is a branch, tag or commit of history (or, before the
    first commit, the current branch or HEAD)."""
    g = history.open_git(repo, create=False) if history.exists(repo) else None
    if g is None or g.head_is_unborn:
        return ref in (history.head_branch(repo) or history.DEFAULT_BRANCH, "HEAD")
    try:
        history.resolve(g, ref)
    except InvalidInput:
        return False
    return True


def diff_refs(repo: Repository, old: str, new: str) -> RefDiff:
    from lattice.records import decode

    g = history.open_git(repo, create=False) if history.exists(repo) else None
    if g is None or g.head_is_unborn:
        # No commit yet. As `lattice branch` shows, the current branch is
        # all there is (it exists from its first commit on): its names are
        # one state, which differs from nothing; any other name is unknown.
        current = history.head_branch(repo) or history.DEFAULT_BRANCH
        for ref in (old, new):
            if ref not in (current, "HEAD"):
                raise InvalidInput(f"no branch, tag or commit named {shown(ref)}{closest(ref, [current])}",
                                   hint=f"the history is empty until the first change (`lattice add`, `lattice gen`); until then there is only {current}")
        return RefDiff(old, new)
    a, b = history.resolve(g, old), history.resolve(g, new)
    out = RefDiff(old, new)
    for name, (x, y) in sorted(history.changed_assets(g, a.tree, b.tree).items()):
        if x is None:
            out.added.append(name)
        elif y is None:
            out.removed.append(name)
        else:
            ra, rb = (decode(g[o].data, repo.manifest.file_of(name)) for o in (x, y))
            out.changed.append({"path": name, "old_versions": len(ra.versions), "new_versions": len(rb.versions)})
    out.config_changed = history.config_blob(a.tree) != history.config_blob(b.tree)
    return out
