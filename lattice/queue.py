"""The durable job queue: one SQLite database in WAL mode (`.lattice/queue.db`).

Every state change is one short transaction. Claims run inside
`BEGIN IMMEDIATE`, so two workers (threads or processes) can never take the
same job. A running job holds a lease that its worker renews; a worker that
dies (SIGKILL, power cut) stops renewing, and the next claim puts its job
back in the queue, counting the lost attempt. A job is never lost and never
runs twice at once.

States: queued -> running -> succeeded | failed | cancelled, and running ->
queued again on a retry (with exponential backoff in `next_try`), a released
lease or an expired one. A job whose dependency fails or is cancelled fails
too, naming the dependency, so nothing waits forever.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import socket
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from lattice.errors import InvalidInput, QueueError, RepositoryCorrupt, closest

JOB_TYPES = ("image", "video", "audio", "derive", "analysis", "composition", "preview", "export", "gc")
PRIORITIES = ("urgent", "high", "normal", "low", "batch")  # stored as their index: 0 runs first
STATES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled")
SLOT_KINDS = ("cpu", "gpu")

# (retries after the first attempt, timeout in seconds); `[queue.types.<type>]`
# in the repository config overrides either.
TYPE_DEFAULTS: dict[str, tuple[int, float | None]] = {
    "image": (3, 300.0),
    "video": (2, 1800.0),
    "audio": (3, 600.0),
    "derive": (2, 600.0),
    "analysis": (3, 120.0),
    "composition": (2, 1800.0),
    "preview": (1, 60.0),
    "export": (2, 3600.0),
    "gc": (0, 3600.0),  # gc is idempotent but heavy: a failure wants a human
}

RECLAIM_EVERY = 1.0  # seconds between looks for expired leases while jobs keep coming
STDERR_TAIL = 4000  # characters of a failed job's stderr kept in the db
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids are never reused after `clear`
    type TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    payload TEXT NOT NULL,
    key TEXT,
    slot TEXT NOT NULL,
    user TEXT NOT NULL,
    host TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL,
    timeout REAL,
    queued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    next_try REAL NOT NULL,
    error TEXT,
    stderr_tail TEXT,
    result TEXT,
    progress REAL NOT NULL DEFAULT 0,
    stage TEXT,
    worker TEXT,
    lease_until REAL,
    estimate_key TEXT,
    blocked_by INTEGER  -- the dependency whose failure failed this job, so `retry` revives both
);
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (state, priority, id);
CREATE INDEX IF NOT EXISTS jobs_state_id ON jobs (state, id);
CREATE INDEX IF NOT EXISTS jobs_key ON jobs (key) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_blocked_by ON jobs (blocked_by) WHERE blocked_by IS NOT NULL;
CREATE TABLE IF NOT EXISTS deps (
    job INTEGER NOT NULL,
    dep INTEGER NOT NULL,
    PRIMARY KEY (job, dep)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deps_dep ON deps (dep);
CREATE TABLE IF NOT EXISTS estimates (
    key TEXT PRIMARY KEY,
    seconds REAL NOT NULL,  -- moving average of successful run times
    samples INTEGER NOT NULL
);
"""

_COLUMNS = (
    "id, type, priority, state, payload, key, slot, user, host, attempts, max_retries, timeout, "
    "queued_at, started_at, finished_at, next_try, error, stderr_tail, result, progress, stage, "
    "worker, lease_until, estimate_key, blocked_by"
)


@dataclass(frozen=True)
class Job:
    id: int
    type: str
    priority: str
    state: str
    payload: Any
    key: str | None
    slot: str
    user: str
    host: str
    attempts: int
    max_retries: int
    timeout: float | None
    queued_at: float
    started_at: float | None
    finished_at: float | None
    next_try: float
    error: str | None
    stderr_tail: str | None
    result: Any
    progress: float
    stage: str | None
    worker: str | None
    lease_until: float | None
    estimate_key: str | None
    blocked_by: int | None
    deps: tuple[int, ...] = ()

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"deps": list(self.deps)}


def _who() -> tuple[str, str]:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = "unknown"
    return user, socket.gethostname()


def _type_settings(types: Mapping[str, Any] | None) -> dict[str, tuple[int, float | None]]:
    """Per-type (retries, timeout), with the config's `[queue.types.<type>]` applied."""
    settings = dict(TYPE_DEFAULTS)
    for name, table in (types or {}).items():
        where = f"[queue.types.{name}]"
        if name not in JOB_TYPES:
            raise InvalidInput(f"{where} names no job type", hint=f"job types are: {', '.join(JOB_TYPES)}")
        if not isinstance(table, Mapping) or set(table) - {"retries", "timeout"}:
            raise InvalidInput(f"{where} may set only `retries` and `timeout`")
        retries, timeout = settings[name]
        retries = table.get("retries", retries)
        timeout = table.get("timeout", timeout)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidInput(f"{where} retries must be a whole number >= 0, got {retries!r}")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
            raise InvalidInput(f"{where} timeout must be a number of seconds (0: none), got {timeout!r}")
        settings[name] = (retries, float(timeout) if timeout else None)
    return settings


class JobQueue:
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

            self._db = connect(self.path, timeout=busy_timeout, check_same_thread=False)
        try:
            self._init_schema()
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

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
                # Statement by statement: executescript() would commit the transaction.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
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

    def _rows_to_jobs(self, db: sqlite3.Connection, rows: list[tuple]) -> list[Job]:
        if not rows:
            return []
        ids = [r[0] for r in rows]
        deps: dict[int, list[int]] = {}
        for chunk in range(0, len(ids), 500):  # SQLite's variable limit
            part = ids[chunk : chunk + 500]
            marks = ",".join("?" * len(part))
            for job, dep in db.execute(f"SELECT job, dep FROM deps WHERE job IN ({marks}) ORDER BY dep", part):
                deps.setdefault(job, []).append(dep)
        jobs = []
        for r in rows:
            r = list(r)
            r[2] = PRIORITIES[r[2]]
            r[4] = json.loads(r[4])
            r[18] = json.loads(r[18]) if r[18] is not None else None
            jobs.append(Job(*r, deps=tuple(deps.get(r[0], ()))))
        return jobs

    def _fetch(self, db: sqlite3.Connection, job_id: int) -> Job | None:
        rows = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchall()
        jobs = self._rows_to_jobs(db, rows)
        return jobs[0] if jobs else None

    def _require(self, db: sqlite3.Connection, job_id: int | str) -> Job:
        job = self._fetch(db, _parse_id(job_id))
        if job is None:
            raise self._unknown(db, job_id)
        return job

    def _unknown(self, db: sqlite3.Connection, job_id: int | str) -> QueueError:
        n = _parse_id(job_id)
        # The numerically nearest ids are the likeliest typos worth naming.
        near = [str(r[0]) for r in db.execute(
            "SELECT id FROM jobs ORDER BY abs(id - ?) LIMIT 20", (n,))]
        suffix = closest(str(job_id), [i for i in near if len(i) == len(str(n))])
        if not suffix and near:
            low, high = db.execute("SELECT min(id), max(id) FROM jobs").fetchone()
            suffix = f" (its jobs run from {low} to {high})"
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
    ) -> Job:
        """Queue a job. If a job with the same `key` is queued or running,
        return it instead (raising its priority if this one is higher): the
        same recipe queued twice runs once."""
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
        user, host = _who()
        prio = PRIORITIES.index(priority)
        with self._tx() as db:
            if key is not None:
                row = db.execute(
                    "SELECT id, priority FROM jobs WHERE key=? AND state IN ('queued','running') ORDER BY id LIMIT 1",
                    (key,),
                ).fetchone()
                if row:
                    if prio < row[1]:
                        db.execute("UPDATE jobs SET priority=? WHERE id=?", (prio, row[0]))
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
            dead = [d for d, (state, _) in dep_states.items() if state in ("failed", "cancelled")]
            if dead:
                self._fail_dependents(db, dead[0], only=[job_id])
            return self._fetch(db, job_id)  # type: ignore[return-value]

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
            row = self._next_runnable(db, now, where, args)
            if row is None and not reclaimed:
                self._reclaim_expired(db, now)
                row = self._next_runnable(db, now, where, args)
            if row is None:
                return None
            claimed = db.execute(
                "UPDATE jobs SET state='running', attempts=attempts+1, started_at=?, worker=?, lease_until=?,"
                f" progress=0, stage=NULL WHERE id=? RETURNING {_COLUMNS}",
                (now, worker_id, now + lease, row[0]),
            ).fetchall()
            return self._rows_to_jobs(db, claimed)[0]

    def _next_runnable(self, db: sqlite3.Connection, now: float, where: str, args: list[str]) -> tuple | None:
        return db.execute(
            f"""SELECT id FROM jobs AS j
                WHERE state='queued' AND next_try<=? AND {where}
                  AND NOT EXISTS (SELECT 1 FROM deps AS d JOIN jobs AS p ON p.id=d.dep
                                  WHERE d.job=j.id AND p.state!='succeeded')
                ORDER BY priority, id LIMIT 1""",
            (now, *args),
        ).fetchone()

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
                    "UPDATE jobs SET state='queued', worker=NULL, lease_until=NULL, next_try=?, error=? WHERE id=?",
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
                "UPDATE jobs SET state='succeeded', finished_at=?, result=?, progress=1, error=NULL,"
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
    ) -> bool:
        """Record a failed run. With `retry` and attempts left, the job goes
        back to the queue after an exponential backoff; else it fails for good
        and so do the jobs that depend on it. Returns whether it was recorded."""
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
                    "UPDATE jobs SET state='queued', error=?, stderr_tail=?, next_try=?, worker=NULL,"
                    " lease_until=NULL WHERE id=?",
                    (error, tail, now + delay, job_id),
                )
            else:
                if retry and attempts > 1:
                    error = f"{error} (gave up after {attempts} attempts)"
                self._finish_failed(db, job_id, error, tail, now)
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

    def _finish_failed(self, db: sqlite3.Connection, job_id: int, error: str, tail: str, now: float) -> None:
        db.execute(
            "UPDATE jobs SET state='failed', error=?, stderr_tail=?, finished_at=?, worker=NULL,"
            " lease_until=NULL WHERE id=?",
            (error, tail, now, job_id),
        )
        self._fail_dependents(db, job_id)

    def _fail_dependents(self, db: sqlite3.Connection, dead: int, only: list[int] | None = None) -> None:
        """Fail every queued job that (transitively) waits on `dead`."""
        now = time.time()
        state = db.execute("SELECT state FROM jobs WHERE id=?", (dead,)).fetchone()[0]
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
                    "UPDATE jobs SET state='failed', error=?, finished_at=?, blocked_by=? WHERE id=?",
                    (why, now, parent, child),
                )
                frontier.append((child, f"dependency {child} failed ({why})"))

    # -- users --------------------------------------------------------------

    def cancel(self, ids: Iterable[int | str]) -> list[Job]:
        """Cancel queued and running jobs (a running job's worker sees it at its
        next heartbeat and kills the process). Finished jobs are left as they
        are. Returns the jobs as they now stand."""
        with self._tx() as db:
            jobs = [self._require(db, i) for i in ids]
            now = time.time()
            for job in jobs:
                if job.state in ACTIVE:
                    db.execute(
                        "UPDATE jobs SET state='cancelled', finished_at=?, error='cancelled', worker=NULL,"
                        " lease_until=NULL WHERE id=?",
                        (now, job.id),
                    )
                    self._fail_dependents(db, job.id)
            return [self._fetch(db, j.id) for j in jobs]  # type: ignore[misc]

    def retry(self, ids: Iterable[int | str]) -> list[Job]:
        """Queue failed or cancelled jobs again with fresh attempts, together
        with the jobs that failed only because of them."""
        with self._tx() as db:
            jobs = [self._require(db, i) for i in ids]
            for job in jobs:
                if job.state not in ("failed", "cancelled"):
                    raise QueueError(
                        f"job {job.id} is {job.state}; only failed or cancelled jobs can be retried",
                        hint="`lattice queue ls --state failed` lists them",
                    )
            now = time.time()
            todo = [j.id for j in jobs]
            seen: set[int] = set()
            while todo:
                job_id = todo.pop()
                if job_id in seen:
                    continue
                seen.add(job_id)
                db.execute(
                    "UPDATE jobs SET state='queued', attempts=0, error=NULL, stderr_tail=NULL, result=NULL,"
                    " started_at=NULL, finished_at=NULL, next_try=?, progress=0, stage=NULL, blocked_by=NULL"
                    " WHERE id=?",
                    (now, job_id),
                )
                todo += [r[0] for r in db.execute(
                    "SELECT id FROM jobs WHERE blocked_by=? AND state='failed'", (job_id,))]
            return [self._fetch(db, j.id) for j in jobs]  # type: ignore[misc]

    def clear_finished(self) -> int:
        """Delete succeeded, failed and cancelled jobs; returns how many. A
        deleted dependency counts as done for jobs still waiting on it (only
        succeeded ones can be: a failed one has already failed its dependents)."""
        with self._tx() as db:
            n = db.execute("DELETE FROM jobs WHERE state IN ('succeeded','failed','cancelled')").rowcount
            db.execute("DELETE FROM deps WHERE job NOT IN (SELECT id FROM jobs)")
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
                    raise QueueError(f"unknown job state {s!r}{closest(s, STATES)}",
                                     hint=f"states are: {', '.join(STATES)}")
            where = f"WHERE state IN ({','.join('?' * len(states))})"
            args += states
        sql = f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._read() as db:
            return self._rows_to_jobs(db, db.execute(sql, args).fetchall())

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


def check_file(path: str | Path) -> list[str]:
    """Problems with the queue database at `path` (empty: healthy or absent),
    for fsck: unlike JobQueue(path), a damaged file is reported, not raised."""
    if not Path(path).exists():
        return []
    try:
        with JobQueue(path, busy_timeout=5.0) as q:
            return q.check()
    except RepositoryCorrupt as e:
        return [e.message]


def _parse_id(job_id: int | str) -> int:
    if isinstance(job_id, int) and not isinstance(job_id, bool):
        return job_id
    text = str(job_id).strip().lstrip("#")
    if not text.isdigit():
        raise QueueError(f"job ids are numbers, got {job_id!r}", hint="`lattice queue ls` lists the jobs")
    return int(text)


def _dead_local_worker(worker: str, here: str) -> bool:
    """True when `worker` ("host:pid:…") ran on this host and its process is gone."""
    import os

    try:
        pid = int(worker[len(here):].split(":", 1)[0])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _slot_filter(slots: Iterable[str], types: Iterable[str] | None, only: Iterable[int] | None = None) -> tuple[str, list]:
    slots = sorted(set(slots))
    where, args = f"slot IN ({','.join('?' * len(slots))})", list(slots)
    if types is not None:
        types = sorted(set(types))
        where += f" AND type IN ({','.join('?' * len(types))})"
        args += types
    if only is not None:
        ids = sorted({int(i) for i in only})
        where += f" AND id IN ({','.join('?' * len(ids)) or 'NULL'})"
        args += ids
    return where, args


def repo_queue(lattice_dir: str | Path, config: Mapping[str, Any] | None = None) -> JobQueue:
    """The repository's queue, `.lattice/queue.db`, with the `[queue.types]`
    table of its config applied."""
    section = (config or {}).get("queue", {}) or {}
    return JobQueue(Path(lattice_dir) / "queue.db", types=section.get("types"))
