"""Queue throughput and listing speed. Run by hand:

    .venv/bin/python bench/bench_queue.py [--jobs 2000] [--workers 2] [--finished 100000]

1. N no-op jobs end to end through lattice's WorkerPool in W worker
   processes, against a floor: the least a SQLite claim loop can do (claim in
   BEGIN IMMEDIATE, mark done), in the same number of processes, same pragmas.
   Both timings include starting the processes.
2. `lattice queue ls` on a queue holding 100,000 finished jobs: list() with
   its default limit, a state filter, and the per-state counts.
Targets: >= 500 jobs/s, within 3x of the floor; ls well under 100 ms.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def floor_worker(db: str) -> None:
    con = sqlite3.connect(db, timeout=30, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    while True:
        con.execute("BEGIN IMMEDIATE")
        row = con.execute("SELECT id FROM jobs WHERE state=0 ORDER BY id LIMIT 1").fetchone()
        if row is None:
            con.execute("COMMIT")
            return
        con.execute("UPDATE jobs SET state=1 WHERE id=?", row)
        con.execute("COMMIT")
        con.execute("UPDATE jobs SET state=2 WHERE id=?", row)


def lattice_worker(db: str) -> None:
    from lattice.queue import JobQueue
    from lattice.worker import Slot, WorkerPool

    WorkerPool(JobQueue(db), {"derive": lambda ctx: None}, [Slot("cpu", 0)], poll=0.01).run(once=True)


def run_workers(mode: str, db: Path, n: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, mode, str(db)], env=env) for _ in range(n)]
    if any(p.wait() for p in procs):
        raise SystemExit(f"a {mode} process failed")
    return time.perf_counter() - t0


def bench_throughput(tmp: Path, jobs: int, workers: int) -> None:
    from lattice.queue import JobQueue

    floor_db = tmp / "floor.db"
    con = sqlite3.connect(floor_db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, state INTEGER NOT NULL)")
    con.execute("CREATE INDEX jobs_state ON jobs (state, id)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO jobs (state) VALUES (0)", [()] * jobs)
    con.execute("COMMIT")
    con.close()
    floor = jobs / run_workers("floor", floor_db, workers)

    q = JobQueue(tmp / "queue.db")
    t0 = time.perf_counter()
    for i in range(jobs):
        q.submit("derive", {"n": i})
    submit = jobs / (time.perf_counter() - t0)
    rate = jobs / run_workers("lattice", q.path, workers)
    counts = q.counts()
    assert counts["succeeded"] == jobs, counts
    print(f"submit:           {submit:8.0f} jobs/s (one transaction each)")
    print(f"floor claim loop: {floor:8.0f} jobs/s ({workers} processes)")
    print(f"lattice workers:  {rate:8.0f} jobs/s ({workers} processes, {jobs} no-op jobs)")
    print(f"floor / lattice:  {floor / rate:8.2f}x   (target: <= 3x, and >= 500 jobs/s)")


def bench_list(tmp: Path, finished: int) -> None:
    from lattice.queue import JobQueue

    q = JobQueue(tmp / "big.db")
    now = time.time()
    rows = [
        ("image", 2, "succeeded" if i % 10 else "failed", "{}", "cpu", "u", "h", 1, 3, now, now, now)
        for i in range(finished)
    ]
    with q._tx() as db:  # bulk load straight into the table: this measures reading, not submitting
        db.executemany(
            "INSERT INTO jobs (type, priority, state, payload, slot, user, host, attempts, max_retries,"
            " queued_at, next_try, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
    q.submit("image", {})
    for label, fn in [
        ("list() newest 50", lambda: q.list(limit=50)),
        ("list(states=[queued])", lambda: q.list(states=["queued"], limit=50)),
        ("list(states=[failed])", lambda: q.list(states=["failed"], limit=50)),
        ("counts()", q.counts),
        ("claim() (nothing else runnable)", lambda: q.claim("bench")),
    ]:
        fn()
        t0 = time.perf_counter()
        fn()
        print(f"{label:32s} {1000 * (time.perf_counter() - t0):7.2f} ms  ({finished} finished jobs)")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] in ("floor", "lattice"):
        (floor_worker if sys.argv[1] == "floor" else lattice_worker)(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--finished", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_throughput(Path(tmp), args.jobs, args.workers)
        bench_list(Path(tmp), args.finished)


if __name__ == "__main__":
    main()
