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

A cancelled job records who cancelled it and why (`cancelled_by`). Each job
records who asked for it (`askers`): a process that waits for it (`submit`
with `waiting=True`, as the commands that run their jobs do), or a
submission that leaves it to a worker (the default; `--detach`). A command
that stops waiting (`abandon`) cancels only the jobs nobody else still asks
for, and a worker cancels a job whose every waiting asker on this machine is
dead rather than run it.
"""

# The package's public surface, as `from lattice.queue import ...` used it when
# it was one module: schema.py (what is stored), core.py (JobQueue and the
# workers' side), admin.py (the users' side).
from lattice.queue.core import JobQueue, check_file, repo_queue
from lattice.queue.schema import (
    ACTIVE,
    DETACHED,
    FINISHED,
    JOB_TYPES,
    PRIORITIES,
    RECLAIM_EVERY,
    SCHEMA_VERSION,
    SLOT_KINDS,
    STATES,
    STDERR_TAIL,
    TYPE_DEFAULTS,
    Job,
    cancel_note,
    canceller,
)

__all__ = [
    "ACTIVE",
    "DETACHED",
    "FINISHED",
    "JOB_TYPES",
    "PRIORITIES",
    "RECLAIM_EVERY",
    "SCHEMA_VERSION",
    "SLOT_KINDS",
    "STATES",
    "STDERR_TAIL",
    "TYPE_DEFAULTS",
    "Job",
    "JobQueue",
    "cancel_note",
    "canceller",
    "check_file",
    "repo_queue",
]
