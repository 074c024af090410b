"""Checking history and repairing it (`lattice fsck`'s part): refs joined
after a git merge conflict, HEAD fixed, the manifest compared with history
HEAD, and damaged history mended. A ref that names a missing or broken
commit goes back to its newest intact one; only a history with no intact
commit at all is quarantined and started afresh from the manifest."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

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
    """A ref that `repair_history` moved back. `old`: the id it held (None:
    its file held no id); `missing`: that commit is not in this copy at
    all; `new`: its new tip, `how` it was found; `lost`: the commits it
    reached and no longer does (unreadable, or with an unreadable tree or
    ancestor)."""

    ref: str
    old: str | None
    missing: bool
    new: str
    how: str
    lost: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.ref.removeprefix("refs/heads/").removeprefix("refs/tags/")

    def describe(self) -> str:
        kind = "" if self.ref == "HEAD" else "branch " if self.ref.startswith("refs/heads/") else "tag "
        was = "an unreadable value" if self.old is None else f"{self.old[:12]} ({'not in this copy' if self.missing else 'not intact'})"
        lost = [i[:12] for i in self.lost]
        gone = f"; lost: {', '.join(lost[:10])}{f' and {len(lost) - 10} more' if len(lost) > 10 else ''}" if lost else ""
        if self.missing:
            gone += " and any commits between it and the new tip, which this copy never had"
        return f"{kind}{self.name} moved from {was} to {self.new[:12]}, {self.how}{gone}"


class _Intact:
    """Which commits are intact: readable, and so are their tree with every
    tree and blob under it and every ancestor. Each object is read once."""

    def __init__(self, g):
        self.g = g
        self.commits: dict[str, bool] = {}
        self.trees: dict[str, bool] = {}

    def read(self, oid):
        """The pygit2 object of `oid`, or None when absent or unreadable."""
        try:
            return self.g.get(oid)
        except Exception:  # noqa: BLE001 - a corrupt object reads as absent
            return None

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
                parents = [self.read(p) for p in c.parent_ids]
                self.commits[cid] = all(self.commits.get(str(p), False) for p in c.parent_ids) and (
                    self.changes(parents[0].tree_id, c.tree_id) if parents else self.tree(c.tree_id))
                continue
            if cid in self.commits or cid in open_:
                continue
            c = self.read(cid)
            if not isinstance(c, pygit2.Commit):
                self.commits[cid] = False
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
    intact back to an intact commit, keeping every intact commit; the refs
    moved. A readable tip goes back to its newest intact ancestor. A tip
    this copy does not hold has no parents to follow: the newest intact
    value the ref held before (its reflog, or the git repository the project
    is shared through), else the newest intact commit of the object
    database that no sound ref reaches (the chain the lost commits were
    added to), else the newest intact commit at all. A ref is left alone
    when no commit is intact (the caller starts history afresh). Call under
    the repository lock."""
    import heapq

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
    chosen: dict[str, tuple[str, str, tuple[str, ...]]] = {}
    for ref, oid in broken.items():
        tip = intact.read(oid) if oid is not None else None
        if not isinstance(tip, pygit2.Commit):
            continue
        # Every commit the tip reaches that is not intact is lost; the
        # newest intact commit where that walk stops is the new tip.
        heap, seen, lost, stops = [(-tip.commit_time, str(tip.id))], {str(tip.id)}, [], []
        while heap:
            _, cid = heapq.heappop(heap)
            if intact.commit(cid):
                stops.append(cid)
                continue
            lost.append(cid)
            c = intact.read(cid)
            for p in c.parent_ids if isinstance(c, pygit2.Commit) else ():
                if str(p) not in seen:
                    seen.add(str(p))
                    parent = intact.read(p)
                    heapq.heappush(heap, (-parent.commit_time if isinstance(parent, pygit2.Commit) else 0, str(p)))
        if stops:
            new = max(stops, key=lambda s: intact.read(s).commit_time)
            chosen[ref] = (new, "its newest intact ancestor", tuple(lost))
    # Tips this copy lacks, the checked-out branch first.
    rest = sorted((r for r in broken if r not in chosen), key=lambda r: (r != f"refs/heads/{head_branch(repo)}", r))
    pool = None
    for ref in rest:
        before = next((e for e in _earlier_values(repo, ref) if e != broken[ref] and intact.commit(e)), None)
        if before is not None:
            chosen[ref] = (before, "the newest intact commit it pointed to before", (broken[ref],) if broken[ref] else ())
            continue
        if pool is None:
            pool = sorted((c for c in (intact.read(o) for o in g.odb) if isinstance(c, pygit2.Commit) and intact.commit(c.id)),
                          key=lambda c: c.commit_time, reverse=True)
        if not pool:
            break  # nothing is intact: history starts afresh
        tips, reached = [*sound.values(), *(n for n, _, _ in chosen.values())], set()
        if tips:
            walker = g.walk(tips[0])
            for tip in tips[1:]:
                walker.push(tip)
            reached = {str(c.id) for c in walker}
        free = next((c for c in pool if str(c.id) not in reached), None)
        how = "the newest intact commit no other ref reaches" if free is not None else "the newest intact commit"
        chosen[ref] = (str((free or pool[0]).id), how, (broken[ref],) if broken[ref] else ())
    moves = []
    for ref, (new, how, lost) in chosen.items():
        atomic_write(git_dir(repo) / ref, f"{new}\n".encode())
        old = broken[ref]
        moves.append(Rewind(ref, old, old is not None and not isinstance(intact.read(old), pygit2.Commit), new, how, lost))
    return moves


def repair_history(repo: Repository, damaged: bool = False) -> str:
    """Commit the current manifest. In damaged history (unreadable, or
    failing `git fsck`) each ref whose commit is missing or not intact is
    first moved back to an intact one (rewind_broken_refs); only history
    that is still damaged then, or holds no intact commit at all, is moved
    to quarantine/ and started afresh from the manifest. Returns what was
    done."""
    import time

    with repo.lock:
        rewound: list[Rewind] = []
        if damaged and exists(repo):
            try:
                rewound = rewind_broken_refs(repo)
            except Exception:  # noqa: BLE001 - too damaged to tell: started afresh below
                rewound = []
            if rewound:
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
            refs = ", ".join(f"{r.name} back from {(r.old or 'an unreadable value')[:12]} to {r.new[:12]}" for r in rewound)
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
    return moved + done
