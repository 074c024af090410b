"""Checking history and repairing it (`lattice fsck`'s part): refs joined
after a git merge conflict, HEAD fixed, the manifest compared with history
HEAD, and damaged history mended. A ref that names a missing or broken
commit goes back to its newest intact one; commits whose own tree is
complete above a lost ancestor are re-made on what is kept. Object files
that do not read whole (a loose object a crash left empty, a cut pack) are
set aside first, what a damaged pack still holds read back. Only a history
with no commit whose tree is complete is quarantined and started afresh
from the manifest."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from lattice.errors import HistoryError
from lattice.history import (
    DEFAULT_BRANCH,
    GITDIR,
    PENDING,
    RECOVERED,
    _why,
    catch_up,
    commit,
    exists,
    git_dir,
    head_branch,
    head_commit,
    manifest_blobs,
    open_git,
    open_path,
    signature,
    snapshot_tree,
)
from lattice.repo import Repository


def fsck(repo: Repository, repair: bool = False) -> list[tuple[str, str]]:
    """(problem, what repair did) for `lattice fsck`."""
    found = check(repo)
    if not found or not repair:
        return [(m, "") for m in found]
    joined = _join_conflicted_refs(repo)
    if joined:
        # Two clones each committed, and a git merge of the project left
        # both tips in a ref file: every commit of both sides is kept.
        done = f"joined both sides of a git merge conflict in {', '.join(joined)}"
        still = check(repo)
        if still:
            done += "; " + repair_history(repo, any(not m.startswith(BEHIND) for m in still))
        return [(m, done) for m in found]
    damaged = any(not m.startswith(BEHIND) for m in found)
    if damaged and _fix_head(repo):
        # Only HEAD was broken: every commit, branch and tag is kept.
        still = check(repo)
        damaged = any(not m.startswith(BEHIND) for m in still)
        done = "HEAD was unreadable and now names its branch again"
        if still:
            done += "; " + repair_history(repo, damaged)
        return [(m, done) for m in found]
    done = repair_history(repo, damaged)
    return [(m, done) for m in found]


def _join_conflicted_refs(repo: Repository) -> list[str]:
    """Ref files that a git merge of the outer repository left with conflict
    markers (two clones each committed history): each points again at one
    commit, the newer side if one descends from the other, else a merge of
    both whose tree is the manifest on disk (for the branch checked out:
    the user resolved it in git) or the first side's. The refs joined."""
    import re

    import pygit2

    from lattice.fsutil import atomic_write

    refs = git_dir(repo) / "refs"
    joined = []
    for path in sorted(refs.rglob("*")) if refs.is_dir() else []:
        try:
            text = path.read_text(errors="replace") if path.is_file() else ""
        except OSError:
            continue
        if "<<<<<<<" not in text:
            continue
        ids = list(dict.fromkeys(re.findall(r"\b[0-9a-f]{40}\b", text)))
        if not ids:
            continue
        atomic_write(path, f"{ids[0]}\n".encode())  # readable again, so the repository opens
        g = open_git(repo, create=False)
        tips = []
        for i in ids:
            try:
                tips.append(g[i].peel(pygit2.Commit))
            except (KeyError, ValueError, pygit2.GitError):
                continue
        tips = [c for c in tips if not any(o.id != c.id and g.descendant_of(o.id, c.id) for o in tips)]
        if not tips:
            continue
        name = path.relative_to(git_dir(repo)).as_posix()
        tip = tips[0].id
        if len(tips) > 1:
            current = name == f"refs/heads/{head_branch(repo)}"
            tree = snapshot_tree(repo, g) if current else tips[0].tree_id
            sig = signature(repo)
            tip = g.create_commit(None, sig, sig, f"join the histories a git merge brought together ({name})\n",
                                  tree or g.TreeBuilder().write(), [c.id for c in tips])
        atomic_write(path, f"{tip}\n".encode())
        joined.append(name)
    return joined


def _fix_head(repo: Repository) -> bool:
    """Point a garbled HEAD file back at a branch that exists. True if done."""
    from lattice.fsutil import atomic_write

    heads = git_dir(repo) / "refs" / "heads"
    head = git_dir(repo) / "HEAD"
    try:
        text = head.read_text(errors="replace")
    except OSError:
        text = ""
    if text.startswith("ref: refs/heads/") and (git_dir(repo) / text[5:].strip()).exists():
        return False
    names = sorted(p.name for p in heads.iterdir() if p.is_file()) if heads.is_dir() else []
    if not names:
        return False
    # The branch that was checked out is the one whose tip matches the
    # manifest on disk best (ties: the default branch).
    atomic_write(head, f"ref: refs/heads/{names[0]}\n".encode())
    try:
        g = open_git(repo, create=False)

        def distance(branch: str) -> tuple[int, bool]:
            tip = g.lookup_reference(f"refs/heads/{branch}").peel()
            return len(drift(repo, g, manifest_blobs(g, tip.tree))), branch != DEFAULT_BRANCH

        branch = min(names, key=distance)
    except Exception:
        branch = DEFAULT_BRANCH if DEFAULT_BRANCH in names else names[0]
    atomic_write(head, f"ref: refs/heads/{branch}\n".encode())
    return True


BEHIND = ("manifest differs", "history has no commit", "history repository is missing")


def check(repo: Repository) -> list[str]:
    """What is wrong with history: unreadable, damaged (per `git fsck`), or
    behind the manifest. Empty when healthy."""
    import shutil
    import subprocess

    path = git_dir(repo)
    has_assets = next(iter(repo.manifest.names()), None) is not None
    if not exists(repo):
        return ["history repository is missing"] if has_assets else []
    problems = []
    if shutil.which("git"):
        try:
            p = subprocess.run(
                ["git", f"--git-dir={path}", "fsck", "--no-progress", "--no-dangling"],
                capture_output=True, text=True, timeout=300, env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1"},
            )
            if p.returncode != 0:
                lines = (p.stderr or p.stdout).strip().splitlines()
                problems.append("git fsck: " + ("; ".join(lines[:3]) or f"exit {p.returncode}"))
        except (OSError, subprocess.TimeoutExpired) as e:
            problems.append(f"git fsck could not run: {e}")
    try:
        g = open_git(repo, create=False)
        head = head_commit(g)
        if head is None:
            return problems + (["history has no commit yet"] if has_assets else [])
        recorded = manifest_blobs(g, head.tree)
    except Exception as e:
        return problems + [f"HEAD cannot be read: {_why(e)}"]
    behind = drift(repo, g, recorded)
    if repo.read_only:  # what a writable lattice would have committed on opening the repository is no damage
        behind = [] if repo.history_behind is True else [n for n in behind if n not in repo.history_behind]
    if behind:
        more = f" and {len(behind) - 5} more" if len(behind) > 5 else ""
        problems.append(f"manifest differs from history HEAD ({', '.join(behind[:5])}{more})")
    return problems


def drift(repo: Repository, g, recorded: dict) -> list[str]:
    import pygit2

    out = []
    on_disk = set()
    for name in repo.manifest.names():
        on_disk.add(name)
        if pygit2.hashfile(str(repo.manifest.file_of(name))) != recorded.get(name):
            out.append(name)
    out.extend(sorted(set(recorded) - on_disk))
    # config.toml is not compared: editing it by hand is normal, and the
    # next change (or `fsck --repair`) commits it.
    return out


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


_KINDS = {1: b"commit", 2: b"tree", 3: b"blob", 4: b"tag"}
_OFS_DELTA, _REF_DELTA = 6, 7


def set_aside_damaged_objects(repo: Repository) -> tuple[int, int, str | None]:
    """Move the object files of history that cannot be read whole to
    quarantine/: a loose object that does not inflate to its own id (a file a
    crash left empty or cut), and a pack whose checksums do not hold (cut,
    or changed), with its index; what can still be read of such a pack is
    first written back as loose objects (libgit2 and git read nothing of a
    pack that does not match its index). Left in place, each would keep
    `git fsck` failing, and the whole history would go to quarantine
    instead of the commits that are still whole being kept. Returns
    (object files moved, objects read back from damaged packs, the folder
    they went to). Call under the repository lock."""
    objects = git_dir(repo) / "objects"
    bad: list[Path] = []
    read_back = 0
    packs = objects / "pack"
    for idx in sorted(packs.glob("pack-*.idx")) if packs.is_dir() else []:
        pack = idx.with_suffix(".pack")
        if not pack.exists():
            bad += [idx]  # an index without its pack: git warns, and its objects are not there
            continue
        if not _pack_sound(pack, idx):
            for kind, data in _salvage_pack(pack, idx):
                # Loose files of our own (libgit2 would take an object its
                # damaged pack lists as present, and skip the write).
                read_back += _write_loose(objects, kind, data)
            bad += [f for f in sorted(packs.glob(pack.stem + ".*")) if f.suffix != ".pack"] + [pack]  # index first
    for pack in sorted(packs.glob("pack-*.pack")) if packs.is_dir() else []:
        if not pack.with_suffix(".idx").exists():
            # No index (a repair killed while it set a pack aside, a pack
            # whose index was never written): git and libgit2 do not read it.
            for kind, data in _salvage_pack(pack, None):
                read_back += _write_loose(objects, kind, data)
            bad += [pack]
    with contextlib.suppress(OSError):
        for folder in sorted(objects.iterdir()):
            if len(folder.name) != 2 or not re.fullmatch(r"[0-9a-f]{2}", folder.name) or not folder.is_dir():
                continue
            for f in sorted(folder.iterdir()):
                if re.fullmatch(r"[0-9a-f]{38}", f.name) and not _loose_sound(f, folder.name + f.name):
                    bad.append(f)
    if not bad:
        return 0, read_back, None
    import tempfile
    import time

    (repo.dir / "quarantine").mkdir(exist_ok=True)
    dest = Path(tempfile.mkdtemp(prefix=f"history-objects-{time.strftime('%Y%m%d-%H%M%S')}-", dir=repo.dir / "quarantine"))
    for f in bad:
        to = dest / f.relative_to(objects)
        to.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, to)
    return len(bad), read_back, str(dest)


def _write_loose(objects: Path, kind: bytes, data: bytes) -> int:
    """Store an object as a loose file unless a sound one is there (1 if
    written). Atomic: a temp file renamed into place."""
    import hashlib
    import zlib

    from lattice.fsutil import atomic_write

    raw = b"%s %d\0" % (kind, len(data)) + data
    oid = hashlib.sha1(raw).hexdigest()
    path = objects / oid[:2] / oid[2:]
    if path.exists() and _loose_sound(path, oid):
        return 0
    path.parent.mkdir(exist_ok=True)
    atomic_write(path, zlib.compress(raw), mode=0o444)
    return 1


def _loose_sound(path: Path, oid: str) -> bool:
    """Whether the loose object file at `path` inflates to object `oid`."""
    import hashlib
    import zlib

    try:
        data = zlib.decompress(path.read_bytes())
    except (OSError, zlib.error):
        return False
    header, nul, body = data.partition(b"\0")
    kind, _, size = header.partition(b" ")
    return (bool(nul) and kind in _KINDS.values() and size.isdigit() and int(size) == len(body)
            and hashlib.sha1(data).hexdigest() == oid)


def _pack_sound(pack: Path, idx: Path) -> bool:
    """Whether a pack and its index hold together: each file's trailing
    SHA-1 is that of its content, and the index names the pack's."""
    import hashlib

    try:
        index = idx.read_bytes()
        digest = hashlib.sha1()
        size = pack.stat().st_size
        with open(pack, "rb") as f:
            if size < 32 or f.read(4) != b"PACK":
                return False
            f.seek(0)
            left = size - 20
            while left:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    return False
                digest.update(chunk)
                left -= len(chunk)
            trailer = f.read(20)
    except OSError:
        return False
    return (len(index) >= 40 and digest.digest() == trailer == index[-40:-20]
            and hashlib.sha1(index[:-20]).digest() == index[-20:])


def _index_entries(index: bytes) -> dict[int, str] | None:
    """Offset -> object id of each entry an idx v2 lists; None when it
    cannot be read."""
    import struct

    try:
        if index[:8] != b"\xfftOc\x00\x00\x00\x02":
            return None
        count = struct.unpack(">I", index[8 + 255 * 4:8 + 256 * 4])[0]
        names = 8 + 256 * 4
        offsets = names + count * 24  # ids (20 bytes each), then CRCs (4 each)
        large = offsets + count * 4
        out = {}
        for i in range(count):
            off = struct.unpack(">I", index[offsets + 4 * i:offsets + 4 * i + 4])[0]
            if off & 0x80000000:
                j = off & 0x7FFFFFFF
                off = struct.unpack(">Q", index[large + 8 * j:large + 8 * j + 8])[0]
            out[off] = index[names + 20 * i:names + 20 * i + 20].hex()
        return out if len(out) == count else None
    except (struct.error, IndexError):
        return None


def _salvage_pack(pack: Path, idx: Path | None) -> list[tuple[bytes, bytes]]:
    """(kind, data) of each object of a damaged pack that can still be read
    whole: at the offsets its index lists (else from the start, one entry
    after another, as far as they read), deltas applied to their bases,
    each checked against the id the index gives it."""
    import hashlib
    import zlib

    try:
        data = pack.read_bytes()
    except OSError:
        return []
    try:
        named = (_index_entries(idx.read_bytes()) if idx is not None else None) or {}
    except OSError:
        named = {}

    view = memoryview(data)

    def entry(at: int):
        """(kind, data or delta, base: relative offset or id, end) of the entry at `at`."""
        c = data[at]
        kind, size, shift, at = (c >> 4) & 7, c & 15, 4, at + 1
        while c & 0x80:
            c = data[at]
            size |= (c & 0x7F) << shift
            shift, at = shift + 7, at + 1
        base = None
        if kind == _OFS_DELTA:
            c = data[at]
            rel, at = c & 0x7F, at + 1
            while c & 0x80:
                c = data[at]
                rel, at = ((rel + 1) << 7) | (c & 0x7F), at + 1
            base = -rel
        elif kind == _REF_DELTA:
            base, at = data[at:at + 20].hex(), at + 20
        elif kind not in _KINDS:
            raise ValueError("no such entry type")
        inflate, out = zlib.decompressobj(), []
        while not inflate.eof and at < len(data):
            chunk = view[at:at + 65536]
            out.append(inflate.decompress(chunk))
            at += len(chunk)
        out = b"".join(out)
        if not inflate.eof or len(out) != size:
            raise ValueError("cut")
        return kind, out, base, at - len(inflate.unused_data)

    entries: dict[int, tuple] = {}
    if named:
        for at in sorted(named):
            with contextlib.suppress(Exception):  # noqa: BLE001 - an entry that cannot be read
                kind, raw, base, _ = entry(at)
                entries[at] = (kind, raw, at + base if isinstance(base, int) else base)
    else:
        at = 12
        while at < len(data):
            try:
                kind, raw, base, end = entry(at)
            except Exception:  # noqa: BLE001 - the rest cannot be told apart
                break
            entries[at] = (kind, raw, at + base if isinstance(base, int) else base)
            at = end
    done: dict[int, tuple[bytes, bytes]] = {}
    by_id: dict[str, tuple[bytes, bytes]] = {}

    def resolve(at: int, depth: int = 0):
        if at in done:
            return done[at]
        kind, raw, base = entries[at]
        if kind in _KINDS:
            done[at] = (_KINDS[kind], raw)
        elif depth < 1000:
            if isinstance(base, int):
                under = resolve(base, depth + 1) if base in entries else None
            else:
                under = by_id.get(base)
            if under is None:
                return None
            done[at] = (under[0], _apply_delta(under[1], raw))
        else:
            return None
        return done[at]

    for _ in range(2):  # a REF_DELTA's base may come later in the pack
        for at in sorted(entries):
            if at in done:
                continue
            with contextlib.suppress(Exception):  # noqa: BLE001 - a delta whose base is lost
                got = resolve(at)
                if got is not None:
                    oid = hashlib.sha1(b"%s %d\0" % (got[0], len(got[1])) + got[1]).hexdigest()
                    if named.get(at, oid) != oid:
                        del done[at]
                        continue
                    by_id[oid] = got
    return list(by_id.values())


def _apply_delta(base: bytes, delta: bytes) -> bytes:
    """git's delta format: the sizes, then copies from the base and inserts."""
    def size(at: int) -> tuple[int, int]:
        n = shift = 0
        while True:
            c = delta[at]
            n, shift, at = n | (c & 0x7F) << shift, shift + 7, at + 1
            if not c & 0x80:
                return n, at

    src, at = size(0)
    dst, at = size(at)
    if src != len(base):
        raise ValueError("delta base size")
    out = bytearray()
    while at < len(delta):
        op = delta[at]
        at += 1
        if op & 0x80:
            off = n = 0
            for i in range(4):
                if op & (1 << i):
                    off |= delta[at] << (8 * i)
                    at += 1
            for i in range(3):
                if op & (0x10 << i):
                    n |= delta[at] << (8 * i)
                    at += 1
            n = n or 0x10000
            if off + n > len(base):
                raise ValueError("delta copy")
            out += base[off:off + n]
        elif op:
            out += delta[at:at + op]
            at += op
        else:
            raise ValueError("delta op 0")
    if len(out) != dst:
        raise ValueError("delta size")
    return bytes(out)


def repair_history(repo: Repository, damaged: bool = False) -> str:
    """Commit the current manifest. In damaged history (unreadable, or
    failing `git fsck`) each ref whose commit is missing or not intact is
    first moved to one that is, re-made where need be (rewind_broken_refs);
    only history that is still damaged then, or holds no commit with a
    complete tree at all, is moved to quarantine/ and started afresh from
    the manifest. Returns what was done."""
    import time

    with repo.lock:
        rewound: list[Rewind] = []
        aside = ""
        if damaged and exists(repo):
            try:
                files, read_back, folder = set_aside_damaged_objects(repo)
            except OSError:
                files, read_back, folder = 0, 0, None
            if files:
                aside = (f"{files} damaged object file{'s' if files > 1 else ''} of history moved to {folder}"
                         + (f" ({read_back} object{'s' if read_back > 1 else ''} read back from damaged packs first)" if read_back else "") + "; ")
            try:
                rewound = rewind_broken_refs(repo)
            except Exception:  # noqa: BLE001 - too damaged to tell: started afresh below
                rewound = []
            if rewound or files:
                damaged = any(not m.startswith(BEHIND) for m in check(repo))
        try:
            if damaged:
                raise HistoryError("damaged")
            head_commit(open_git(repo))
            moved = ""
        except Exception:
            dest = repo.dir / "quarantine" / f"{GITDIR}-{time.strftime('%Y%m%d-%H%M%S')}"
            dest.parent.mkdir(exist_ok=True)
            os.replace(git_dir(repo), dest)
            moved = f"damaged history moved to {dest}; "
            rewound = []
        if rewound:
            # The manifest on disk is newer than the commits kept: committed
            # whole on top of the checked-out tip, saying why.
            refs = ", ".join(f"{r.name} {'from' if r.remade else 'back from'} {(r.old or 'an unreadable value')[:12]} to {r.new[:12]}"
                             for r in rewound)
            oid = commit(repo, f"{RECOVERED} after `lattice fsck --repair` moved {refs}: this copy of history lacked the newer commits")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(repo.dir / PENDING)
            moved = "; ".join(r.describe() for r in rewound) + "; "
        elif moved or not (repo.dir / PENDING).exists():  # a new history holds everything at once
            oid = commit(repo, RECOVERED)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(repo.dir / PENDING)
        else:
            oid = catch_up(repo)
    done = f"committed {oid[:12]}" if oid else "nothing to commit"
    if rewound and oid:
        done += " on top: the manifest as it is on disk"
    if any(r.missing for r in rewound):
        done += " (commits reached this copy without their objects: where they were made, commit .lattice/history.git whole, e.g. `git add .lattice/history.git`)"
    return aside + moved + done
