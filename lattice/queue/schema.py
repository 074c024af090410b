"""What the queue stores: job types, priorities and states, the SQLite schema,
the `Job` record and how a database row becomes one, and the small parsers
that check what callers hand in (ids, per-type settings, slot filters)."""

from __future__ import annotations

import getpass
import json
import os
import socket
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

from lattice.errors import InvalidInput, QueueError

JOB_TYPES = ("image", "video", "audio", "derive", "analysis", "composition", "preview", "export", "gc")
PRIORITIES = ("urgent", "high", "normal", "low", "batch")  # stored as their index: 0 runs first
STATES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
# The stage of a running job whose result is already recorded in the
# manifest: a cancel now would only mislabel it, so it is left to finish.
RECORDED_STAGE = "recorded"
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
SCHEMA_VERSION = 4  # 2: jobs.exit_code; 3: jobs.cancelled_by, askers; 4: jobs.hint
# The asker that stands for a submission that does not wait: `--detach`, a
# library call without `waiting` (a script that submits and exits), or a job
# queued before askers were recorded: work left for `lattice worker`, which
# no command's Ctrl-C takes away.
DETACHED = "detached"

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
    blocked_by INTEGER,  -- the dependency whose failure failed this job, so `retry` revives both
    exit_code INTEGER,  -- why it failed, as the CLI's exit code (lattice.errors), NULL when unknown
    cancelled_by TEXT,  -- JSON: who cancelled it and why (see cancel_note), NULL before format 3
    hint TEXT  -- what the failure's error said to do about it, NULL when it said nothing (or before format 4)
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
-- Who asked for a job and has not given up on it: "host:pid:start" of a
-- command waiting for it (gen, render, ..., see this_asker), "host:pid" from
-- before starts were kept, or DETACHED (nobody waits: a worker runs it). A
-- command that stops waiting cancels only the jobs no one else still asks for.
CREATE TABLE IF NOT EXISTS askers (
    job INTEGER NOT NULL,
    asker TEXT NOT NULL,
    PRIMARY KEY (job, asker)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS estimates (
    key TEXT PRIMARY KEY,
    seconds REAL NOT NULL,  -- moving average of successful run times
    samples INTEGER NOT NULL
);
"""

_COLUMNS = (
    "id, type, priority, state, payload, key, slot, user, host, attempts, max_retries, timeout, "
    "queued_at, started_at, finished_at, next_try, error, stderr_tail, result, progress, stage, "
    "worker, lease_until, estimate_key, blocked_by, exit_code, cancelled_by, hint"
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
    exit_code: int | None  # why it failed, as the CLI's exit code (lattice.errors); None: unknown
    cancelled_by: dict | None  # {"reason", "command", "user", "host", "pid"}; None: not cancelled, or unrecorded
    hint: str | None  # what the error of its failure said to do (LatticeError.hint); None: nothing
    deps: tuple[int, ...] = ()

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"deps": list(self.deps)}


def who() -> tuple[str, str]:
    """(user, host) of this process."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = "unknown"
    return user, socket.gethostname()


_asker: tuple[int, str] | None = None  # (pid, this_asker()): a forked child is asked again


def this_asker() -> str:
    """This process as an asker: "host:pid:start" (start: when it started,
    where the system says), so another can tell whether it still lives, and
    not mistake a later process given the same pid for it. Worked out once
    per process: a render of 10,000 steps asks for every job it queues."""
    global _asker
    from lattice.childproc import started

    pid = os.getpid()
    if _asker is None or _asker[0] != pid:
        _asker = (pid, f"{socket.gethostname()}:{pid}:{started(pid) or ''}")
    return _asker[1]


def canceller(reason: str, command: str | None) -> dict:
    """The record of who cancels a job: this process, running `command`.
    `reason`: "asked" (`lattice queue cancel`), or the command waiting for
    the job stopped: "interrupted" (Ctrl-C, SIGTERM) or "error"; or a
    worker found every command that asked for it gone: "orphaned"."""
    user, host = who()
    return {"reason": reason, "command": command, "user": user, "host": host, "pid": os.getpid()}


def cancel_note(by: Mapping[str, Any] | None) -> str:
    """What a cancelled job's error says: "cancelled by `lattice gen` (ann on
    box, pid 42) when it was interrupted". Only "cancelled" for a job an
    older lattice cancelled, which did not record who."""
    if not by:
        return "cancelled"
    command = f"`{by['command']}`" if by.get("command") else "process"
    if by.get("reason") == "orphaned":
        return f"cancelled by a worker ({by.get('user')} on {by.get('host')}, pid {by.get('pid')}): every command that asked for it was gone (killed)"
    when = {"interrupted": " when it was interrupted", "error": " when it stopped on an error"}.get(by.get("reason"), "")
    return f"cancelled by {command} ({by.get('user')} on {by.get('host')}, pid {by.get('pid')}){when}"


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


def _rows_to_jobs(db: sqlite3.Connection, rows: list[tuple]) -> list[Job]:
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
        r[26] = json.loads(r[26]) if r[26] is not None else None
        jobs.append(Job(*r, deps=tuple(deps.get(r[0], ()))))
    return jobs


# SQLite's largest INTEGER: a job id, a limit or any number bound past it
# raises OverflowError.
MAX_ID = 2**63 - 1


def _parse_id(job_id: int | str) -> int:
    if isinstance(job_id, int) and not isinstance(job_id, bool):
        return job_id
    text = str(job_id).strip().lstrip("#")
    if not text.isdigit():
        raise QueueError(f"job ids are numbers, got {job_id!r}", hint="`lattice queue ls` lists the jobs")
    return int(text)


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
