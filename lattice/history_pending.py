"""The commit at the end of a transaction, and catching up one that never
landed.

A transaction writes the manifest first and commits to history last. Just
before the manifest write it drops a marker file (`history-pending`) naming
the commit it means to make; the commit removes it. A marker found by the
next transaction means the last one never reached history (a crash, or
damaged history): that transaction first commits a full snapshot, as the
commit that was meant and marked "recovered uncommitted changes", so
nothing recorded is ever missing from history for long. `lattice fsck`
compares the manifest with HEAD and repairs the same way.
"""

from __future__ import annotations

import contextlib
import os

from lattice import history
from lattice.errors import warn
from lattice.history import PENDING, RECOVERED
from lattice.repo import Repository


def begin(repo: Repository, message: str = "", parents_extra: list[str] = ()) -> None:
    """Called under the lock just before a transaction writes the manifest.
    Catches up on a change that never reached history, then marks this one
    with the commit it means to make (mark), so that a process killed
    before the commit is caught up as that commit."""
    try:
        catch_up(repo)
    except Exception as e:  # never block the user's change on history
        _warn_behind(e)
    mark(repo, message, parents_extra)


def mark(repo: Repository, message: str = "", parents_extra: list[str] = ()) -> None:
    """Write the PENDING marker: the commit a change in progress means to
    make. A merge names its second parent only once its journal is durable
    (switch.change_state): a merge that fails before that must not be
    caught up as a merge commit. Not fsynced: it only has to outlive a
    killed process (the page cache does); after a power loss `lattice fsck`
    still finds the gap by comparing."""
    import json

    (repo.dir / PENDING).write_text(json.dumps({"message": message, "parents": list(parents_extra)}) if message else "")


def unmark(repo: Repository) -> None:
    """Remove the marker of a change that stopped before it changed
    anything: one still saying nothing (begin's, before a merge's journal
    named the commit in it). A marker that names a commit stays for
    catch_up: the change it marks is under way."""
    if _intent(repo) == {}:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(repo.dir / PENDING)


def catch_up(repo: Repository) -> str | None:
    """Commit a change that a killed process recorded in the manifest but not
    in history (the PENDING marker is there), as the commit it meant to make;
    remove the marker. Returns the commit id (None: nothing to commit)."""
    marker = repo.dir / PENDING
    intent = _intent(repo)
    if intent is None:
        return None
    try:
        message, parents = f"{intent['message']} ({RECOVERED})", [str(p) for p in intent["parents"]]
    except (KeyError, TypeError):
        message, parents = RECOVERED, []
    g = history.open_git(repo)
    head = history.head_commit(g)
    # A merge's other side, unless history lost it or HEAD already has it.
    parents = [p for p in parents if head is not None and _known(g, p) and not g.descendant_of(head.id, p)]
    oid = history.commit(repo, message, parents_extra=parents)
    os.unlink(marker)
    return oid


def _known(g, commit_id: str) -> bool:
    try:
        return g.get(commit_id) is not None
    except ValueError:
        return False


def finish(repo: Repository, message: str, names: list[str], parents_extra: list[str] = (), written: dict[str, bytes] | None = None) -> str | None:
    """Commit a transaction's changed assets; on failure warn and leave the
    marker, so the next transaction (or `fsck --repair`) catches up.
    `written`: manifest file path → the text just written there."""
    try:
        oid = history.commit(repo, message, names, parents_extra, written)
    except Exception as e:
        warn(f"the change was recorded, but not in history: {_why(e)}; `lattice fsck --repair` commits it")
        _mark_failed(repo)
        return None
    try:
        os.unlink(repo.dir / PENDING)
    except FileNotFoundError:
        pass
    return oid


def _intent(repo: Repository) -> dict | None:
    """What the PENDING marker says (message, extra parents, whether its
    commit failed); None without a marker; {} for one that says nothing."""
    import json

    try:
        text = (repo.dir / PENDING).read_text()
    except FileNotFoundError:
        return None
    try:
        intent = json.loads(text) if text else {}
    except ValueError:
        return {}
    return intent if isinstance(intent, dict) else {}


def _mark_failed(repo: Repository) -> None:
    """Say in the marker that its commit was tried and failed: a later
    command does not retry it behind the user's back (the next change, or
    `fsck --repair`, does), which would only fail and warn again."""
    import json

    from lattice.fsutil import atomic_write

    intent = _intent(repo)
    if intent is not None:
        with contextlib.suppress(OSError):
            atomic_write(repo.dir / PENDING, json.dumps({**intent, "failed": True}).encode())


def catch_up_left_behind(repo: Repository) -> None:
    """Commit the change a killed process recorded but did not commit (its
    marker is there, its lock gone), so that history and `fsck` agree again
    without waiting for the next change. The caller saw the marker and does
    not hold the lock (a marker of its own is a change under way). One whose
    commit failed waits for the next change or `fsck --repair`, as does one
    another process holds the lock over."""
    if (_intent(repo) or {}).get("failed") is True or not repo.lock.try_acquire():
        return
    try:
        catch_up(repo)
    except Exception as e:
        _mark_failed(repo)
        _warn_behind(e)
    finally:
        repo.lock.release()


def _warn_behind(e: Exception) -> None:
    warn(f"history is behind the manifest and could not catch up: {_why(e)}; `lattice fsck --repair` commits it")


def _why(e: Exception) -> str:
    why = getattr(e, "message", None) or str(e) or type(e).__name__
    if "corrupted loose reference" in why:  # what a git merge of two clones leaves in history.git/refs
        why += " (a git merge conflict in .lattice/history.git? `lattice fsck --repair` joins both sides)"
    return why

