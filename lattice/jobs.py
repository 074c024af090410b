"""Job handlers: what a worker does with each job type of the queue.

Render jobs carry one render step (see lattice.render) and the repository
root; gc and export jobs go to their own modules, imported when such a job runs.
Handlers open the repository once per worker process.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import msgspec

RENDER_TYPES = ("image", "video", "audio", "derive", "preview", "composition", "analysis")


def _repo(root: str):
    """The repository at `root`, opened once per worker process, its config
    and generators read again when config.toml changed (an edit, a new
    `lattice trust`): a long-running worker or watch never runs jobs with
    the config it started with."""
    import os

    repo = _opened(root)
    try:
        st = os.stat(repo.dir / "config.toml")
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    except FileNotFoundError:
        stamp = None
    if repo.__dict__.get("_config_stamp", stamp) != stamp:
        repo.__dict__.pop("config", None)
        repo.__dict__.pop("_generators", None)
    repo.__dict__["_config_stamp"] = stamp
    return repo


@functools.lru_cache(maxsize=8)
def _opened(root: str):
    from lattice.repo import Repository

    return Repository(Path(root))


def _here(ctx) -> dict:
    """The job's payload, its project root set to the repository whose queue
    holds it: a project copied (`cp -a`) or moved since the job was queued
    keeps its jobs, which must not write to the old folder."""
    payload = ctx.job.payload
    db = ctx.queue_path
    if db.name == "queue.db" and db.parent.name == ".lattice":
        payload["root"] = str(db.parent.parent)
    return payload


def render_job(ctx) -> dict[str, Any]:
    from lattice.produce import Hooks
    from lattice.render import Step, run_step

    payload = _here(ctx)
    step = msgspec.convert(payload["step"], Step)
    hooks = Hooks(progress=ctx.progress, env=ctx.env, on_process=ctx.on_process, timeout=ctx.timeout,
                  cancelled=ctx.cancelled, commit=ctx.commit)
    # A failure's error, hint and stderr tail are kept by the queue (the worker records them).
    return msgspec.to_builtins(run_step(_repo(payload["root"]), step, hooks))


def gc_job(ctx) -> dict[str, Any]:
    from lattice.gc import gc_job as handler  # imported only when a gc job runs

    _here(ctx)
    return handler(ctx)


def export_job(ctx) -> dict[str, Any]:
    from lattice.export import export_job as handler

    _here(ctx)
    return handler(ctx)


def branch_of(payload: dict) -> str:
    """The branch a job records on ("": none, or any): a render step's, or
    an export's into the project. Run while another branch is checked out,
    it records nothing (superseded, see lattice.render.record_version)."""
    if isinstance(payload.get("step"), dict):
        return payload["step"].get("branch") or ""
    return (payload.get("branch") or "") if payload.get("asset") else ""


def queued_on(repo, branch: str) -> list[int]:
    """The queued or running jobs that record on `branch` only: what a
    switch away from it leaves to be superseded. None found when the queue
    cannot be read (a courtesy: the commands that use it report that)."""
    if not (repo.dir / "queue.db").exists():
        return []
    from lattice.errors import LatticeError
    from lattice.queue import ACTIVE, repo_queue

    try:
        with repo_queue(repo.dir, repo.config, reading=True) as queue:
            jobs = queue.list(ACTIVE, limit=None)
    except LatticeError:
        return []
    return sorted(j.id for j in jobs if isinstance(j.payload, dict) and branch_of(j.payload) == branch)


HANDLERS = {t: render_job for t in RENDER_TYPES}
HANDLERS.update(gc=gc_job, export=export_job)
