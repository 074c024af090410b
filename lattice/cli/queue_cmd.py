"""`lattice queue ...` and `lattice worker`: a thin layer over lattice.queue
and lattice.worker. Every command takes `--json`; text goes to stdout, notes
about what a worker is doing go to stderr."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Optional

import typer

from lattice.cli.common import a_number, say
from lattice.errors import LatticeError, UsageError

queue_app = typer.Typer(
    name="queue",
    help="Inspect and steer the job queue.",
    no_args_is_help=True,
    add_completion=False, rich_markup_mode=None,
)

JsonOpt = typer.Option(False, "--json", help="Print JSON instead of text.")


def _open_queue(reading: bool = False):
    from lattice.cli.common import repo_from_ctx
    from lattice.queue import repo_queue

    repo = repo_from_ctx(reading=reading)
    return repo_queue(repo.dir, repo.config, reading=reading)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def _job_json(q, job) -> dict:
    return job.to_dict() | {"eta": q.eta(job)}


def _ago(t: float | None) -> str:
    if t is None:
        return "-"
    s = max(0.0, time.time() - t)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.0f}{unit} ago"
    return f"{s:.0f}s ago"


def _seconds(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s / 60:.0f}m{s % 60:02.0f}s" if s >= 60 else f"{s:.0f}s"


def _line(q, job) -> str:
    # How far it got: while running, and once finished (100% for a success);
    # blank for a job that never started (or is waiting to start again).
    shown = job.state == "running" or (job.finished and job.started_at is not None)
    progress = f"{job.progress:4.0%}" if shown else "    "
    what = (job.stage or "") if job.state == "running" else (job.error or "")
    if job.state == "succeeded" and isinstance(job.result, dict) and job.result.get("status") == "superseded":
        what = f"superseded: {job.result.get('error') or 'nothing recorded'}"  # ran, but another change came first
    if job.state == "running":
        what = f"{what} eta {_seconds(q.eta(job))}".strip()
    return (
        f"{job.id:>6}  {job.state:<9}  {job.priority:<6}  {job.type:<11}  {progress}  "
        f"{_ago(job.queued_at):>8}  {what}"
    ).rstrip()


@queue_app.command("ls")
def ls(
    state: Optional[list[str]] = typer.Option(None, "--state", "-s", help="Only jobs in this state (repeatable)."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="Show at most this many, newest first."),
    all_: bool = typer.Option(False, "--all", "-a", help="Show every job (no limit)."),
    as_json: bool = JsonOpt,
) -> None:
    """List jobs, newest first."""
    q = _open_queue(reading=True)
    jobs = q.list(states=state or None, limit=None if all_ else limit)
    if as_json:
        _print_json([_job_json(q, j) for j in jobs])
        return
    if not jobs:
        typer.echo("no jobs")
        return
    typer.echo(f"{'ID':>6}  {'STATE':<9}  {'PRIO':<6}  {'TYPE':<11}  {'DONE':<4}  {'QUEUED':>8}  STAGE / ERROR")
    for job in jobs:
        typer.echo(_line(q, job))
    counts = q.counts()
    if sum(counts.values()) > len(jobs):
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        typer.echo(f"({len(jobs)} shown of {summary}; --all shows every job)")


@queue_app.command("show")
def show(job_id: str = typer.Argument(..., metavar="ID"), as_json: bool = JsonOpt) -> None:
    """Show one job in full."""
    from lattice.queue import cancel_note

    q = _open_queue(reading=True)
    job = q.get(job_id)
    if as_json:
        _print_json(_job_json(q, job))
        return
    rows = [
        ("job", job.id), ("type", job.type), ("state", job.state), ("priority", job.priority),
        ("slot", job.slot), ("key", job.key), ("depends on", ", ".join(map(str, job.deps)) or None),
        ("asked by", f"{job.user}@{job.host}"), ("attempts", f"{job.attempts} of {job.max_retries + 1}"),
        ("timeout", ("none" if not job.timeout else _seconds(job.timeout) if job.timeout >= 60 else f"{job.timeout:g}s")), ("queued", _ago(job.queued_at)),
        ("started", _ago(job.started_at)), ("finished", _ago(job.finished_at)),
        ("progress", f"{job.progress:.0%} {job.stage or ''}".strip()), ("worker", job.worker),
        ("eta", _seconds(q.eta(job)) if not job.finished else None),
        # A cancel says by whom and why ("cancelled:  by `lattice gen` (…) when it was interrupted").
        # One an older lattice cancelled recorded no one: it still says it was cancelled.
        ("cancelled", cancel_note(job.cancelled_by).removeprefix("cancelled").strip() or "by whom was not recorded")
        if job.state == "cancelled"
        else ("error", job.error),
        ("hint", job.hint),
        ("exit code", job.exit_code),  # what a command waiting for it exits with (README, "Exit codes")
        ("payload", json.dumps(job.payload, sort_keys=True)),
        ("result", json.dumps(job.result, sort_keys=True) if job.result is not None else None),
    ]
    for name, value in rows:
        if value not in (None, "", "-"):
            typer.echo(f"{name + ':':<12}{value}")
    if job.stderr_tail:
        typer.echo("stderr (last lines):")
        typer.echo(job.stderr_tail.rstrip())


def _print_states(q, jobs, as_json: bool) -> None:
    """What cancel and retry did: each job's state now."""
    if as_json:
        _print_json([_job_json(q, j) for j in jobs])
        return
    for job in jobs:
        say(f"job {job.id}: {job.state}")


@queue_app.command("cancel")
def cancel(job_ids: list[str] = typer.Argument(..., metavar="ID..."), as_json: bool = JsonOpt) -> None:
    """Cancel queued or running jobs (a running job's process is killed).
    Naming a job that has already finished is an error (exit 10), after
    the others named are cancelled."""
    from lattice.queue import canceller
    from lattice.queue.admin import cancel_refused

    q = _open_queue()
    jobs = q.cancel(job_ids, by=canceller("asked", "lattice queue cancel"))
    _print_states(q, jobs, as_json)
    refused = cancel_refused(jobs)  # a finished job cannot be cancelled: exit 10, once the rest are
    if refused is not None:
        raise refused


@queue_app.command("retry")
def retry(job_ids: list[str] = typer.Argument(..., metavar="ID..."), as_json: bool = JsonOpt) -> None:
    """Queue failed or cancelled jobs again (and the jobs that failed because of them)."""
    q = _open_queue()
    _print_states(q, q.retry(job_ids), as_json)


@queue_app.command("clear")
def clear(
    finished: bool = typer.Option(False, "--finished", help="Delete succeeded, failed and cancelled jobs."),
    as_json: bool = JsonOpt,
) -> None:
    """Delete finished jobs from the queue."""
    if not finished:
        raise UsageError("say what to clear", hint="`lattice queue clear --finished` deletes finished jobs")
    n = _open_queue().clear_finished()
    if as_json:
        _print_json({"cleared": n})
    else:
        say(f"cleared {n} finished job(s)")


@queue_app.command("watch")
def watch(
    # An hour between looks is already no longer watching.
    interval: float = typer.Option(0.5, "--interval", min=0.01, max=3600, callback=a_number, help="Seconds between looks."),
    until_done: bool = typer.Option(False, "--until-done", help="Exit when no job is queued or running."),
    as_json: bool = JsonOpt,
) -> None:
    """Watch queued and running jobs live (Ctrl-C to stop). With --json, print
    one event per change: job, state, progress, stage, eta."""
    from lattice.queue import ACTIVE

    q = _open_queue(reading=True)
    last: dict[int, tuple] = {}  # job id -> (state, progress, stage) last reported

    def look() -> list:
        q.refresh()  # a read-only queue is a copy: made again for each look
        jobs = q.list(states=ACTIVE, limit=1000)
        seen = {j.id for j in jobs}
        # Report how the jobs we were watching ended.
        jobs += [q.get(i) for i in list(last) if i not in seen]
        return jobs

    def events(jobs: list) -> None:
        for job in jobs:
            now = (job.state, round(job.progress, 3), job.stage)
            if last.get(job.id) != now:
                eta = q.eta(job)
                _print_json({"job": job.id, "state": job.state, "progress": job.progress,
                             "stage": job.stage, "eta": None if eta is None else round(eta, 1)})
            if job.finished:
                last.pop(job.id, None)
            else:
                last[job.id] = now

    if as_json:
        while True:
            jobs = look()
            events(jobs)
            if until_done and not last:
                return
            time.sleep(interval)

    from rich.live import Live
    from rich.table import Table

    def table(jobs: list) -> Table:
        t = Table("ID", "STATE", "PRIO", "TYPE", "PROGRESS", "STAGE", "ETA", box=None)
        for job in jobs:
            t.add_row(str(job.id), job.state, job.priority, job.type, f"{job.progress:.0%}",
                      job.stage or job.error or "", _seconds(q.eta(job)))
        counts = q.counts()
        t.caption = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "queue empty"
        return t

    from lattice.cli.common import console

    out = console()
    with Live(table([]), refresh_per_second=4, transient=False, console=out) as live:
        while True:
            q.refresh()
            jobs = q.list(states=ACTIVE, limit=200)
            live.update(table(jobs))
            if until_done and not jobs:
                break
            time.sleep(interval)
    if not out.is_terminal:  # Live leaves its last frame without a line end
        out.line()


def worker_command(slots: int | None = None, once: bool = False) -> tuple[dict[str, int], int | None, LatticeError | None]:
    """`lattice worker [--slots N] [--once]`: run jobs until stopped (first
    Ctrl-C: finish running jobs; second: hand them back) or, with --once,
    until the queue has nothing left for this worker. Returns the counts,
    the signal that stopped it (None: it ran out of work, with --once) and,
    with --once, the error for the jobs it ran that failed (None: none did)."""
    from lattice.jobs import HANDLERS
    from lattice.worker import WorkerPool, detect_slots, graceful_signals

    from lattice.cli.common import name_paths_from_root, repo_from_ctx
    from lattice.pipeline import failed_jobs_error, lease_of

    q = _open_queue()
    pool = WorkerPool(q, HANDLERS, detect_slots(cpu=slots), lease=lease_of(repo_from_ctx()))
    # The jobs' errors and hints are kept in the queue and read from any
    # folder (`queue show`, the command waiting for them): paths from the
    # project root, not from the folder this worker was started in.
    name_paths_from_root()
    names = ", ".join(s.name for s in pool.slots)

    def said(what: str) -> None:
        msg = ("finishing running jobs; Ctrl-C again to hand them back to the queue" if what == "drain"
               else "stopping; handing running jobs back to the queue")
        say(f"worker: {msg}", err=True)

    with graceful_signals(pool, said) as received:
        say(f"worker {pool.id}: slots {names}", err=True)  # said once Ctrl-C drains: scripts may wait for it
        stats = pool.run(once=once)
    summary = ", ".join(f"{n} {k}" for k, n in sorted(stats.items())) or "no jobs run"
    say(f"worker: {summary}", err=True)
    stopped_by = received[0] if received else None
    failed = pool.failed() if once else []  # a long-running worker reports failures in the queue only
    return stats, stopped_by, failed_jobs_error(failed) if failed else None
