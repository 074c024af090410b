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
from pathlib import Path

from lattice import gitpack
from lattice.errors import HistoryError
from lattice.history import (
    DEFAULT_BRANCH,
    GITDIR,
    PENDING,
    RECOVERED,
    commit,
    exists,
    git_dir,
    head_branch,
    head_commit,
    manifest_blobs,
    open_git,
    signature,
    snapshot_tree,
)
from lattice.history_pending import _why, catch_up
from lattice.history_rewind import Rewind, rewind_broken_refs
from lattice.repo import Repository


def fsck(repo: Repository, repair: bool = False) -> list[tuple[str, str]]:
    """(problem, what repair did) for `lattice fsck`."""
    found = check(repo)
    if not repair or all(m.startswith(UNCHECKED) for m in found):  # nothing found that a repair could mend
        return [(m, "") for m in found]
    joined = _join_conflicted_refs(repo)
    if joined:
        # Two clones each committed, and a git merge of the project left
        # both tips in a ref file: every commit of both sides is kept.
        done = f"joined both sides of a git merge conflict in {', '.join(joined)}"
        still = check(repo)
        if still:
            done += "; " + repair_history(repo, _damaged(still))
        return [(m, done) for m in found]
    damaged = _damaged(found)
    if damaged and _fix_head(repo):
        # Only HEAD was broken: every commit, branch and tag is kept.
        still = check(repo)
        damaged = _damaged(still)
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
# git fsck that timed out or could not start found nothing: reported, but no
# reason for --repair to set history aside (a large one takes long to check).
UNCHECKED = "git fsck could not run"


def _damaged(found: list[str]) -> bool:
    """Some of what check() found is damage, not history behind the manifest."""
    return any(not m.startswith((*BEHIND, UNCHECKED)) for m in found)


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
            p = _git_fsck(path)
            if p is not None and p.returncode != 0:
                lines = (p.stderr or p.stdout).strip().splitlines()
                problems.append("git fsck: " + ("; ".join(lines[:3]) or f"exit {p.returncode}"))
        except (OSError, subprocess.TimeoutExpired) as e:
            problems.append(f"{UNCHECKED}: {e}")
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


def _git_fsck(path: Path):
    """`git fsck` of the history at `path`, through a view of it that has a
    config of lattice's own: history.git is committed and cloned with the
    project, so its config is someone else's text, and git takes some of
    it (core.fsmonitor, core.worktree, includes) as programs to run or files
    to read. The view holds a copy of HEAD and packed-refs and links to
    refs/ and logs/; objects are read in place (GIT_OBJECT_DIRECTORY).
    None when the system's temp folder has no room for the view."""
    import shutil
    import subprocess
    import tempfile

    with contextlib.ExitStack() as stack:
        try:
            view = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lattice-fsck-")))
            (view / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tbare = true\n")
            for name in ("HEAD", "packed-refs"):
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    shutil.copyfile(path / name, view / name, follow_symlinks=False)
            for name in ("refs", "logs"):
                if (path / name).is_dir():
                    (view / name).symlink_to(path / name)
            (view / "refs").mkdir(exist_ok=True)  # git takes a folder without refs/ for no repository
        except OSError:
            return None  # no room for the view: history is checked by reading it, as without git
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(GIT_DIR=str(view), GIT_OBJECT_DIRECTORY=str(path / "objects"), GIT_CONFIG_NOSYSTEM="1")
        return subprocess.run(["git", "fsck", "--no-progress", "--no-dangling"],
                              capture_output=True, text=True, timeout=300, env=env, cwd=view)


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
        if not gitpack.pack_sound(pack, idx):
            for kind, data in gitpack.salvage_pack(pack, idx):
                # Loose files of our own (libgit2 would take an object its
                # damaged pack lists as present, and skip the write).
                read_back += gitpack.write_loose(objects, kind, data)
            bad += [f for f in sorted(packs.glob(pack.stem + ".*")) if f.suffix != ".pack"] + [pack]  # index first
    for pack in sorted(packs.glob("pack-*.pack")) if packs.is_dir() else []:
        if not pack.with_suffix(".idx").exists():
            # No index (a repair killed while it set a pack aside, a pack
            # whose index was never written): git and libgit2 do not read it.
            for kind, data in gitpack.salvage_pack(pack, None):
                read_back += gitpack.write_loose(objects, kind, data)
            bad += [pack]
    with contextlib.suppress(OSError):
        for folder in sorted(objects.iterdir()):
            if len(folder.name) != 2 or not re.fullmatch(r"[0-9a-f]{2}", folder.name) or not folder.is_dir():
                continue
            for f in sorted(folder.iterdir()):
                if re.fullmatch(r"[0-9a-f]{38}", f.name) and not gitpack.loose_sound(f, folder.name + f.name):
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
                damaged = _damaged(check(repo))
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
