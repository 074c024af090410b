"""The job queue and its workers, on a real SQLite file with real processes.

One fake handler, driven by the job's payload, stands in for every job type:
  sleep: seconds to spend (in Python, watching for cancellation)
  log: a file to append "start ID ATTEMPT TIME PID" and "done ID TIME PID" to
  fail_until: fail while the attempt number is below this
  poison: always fail
  child: a pid file; run `sh` that starts a grandchild `sleep 30`, writes its
         pid there and waits on it (killed only by a timeout or cancel)
Run as a script (`python tests/test_queue.py worker DB ...`) this file is
also the worker process the multi-process tests start and kill.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lattice.errors import InvalidInput, QueueError, RepositoryCorrupt  # noqa: E402
from lattice.queue import JOB_TYPES, JobQueue, check_file, repo_queue  # noqa: E402
from lattice.worker import Slot, WorkerPool, detect_slots, graceful_signals  # noqa: E402


def fake(ctx):
    p = ctx.job.payload
    log = p.get("log")

    def note(line: str) -> None:
        with open(log, "a") as f:  # one short append per line: atomic across processes
            f.write(f"{line} {time.time():.6f} {os.getpid()}\n")

    if log:
        note(f"start {ctx.job.id} {ctx.job.attempts}")
    if p.get("poison"):
        raise RuntimeError("poison")
    if ctx.job.attempts < p.get("fail_until", 0):
        raise RuntimeError(f"flaky, attempt {ctx.job.attempts}")
    if p.get("child"):
        proc = ctx.spawn(["sh", "-c", f"sleep 30 & echo $! > {p['child']}; wait"])
        ctx.progress(0.5, "holding")
        proc.wait()
        raise RuntimeError(f"child exited with {proc.returncode}")
    end = time.monotonic() + p.get("sleep", 0)
    while time.monotonic() < end and not ctx.cancelled():
        time.sleep(0.01)
    if log:
        note(f"done {ctx.job.id}")
    return {"id": ctx.job.id, "env": ctx.env, "slot": ctx.slot.kind}


HANDLERS = {t: fake for t in JOB_TYPES}


def open_queue(tmp_path: Path, **kw) -> JobQueue:
    return JobQueue(tmp_path / "queue.db", backoff=kw.pop("backoff", 0.05), **kw)


def make_pool(q: JobQueue, slots: int = 2, lease: float = 2.0, **kw) -> WorkerPool:
    return WorkerPool(q, HANDLERS, [Slot("cpu", i) for i in range(slots)], lease=lease, poll=0.02, **kw)


def read_log(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def start_worker(db: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, __file__, "worker", str(db), *args], env=env)


def wait_for(condition, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.02)


def process_gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status  # a zombie is dead; its parent just hasn't reaped it


# -- order -------------------------------------------------------------------


def test_claim_takes_priority_then_fifo_and_waits_for_deps(tmp_path):
    q = open_queue(tmp_path)
    a = q.submit("image", {"n": "a"}, priority="low")
    q.submit("image", {"n": "b"})
    c = q.submit("image", {"n": "c"}, priority="urgent")
    d = q.submit("image", {"n": "d"}, deps=[a.id])
    e = q.submit("image", {"n": "e"}, priority="batch")
    q.submit("image", {"n": "f"})
    order = []
    while (job := q.claim("w", lease=5)) is not None:
        order.append(job.payload["n"])
        assert q.succeed(job.id, None, worker_id="w")
    assert order == ["c", "b", "f", "a", "d", "e"]
    assert q.get(d.id).deps == (a.id,)
    assert all(j.state == "succeeded" and j.progress == 1 for j in q.list())
    assert {c.id, e.id} <= {j.id for j in q.list(states=["succeeded"])}


def test_dag_of_mixed_priorities_runs_in_a_valid_order(tmp_path):
    q = open_queue(tmp_path)
    log = tmp_path / "log"
    rng = random.Random(7)
    jobs = []
    for i in range(60):
        deps = rng.sample([j.id for j in jobs], k=min(len(jobs), rng.randint(0, 3)))
        prio = rng.choice(["urgent", "high", "normal", "low", "batch"])
        jobs.append(q.submit("derive", {"log": str(log), "sleep": 0.002}, priority=prio, deps=deps))
    stats = make_pool(q, slots=3).run(once=True)
    assert stats["succeeded"] == 60
    started = {int(r[1]): float(r[3]) for r in read_log(log) if r[0] == "start"}
    done = {int(r[1]): float(r[2]) for r in read_log(log) if r[0] == "done"}
    assert len(started) == len(done) == 60
    for job in jobs:
        for dep in job.deps:
            assert done[dep] <= started[job.id], f"job {job.id} started before its dependency {dep} finished"


# -- processes ---------------------------------------------------------------


def test_two_worker_processes_never_run_the_same_job(tmp_path):
    q = open_queue(tmp_path)
    log = tmp_path / "log"
    ids = [q.submit("image", {"log": str(log), "sleep": 0.02}).id for _ in range(200)]
    workers = [start_worker(q.path, "--slots", "2", "--once") for _ in range(2)]
    assert [w.wait(timeout=30) for w in workers] == [0, 0]
    lines = read_log(log)
    runs = sorted(int(r[1]) for r in lines if r[0] == "start")
    assert runs == ids, "every job ran exactly once"
    assert len({r[-1] for r in lines}) == 2, "both worker processes took jobs"
    assert q.counts()["succeeded"] == 200


def test_a_job_of_a_killed_worker_completes_exactly_once(tmp_path):
    q = open_queue(tmp_path)
    log = tmp_path / "log"
    job = q.submit("video", {"log": str(log), "sleep": 1.0})
    first = start_worker(q.path, "--slots", "1", "--lease", "0.5")
    wait_for(lambda: any(r[0] == "start" for r in read_log(log)))
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert q.get(job.id).state == "running"
    time.sleep(0.6)  # the dead worker's lease runs out
    second = start_worker(q.path, "--slots", "1", "--lease", "0.5", "--once")
    assert second.wait(timeout=20) == 0
    job = q.get(job.id)
    assert (job.state, job.attempts) == ("succeeded", 2)
    lines = read_log(log)
    assert [r[0] for r in lines] == ["start", "start", "done"]
    assert lines[1][-1] == lines[2][-1] == str(second.pid)


def test_first_signal_drains_second_releases(tmp_path):
    q = open_queue(tmp_path)
    log = tmp_path / "log"
    a = q.submit("image", {"log": str(log), "sleep": 0.8})
    b = q.submit("image", {"log": str(log), "sleep": 0.8})
    w = start_worker(q.path, "--slots", "1")
    wait_for(lambda: read_log(log))
    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=10) == 0
    assert q.get(a.id).state == "succeeded", "the running job finished"
    assert q.get(b.id).state == "queued", "no new job was claimed"

    w = start_worker(q.path, "--slots", "1")
    wait_for(lambda: q.get(b.id).state == "running")
    w.send_signal(signal.SIGINT)
    time.sleep(0.1)
    w.send_signal(signal.SIGINT)
    assert w.wait(timeout=10) == 0
    b = q.get(b.id)
    assert (b.state, b.attempts, b.worker) == ("queued", 0, None)


# -- timeouts, retries, failures ----------------------------------------------


def test_timeout_kills_the_child_and_its_children(tmp_path):
    q = open_queue(tmp_path)
    pidfile = tmp_path / "grandchild.pid"
    job = q.submit("image", {"child": str(pidfile)}, timeout=0.5, max_retries=0)
    t0 = time.monotonic()
    stats = make_pool(q, slots=1).run(once=True)
    assert time.monotonic() - t0 < 5
    job = q.get(job.id)
    assert job.state == "failed" and "timed out after 0.5 s" in job.error
    assert stats["timed_out"] == 1
    grandchild = int(pidfile.read_text())
    wait_for(lambda: process_gone(grandchild), timeout=3)


def test_failures_retry_with_backoff_then_succeed(tmp_path):
    q = open_queue(tmp_path, backoff=0.1)
    log = tmp_path / "log"
    job = q.submit("image", {"log": str(log), "fail_until": 3})
    make_pool(q, slots=1).run(once=True)
    job = q.get(job.id)
    assert (job.state, job.attempts, job.error) == ("succeeded", 3, None)
    starts = [float(r[3]) for r in read_log(log) if r[0] == "start"]
    assert len(starts) == 3
    assert starts[1] - starts[0] >= 0.1 and starts[2] - starts[1] >= 0.2, "backoff doubles"


def test_a_poison_job_stops_at_its_retry_limit_and_others_finish(tmp_path):
    q = open_queue(tmp_path, backoff=0.01)
    poison = q.submit("analysis", {"poison": True}, max_retries=2)
    others = [q.submit("analysis", {"n": i}) for i in range(10)]
    make_pool(q, slots=2).run(once=True)
    poison = q.get(poison.id)
    assert (poison.state, poison.attempts) == ("failed", 3)
    assert poison.error == "RuntimeError('poison') (gave up after 3 attempts)"
    assert all(q.get(j.id).state == "succeeded" for j in others)


def test_invalid_input_is_not_retried(tmp_path):
    q = open_queue(tmp_path)

    def refuse(ctx):
        raise InvalidInput("parameter 'size' must be an int")

    job = q.submit("image", {})
    WorkerPool(q, {"image": refuse}, [Slot("cpu", 0)], poll=0.02).run(once=True)
    job = q.get(job.id)
    assert (job.state, job.attempts, job.error) == ("failed", 1, "parameter 'size' must be an int")


def test_an_os_error_that_would_repeat_is_one_plain_line_not_retried(tmp_path):
    """A path that cannot be used fails the same way on every try: no
    retries, and the error names the path, not Python's repr."""
    q = open_queue(tmp_path)
    (tmp_path / "file").write_text("a file, not a folder")

    def mkdir_under_a_file(ctx):
        (tmp_path / "file").mkdir()

    job = q.submit("image", {})
    WorkerPool(q, {"image": mkdir_under_a_file}, [Slot("cpu", 0)], poll=0.02).run(once=True)
    job = q.get(job.id)
    assert (job.state, job.attempts, job.error) == ("failed", 1, f"File exists: {tmp_path / 'file'}")


def test_dependency_failure_propagates_and_retry_revives_the_chain(tmp_path):
    q = open_queue(tmp_path)
    a = q.submit("image", {"poison": True}, max_retries=0)
    b = q.submit("derive", {}, deps=[a.id])
    c = q.submit("export", {}, deps=[b.id])
    d = q.submit("image", {})
    make_pool(q).run(once=True)
    assert q.get(b.id).error == f"dependency {a.id} failed"
    assert q.get(c.id).error == f"dependency {b.id} failed (dependency {a.id} failed)"
    assert q.get(c.id).state == "failed" and q.get(d.id).state == "succeeded"
    late = q.submit("derive", {}, deps=[a.id])
    assert (late.state, late.error) == ("failed", f"dependency {a.id} failed")

    q.retry([a.id])
    assert [q.get(j.id).state for j in (a, b, c, late)] == ["queued"] * 4
    assert q.get(a.id).attempts == 0
    x = q.cancel([a.id])[0]
    assert x.state == "cancelled"
    assert q.get(b.id).error == f"dependency {a.id} was cancelled"
    with __import__("pytest").raises(QueueError, match="only failed or cancelled"):
        q.retry([d.id])


def test_retry_of_a_job_whose_dependency_is_dead_is_refused_naming_it(tmp_path):
    """A job that waits on a cancelled or failed job could never run: its
    retry alone is refused (exit 10) with the command that retries both;
    retried together they run. A dependent revived by its dependency's retry
    while it also waits on another dead job stays failed, blocked by that
    one, whose retry revives it."""
    import pytest

    q = open_queue(tmp_path)
    a = q.submit("image", {})
    b = q.submit("derive", {}, deps=[a.id])
    q.cancel([a.id])
    with pytest.raises(QueueError, match=f"job {b.id} waits on job {a.id}, which was cancelled") as e:
        q.retry([b.id])
    assert e.value.exit_code == 10 and f"`lattice queue retry {a.id} {b.id}`" in e.value.hint
    assert q.get(b.id).state == "failed"
    assert [j.state for j in q.retry([a.id, b.id])] == ["queued", "queued"]
    make_pool(q).run(once=True)
    assert [q.get(j.id).state for j in (a, b)] == ["succeeded", "succeeded"]

    x = q.submit("image", {"poison": True}, max_retries=0)
    y = q.submit("image", {"poison": True}, max_retries=0)
    z = q.submit("derive", {}, deps=[x.id, y.id])
    make_pool(q, slots=1).run(once=True)
    assert q.get(z.id).blocked_by == x.id
    q.retry([x.id])
    assert (q.get(z.id).state, q.get(z.id).blocked_by) == ("failed", y.id)  # y is still dead
    assert q.get(z.id).error == f"dependency {y.id} failed"  # its error names the one it waits on now
    q.retry([y.id])
    assert [q.get(j.id).state for j in (x, y, z)] == ["queued"] * 3


def test_a_worker_fails_jobs_that_wait_on_a_dead_job_instead_of_waiting(tmp_path):
    """A queued job whose dependency failed or was cancelled can never run
    (a queue an older lattice left so, say): `worker --once` fails it, as
    the dependency's failure would have, and returns."""
    import sqlite3

    q = open_queue(tmp_path)
    a = q.submit("image", {})
    b = q.submit("derive", {}, deps=[a.id])
    c = q.submit("export", {}, deps=[b.id])
    q.cancel([a.id])
    with sqlite3.connect(q.path) as db:  # as a retry of b alone used to leave it
        db.execute("UPDATE jobs SET state='queued', error=NULL, blocked_by=NULL WHERE id IN (?,?)", (b.id, c.id))
    pool = make_pool(q)
    t = threading.Thread(target=pool.run, kwargs={"once": True}, daemon=True)
    t.start()
    t.join(timeout=10)
    assert not t.is_alive(), "worker --once waited for ever on a job that cannot run"
    assert (q.get(b.id).state, q.get(b.id).error) == ("failed", f"dependency {a.id} was cancelled")
    assert q.get(c.id).state == "failed" and q.get(c.id).blocked_by == b.id


def test_a_failure_keeps_its_exit_code_and_passes_it_to_dependents(tmp_path):
    """The queue keeps what a failure means to the CLI with its text: the
    error's own code, 13 for a write the filesystem refused (with the path,
    not retried), 8 for a timeout, none for an unexpected exception; the
    jobs failed because of it share it; a retry or a cancel clears it."""
    import errno

    from lattice.errors import LockTimeout

    q = open_queue(tmp_path)

    def handler(ctx):
        how = ctx.job.payload.get("how")
        if how == "locked":
            raise LockTimeout("the repository is locked by pid 1 on host")
        if how == "refused":
            raise PermissionError(errno.EACCES, "Permission denied", "/p/out/a.png")
        if how == "hang":
            time.sleep(1.5)  # in Python: the supervisor fails it at its timeout, then waits
        raise RuntimeError("a bug")

    locked = q.submit("image", {"how": "locked"}, max_retries=0)
    after = q.submit("derive", {}, deps=[locked.id])
    refused = q.submit("image", {"how": "refused"}, max_retries=3)
    hang = q.submit("image", {"how": "hang"}, max_retries=0, timeout=0.3)
    bug = q.submit("image", {"how": "bug"}, max_retries=0)
    WorkerPool(q, {"image": handler, "derive": handler}, [Slot("cpu", 0), Slot("cpu", 1)], poll=0.02).run(once=True)
    got = {j.id: q.get(j.id) for j in (locked, after, refused, hang, bug)}
    assert {i: (g.state, g.exit_code) for i, g in got.items()} == {
        locked.id: ("failed", 6), after.id: ("failed", 6), refused.id: ("failed", 13), hang.id: ("failed", 8), bug.id: ("failed", None)}
    assert got[refused.id].error == "/p/out/a.png: permission denied" and got[refused.id].attempts == 1
    assert q.get(locked.id).to_dict()["exit_code"] == 6
    q.retry([locked.id])
    assert q.get(locked.id).exit_code is None and q.get(after.id).exit_code is None
    assert q.cancel([after.id])[0].exit_code is None


def _old_schema(version: int) -> str:
    """The schema as an older lattice wrote it: 3 had no jobs.hint, 2 no
    jobs.cancelled_by nor askers either, 1 no jobs.exit_code either."""
    import re

    from lattice.queue.schema import _SCHEMA

    old = re.sub(r",(\s*--[^\n]*)\n\s*hint TEXT[^\n]*", r"\1", _SCHEMA)
    if version == 3:
        return old
    old = re.sub(r",(\s*--[^\n]*)\n\s*cancelled_by TEXT[^\n]*", r"\1", old)
    old = re.sub(r"CREATE TABLE IF NOT EXISTS askers \(.*?\) WITHOUT ROWID;", "", old, flags=re.S)
    if version == 1:
        old = re.sub(r",(\s*--[^\n]*)\n\s*exit_code INTEGER[^\n]*", r"\1", old)
    return old


def _make_old_queue(path: Path, version: int, rows: list[str]) -> None:
    import sqlite3

    db = sqlite3.connect(path)
    db.executescript(_old_schema(version))
    columns = [r[1] for r in db.execute("PRAGMA table_info(jobs)")]
    assert "hint" not in columns and ("cancelled_by" in columns) == (version == 3)
    assert ("exit_code" in columns) == (version >= 2)
    assert db.execute("SELECT count(*) FROM sqlite_master WHERE name='askers'").fetchone()[0] == (version == 3)
    for values in rows:
        db.execute("INSERT INTO jobs (type, priority, state, payload, slot, user, host, max_retries, queued_at,"
                   f" next_try, error) VALUES ({values})")
    db.execute(f"PRAGMA user_version={version}")
    db.commit()
    db.close()


def test_a_queue_of_format_1_gains_exit_codes_and_keeps_its_jobs(tmp_path):
    """A queue.db made before jobs kept exit codes (format 1) is brought up
    to date when opened, once, whoever opens it first; its jobs stay."""
    import sqlite3

    from lattice.queue import SCHEMA_VERSION

    _make_old_queue(tmp_path / "queue.db", 1, ["'image', 2, 'queued', '{}', 'cpu', 'u', 'h', 0, 0, 0, NULL"])
    q, again = open_queue(tmp_path), open_queue(tmp_path)
    [job] = q.list()
    assert (job.state, job.exit_code, job.cancelled_by) == ("queued", None, None)
    with sqlite3.connect(tmp_path / "queue.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    claimed = again.claim("w")
    assert again.fail(claimed.id, "locked", retry=False, worker_id="w", exit_code=6)
    assert q.get(job.id).exit_code == 6


def test_a_queue_of_format_2_gains_cancel_records_and_keeps_its_jobs(tmp_path):
    """Format 2 had no record of who cancelled a job or who asked for one.
    Upgraded in place: an old cancel still reads (as "cancelled", by whom
    unknown); its live jobs count as left for a worker, so no command's
    Ctrl-C takes them away; new cancels say who."""
    from lattice.queue import canceller

    _make_old_queue(tmp_path / "queue.db", 2, [
        "'image', 2, 'cancelled', '{}', 'cpu', 'u', 'h', 0, 0, 0, 'cancelled'",
        "'image', 2, 'queued', '{}', 'cpu', 'u', 'h', 0, 0, 0, NULL",
        "'image', 2, 'queued', '{}', 'cpu', 'u', 'h', 0, 0, 0, NULL",
    ])
    q = open_queue(tmp_path)
    old, queued, other = sorted(q.list(), key=lambda j: j.id)
    assert (old.state, old.error, old.cancelled_by) == ("cancelled", "cancelled", None)
    assert q.abandon([queued.id], by=canceller("interrupted", "lattice gen")) == ([], [queued.id])
    assert q.get(queued.id).state == "queued"
    [now] = q.cancel([other.id], by=canceller("asked", "lattice queue cancel"))
    assert now.cancelled_by["command"] == "lattice queue cancel" and now.error.startswith("cancelled by `lattice queue cancel` (")



def test_a_queue_of_format_3_gains_hints_and_keeps_its_jobs(tmp_path):
    """Format 3 kept a failure's error but not its hint (what to do about
    it), which a command waiting for the job lost. Upgraded in place: an old
    failure has no hint; a new one keeps it, until the job runs again."""
    import sqlite3

    from lattice.queue import SCHEMA_VERSION

    _make_old_queue(tmp_path / "queue.db", 3, ["'image', 2, 'failed', '{}', 'cpu', 'u', 'h', 0, 0, 0, 'old failure'"])
    q = open_queue(tmp_path)
    [old] = q.list()
    assert (old.state, old.error, old.hint) == ("failed", "old failure", None)
    with sqlite3.connect(tmp_path / "queue.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    queued = q.submit("image", {})
    claimed = q.claim("w")
    assert claimed.id == queued.id
    assert q.fail(claimed.id, "bad range", retry=False, worker_id="w", exit_code=4, hint="export a longer --range")
    assert (q.get(queued.id).hint, q.get(queued.id).to_dict()["hint"]) == ("export a longer --range",) * 2
    q.retry([queued.id])
    assert q.get(queued.id).hint is None


def test_queue_show_says_an_old_cancel_was_a_cancel(tmp_repo):
    """A job an older lattice cancelled recorded no one: `queue show` still
    has its "cancelled:" line (before, neither it nor the error line was
    printed, and nothing but the state said so)."""
    from conftest import run_cli

    _make_old_queue(tmp_repo.dir / "queue.db", 2, ["'image', 2, 'cancelled', '{}', 'cpu', 'u', 'h', 0, 0, 0, 'cancelled'"])
    r = run_cli("queue", "show", "1", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    assert "state:      cancelled\n" in r.out and "cancelled:  by whom was not recorded\n" in r.out, r.out


# -- cancel, dedupe, leases ----------------------------------------------------


def test_cancel_a_queued_and_a_running_job(tmp_path):
    q = open_queue(tmp_path)
    log = tmp_path / "log"
    queued = q.submit("image", {"log": str(log)}, priority="batch")
    q.cancel([queued.id])
    pidfile = tmp_path / "grandchild.pid"
    running = q.submit("video", {"child": str(pidfile)})
    stop = threading.Event()
    pool = make_pool(q, slots=1, lease=0.6, progress_interval=0.0)
    t = threading.Thread(target=pool.run, kwargs={"stop": stop})
    t.start()
    try:
        wait_for(pidfile.exists)
        wait_for(lambda: q.get(running.id).stage == "holding")
        other = JobQueue(q.path)  # as another process would: `lattice queue cancel`
        other.cancel([str(running.id)])
        grandchild = int(pidfile.read_text())
        wait_for(lambda: process_gone(grandchild), timeout=3)
    finally:
        stop.set()
        t.join(timeout=10)
    assert not t.is_alive()
    assert q.get(running.id).state == "cancelled"
    assert q.get(queued.id).state == "cancelled" and not log.exists(), "the cancelled job never ran"
    assert pool.stats["cancelled"] == 1 and "lost" not in pool.stats  # `worker: 1 cancelled`, not lost


def test_queue_cancel_of_a_finished_job_is_refused_after_cancelling_the_rest(tmp_repo):
    """`lattice queue cancel` of a job that already succeeded (or failed) did
    nothing and exited 0, as if it had been cancelled; it now exits 10,
    naming it, as `queue retry` of a job it cannot retry does, once the
    other jobs named are cancelled. A job cancelled already is no error."""
    from conftest import run_cli

    assert run_cli("gen", "done.txt", "--model", "test.text", cwd=tmp_repo.root).code == 0
    r = run_cli("gen", "later.txt", "--model", "test.text", "--detach", "--json", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    later = r.json[0]["job"]
    [done] = [j["id"] for j in run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json if j["id"] != later]
    r = run_cli("queue", "cancel", str(done), cwd=tmp_repo.root)
    assert r.code == 10 and f"error: job {done} has already succeeded, so it cannot be cancelled" in r.err, r.err
    assert "`lattice queue ls --state queued --state running`" in r.err
    r = run_cli("queue", "cancel", str(later), str(done), "--json", cwd=tmp_repo.root)
    assert r.code == 10 and "(the others named are cancelled)" in r.err, r.err
    assert [(j["id"], j["state"]) for j in r.json] == [(later, "cancelled"), (done, "succeeded")]
    r = run_cli("queue", "cancel", str(later), cwd=tmp_repo.root)
    assert r.code == 0 and f"job {later}: cancelled" in r.out, r.err


def test_a_job_named_twice_is_cancelled_and_retried_once(tmp_repo):
    """`queue cancel 5 5` printed `job 5: cancelled` twice (and `retry` the
    same); each job is reported once, in the order first named."""
    from conftest import run_cli

    ids = []
    for name in ("a.txt", "b.txt"):
        r = run_cli("gen", name, "--model", "test.text", "--detach", "--json", cwd=tmp_repo.root)
        assert r.code == 0, r.err
        ids.append(str(r.json[0]["job"]))
    a, b = ids
    r = run_cli("queue", "cancel", b, a, b, f"0{b}", a, cwd=tmp_repo.root)
    assert r.code == 0 and r.out == f"job {b}: cancelled\njob {a}: cancelled\n", (r.out, r.err)
    r = run_cli("queue", "retry", a, a, "--json", cwd=tmp_repo.root)
    assert r.code == 0 and [(j["id"], j["state"]) for j in r.json] == [(int(a), "queued")], r.out


def test_a_cancel_records_who_and_why(tmp_path):
    """The job keeps who cancelled it (user, host, pid, command) and why;
    its error says so in words; its dependents still name it."""
    import socket

    from lattice.queue import canceller

    q = open_queue(tmp_path)
    asked, interrupted = q.submit("image", {}), q.submit("image", {})
    after = q.submit("image", {}, deps=[interrupted.id])
    [a] = q.cancel([asked.id])  # the library's own call: this process, asked
    by = {"reason": "asked", "command": None, "user": a.cancelled_by["user"], "host": socket.gethostname(), "pid": os.getpid()}
    assert a.cancelled_by == by and a.error == f"cancelled by process ({by['user']} on {by['host']}, pid {os.getpid()})"
    [b] = q.cancel([interrupted.id], by=canceller("interrupted", "lattice gen"))
    assert b.error == f"cancelled by `lattice gen` ({by['user']} on {by['host']}, pid {os.getpid()}) when it was interrupted"
    assert q.get(after.id).error == f"dependency {interrupted.id} was cancelled"
    assert q.retry([interrupted.id])[0].cancelled_by is None  # queued again: no longer cancelled by anyone


def _ask(db: Path, key: str, *, stay: bool, waiting: bool = True) -> tuple[int, subprocess.Popen]:
    """Another process submits a job with `key` (joining ours): (the job's
    id, the process), which stays alive until its stdin closes if `stay`.
    `waiting`: it submits as a command that waits for the job (`lattice
    gen`); else as a script that only submits, with the library's defaults."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, __file__, "ask", str(db), key, "stay" if stay else "go",
                          "waiting" if waiting else "plain"], env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    job = int(p.stdout.readline())
    if not stay:
        assert p.wait(timeout=30) == 0
    return job, p


def test_a_command_that_stops_waiting_leaves_jobs_others_still_ask_for(tmp_path):
    """`abandon` (Ctrl-C in `lattice gen`): the jobs no one else asks for
    are cancelled; one a live process also waits for, one a detached
    submission asked for, and the job the shared one waits on are left
    queued. A process that asked and died does not count."""
    from lattice.queue import canceller

    q = open_queue(tmp_path)
    upstream = q.submit("image", {}, waiting=True)
    shared = q.submit("image", {}, key="shared", deps=[upstream.id], waiting=True)
    orphan = q.submit("image", {}, key="orphan", waiting=True)
    detached = q.submit("image", {}, key="detached", waiting=True)
    alone = q.submit("image", {}, waiting=True)
    assert q.submit("image", {}, key="detached").id == detached.id  # `gen --detach` joins it
    joined, live = _ask(q.path, "shared", stay=True)
    assert _ask(q.path, "orphan", stay=False)[0] == orphan.id  # it asked, then exited
    assert joined == shared.id
    try:
        ids = [upstream.id, shared.id, orphan.id, detached.id, alone.id]
        cancelled, kept = q.abandon(ids, by=canceller("interrupted", "lattice gen"))
        assert (cancelled, kept) == ([orphan.id, alone.id], [upstream.id, shared.id, detached.id])
        assert [q.get(i).state for i in ids] == ["queued", "queued", "cancelled", "queued", "cancelled"]
        assert q.get(alone.id).cancelled_by["reason"] == "interrupted"
    finally:
        live.stdin.close()
        live.wait(timeout=30)
    # The other waiter gone too (killed without a word): nobody asks for the
    # shared job, nor for the job it waits on, any more.
    assert q.abandon([shared.id], by=canceller("interrupted", "lattice gen")) == ([upstream.id, shared.id], [])



def test_an_asker_whose_pid_another_process_took_counts_as_gone(tmp_path):
    """A waiting command killed outright whose pid the system then gave to
    another process: the job is nobody's any more (the asker records when
    its process started), so abandon cancels it."""
    import socket
    import sqlite3

    from lattice.childproc import started
    from lattice.queue import canceller

    q = open_queue(tmp_path)
    job = q.submit("image", {}, key="taken", waiting=True)
    stranger = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        start = started(stranger.pid)
        assert start is not None
        db = sqlite3.connect(q.path)
        with db:  # the killed command's row, under the pid the stranger now has
            db.execute("DELETE FROM askers WHERE job=?", (job.id,))
            db.execute("INSERT INTO askers (job, asker) VALUES (?,?)", (job.id, f"{socket.gethostname()}:{stranger.pid}:{start - 1}"))
        db.close()
        assert q.abandon([job.id], by=canceller("interrupted", "lattice gen")) == ([job.id], [])
        other = q.submit("image", {}, key="kept", waiting=True)
        db = sqlite3.connect(q.path)
        with db:  # the same process, as it asked: it still counts
            db.execute("DELETE FROM askers WHERE job=?", (other.id,))
            db.execute("INSERT INTO askers (job, asker) VALUES (?,?)", (other.id, f"{socket.gethostname()}:{stranger.pid}:{start}"))
        db.close()
        assert q.abandon([other.id], by=canceller("interrupted", "lattice gen")) == ([], [other.id])
    finally:
        stranger.stdin.close()
        stranger.wait(timeout=30)


def test_abandon_cancels_a_joined_job_that_waits_on_a_newer_one(tmp_path):
    """A second submission of a queued job adds its own dependencies, so an
    older job can wait on a newer one. When nobody asks for either any
    more, both are cancelled, each recording who -- not the older failed
    by the newer's cancel (abandon used to cancel the newest first)."""
    from lattice.queue import canceller

    q = open_queue(tmp_path)
    older = q.submit("image", {}, key="y", waiting=True)
    newer = q.submit("image", {}, key="x", waiting=True)
    assert q.submit("image", {}, key="y", deps=[newer.id], waiting=True).id == older.id
    assert q.get(older.id).deps == (newer.id,)
    assert q.abandon([older.id, newer.id], by=canceller("interrupted", "lattice regen")) == ([older.id, newer.id], [])
    for job in (q.get(older.id), q.get(newer.id)):
        assert (job.state, job.blocked_by, job.cancelled_by["reason"]) == ("cancelled", None, "interrupted"), job
    # `queue cancel` of both, the same.
    a, b = q.submit("image", {}, key="w"), q.submit("image", {}, key="v")
    q.submit("image", {}, key="w", deps=[b.id])
    assert [j.state for j in q.cancel([a.id, b.id])] == ["cancelled", "cancelled"]



def test_a_job_its_killed_command_had_recorded_is_cancelled_by_the_next_worker_not_spun_on(tmp_path):
    """A command killed outright (kill -9, a CI runner's hard kill) past its
    job's commit point (stage "recorded": the version is in the manifest,
    its working file half written) leaves the job running; reclaimed, it is
    queued again with nobody asking for it. The next worker cancels it as
    orphaned (`lattice render` writes the file). Before, the cancel passed
    over a job at that stage and the worker looked at it again, forever, at
    full CPU inside a write transaction that locked the queue for every
    other command."""
    from lattice.queue.schema import RECORDED_STAGE

    q = open_queue(tmp_path)
    job_id, asker = _ask(q.path, "k", stay=True)
    assert q.claim("host:1:dead/cpu0", ["cpu"], 0.01).id == job_id
    q.set_progress(job_id, 1.0, RECORDED_STAGE)
    asker.kill()  # the command is gone
    asker.wait(timeout=30)
    time.sleep(0.05)  # and its lease has run out
    worker = start_worker(q.path, "--slots", "1", "--once")
    try:
        assert worker.wait(timeout=30) == 0
    finally:
        worker.kill()
    job = q.get(job_id)
    assert (job.state, job.cancelled_by["reason"]) == ("cancelled", "orphaned"), job
    # Queued again, a job is no longer past its commit point: `queue cancel` takes it.
    other = q.submit("image", {}, key="o")
    assert q.claim("host:1:dead/cpu0", ["cpu"], 0.01).id == other.id
    q.set_progress(other.id, 1.0, RECORDED_STAGE)
    assert q.fail(other.id, "boom", worker_id="host:1:dead/cpu0")  # to be retried
    assert q.get(other.id).state == "queued"
    assert [j.state for j in q.cancel([other.id])] == ["cancelled"]


def test_an_asker_killed_and_not_yet_reaped_does_not_keep_a_job(tmp_path):
    """A command killed whose parent has not reaped it (a zombie: a
    container with no init, a script that never waits) no longer asks for
    anything: another's Ctrl-C cancels the job. Before, it counted as live,
    and the job stayed queued with no one waiting for it."""
    from lattice.queue import canceller

    q = open_queue(tmp_path)
    mine = q.submit("image", {}, key="shared", waiting=True)
    joined, other = _ask(q.path, "shared", stay=True)
    assert joined == mine.id
    other.kill()  # not waited for: a zombie until reaped
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{other.pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert q.abandon([mine.id], by=canceller("interrupted", "lattice gen")) == ([mine.id], [])
    finally:
        other.wait(timeout=30)


def test_a_worker_cancels_the_jobs_of_a_command_killed_outright(tmp_path):
    """A `lattice gen` or `export` killed with SIGKILL cannot abandon its
    jobs as Ctrl-C does: the next worker cancels each one that nobody
    alive asks for, instead of making the asset (or writing the export)
    behind the user's back. A job also queued with --detach, or that a
    live command's job waits on, still runs."""
    q = open_queue(tmp_path)
    gone, _ = _ask(q.path, "gone", stay=False)
    kept, _ = _ask(q.path, "detached", stay=False)
    q.submit("image", {}, key="detached")  # as `gen --detach`, or a script
    upstream, _ = _ask(q.path, "upstream", stay=False)
    mine = q.submit("image", {}, deps=[upstream])
    make_pool(q).run(once=True)
    job = q.get(gone)
    assert job.state == "cancelled" and "every command that asked for it was gone" in job.error
    assert [q.get(i).state for i in (kept, upstream, mine.id)] == ["succeeded"] * 3


def test_a_script_that_submits_and_exits_leaves_its_job_to_a_worker(tmp_path):
    """A plug-in or script that calls `JobQueue.submit()` with the library's
    defaults and exits without waiting has its job run by the next worker.
    Before, submit recorded it as a waiting asker, so the worker cancelled
    the job as orphaned the moment the script was gone."""
    q = open_queue(tmp_path)
    left, _ = _ask(q.path, "script", stay=False, waiting=False)
    make_pool(q).run(once=True)
    job = q.get(left)
    assert (job.state, job.cancelled_by) == ("succeeded", None), job.error


def test_detach_leaves_a_waited_job_to_a_worker(tmp_path):
    """A process that queued a job to wait for it can leave it to a worker
    after all (`detach`, as `gen --detach` does once all its jobs are
    queued): its Ctrl-C then cancels nothing, and the job runs after it is gone."""
    from lattice.queue import canceller

    q = open_queue(tmp_path)
    mine = q.submit("image", {}, waiting=True)
    q.detach([mine.id])
    assert q.abandon([mine.id], by=canceller("interrupted", "lattice gen")) == ([], [mine.id])
    make_pool(q).run(once=True)
    assert q.get(mine.id).state == "succeeded"


def test_the_same_key_queued_twice_runs_once(tmp_path):
    q = open_queue(tmp_path)
    log = tmp_path / "log"
    first = q.submit("image", {"log": str(log)}, key="recipe:abc", priority="low")
    upstream = q.submit("image", {})
    second = q.submit("image", {"log": str(log)}, key="recipe:abc", priority="high", deps=[upstream.id])
    assert second.id == first.id and second.priority == "high"
    assert second.deps == (upstream.id,)  # it now waits for what the second submitter waits for
    make_pool(q).run(once=True)
    assert len(read_log(log)) == 2  # one start, one done
    third = q.submit("image", {"log": str(log)}, key="recipe:abc")
    assert third.id != first.id, "a finished job no longer absorbs its key"


def test_a_deduplicated_job_never_waits_on_a_dead_job_or_on_itself(tmp_path):
    """Deps a second submitter brings are added only while they can still
    finish, and never when they wait on the shared job: else it would stay
    queued for ever."""
    q = open_queue(tmp_path)
    shared = q.submit("image", {}, key="K")
    dead = q.submit("image", {}, key="U")
    q.cancel([dead.id])
    downstream = q.submit("image", {}, deps=[shared.id])
    again = q.submit("image", {}, key="K", deps=[dead.id, downstream.id])
    assert again.id == shared.id and again.deps == ()
    live = q.submit("image", {})
    assert q.submit("image", {}, key="K", deps=[live.id]).deps == (live.id,)
    make_pool(q).run(once=True)
    assert all(q.get(j.id).state in ("succeeded", "cancelled") for j in (shared, dead, downstream, live))


def test_lease_expiry_counts_an_attempt_release_does_not(tmp_path):
    q = open_queue(tmp_path)
    job = q.submit("image", {}, max_retries=1)
    assert q.claim("w1", lease=0.05).id == job.id
    time.sleep(0.1)
    again = q.claim("w2", lease=0.05)
    assert (again.id, again.attempts, again.worker) == (job.id, 2, "w2")
    assert not q.succeed(job.id, {}, worker_id="w1"), "a reclaimed run's result is dropped"
    time.sleep(0.1)
    assert q.claim("w3") is None
    job = q.get(job.id)
    assert job.state == "failed" and "lease expired, after 2 attempt(s)" in job.error

    other = q.submit("image", {})
    q.claim("w", lease=10)
    assert q.heartbeat(other.id, "w", 10) and not q.heartbeat(other.id, "intruder", 10)
    assert q.release(other.id, worker_id="w")
    assert (q.get(other.id).state, q.get(other.id).attempts) == ("queued", 0)


# -- slots ---------------------------------------------------------------------


def test_worker_with_no_slots_says_what_to_give(tmp_repo, monkeypatch):
    """`lattice worker --slots 0` on a machine with no GPU: the error had no hint."""
    from conftest import run_cli

    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi: no GPU
    r = run_cli("worker", "--slots", "0", "--once", cwd=tmp_repo.root)
    assert r.code == 4 and r.err.splitlines() == [
        "error: no worker slots: no GPU was found and --slots is 0",
        "hint: give --slots 1 or more (or leave it out: one per core)"], r.err
    assert run_cli("worker", "--slots", "1", "--once", cwd=tmp_repo.root).code == 0


def test_gpu_slots_come_from_nvidia_smi_and_cpu_jobs_never_take_them(tmp_path, monkeypatch):
    fake_smi = tmp_path / "bin" / "nvidia-smi"
    fake_smi.parent.mkdir()
    fake_smi.write_text("#!/bin/sh\necho 'GPU 0: Fake A (UUID: GPU-1)'\necho 'GPU 1: Fake B (UUID: GPU-2)'\n")
    fake_smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_smi.parent}:{os.environ['PATH']}")
    slots = detect_slots(cpu=1)
    assert [s.name for s in slots] == ["gpu0", "gpu1", "cpu0"]
    q = open_queue(tmp_path)
    gpu = [q.submit("image", {"sleep": 0.05}, slot="gpu") for _ in range(4)]
    cpu = [q.submit("derive", {"sleep": 0.05}) for _ in range(4)]
    WorkerPool(q, HANDLERS, slots, poll=0.02).run(once=True)
    assert {q.get(j.id).result["env"]["CUDA_VISIBLE_DEVICES"] for j in gpu} == {"0", "1"}
    assert {(q.get(j.id).result["slot"], q.get(j.id).result["env"]["CUDA_VISIBLE_DEVICES"]) for j in cpu} == {
        ("cpu", "")
    }


def test_gpu_jobs_fall_back_to_cpu_slots_without_a_gpu(tmp_path):
    q = open_queue(tmp_path)
    job = q.submit("image", {}, slot="gpu")
    make_pool(q, slots=1).run(once=True)
    assert q.get(job.id).result["slot"] == "cpu"


# -- the database ------------------------------------------------------------------


def test_a_garbage_or_truncated_database_is_reported_as_corrupt(tmp_path):
    import pytest

    bad = tmp_path / "garbage.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RepositoryCorrupt, match="garbage.db"):
        JobQueue(bad)
    assert "garbage.db" in check_file(bad)[0]
    assert check_file(tmp_path / "absent.db") == []

    q = open_queue(tmp_path)
    for i in range(2000):
        q.submit("image", {"n": i, "pad": "x" * 200})
    assert q.check() == []
    q.close()
    data = q.path.read_bytes()
    q.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RepositoryCorrupt, match="queue.db") as e:
        broken = JobQueue(q.path)
        broken.list(limit=None)
        raise AssertionError(broken.check())
    assert "fsck" in e.value.hint


def test_type_defaults_and_config_overrides(tmp_path):
    import pytest

    q = open_queue(tmp_path)
    image, video = q.submit("image", {}), q.submit("video", {})
    assert (image.max_retries, image.timeout, video.max_retries, video.timeout) == (3, 300, 2, 1800)
    q = open_queue(tmp_path, types={"image": {"retries": 5, "timeout": 0}})
    image = q.submit("image", {})
    assert (image.max_retries, image.timeout) == (5, None)
    assert q.submit("image", {}, max_retries=1, timeout=9).timeout == 9
    with pytest.raises(InvalidInput, match=r"\[queue.types.imgae\]"):
        open_queue(tmp_path, types={"imgae": {"retries": 1}})
    with pytest.raises(InvalidInput, match="retries"):
        open_queue(tmp_path, types={"image": {"retries": -1}})


def test_unknown_ids_and_bad_arguments_get_clear_errors(tmp_path):
    import pytest

    q = open_queue(tmp_path)
    for _ in range(15):
        q.submit("image", {})
    with pytest.raises(QueueError, match=r"no job 21 in the queue \(did you mean: \d"):
        q.get("21")
    with pytest.raises(QueueError, match="from 1 to 15"):
        q.get(900)
    with pytest.raises(QueueError, match="job ids are numbers"):
        q.get("abc")
    with pytest.raises(QueueError, match="did you mean: image"):
        q.submit("imag", {})
    with pytest.raises(QueueError, match="no job 99"):
        q.submit("image", {}, deps=[99])
    with pytest.raises(QueueError, match="unknown priority"):
        q.submit("image", {}, priority="asap")


def test_list_wait_eta_and_clear(tmp_path):
    import pytest

    q = open_queue(tmp_path)
    jobs = [q.submit("image", {"sleep": 0.05}, estimate_key="solid:64x64") for _ in range(3)]
    assert [j.id for j in q.list(limit=2)] == [jobs[2].id, jobs[1].id]
    assert q.eta(jobs[0]) is None
    with pytest.raises(QueueError, match="timed out after 0.1 s"):
        q.wait([j.id for j in jobs], timeout=0.1, poll=0.02)
    make_pool(q).run(once=True)
    done = q.wait([j.id for j in jobs], timeout=1)
    assert [j.state for j in done] == ["succeeded"] * 3
    fresh = q.submit("image", {}, estimate_key="solid:64x64")
    assert 0.04 < q.eta(fresh) < 1.0
    assert q.clear_finished() == 3
    assert [j.id for j in q.list()] == [fresh.id]
    assert q.counts()["queued"] == 1


# -- the CLI ------------------------------------------------------------------------------


def test_queue_commands_and_worker_command(tmp_path, monkeypatch):
    import json
    import types

    from typer.testing import CliRunner

    from lattice.cli import queue_cmd

    repo = types.SimpleNamespace(dir=tmp_path, config={"queue": {"types": {"image": {"retries": 0}}}})
    monkeypatch.setattr("lattice.cli.common.repo_from_ctx", lambda reading=False: repo)
    monkeypatch.setitem(sys.modules, "lattice.jobs", types.SimpleNamespace(HANDLERS=HANDLERS))
    q = repo_queue(repo.dir, repo.config)
    ok = q.submit("image", {"sleep": 0.01}, estimate_key="e")
    bad = q.submit("image", {"poison": True})
    waiting = q.submit("export", {}, priority="low")
    run = CliRunner().invoke

    r = run(queue_cmd.queue_app, ["cancel", str(waiting.id), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)[0]["state"] == "cancelled"
    stats, stopped_by, failed = queue_cmd.worker_command(slots=1, once=True)
    assert stats == {"succeeded": 1, "failed": 1} and stopped_by is None
    assert failed.exit_code == 1 and failed.message == f"job {bad.id} failed: RuntimeError('poison')"  # not a LatticeError: 1
    r = run(queue_cmd.queue_app, ["ls", "--json"])
    assert [(j["id"], j["state"]) for j in json.loads(r.output)] == [
        (waiting.id, "cancelled"), (bad.id, "failed"), (ok.id, "succeeded")]
    r = run(queue_cmd.queue_app, ["ls", "--state", "failed"])
    assert "RuntimeError('poison')" in r.output and "1 shown of" in r.output
    r = run(queue_cmd.queue_app, ["ls", "--state", "bogus"])
    assert r.exception.exit_code == 4 and "unknown job state 'bogus'" in r.exception.message  # invalid input
    lines = {line.split()[0]: line for line in run(queue_cmd.queue_app, ["ls"]).output.splitlines()[1:]}
    assert " 100% " in lines[str(ok.id)]  # DONE: how far it got
    assert "%" not in lines[str(waiting.id)]  # cancelled before it started
    r = run(queue_cmd.queue_app, ["show", str(bad.id)])
    assert "attempts:   1 of 1" in r.output
    r = run(queue_cmd.queue_app, ["retry", str(bad.id), str(waiting.id), "--json"])
    assert [j["state"] for j in json.loads(r.output)] == ["queued", "queued"]
    worker = threading.Timer(0.2, make_pool(q).run, kwargs={"once": True})  # after watch has looked
    worker.start()
    r = run(queue_cmd.queue_app, ["watch", "--json", "--until-done", "--interval", "0.02"])
    worker.join()
    events = [json.loads(line) for line in r.output.splitlines()]
    assert {e["job"]: e["state"] for e in events} == {waiting.id: "succeeded", bad.id: "failed"}
    assert set(events[0]) == {"job", "state", "progress", "stage", "eta"}
    r = run(queue_cmd.queue_app, ["show", "77"])
    assert r.exit_code != 0 and "no job 77" in str(r.exception)
    r = run(queue_cmd.queue_app, ["clear"])
    assert isinstance(r.exception, Exception) and "--finished" in r.exception.hint
    r = run(queue_cmd.queue_app, ["clear", "--finished", "--json"])
    assert json.loads(r.output) == {"cleared": 3}


# -- the worker process used above ----------------------------------------------------


def _worker_main(argv: list[str]) -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("--slots", type=int, default=1)
    ap.add_argument("--lease", type=float, default=2.0)
    ap.add_argument("--once", action="store_true")
    args = ap.parse_args(argv)
    q = JobQueue(args.db, backoff=0.05)
    pool = make_pool(q, slots=args.slots, lease=args.lease)
    with graceful_signals(pool):
        pool.run(once=args.once)


def _ask_main(db: str, key: str, stay: str, how: str) -> None:
    """Submit a job with `key` as a separate command would ("waiting") or
    as a script with the library's defaults ("plain"), print its id; with
    "stay", wait until stdin closes."""
    q = JobQueue(db)
    job = q.submit("image", {}, key=key, waiting=True) if how == "waiting" else q.submit("image", {}, key=key)
    print(job.id, flush=True)
    if stay == "stay":
        sys.stdin.read()


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    _worker_main(sys.argv[2:])
if __name__ == "__main__" and sys.argv[1:2] == ["ask"]:
    _ask_main(*sys.argv[2:6])
