"""`JobQueue`: the connection and its transactions, submitting, and the
worker's side of a job -- claim, lease renewal and reclaim, progress,
success, failure with retries, release -- with the failure of the jobs
that depend on a failed one. The users' side is in lattice.queue.admin."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from lattice.errors import QueueError, RepositoryCorrupt, closest
from lattice.queue.admin import QueueAdmin
from lattice.queue.schema import (
    _COLUMNS,
    _SCHEMA,
    DETACHED,
    JOB_TYPES,
    MAX_ID,
    PRIORITIES,
    RECLAIM_EVERY,
    RECORDED_STAGE,
    SCHEMA_VERSION,
    SLOT_KINDS,
    STDERR_TAIL,
    Job,
    _parse_id,
    _rows_to_jobs,
    _slot_filter,
    _type_settings,
    canceller,
    this_asker,
    who,
)


class JobQueue(QueueAdmin):
    """A handle on one queue database; safe to share between threads.

    `types` is the config's `[queue.types]` table. `backoff` is the first
    retry delay in seconds; each further retry doubles it, up to `backoff_max`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        types: Mapping[str, Any] | None = None,
        backoff: float = 2.0,
        backoff_max: float = 600.0,
        busy_timeout: float = 30.0,
        reading: bool = False,
    ):
        self.path = Path(path)
        self.settings = _type_settings(types)
        self.backoff = backoff
        self.backoff_max = backoff_max
        self._lock = threading.RLock()  # one connection, one user at a time
        self._next_reclaim = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._errors():
            from lattice.sqlite import connect

            self._db = connect(self.path, timeout=busy_timeout, check_same_thread=False, reading=reading)
        try:
            self._init_schema()
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @property
    def read_only(self) -> bool:
        """An in-memory copy of a queue.db lattice may not write (`reading`):
        it shows the queue as it was when copied; see refresh."""
        from lattice.sqlite import ReadOnlyCopy

        return isinstance(self._db, ReadOnlyCopy)

    def refresh(self) -> None:
        """Copy a read-only queue again, for what was written to the file
        since (by those who may write it): a watcher sees jobs move on."""
        if not self.read_only:
            return
        from lattice.sqlite import read_only_copy

        with self._lock, self._errors():
            old, self._db = self._db, read_only_copy(self.path)
            old.close()
            self._init_schema()  # no file (yet): the copy is empty

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn SQLite's "not a database" / "malformed" into RepositoryCorrupt.
        OperationalError (locked, busy, disk full) is not corruption."""
        try:
            yield
        except sqlite3.OperationalError as e:
            from lattice.errors import WriteRefused
            from lattice.sqlite import storage_failure

            refused = storage_failure(e, self.path)
            if isinstance(refused, WriteRefused):  # a full disk, a read-only file: not the queue's fault
                raise refused from e
            raise QueueError(
                f"queue database {self.path}: {e}",
                hint="another process may hold it for long; try again, or check the disk has space",
            ) from e
        except sqlite3.DatabaseError as e:
            raise RepositoryCorrupt(f"queue database {self.path} is damaged: {e}") from e

    def _init_schema(self) -> None:
        # WAL with NORMAL sync (lattice.sqlite.connect): a crash of the process
        # loses nothing, a power cut may roll back the last few state changes --
        # which re-runs a job at worst, never half-writes one.
        with self._read() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RepositoryCorrupt(
                f"queue database {self.path} has format {version}; this lattice knows {SCHEMA_VERSION}",
                hint="upgrade lattice, or move the file away to start an empty queue",
            )
        if version < SCHEMA_VERSION:
            with self._tx() as db:
                # Read again under the write lock: another process may have
                # brought it up to date meanwhile.
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version == 1:  # format 1 had no exit_code
                    db.execute("ALTER TABLE jobs ADD COLUMN exit_code INTEGER")
                if version in (1, 2):  # nor cancelled_by, nor askers
                    db.execute("ALTER TABLE jobs ADD COLUMN cancelled_by TEXT")
                if version in (1, 2, 3):  # nor a failure's hint
                    db.execute("ALTER TABLE jobs ADD COLUMN hint TEXT")
                if version < SCHEMA_VERSION:
                    # Statement by statement: executescript() would commit the transaction.
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    if version in (1, 2):
                        # Who queued the live jobs is unknown: they count as
                        # left for a worker, which no command's Ctrl-C cancels.
                        db.execute("INSERT OR IGNORE INTO askers (job, asker) SELECT id, ? FROM jobs"
                                   " WHERE state IN ('queued','running')", (DETACHED,))
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken up front (BEGIN IMMEDIATE) so two writers
        queue on SQLite's lock instead of failing halfway with SQLITE_BUSY."""
        with self._lock, self._errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            if self._db.in_transaction:
                self._db.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._errors():
            yield self._db

    def _fetch(self, db: sqlite3.Connection, job_id: int) -> Job | None:
        rows = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchall()
        jobs = _rows_to_jobs(db, rows)
        return jobs[0] if jobs else None

    def _require(self, db: sqlite3.Connection, job_id: int | str) -> Job:
        n = _parse_id(job_id)
        # Past SQLite's INTEGER no job can be, and the id cannot even be bound.
        job = self._fetch(db, n) if n <= MAX_ID else None
        if job is None:
            raise self._unknown(db, job_id)
        return job

    def _unknown(self, db: sqlite3.Connection, job_id: int | str) -> QueueError:
        n = _parse_id(job_id)
        # The numerically nearest ids are the likeliest typos worth naming.
        near = [str(r[0]) for r in db.execute(
            "SELECT id FROM jobs ORDER BY abs(id - ?) LIMIT 20", (n,))] if n <= MAX_ID else []
        suffix = closest(str(job_id), [i for i in near if len(i) == len(str(n))])
        if not suffix:
            low, high = db.execute("SELECT min(id), max(id) FROM jobs").fetchone()
            suffix = f" (its jobs run from {low} to {high})" if low is not None else ""
        return QueueError(f"no job {job_id} in the queue{suffix}", hint="`lattice queue ls --all` lists the jobs")

    # -- submitting ---------------------------------------------------------

    def submit(
        self,
        type: str,
        payload: Any,
        *,
        priority: str = "normal",
        deps: Iterable[int | str] = (),
        key: str | None = None,
        slot: str = "cpu",
        max_retries: int | None = None,
        timeout: float | None = None,
        estimate_key: str | None = None,
        waiting: bool = False,
    ) -> Job:
        """Queue a job. If a job with the same `key` is queued or running,
        return it instead (raising its priority if this one is higher, and,
        while it is queued, adding `deps` to its own): the same recipe queued
        twice runs once, after everything either submitter waits for.

        Either way the submission is recorded among the job's askers. By
        default the job is left to a worker, as `lattice gen --detach`
        leaves it: a script or plug-in may submit and exit, and the job
        still runs. `waiting`: this process will wait for the job (an inline
        pool, `wait`) and asks for it only while it lives: a Ctrl-C or an
        error that stops it waiting (`abandon`) cancels the job unless
        someone else still asks for it; if it dies without a word (`kill
        -9`) the next worker cancels the job as orphaned (see claim) rather
        than run it for no one; `detach` leaves it to a worker after all."""
        if type not in JOB_TYPES:
            raise QueueError(f"unknown job type {type!r}{closest(type, JOB_TYPES)}",
                             hint=f"job types are: {', '.join(JOB_TYPES)}")
        if priority not in PRIORITIES:
            raise QueueError(f"unknown priority {priority!r}{closest(priority, PRIORITIES)}",
                             hint=f"priorities are: {', '.join(PRIORITIES)}")
        if slot not in SLOT_KINDS:
            raise QueueError(f"unknown slot {slot!r}", hint="slots are: cpu, gpu")
        default_retries, default_timeout = self.settings[type]
        retries = default_retries if max_retries is None else max_retries
        timeout = default_timeout if timeout is None else (timeout or None)
        try:
            payload_text = json.dumps(payload, sort_keys=True)
        except (TypeError, ValueError) as e:
            raise QueueError(f"job payload is not JSON: {e}") from None
        dep_ids = sorted({_parse_id(d) for d in deps})
        user, host = who()
        asker = this_asker() if waiting else DETACHED
        prio = PRIORITIES.index(priority)
        with self._tx() as db:
            if key is not None:
                row = db.execute(
                    "SELECT id, priority, state FROM jobs WHERE key=? AND state IN ('queued','running') ORDER BY id LIMIT 1",
                    (key,),
                ).fetchone()
                if row:
                    if prio < row[1]:
                        db.execute("UPDATE jobs SET priority=? WHERE id=?", (prio, row[0]))
                    if row[2] == "queued":  # it now also waits for what this submitter waits for
                        db.executemany("INSERT OR IGNORE INTO deps (job, dep) VALUES (?,?)",
                                       [(row[0], d) for d in self._live_deps(db, row[0], dep_ids)])
                    db.execute("INSERT OR IGNORE INTO askers (job, asker) VALUES (?,?)", (row[0], asker))
                    return self._fetch(db, row[0])  # type: ignore[return-value]
            dep_states = {}
            for d in dep_ids:
                r = db.execute("SELECT state, error FROM jobs WHERE id=?", (d,)).fetchone()
                if r is None:
                    raise self._unknown(db, d)
                dep_states[d] = r
            now = time.time()
            job_id = db.execute(
                "INSERT INTO jobs (type, priority, state, payload, key, slot, user, host, max_retries,"
                " timeout, queued_at, next_try, estimate_key) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (type, prio, "queued", payload_text, key, slot, user, host, retries, timeout, now, now, estimate_key),
            ).lastrowid
            db.executemany("INSERT INTO deps (job, dep) VALUES (?,?)", [(job_id, d) for d in dep_ids])
            db.execute("INSERT INTO askers (job, asker) VALUES (?,?)", (job_id, asker))
            dead = [d for d, (state, _) in dep_states.items() if state in ("failed", "cancelled")]
            if dead:
                self._fail_dependents(db, dead[0], only=[job_id])
            return self._fetch(db, job_id)  # type: ignore[return-value]

    def _live_deps(self, db: sqlite3.Connection, job: int, deps: list[int]) -> list[int]:
        """Those of `deps` a queued `job` may also wait for: unfinished (a
        failed one would leave it queued for ever, its failure having been
        passed on already) and not waiting, however indirectly, on `job`."""
        out = []
        for d in deps:
            state = db.execute("SELECT state FROM jobs WHERE id=?", (d,)).fetchone()
            if state is None:
                raise self._unknown(db, d)
            if d == job or state[0] not in ("queued", "running"):
                continue
            seen, todo = {d}, [d]
            while todo and job not in seen:
                for (up,) in db.execute("SELECT dep FROM deps WHERE job=?", (todo.pop(),)):
                    if up not in seen:
                        seen.add(up)
                        todo.append(up)
            if job not in seen:
                out.append(d)
        return out

    # -- workers ------------------------------------------------------------

    def claim(
        self,
        worker_id: str,
        slots: Iterable[str] = ("cpu",),
        lease: float = 30.0,
        types: Iterable[str] | None = None,
        only: Iterable[int] | None = None,
    ) -> Job | None:
        """Take the next runnable job for one of `slots` (and of `types`, the
        ones this worker has handlers for; and among `only`, the jobs an
        inline pool was started for): highest priority first, FIFO within a
        priority, all dependencies succeeded, backoff over. None when nothing
        is runnable."""
        where, args = _slot_filter(slots, types, only)
        with self._tx() as db:
            now = time.time()
            # Expired leases are looked for at most every RECLAIM_EVERY seconds
            # while jobs keep coming, and whenever nothing else is claimable.
            reclaimed = now >= self._next_reclaim
            if reclaimed:
                self._reclaim_expired(db, now)
            row = self._next_unabandoned(db, now, where, args)
            if row is None and not reclaimed:
                self._reclaim_expired(db, now)
                row = self._next_unabandoned(db, now, where, args)
            if row is None:
                self._fail_stranded(db)
            if row is None:
                return None
            claimed = db.execute(
                "UPDATE jobs SET state='running', attempts=attempts+1, started_at=?, worker=?, lease_until=?,"
                f" progress=0, stage=NULL WHERE id=? RETURNING {_COLUMNS}",
                (now, worker_id, now + lease, row[0]),
            ).fetchall()
            return _rows_to_jobs(db, claimed)[0]

    def _next_unabandoned(self, db: sqlite3.Connection, now: float, where: str, args: list[str]) -> tuple | None:
        """The next runnable job that someone still asks for. One whose
        every asker is a command on this host that is gone (killed outright:
        `kill -9`, the OOM killer, so it could not abandon its jobs as Ctrl-C
        does) is cancelled instead, as that command's Ctrl-C would have
        cancelled it: a later `lattice worker` does not make an asset or
        write an export that nobody waits for any more. A live asker of a
        job that waits on it, or a detached submission, keeps it."""
        live: dict[str, bool] = {}
        while True:
            row = self._next_runnable(db, now, where, args)
            if row is None or self._still_asked(db, row[0], live) or not self._cancel(db, [row[0]], canceller("orphaned", None)):
                return row

    def _next_runnable(self, db: sqlite3.Connection, now: float, where: str, args: list[str]) -> tuple | None:
        return db.execute(
            f"""SELECT id FROM jobs AS j
                WHERE state='queued' AND next_try<=? AND {where}
                  AND NOT EXISTS (SELECT 1 FROM deps AS d JOIN jobs AS p ON p.id=d.dep
                                  WHERE d.job=j.id AND p.state!='succeeded')
                ORDER BY priority, id LIMIT 1""",
            (now, *args),
        ).fetchone()

    def _fail_stranded(self, db: sqlite3.Connection) -> None:
        """Fail queued jobs that wait on a failed or cancelled job, as that
        job's failure would have: they can never run, and a worker (`--once`)
        must not wait for them. The queue fails them when their dependency
        ends; this catches any it did not (a queue written by an older
        lattice, a retry that revived a job but not its dependency)."""
        for job_id, dead in db.execute(
            "SELECT j.id, min(d.dep) FROM jobs AS j JOIN deps AS d ON d.job=j.id JOIN jobs AS p ON p.id=d.dep"
            " WHERE j.state='queued' AND p.state IN ('failed','cancelled') GROUP BY j.id"
        ).fetchall():
            if db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()[0] == "queued":
                self._fail_dependents(db, dead, only=[job_id])

    def _reclaim_expired(self, db: sqlite3.Connection, now: float) -> None:
        """Jobs whose worker stopped renewing its lease (killed, hung, power
        cut) go back to the queue; the lost run counts as an attempt."""
        self._next_reclaim = now + RECLAIM_EVERY
        expired = db.execute(
            "SELECT id, attempts, max_retries FROM jobs WHERE state='running' AND lease_until<?", (now,)
        ).fetchall()
        # A worker on this host whose process is gone need not be waited for.
        here = f"{socket.gethostname()}:"
        for job_id, attempts, retries, worker in db.execute(
            "SELECT id, attempts, max_retries, worker FROM jobs WHERE state='running' AND lease_until>=? AND worker LIKE ?",
            (now, here + "%"),
        ).fetchall():
            if _dead_local_worker(worker, here):
                expired.append((job_id, attempts, retries))
        for job_id, attempts, retries in expired:
            reason = "worker stopped responding (killed or hung); its lease expired"
            if attempts > retries:
                self._finish_failed(db, job_id, f"{reason}, after {attempts} attempt(s)", "", now)
            else:
                db.execute(
                    "UPDATE jobs SET state='queued', worker=NULL, lease_until=NULL, next_try=?, error=?, exit_code=NULL, hint=NULL,"
                    " stage=NULL WHERE id=?",
                    (now, reason, job_id),
                )

    def heartbeat(self, job_id: int, worker_id: str, lease: float) -> bool:
        """Renew a lease. False when the job is no longer this worker's to run
        (cancelled, timed out, reclaimed): the worker must stop it."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET lease_until=? WHERE id=? AND state='running' AND worker=?",
                (time.time() + lease, job_id, worker_id),
            )
            return cur.rowcount == 1

    def commit(self, job_id: int, worker_id: str) -> bool:
        """Take a run past its commit point (stage RECORDED_STAGE) if
        `worker_id` still holds the job: False when it was cancelled, timed
        out or reclaimed meanwhile, even where the worker has not heard yet
        (its next heartbeat would tell), and the run must record nothing.
        From then on a cancel leaves the job to finish (admin._cancel)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET stage=? WHERE id=? AND state='running' AND worker=?",
                (RECORDED_STAGE, job_id, worker_id),
            )
            return cur.rowcount == 1

    def set_progress(self, job_id: int, fraction: float, stage: str | None = None) -> None:
        fraction = min(1.0, max(0.0, float(fraction)))
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET progress=?, stage=coalesce(?, stage) WHERE id=? AND state='running'",
                (fraction, stage, job_id),
            )

    def succeed(self, job_id: int, result: Any = None, *, worker_id: str | None = None) -> bool:
        """Record success. With `worker_id`, only if that worker still holds
        the job (a late result from a reclaimed run is dropped). Returns
        whether it was recorded."""
        try:
            result_text = json.dumps(result, sort_keys=True)
        except (TypeError, ValueError) as e:
            return self.fail(job_id, f"job result is not JSON: {e}", retry=False, worker_id=worker_id)
        with self._tx() as db:
            now = time.time()
            row = db.execute(
                "UPDATE jobs SET state='succeeded', finished_at=?, result=?, progress=1, error=NULL, exit_code=NULL, hint=NULL,"
                " worker=NULL, lease_until=NULL WHERE id=? AND state='running' AND worker=coalesce(?, worker)"
                " RETURNING estimate_key, started_at",
                (now, result_text, job_id, worker_id),
            ).fetchone()
            if row is None:
                return False
            estimate_key, started = row
            if estimate_key and started:
                # Moving average over roughly the last 10 runs: recent speed matters most.
                db.execute(
                    "INSERT INTO estimates (key, seconds, samples) VALUES (?,?,1) ON CONFLICT(key) DO UPDATE"
                    " SET seconds=seconds + (excluded.seconds - seconds) / min(samples + 1, 10),"
                    " samples=samples + 1",
                    (estimate_key, now - started),
                )
            return True

    def fail(
        self,
        job_id: int,
        error: str,
        stderr_tail: str = "",
        retry: bool = True,
        *,
        worker_id: str | None = None,
        exit_code: int | None = None,
        hint: str | None = None,
    ) -> bool:
        """Record a failed run. With `retry` and attempts left, the job goes
        back to the queue after an exponential backoff; else it fails for good
        and so do the jobs that depend on it. `exit_code` is what the failure
        means to the CLI (lattice.errors: 8 a generator failed, 6 locked, …),
        kept with the text so that a command waiting for the job exits as the
        error would have, and `hint` is what the error said to do about it,
        which that command passes on. Returns whether it was recorded."""
        tail = (stderr_tail or "")[-STDERR_TAIL:]
        with self._tx() as db:
            if self._held(db, job_id, worker_id) is None:
                return False
            attempts, retries = db.execute(
                "SELECT attempts, max_retries FROM jobs WHERE id=?", (job_id,)).fetchone()
            now = time.time()
            if retry and attempts <= retries:
                delay = min(self.backoff_max, self.backoff * 2 ** max(0, attempts - 1))
                db.execute(
                    "UPDATE jobs SET state='queued', error=?, stderr_tail=?, exit_code=?, hint=?, next_try=?, worker=NULL,"
                    " lease_until=NULL WHERE id=?",
                    (error, tail, exit_code, hint, now + delay, job_id),
                )
            else:
                if retry and attempts > 1:
                    error = f"{error} (gave up after {attempts} attempts)"
                self._finish_failed(db, job_id, error, tail, now, exit_code, hint)
            return True

    def release(self, job_id: int, *, worker_id: str | None = None) -> bool:
        """Put a running job back in the queue without counting the attempt:
        a graceful shutdown hands it to another worker."""
        with self._tx() as db:
            if self._held(db, job_id, worker_id) is None:
                return False
            db.execute(
                "UPDATE jobs SET state='queued', attempts=max(0, attempts-1), worker=NULL, lease_until=NULL,"
                " next_try=?, progress=0, stage=NULL WHERE id=?",
                (time.time(), job_id),
            )
            return True

    def _held(self, db: sqlite3.Connection, job_id: int, worker_id: str | None) -> tuple | None:
        """(estimate_key, started_at) if the job is running (and held by
        worker_id, when given)."""
        sql = "SELECT estimate_key, started_at FROM jobs WHERE id=? AND state='running'"
        args: tuple = (job_id,)
        if worker_id is not None:
            sql += " AND worker=?"
            args += (worker_id,)
        return db.execute(sql, args).fetchone()

    def _finish_failed(self, db: sqlite3.Connection, job_id: int, error: str, tail: str, now: float,
                       exit_code: int | None = None, hint: str | None = None) -> None:
        db.execute(
            "UPDATE jobs SET state='failed', error=?, stderr_tail=?, exit_code=?, hint=?, finished_at=?, worker=NULL,"
            " lease_until=NULL WHERE id=?",
            (error, tail, exit_code, hint, now, job_id),
        )
        self._fail_dependents(db, job_id)

    def _fail_dependents(self, db: sqlite3.Connection, dead: int, only: list[int] | None = None) -> None:
        """Fail every queued job that (transitively) waits on `dead`, with
        its exit code: the cause is the same."""
        now = time.time()
        state, code = db.execute("SELECT state, exit_code FROM jobs WHERE id=?", (dead,)).fetchone()
        reason = f"dependency {dead} {'was cancelled' if state == 'cancelled' else 'failed'}"
        frontier = [(dead, reason)]
        while frontier:
            parent, why = frontier.pop()
            children = only if only is not None else [
                r[0] for r in db.execute(
                    "SELECT d.job FROM deps AS d JOIN jobs AS j ON j.id=d.job WHERE d.dep=? AND j.state='queued'",
                    (parent,))
            ]
            only = None
            for child in children:
                db.execute(
                    "UPDATE jobs SET state='failed', error=?, exit_code=?, hint=NULL, finished_at=?, blocked_by=? WHERE id=?",
                    (why, code if state == "failed" else None, now, parent, child),
                )
                frontier.append((child, f"dependency {child} failed ({why})"))


def check_file(path: str | Path, reading: bool = False) -> list[str]:
    """Problems with the queue database at `path` (empty: healthy or absent),
    for fsck: unlike JobQueue(path), a damaged file is reported, not raised."""
    if not Path(path).exists():
        return []
    try:
        with JobQueue(path, busy_timeout=5.0, reading=reading) as q:
            return q.check()
    except RepositoryCorrupt as e:
        return [e.message]


def repo_queue(lattice_dir: str | Path, config: Mapping[str, Any] | None = None, reading: bool = False) -> JobQueue:
    """The repository's queue, `.lattice/queue.db`, with the `[queue.types]`
    table of its config applied. `reading`: for a command that only reads
    it (see lattice.sqlite.connect)."""
    section = (config or {}).get("queue", {}) or {}
    return JobQueue(Path(lattice_dir) / "queue.db", types=section.get("types"), reading=reading)


def _dead_local_worker(worker: str, here: str) -> bool:
    """True when `worker` ("host:pid:…") ran on this host and its process is gone."""
    from lattice.childproc import alive

    try:
        pid = int(worker[len(here):].split(":", 1)[0])
    except ValueError:
        return False
    return not alive(pid)
