"""`lattice watch`: re-render when sources change.

Watches the project with watchfiles (debounced: a burst of saves is one
cycle). An imported asset whose file changed is recorded as a new version
(change type `edited`), then everything downstream re-renders through the
queue; a change to `.lattice/config.toml` re-plans the whole project.
Lattice's own writes (generated outputs, temp files, `.lattice/`) never
trigger a cycle.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from lattice.repo import Repository

MIN_STEP_MS = 20  # the shortest quiet time (and poll sleep) of the watcher


@dataclass
class Cycle:
    recorded: list[str] = field(default_factory=list)  # sources recorded as edited versions
    config_changed: bool = False
    outcomes: list = field(default_factory=list)  # render outcomes
    error: str = ""  # why the cycle stopped short (watching goes on)


def relevant(repo: Repository, changes: Iterable[tuple[object, str]]) -> tuple[list[str], bool]:
    """(imported assets whose files changed, whether the config changed)."""
    config = str(repo.dir / "config.toml")
    sources, config_changed = [], False
    for _, raw in changes:
        if raw == config:
            config_changed = True
            continue
        try:
            name = Path(raw).relative_to(repo.root).as_posix()
        except ValueError:
            continue
        if name.startswith(".lattice/") or "/." in f"/{name}":
            continue
        row = repo.index.get(name)
        if row is not None and not row.generator and os.path.isfile(raw):
            sources.append(name)
    return sorted(set(sources)), config_changed


def run_cycle(repo: Repository, sources: list[str], config_changed: bool, slots: int | None = None, on_poll=None,
              cycle: Cycle | None = None) -> Cycle:
    """One cycle, filling `cycle` as it goes (so that what was recorded before
    an error is still reported)."""
    from lattice.add import add
    from lattice.lineage import Graph
    from lattice.pipeline import abandoning, outcomes, ready_to_queue, run_until_done, submit
    from lattice.render import plan

    cycle = cycle if cycle is not None else Cycle(config_changed=config_changed)
    touched = []
    if sources:
        for r in add(repo, sources, cwd=repo.root):
            touched.append(r.path)
            if r.status != "unchanged":
                cycle.recorded.append(r.path)
    if not touched and not config_changed:
        return cycle
    if config_changed:
        repo.__dict__.pop("config", None)  # re-read it, and the generators it declares
        repo.__dict__.pop("_generators", None)
        repo.config  # a config that no longer parses is reported now, not when a render first needs it
        targets = None
    else:
        # Every changed source's dependents, recorded by this cycle or not (a
        # `lattice add` of the file beat us to it): the plan keeps the stale ones.
        graph = Graph.from_index(repo.index)
        targets = sorted({d for s in touched for d in graph.descendants(s)})
        if not targets:
            return cycle
    steps, skipped = plan(repo, targets)
    # As `lattice render` readies its plan: evicted inputs back, an asset
    # that can no longer be made failed alone.
    steps, unready = ready_to_queue(repo, steps, command="lattice watch")
    cycle.outcomes = [*skipped, *unready]
    if steps:
        with abandoning(repo, [], "lattice watch") as asked:  # a stop before they run leaves none behind
            sub = submit(repo, steps, waiting=True, asked=asked)
            finished = run_until_done(repo, list(sub.jobs.values()), slots=slots, on_poll=on_poll, command="lattice watch")
        cycle.outcomes = outcomes(steps, sub.jobs, finished) + cycle.outcomes
    return cycle


def watch(
    repo: Repository,
    on_cycle: Callable[[Cycle], None],
    stop: threading.Event | None = None,
    debounce_ms: int = 400,
    slots: int | None = None,
    on_poll=None,
    ready: threading.Event | None = None,
) -> None:
    """Run cycles until `stop` is set (or Ctrl-C)."""
    import watchfiles

    def keep(change, path: str) -> bool:
        name = os.path.basename(path)
        if path == str(repo.dir / "config.toml"):
            return True
        return not (name.startswith(".") or f"{os.sep}.lattice{os.sep}" in path or f"{os.sep}.git{os.sep}" in path)

    # watchfiles' `step` is the quiet time that ends a burst; `debounce` only
    # caps how long one burst may be collected. `step` is also how long its
    # loop sleeps between polls: 0 (`--debounce 0`) spun a core at 100% while
    # idle, so it is never less than MIN_STEP_MS.
    watcher = watchfiles.watch(
        repo.root, watch_filter=keep, step=max(debounce_ms, MIN_STEP_MS), debounce=max(10 * debounce_ms, 2000),
        stop_event=stop, yield_on_timeout=True, rust_timeout=200,
    )
    for changes in watcher:
        if ready is not None:
            ready.set()  # the watcher is running: changes from now on are seen
        if not changes:
            continue
        sources, config_changed = relevant(repo, changes)
        if sources or config_changed:
            on_cycle(_guarded_cycle(repo, sources, config_changed, slots, on_poll, debounce_ms))


def _guarded_cycle(repo, sources, config_changed, slots, on_poll, debounce_ms) -> Cycle:
    """A cycle that never ends the watch: a file still being written is
    retried after a quiet moment; any other error is reported in the cycle."""
    import time

    from lattice.errors import ContentChanged, LatticeError

    for attempt in range(5):
        cycle = Cycle(config_changed=config_changed)
        try:
            return run_cycle(repo, sources, config_changed, slots=slots, on_poll=on_poll, cycle=cycle)
        except ContentChanged as e:  # add records all or nothing: nothing to report yet
            cycle.error = e.message
            time.sleep(debounce_ms / 1000 * (attempt + 1))
        except LatticeError as e:
            cycle.error = e.message  # with what it recorded before the error
            return cycle
    return cycle
