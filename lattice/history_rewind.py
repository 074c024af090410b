"""Moving history's refs off damaged commits (`fsck --repair`'s hard
part). A ref that names a missing or broken commit goes back to its newest
intact one; commits whose own tree is complete above a lost ancestor are
re-made (same tree, message, author and time) on what is kept, and every
branch and tag that named them moves to the one re-made copy.

The usual cause: a project shared through git whose `git commit -a` took
history's changed ref files but not its new (untracked) objects reaches a
clone with `refs/heads/main` naming a commit that is not there. Every
commit before it usually is, so the ref moves back to the newest intact one
rather than the whole history being thrown away."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

from lattice.history import git_dir, head_branch, open_path
from lattice.repo import Repository


@dataclass(frozen=True)
class Rewind:
    """A ref that `repair_history` moved. `old`: the id it held (None: its
    file held no id); `missing`: that commit is not in this copy at all;
    `new`: its new tip, `how` it was found; `lost`: the commits it reached
    and no longer does (unreadable, or with an unreadable tree); `remade`:
    (old, new) for each commit with a complete tree of its own that was
    written again on the history kept, because an ancestor was lost;
    `grafted`: (missing commit, the commit what followed it now follows,
    or None for none)."""

    ref: str
    old: str | None
    missing: bool
    new: str
    how: str
    lost: tuple[str, ...]
    remade: tuple[tuple[str, str], ...] = ()
    grafted: tuple[tuple[str, str | None], ...] = ()

    @property
    def name(self) -> str:
        return self.ref.removeprefix("refs/heads/").removeprefix("refs/tags/")

    def describe(self) -> str:
        kind = "" if self.ref == "HEAD" else "branch " if self.ref.startswith("refs/heads/") else "tag "
        was = "an unreadable value" if self.old is None else f"{self.old[:12]} ({'not in this copy' if self.missing else 'not intact'})"
        out = f"{kind}{self.name} moved from {was} to {self.new[:12]}, {self.how}"
        if self.remade:
            out += "; re-made (same tree, message, author and time) on the history kept: " + _listed(f"{o[:12]} as {n[:12]}" for o, n in self.remade)
        for gone, onto in self.grafted:
            out += (f"; {gone[:12]} is missing, so its parents are unknown: what followed it now follows "
                    + (f"{onto[:12]}, the newest commit nothing else follows" if onto else "nothing (no commit fits)"))
        if self.lost:
            out += "; lost: " + _listed(i[:12] for i in self.lost)
        if self.missing:
            out += " and any commits between it and the new tip, which this copy never had"
        return out


def _listed(items) -> str:
    items = list(items)
    return ", ".join(items[:10]) + (f" and {len(items) - 10} more" if len(items) > 10 else "")


class _Intact:
    """Which commits are intact: readable, and so are their tree with every
    tree and blob under it and every ancestor. Which are whole: readable
    with a complete tree of their own, whatever their ancestors. Each
    object is read once."""

    def __init__(self, g):
        self.g = g
        self.commits: dict[str, bool] = {}
        self.wholes: dict[str, bool] = {}
        self.trees: dict[str, bool] = {}
        self.depths: dict[str, int] = {}

    def read(self, oid):
        """The pygit2 object of `oid`, or None when absent or unreadable."""
        try:
            return self.g.get(oid)
        except Exception:  # noqa: BLE001 - a corrupt object reads as absent
            return None

    def whole(self, oid) -> bool:
        self.commit(oid)
        return self.wholes[str(oid)]

    def newer(self, c) -> tuple[int, int]:
        """A key that orders commits from older to newer: commit time, then
        how many commits lead to it (a script commits many in one second)."""
        return c.commit_time, self.depth(c.id)

    def depth(self, oid) -> int:
        """The longest chain of readable commits that ends at `oid`."""
        import pygit2

        key = str(oid)
        stack, open_ = [key], {key}  # without recursion: histories are long
        while stack:
            cid = stack[-1]
            c = self.read(cid)
            parents = [str(p) for p in c.parent_ids] if isinstance(c, pygit2.Commit) else []
            todo = [p for p in parents if p not in self.depths and p not in open_]
            if todo:
                stack.extend(todo)
                open_.update(todo)
                continue
            stack.pop()
            self.depths[cid] = 1 + max((self.depths.get(p, 0) for p in parents), default=0) if isinstance(c, pygit2.Commit) else 0
        return self.depths[key]

    def commit(self, oid) -> bool:
        import pygit2

        key = str(oid)
        if key in self.commits:
            return self.commits[key]
        # Depth first without recursion (histories are long): an ancestor
        # is settled before the commits above it.
        stack, open_ = [(key, False)], set()
        while stack:
            cid, done = stack.pop()
            if done:
                c = self.read(cid)
                # Against a whole parent's tree only what differs is read.
                base = next((p for p in c.parent_ids if self.wholes.get(str(p))), None)
                self.wholes[cid] = self.changes(self.read(base).tree_id, c.tree_id) if base is not None else self.tree(c.tree_id)
                self.commits[cid] = self.wholes[cid] and all(self.commits.get(str(p), False) for p in c.parent_ids)
                continue
            if cid in self.commits or cid in open_:
                continue
            c = self.read(cid)
            if not isinstance(c, pygit2.Commit):
                self.commits[cid] = self.wholes[cid] = False
                continue
            open_.add(cid)
            stack.append((cid, True))
            stack.extend((str(p), False) for p in c.parent_ids if str(p) not in self.commits)
        return self.commits[key]

    def changes(self, intact, oid) -> bool:
        """Whether tree `oid` is intact, given that tree `intact` is: only
        what differs is read (a diff skips shared subtrees by id)."""
        import pygit2

        try:
            tree = self.g.get(oid)
            if not isinstance(tree, pygit2.Tree):
                return False
            deltas = self.g.diff(self.g.get(intact), tree).deltas
            return all(d.new_file.id in self.g.odb for d in deltas
                       if d.status != pygit2.enums.DeltaStatus.DELETED and d.new_file.mode != pygit2.enums.FileMode.COMMIT)
        except Exception:  # noqa: BLE001 - a subtree that cannot be read
            return False

    def tree(self, oid) -> bool:
        import pygit2

        key = str(oid)
        if key not in self.trees:
            t = self.read(oid)
            self.trees[key] = isinstance(t, pygit2.Tree) and all(
                self.tree(e.id) if e.type_str == "tree" else e.type_str != "blob" or e.id in self.g.odb for e in t
            )
        return self.trees[key]


class _Remake:
    """What stands for each broken commit once history is mended, shared by
    every ref repaired so that a commit is re-made once. An intact commit
    stands for itself. A whole one (its own tree complete) below which
    something is lost is re-made: same tree, message, author and committer,
    on what stands for its parents, as a re-commit over a cut history
    would. One that is not whole is dropped: what stands for its parents
    stands for it. A missing one has no parents to follow: its followers go
    on the newest commit that nothing else follows (see _graft)."""

    def __init__(self, g, intact: _Intact, branch_tips: set[str]):
        self.g, self.intact = g, intact
        self.branch_tips = branch_tips  # another line of work: never a missing commit's stand-in
        # Broken commit -> what stands for it: commit ids, and ("missing", id)
        # for a missing commit not yet grafted (done only where needed).
        self.stand: dict[str, list] = {}
        self.made: dict[str, str] = {}
        self.grafts: dict[str, tuple[str | None, list[str], list[str]]] = {}
        self.later: dict[str, int] = {}  # missing commit -> commit time of its first follower
        self.active: set[str] = set()  # commits being settled: never their own ancestor
        self.heads: list | None = None

    def settle(self, tip: str) -> tuple[str | None, list[str], list[str], list[tuple[str, str | None]]]:
        """The commit `tip` becomes (None: nothing of it is kept), and of
        what it reached, newest first, the commits dropped, those re-made
        and (missing commit, its stand-in) where one was needed."""
        import pygit2

        # Broken commits from the tip, parents before children (post-order,
        # without recursion: a damaged stretch can be long).
        order, seen, stack = [], set(), [(tip, False)]
        while stack:
            cid, done = stack.pop()
            if done:
                order.append(cid)
                continue
            if cid in seen or self.intact.commit(cid):
                continue
            seen.add(cid)
            stack.append((cid, True))
            c = self.intact.read(cid)
            for p in c.parent_ids if isinstance(c, pygit2.Commit) else ():
                self.later[str(p)] = min(self.later.get(str(p), c.commit_time), c.commit_time)
                stack.append((str(p), False))
        before = set(self.active)
        self.active |= seen
        try:
            for cid in order:
                if cid not in self.stand:
                    self._settle_one(cid)
            stands = self._resolve(self.stand.get(tip, [tip]))
        finally:
            self.active = before
        lost, made, grafted = [], [], []
        for cid in reversed(order):
            (made if cid in self.made else lost).append(cid)
            if cid in self.grafts:
                onto, more_lost, more_made = self.grafts[cid]
                grafted.append((cid, onto))
                lost += more_lost
                made += more_made
        new = max(stands, key=lambda s: self.intact.newer(self.intact.read(s))) if stands else None
        return new, lost, made, grafted

    def _settle_one(self, cid: str) -> None:
        import pygit2

        c = self.intact.read(cid)
        if not isinstance(c, pygit2.Commit):
            self.stand[cid] = [("missing", cid)]
            return
        parents = list(dict.fromkeys(s for p in c.parent_ids for s in self.stand.get(str(p), [str(p)])))
        if not self.intact.whole(cid):
            self.stand[cid] = parents
            return
        parents = self._resolve(parents)
        extra = [c.message_encoding] if c.message_encoding else []
        new = str(self.g.create_commit(None, c.author, c.committer, c.raw_message, c.tree_id,
                                       [pygit2.Oid(hex=p) for p in parents], *extra))
        self.stand[cid], self.made[cid] = [new], new

    def _resolve(self, items: list) -> list[str]:
        out = []
        for item in items:
            if isinstance(item, tuple):
                if item[1] not in self.grafts:
                    self.grafts[item[1]] = self._graft(item[1])
                onto = self.grafts[item[1]][0]
                out += [onto] if onto else []
            else:
                out.append(item)
        return list(dict.fromkeys(out))

    def _graft(self, missing: str) -> tuple[str | None, list[str], list[str]]:
        """(stand-in as settled, dropped, re-made) for a commit this copy
        lacks. Its parent was most likely the newest commit, no newer than
        its first follower, that no readable commit follows and no branch
        holds, and that is not among those being settled (no cycle)."""
        import pygit2

        if self.heads is None:
            commits = [c for c in (self.intact.read(o) for o in self.g.odb) if isinstance(c, pygit2.Commit)]
            followed = {str(p) for c in commits for p in c.parent_ids}
            # A commit with a twin (same tree, message, author and time, other
            # parents) is a copy an earlier repair made, or one it replaced:
            # never what a lost commit followed. A repair killed before it
            # moved its refs leaves such copies, which nothing follows.
            twins: dict[tuple, int] = {}
            for c in commits:
                twins[_content(c)] = twins.get(_content(c), 0) + 1
            self.heads = [c for c in commits if str(c.id) not in followed and twins[_content(c)] == 1]
        bound, skip = self.later.get(missing), self.active | self.branch_tips | set(self.made.values())
        fits = [c for c in self.heads if (bound is None or c.commit_time <= bound) and str(c.id) not in skip]
        if not fits:
            return None, [], []
        onto = str(max(fits, key=lambda c: (*self.intact.newer(c), self.intact.commit(c.id))).id)
        new, lost, made, _ = self.settle(onto)
        return new, lost, made


def _content(c) -> tuple:
    """What a re-made copy of commit `c` keeps: all but its parents."""
    sig = lambda s: (s.name, s.email, s.time, s.offset)  # noqa: E731
    return c.tree_id, c.raw_message, sig(c.author), sig(c.committer)


def _ref_values(repo: Repository) -> dict[str, str | None]:
    """Every branch and tag, and HEAD when detached, with the commit id its
    file names (None: no id there), read from the files themselves: pygit2
    refuses to list refs when one of them is garbled."""
    path = git_dir(repo)
    out: dict[str, str | None] = {}
    with contextlib.suppress(OSError):
        for line in (path / "packed-refs").read_text(errors="replace").splitlines():
            oid, _, name = line.partition(" ")
            if name.startswith(("refs/heads/", "refs/tags/")) and re.fullmatch(r"[0-9a-f]{40}", oid):
                out[name] = oid
    for kind in ("heads", "tags"):
        for file in sorted((path / "refs" / kind).rglob("*")):
            if file.is_file() and not file.name.endswith(".lock"):
                text = file.read_text(errors="replace").strip()
                out[file.relative_to(path).as_posix()] = text if re.fullmatch(r"[0-9a-f]{40}", text) else None
    with contextlib.suppress(OSError):
        text = (path / "HEAD").read_text(errors="replace").strip()
        if not text.startswith("ref:"):
            out["HEAD"] = text if re.fullmatch(r"[0-9a-f]{40}", text) else None
    return out


def _earlier_values(repo: Repository, ref: str) -> list[str]:
    """Ids `ref` held before, newest first: from its reflog when history
    keeps one, then from the commits of the git repository the project is
    shared through (each commit of the ref file recorded its value then)."""
    import shutil
    import subprocess

    found = []
    with contextlib.suppress(OSError):
        for line in reversed((git_dir(repo) / "logs" / ref).read_text(errors="replace").splitlines()):
            found += line.split()[1::-1][:2]
    if shutil.which("git"):
        env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}
        rel = os.path.relpath(git_dir(repo) / ref, repo.root)
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            p = subprocess.run(["git", "log", "-p", "-n", "200", "--format=", "--no-color", "--no-ext-diff", "--no-textconv", "--", rel],
                               cwd=repo.root, capture_output=True, text=True, timeout=60, env=env)
            found += re.findall(r"^\+([0-9a-f]{40})$", p.stdout, re.M) if p.returncode == 0 else []
    return [f for f in dict.fromkeys(found) if re.fullmatch(r"[0-9a-f]{40}", f)]


def rewind_broken_refs(repo: Repository) -> list[Rewind]:
    """Move each branch, tag or detached HEAD whose commit is missing or not
    intact to one that is, keeping every commit with a complete tree of its
    own; the refs moved. A readable tip stays at its newest commit whose
    tree is complete: where an ancestor is lost, that commit and those
    between are re-made on what is kept (_Remake). A tip this copy does not
    hold has no parents to follow: the newest whole value the ref held
    before (its reflog, or the git repository the project is shared
    through), else the newest whole commit of the object database that no
    sound ref reaches (the chain the lost commits were added to), else the
    newest whole commit at all. A ref is left alone when no commit is whole
    (the caller starts history afresh). Call under the repository lock."""
    import pygit2

    from lattice.fsutil import atomic_write

    values = _ref_values(repo)
    if not values:
        return []
    g = open_path(git_dir(repo))
    intact = _Intact(g)
    sound = {ref: oid for ref, oid in values.items() if oid is not None and intact.commit(oid)}
    broken = {ref: oid for ref, oid in values.items() if ref not in sound}
    if not broken:
        return []
    remake = _Remake(g, intact, {oid for ref, oid in values.items() if ref.startswith("refs/heads/") and oid})
    chosen: dict[str, tuple[str, str, list[str], list[str], list]] = {}
    dropped: dict[str, list[str]] = {}  # readable tips with nothing kept: what they reached
    for ref, oid in broken.items():
        tip = intact.read(oid) if oid is not None else None
        if not isinstance(tip, pygit2.Commit):
            continue
        # The commits it reaches that are not whole are lost; those that
        # are, above a loss, are re-made on what is kept.
        new, lost, made, grafted = remake.settle(oid)
        dropped[ref] = lost
        if new is not None:
            how = ("its own tree is complete: re-made" if remake.made.get(oid) == new
                   else "its newest commit with a complete tree, re-made" if new in remake.made.values()
                   else "its newest intact ancestor")
            chosen[ref] = (new, how, lost, made, grafted)
    # Tips this copy lacks, the checked-out branch first.
    rest = sorted((r for r in broken if r not in chosen), key=lambda r: (r != f"refs/heads/{head_branch(repo)}", r))
    pool = None
    for ref in rest:
        gone = dropped.get(ref) or ([broken[ref]] if broken[ref] else [])
        before = next((e for e in _earlier_values(repo, ref) if e != broken[ref] and intact.whole(e)), None)
        if before is not None:
            new, lost, made, grafted = remake.settle(before)
            how = ("the newest intact commit it pointed to before" if new == before
                   else "the newest commit with a complete tree it pointed to before, re-made")
            chosen[ref] = (new, how, gone + lost, made, grafted)
            continue
        if pool is None:
            pool = sorted((c for c in (intact.read(o) for o in g.odb) if isinstance(c, pygit2.Commit) and intact.whole(c.id)),
                          key=lambda c: (*intact.newer(c), intact.commit(c.id)), reverse=True)
        if not pool:
            break  # no commit is whole: history starts afresh
        tips, reached = [*sound.values(), *(n for n, *_ in chosen.values())], set()
        if tips:
            walker = g.walk(tips[0])
            for tip in tips[1:]:
                walker.push(tip)
            reached = {str(c.id) for c in walker}
            reached |= {old for old, n in remake.made.items() if n in reached}
        free = next((c for c in pool if str(c.id) not in reached), None)
        new, lost, made, grafted = remake.settle(str((free or pool[0]).id))
        how = ("the newest commit with a complete tree" if made else "the newest intact commit") + (
            " no other ref reaches" if free is not None else "") + (", re-made" if made else "")
        chosen[ref] = (new, how, gone + lost, made, grafted)
    moves = []
    for ref, (new, how, lost, made, grafted) in chosen.items():
        atomic_write(git_dir(repo) / ref, f"{new}\n".encode())
        old = broken[ref]
        moves.append(Rewind(ref, old, old is not None and not isinstance(intact.read(old), pygit2.Commit), new, how,
                            tuple(dict.fromkeys(lost)), tuple((o, remake.made[o]) for o in dict.fromkeys(made)), tuple(grafted)))
    return moves
