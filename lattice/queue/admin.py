"""What users do with the queue: cancel, abandon (a waiting command
stops), retry and clear jobs, and the read-only views (get, list, counts,
pending, wait, eta, check).

`QueueAdmin` is a mixin of `JobQueue` (lattice.queue.core): it uses that
class's connection and transactions (`_tx`, `_read`), its lookups (`_fetch`,
`_require`) and its dependency failure (`_fail_dependents`).
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any, Iterable, Mapping

from lattice.errors import InvalidInput, QueueError, RepositoryCorrupt, closest
from lattice.queue.schema import (
    _COLUMNS,
    ACTIVE,
    DETACHED,
    MAX_ID,
    RECORDED_STAGE,
    SLOT_KINDS,
    STATES,
    Job,
    _parse_id,
    _rows_to_jobs,
    _slot_filter,
    cancel_note,
    canceller,
    this_asker,
)


def _asker_alive(asker: str) -> bool:
    """Whether an asker still counts: a detached submission always; a command
    on this host while its process lives (the process started when it asked,
    not a later one given its pid); one on another host, which cannot be
    looked at, always. An asker of `host:pid` alone (no start) is older."""
    from lattice.childproc import alive, started

    if asker == DETACHED:
        return True
    host, _, rest = asker.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    if not alive(int(pid)):
        return False
    return not start.isdigit() or started(int(pid)) in (int(start), None)


def cancel_refused(jobs: Iterable[Job]) -> QueueError | None:
    """Why some of the jobs a `cancel` named are not cancelled (None: all
    are, or were already): they had finished, or had recorded their result
    and are finishing. A job cancelled before counts as done, as nothing is
    left to do; one that ended otherwise cannot be cancelled (exit 10, as
    `retry` of a job that cannot be retried)."""
    why = {"succeeded": "has already succeeded", "failed": "has already failed",
           "running": "has already recorded its result and is finishing", "queued": "is still queued"}
    jobs = _once_each(jobs)
    refused = [j for j in jobs if j.state != "cancelled"]
    if not refused:
        return None
    reasons = [f"job {j.id} {why[j.state]}" for j in refused]
    message = f"{reasons[0]}, so it cannot be cancelled" if len(reasons) == 1 else \
        f"{len(reasons)} jobs cannot be cancelled: " + "; ".join(reasons)
    others = " (the others named are cancelled)" if len(refused) < len(jobs) else ""
    return QueueError(message, hint="only queued or running jobs can be cancelled; `lattice queue ls --state queued"
                                    f" --state running` lists them{others}")


def _once_each(jobs: Iterable[Job]) -> list[Job]:
    """The jobs in the order named, one named twice (`5 5`, `5 05`) once."""
    return list({j.id: j for j in jobs}.values())


class QueueAdmin:
    def cancel(self, ids: Iterable[int | str], *, by: Mapping[str, Any] | None = None) -> list[Job]:
        """Cancel queued and running jobs (a running job's worker sees it at its
        next heartbeat and kills the process). Finished jobs, and running ones
        whose result is already recorded, are left as they are. `by` is who
        cancels, as `canceller` makes it (default: this process, asked).
        Returns the jobs as they now stand."""
        by = canceller("asked", None) if by is None else by
        with self._tx() as db:
            jobs = _once_each(self._require(db, i) for i in ids)
            self._cancel(db, [j.id for j in jobs], by)
            return [self._fetch(db, j.id) for j in jobs]  # type: ignore[misc]

    def abandon(self, ids: Iterable[int | str], *, by: Mapping[str, Any]) -> tuple[list[int], list[int]]:
        """This process stops waiting for `ids` (the command was interrupted,
        or failed): it no longer asks for them. Those of them, and of the
        unfinished jobs they wait on, that nobody else still asks for -- a
        live command waiting for them or for a job that waits on them, or a
        detached submission -- are cancelled, recording `by`. Returns (the
        ids cancelled, the unfinished ids left to the others)."""
        me = this_asker()
        ids = sorted({_parse_id(i) for i in ids})
        with self._tx() as db:
            db.executemany("DELETE FROM askers WHERE job=? AND asker=?", [(i, me) for i in ids])
            # A job another command queued that ours joined may wait on more
            # of its jobs: with no one left to ask for them, they go too.
            seen, todo = set(ids), list(ids)
            while todo:
                for (dep,) in db.execute(
                    "SELECT d.dep FROM deps AS d JOIN jobs AS p ON p.id=d.dep WHERE d.job=? AND p.state IN ('queued','running')",
                    (todo.pop(),),
                ).fetchall():
                    if dep not in seen:
                        seen.add(dep)
                        todo.append(dep)
            live: dict[str, bool] = {}
            doomed, kept = [], []
            for job_id in sorted(seen):
                row = db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
                if row is None or row[0] not in ACTIVE:
                    continue
                (kept if self._still_asked(db, job_id, live) else doomed).append(job_id)
            # Each is cancelled itself (recording `by`), not failed by its
            # dependency's cancel: _cancel fails dependents only after.
            return sorted(self._cancel(db, doomed, by)), kept

    def detach(self, ids: Iterable[int | str]) -> None:
        """This process, which asked for `ids` and waited (`submit(...,
        waiting=True)`), leaves them to a worker instead, as a detached
        submission does: nothing it does or suffers later cancels them.
        `lattice gen --detach` queues its jobs waiting and detaches them once
        all are queued, so that a Ctrl-C halfway leaves none of them behind."""
        me = this_asker()
        ids = sorted({_parse_id(i) for i in ids})
        with self._tx() as db:
            db.executemany("INSERT OR IGNORE INTO askers (job, asker) SELECT id, ? FROM jobs WHERE id=?",
                           [(DETACHED, i) for i in ids])
            db.executemany("DELETE FROM askers WHERE job=? AND asker=?", [(i, me) for i in ids])

    def _still_asked(self, db, job_id: int, live: dict[str, bool]) -> bool:
        """Whether a live asker wants `job_id` or an unfinished job that
        (transitively) waits on it. `live` caches each asker's answer."""
        seen, todo = {job_id}, [job_id]
        while todo:
            job = todo.pop()
            for (asker,) in db.execute("SELECT asker FROM askers WHERE job=?", (job,)).fetchall():
                if asker not in live:
                    live[asker] = _asker_alive(asker)
                if live[asker]:
                    return True
            for (child,) in db.execute(
                "SELECT d.job FROM deps AS d JOIN jobs AS j ON j.id=d.job WHERE d.dep=? AND j.state IN ('queued','running')",
                (job,),
            ).fetchall():
                if child not in seen:
                    seen.add(child)
                    todo.append(child)
        return False

    def _cancel(self, db, ids: list[int], by: Mapping[str, Any]) -> list[int]:
        """Cancel those of `ids` still active and not running past recording;
        returns them. (A queued job's stage is its last run's: reclaimed
        from a killed worker, it is no longer past anything.)"""
        done = []
        now = time.time()
        record, note = json.dumps(dict(by), sort_keys=True), cancel_note(by)
        for job_id in ids:
            state, stage = db.execute("SELECT state, stage FROM jobs WHERE id=?", (job_id,)).fetchone()
            if state == "queued" or state == "running" and stage != RECORDED_STAGE:
                db.execute(
                    "UPDATE jobs SET state='cancelled', finished_at=?, error=?, cancelled_by=?, exit_code=NULL, hint=NULL,"
                    " worker=NULL, lease_until=NULL WHERE id=?",
                    (now, note, record, job_id),
                )
                done.append(job_id)
        # Only then their dependents fail: one cancelled here is cancelled,
        # recording who, even when it waits on another (a job joined by a
        # later submission can wait on a newer one).
        for job_id in done:
            self._fail_dependents(db, job_id)
        return done

    def retry(self, ids: Iterable[int | str]) -> list[Job]:
        """Queue failed or cancelled jobs again with fresh attempts, together
        with the jobs that failed only because of them. A job named here
        that waits on a failed or cancelled job not named with it is
        refused (it could never run): the hint names what to retry with it.
        A dependent that also waits on another dead job stays failed,
        blocked by that one, whose retry revives it."""
        with self._tx() as db:
            jobs = _once_each(self._require(db, i) for i in ids)
            for job in jobs:
                if job.state not in ("failed", "cancelled"):
                    raise QueueError(
                        f"job {job.id} is {job.state}; only failed or cancelled jobs can be retried",
                        hint="`lattice queue ls --state failed` lists them",
                    )
            named = {j.id for j in jobs}
            for job in jobs:
                dead = [d for d in self._dead_deps(db, job.id) if d not in named]
                if dead:
                    raise self._blocked(db, job.id, dead, named)
            now = time.time()
            todo = [j.id for j in jobs]
            revived: set[int] = set()
            while todo:
                job_id = todo.pop()
                if job_id in revived:
                    continue
                if job_id not in named:  # a dependent: only if nothing else it waits on is dead
                    dead = [d for d in self._dead_deps(db, job_id) if d not in revived and d not in named]
                    if dead:  # still blocked: by that one now, and its error says so
                        state = db.execute("SELECT state FROM jobs WHERE id=?", (dead[0],)).fetchone()[0]
                        why = f"dependency {dead[0]} " + ("was cancelled" if state == "cancelled" else "failed")
                        db.execute("UPDATE jobs SET blocked_by=?, error=? WHERE id=?", (dead[0], why, job_id))
                        continue
                revived.add(job_id)
                db.execute(
                    "UPDATE jobs SET state='queued', attempts=0, error=NULL, stderr_tail=NULL, exit_code=NULL, hint=NULL, result=NULL,"
                    " started_at=NULL, finished_at=NULL, next_try=?, progress=0, stage=NULL, blocked_by=NULL,"
                    " cancelled_by=NULL WHERE id=?",
                    (now, job_id),
                )
                # Queued again for a worker: no other command's Ctrl-C takes it back.
                db.execute("INSERT OR IGNORE INTO askers (job, asker) VALUES (?,?)", (job_id, DETACHED))
                todo += [r[0] for r in db.execute(
                    "SELECT id FROM jobs WHERE blocked_by=? AND state='failed'", (job_id,))]
            return [self._fetch(db, j.id) for j in jobs]  # type: ignore[misc]

    def _dead_deps(self, db, job_id: int) -> list[int]:
        """The dependencies of `job_id` that failed or were cancelled."""
        return [r[0] for r in db.execute(
            "SELECT d.dep FROM deps AS d JOIN jobs AS p ON p.id=d.dep"
            " WHERE d.job=? AND p.state IN ('failed','cancelled') ORDER BY d.dep", (job_id,))]

    def _blocked(self, db, job_id: int, dead: list[int], named: set[int]) -> QueueError:
        """Why `job_id` cannot be retried alone: it waits on `dead`. The hint's
        command retries those and every dead job they wait on in turn, with
        the jobs already named, which is enough for all of them to run."""
        states = dict(db.execute(
            f"SELECT id, state FROM jobs WHERE id IN ({','.join('?' * len(dead))})", dead).fetchall())
        how = {d: "cancelled" if states[d] == "cancelled" else "failed" for d in dead}
        if len(dead) == 1:
            what = f"job {dead[0]}, which {'was cancelled' if how[dead[0]] == 'cancelled' else 'failed'}"
        else:
            what = "jobs " + ", ".join(f"{d} ({how[d]})" for d in dead)
        needed, todo = set(named), list(dead)
        while todo:
            d = todo.pop()
            if d not in needed:
                needed.add(d)
                todo += self._dead_deps(db, d)
        return QueueError(
            f"job {job_id} waits on {what}, so it could never run",
            hint=f"retry them together: `lattice queue retry {' '.join(map(str, sorted(needed)))}`",
        )

    def clear_finished(self) -> int:
        """Delete succeeded, failed and cancelled jobs; returns how many. A
        deleted dependency counts as done for jobs still waiting on it (only
        succeeded ones can be: a failed one has already failed its dependents)."""
        with self._tx() as db:
            n = db.execute("DELETE FROM jobs WHERE state IN ('succeeded','failed','cancelled')").rowcount
            db.execute("DELETE FROM deps WHERE job NOT IN (SELECT id FROM jobs)")
            db.execute("DELETE FROM askers WHERE job NOT IN (SELECT id FROM jobs)")
            return n

    def get(self, job_id: int | str) -> Job:
        with self._read() as db:
            return self._require(db, job_id)

    def list(self, states: Iterable[str] | None = None, limit: int | None = 100) -> list[Job]:
        """Jobs, newest first, at most `limit` (None: all)."""
        args: list[Any] = []
        where = ""
        if states is not None:
            states = list(states)
            for s in states:
                if s not in STATES:
                    raise InvalidInput(f"unknown job state {s!r}{closest(s, STATES)}",
                                     hint=f"states are: {', '.join(STATES)}")
            where = f"WHERE state IN ({','.join('?' * len(states))})"
            args += states
        sql = f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(min(int(limit), MAX_ID))  # more than can be: every job, as for `lattice log -n`
        with self._read() as db:
            return _rows_to_jobs(db, db.execute(sql, args).fetchall())

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        with self._read() as db:
            found = dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
        return {s: found.get(s, 0) for s in STATES}

    def pending(self, slots: Iterable[str] = SLOT_KINDS, types: Iterable[str] | None = None, only: Iterable[int] | None = None) -> int:
        """How many queued jobs wait for one of `slots` (runnable now or later)."""
        where, args = _slot_filter(slots, types, only)
        with self._read() as db:
            return db.execute(f"SELECT count(*) FROM jobs WHERE state='queued' AND {where}", args).fetchone()[0]

    def wait(self, ids: Iterable[int | str], timeout: float | None = None, poll: float = 0.1) -> list[Job]:
        """Block until every job named is finished; returns them. QueueError
        if `timeout` seconds pass first."""
        ids = [_parse_id(i) for i in ids]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            jobs = [self.get(i) for i in ids]
            if all(j.finished for j in jobs):
                return jobs
            if deadline is not None and time.monotonic() >= deadline:
                waiting = ", ".join(str(j.id) for j in jobs if not j.finished)
                raise QueueError(f"timed out after {timeout:g} s waiting for job(s) {waiting}",
                                 hint="`lattice queue ls` shows what they are doing; is a worker running?")
            time.sleep(poll)

    def eta(self, job: Job) -> float | None:
        """Seconds until `job` should finish, from the run times of earlier jobs
        with its estimate key (and its progress, when running). For a queued job
        this is its own run time, not the wait before it starts. None: no idea."""
        if job.finished:
            return 0.0
        mean = None
        if job.estimate_key:
            with self._read() as db:
                row = db.execute("SELECT seconds FROM estimates WHERE key=?", (job.estimate_key,)).fetchone()
            mean = row[0] if row else None
        if job.state == "queued":
            return mean
        elapsed = time.time() - (job.started_at or time.time())
        if 0.05 <= job.progress < 1:
            by_progress = elapsed / job.progress * (1 - job.progress)
            return by_progress if mean is None else (by_progress + max(0.0, mean - elapsed)) / 2
        return None if mean is None else max(0.0, mean - elapsed)

    def check(self) -> list[str]:
        """Problems PRAGMA integrity_check finds (empty: healthy), for fsck."""
        try:
            with self._read() as db:
                rows = [r[0] for r in db.execute("PRAGMA integrity_check")]
        except RepositoryCorrupt as e:
            return [e.message]
        return [] if rows == ["ok"] else [f"{self.path}: {r}" for r in rows]
