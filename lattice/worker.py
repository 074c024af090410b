"""Workers: threads that claim jobs from the queue and run their handlers.

One thread per slot (a GPU, or a CPU share). The thread that calls
`WorkerPool.run` is the supervisor: it renews leases, flushes progress,
enforces timeouts and notices cancellation, killing a job's child process
group when it must. Handlers never see the queue; they get a JobContext.

A handler that runs a child process should start it through `ctx.spawn` (or
lattice.childproc.start, and pass it to `ctx.on_process`), so that a timeout
or a cancel kills the child *and* everything it started, and so that on Linux
they die with the worker even when it is killed by SIGKILL. A child started
with plain `start_new_session=True` and passed to `ctx.on_process` is killed
on a timeout or a cancel, but outlives a SIGKILL of the worker.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

from lattice.errors import (
    Conflict, GeneratorFailed, InvalidInput, LatticeError, LockTimeout, QueueError, RepositoryCorrupt, TrustRequired,
    UsageError, WriteRefused, exit_code_of, refused_write,
)
from lattice.queue import Job, JobQueue
from lattice.queue.schema import RECORDED_STAGE

# Failures a retry cannot fix: bad input, a damaged repository, an unapproved
# command, a write the filesystem refuses (a person must make room or grant
# permission first), and a deterministic generator's failure
# (GeneratorFailed.retryable). Nor a lock another process held through the
# whole wait: a retry would make the output again to wait as long, where
# every other command gives up with exit 6 after one wait.
NOT_RETRYABLE = (InvalidInput, UsageError, RepositoryCorrupt, TrustRequired, Conflict, WriteRefused, LockTimeout)
# OS errors that fail the same way on another try: a name too long, a file
# where a folder belongs (or the reverse), a loop of links, a bad argument.
# A refused write (no permission, read-only, full) is WriteRefused; any other
# (a resource short for the moment, a network filesystem's hiccup) is retried.
LASTING_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.EEXIST, errno.EINVAL})


def failure(e: BaseException) -> tuple[str, bool]:
    """A job's error as one line for the queue, and whether a retry may help."""
    if isinstance(e, OSError) and e.errno is not None:
        return f"{e.strerror or e}: {e.filename}" if e.filename else str(e.strerror or e), e.errno not in LASTING_ERRNOS
    error = e.message if isinstance(e, LatticeError) else repr(e)
    return error, not isinstance(e, NOT_RETRYABLE) and getattr(e, "retryable", True)


@dataclass(frozen=True)
class Slot:
    kind: str  # "cpu" or "gpu"
    index: int
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.kind}{self.index}"


def gpu_indices() -> list[int]:
    """The GPUs `nvidia-smi -L` lists; none when the binary is missing or fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [int(m.group(1)) for m in re.finditer(r"^GPU (\d+):", out, re.MULTILINE)]


def detect_slots(cpu: int | None = None) -> list[Slot]:
    """One slot per GPU, then `cpu` CPU slots (default: one per core)."""
    if cpu is not None and cpu < 0:
        raise InvalidInput(f"--slots must be 0 or more, got {cpu}")
    gpus = gpu_indices()
    slots = [Slot("gpu", i, {"CUDA_VISIBLE_DEVICES": str(i)}) for i in gpus]
    # Hide the GPUs from CPU jobs, so a CPU-slot job cannot take GPU memory
    # that a GPU-slot job was promised.
    cpu_env = {"CUDA_VISIBLE_DEVICES": ""} if gpus else {}
    n = (os.cpu_count() or 1) if cpu is None else cpu
    slots += [Slot("cpu", i, cpu_env) for i in range(n)]
    if not slots:
        raise InvalidInput("no worker slots: no GPU was found and --slots is 0",
                           hint="give --slots 1 or more (or leave it out: one per core)")
    return slots


class JobContext:
    """What a handler gets: the job, its slot's environment, and hooks."""

    def __init__(self, job: Job, slot: Slot, run: _Run, pool: WorkerPool):
        self.job = job
        self.slot = slot
        self.env: dict[str, str] = dict(slot.env)
        self.timeout = job.timeout
        self._run = run
        self._pool = pool

    @property
    def queue_path(self) -> Path:
        """The queue database the job came from."""
        return Path(self._pool.queue.path)

    def progress(self, fraction: float, stage: str | None = None) -> None:
        """Report progress (0..1) and stage. Cheap to call often: writes to
        the database are throttled."""
        self._run.report(fraction, stage, self._pool)

    def on_process(self, popen: subprocess.Popen) -> None:
        """Register a child process, so that a timeout or cancel kills it and
        its process group."""
        self._run.add_process(popen)

    def cancelled(self) -> bool:
        """True once the job was cancelled, timed out or released: stop soon."""
        return self._run.outcome is not None

    def commit(self) -> bool:
        """Call before recording the job's result (a new version): True when
        the run may record it, and from then on a cancel or an abort leaves
        the job to finish. False when the run is void: cancelled, timed out
        or reclaimed, even where the supervisor has not noticed yet (a
        `lattice queue cancel` is seen at its next heartbeat, up to a second
        later); it must record nothing."""
        return self._run.commit(self._pool)

    def spawn(self, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        """Start `argv` in its own process group with the slot's environment
        (lattice.childproc.start: on Linux it dies with this process),
        registered with on_process."""
        from lattice.childproc import start

        env = {**os.environ, **self.env, **kwargs.pop("env", {})}
        popen = start(argv, env=env, **kwargs)
        self.on_process(popen)
        return popen


class _Run:
    """One job running in one slot, as the supervisor sees it."""

    def __init__(self, job: Job, worker_id: str):
        self.job = job
        self.worker_id = worker_id
        self.deadline = time.monotonic() + job.timeout if job.timeout else None
        self.last_beat = time.monotonic()
        self.outcome: str | None = None  # "timeout" | "cancelled" | "lost" | "released": the run is void
        self.handed_back = False  # released and given back to the queue (done once)
        self.processes: list[subprocess.Popen] = []
        self.pending: tuple[float, str | None] | None = None
        self.last_report = 0.0
        self.last_stage: str | None = None
        self.lock = threading.Lock()

    def add_process(self, popen: subprocess.Popen) -> None:
        with self.lock:
            self.processes.append(popen)
            void = self.outcome is not None
        if void:  # registered after the watchdog fired: stop it at once
            _kill_group(popen)

    def commit(self, pool: WorkerPool) -> bool:
        """JobContext.commit: the queue's word first, then this run's, under
        its lock (an abort that voids the run after the queue said yes has
        handed the job back: it is not recorded here)."""
        if self.outcome is not None:
            return False
        ok = pool._quietly(pool.queue.commit, self.job.id, self.worker_id)
        with self.lock:
            if not ok or self.outcome is not None:
                return False
            self.last_stage, self.pending = RECORDED_STAGE, None  # no older progress flushed over it
            return True

    def kill(self, outcome: str) -> bool:
        """Void the run and kill its children; False if it was already void,
        or past its commit point for an abort (`released`) or a `timeout`:
        its generator is done and its result is being recorded; handing it
        back would run it twice, failing it would contradict the manifest."""
        with self.lock:
            if self.outcome is not None or (outcome in ("released", "timeout") and self.last_stage == RECORDED_STAGE):
                return False
            self.outcome = outcome
            procs = list(self.processes)
        for p in procs:
            _kill_group(p)
        return True

    def report(self, fraction: float, stage: str | None, pool: WorkerPool) -> None:
        now = time.monotonic()
        with self.lock:
            due = stage != self.last_stage or now - self.last_report >= pool.progress_interval
            self.pending = None if due else (fraction, stage)
            if due:
                self.last_report, self.last_stage = now, stage
        if due:
            pool._advise(pool.queue.set_progress, self.job.id, fraction, stage)

    def flush(self, pool: WorkerPool) -> None:
        with self.lock:
            pending, self.pending = self.pending, None
            if pending:
                self.last_report = time.monotonic()
        if pending:
            pool._advise(pool.queue.set_progress, self.job.id, *pending)


def _kill_group(popen: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group (its grandchildren too) -- but
    never our own group, if the child was started without a session of its own."""
    if popen.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(popen.pid) == popen.pid and popen.pid != os.getpgrp():
            os.killpg(popen.pid, signal.SIGKILL)
        else:
            popen.kill()


Handler = Callable[[JobContext], "dict | None"]


class WorkerPool:
    """Run jobs from `queue` with `handlers` (job type -> function) in `slots`.

    `lease` is how long a claimed job stays ours without a heartbeat; a killed
    worker's jobs return to the queue that long after it died. `poll` is how
    long an idle slot waits before looking again. With `gpu_fallback`, CPU
    slots also take GPU jobs when the pool has no GPU slot at all, so a
    machine without a GPU still runs them, slowly.
    """

    def __init__(
        self,
        queue: JobQueue,
        handlers: Mapping[str, Handler],
        slots: list[Slot] | None = None,
        *,
        lease: float = 30.0,
        poll: float = 0.5,
        gpu_fallback: bool = True,
        progress_interval: float = 0.5,
        only: Iterable[int] | None = None,
    ):
        self.queue = queue
        self.handlers = dict(handlers)
        # An inline pool (`lattice gen`, `render`) runs only its command's jobs,
        # never somebody's batch that happens to be queued.
        self.only = None if only is None else list(only)
        self.slots = detect_slots() if slots is None else list(slots)
        self.lease = lease
        self.poll = poll
        self.progress_interval = progress_interval
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        has_gpu = any(s.kind == "gpu" for s in self.slots)
        self._kinds = {"gpu": ("gpu",), "cpu": ("cpu",) if has_gpu or not gpu_fallback else ("cpu", "gpu")}
        self._draining = threading.Event()
        self._aborted = threading.Event()
        self._runs: dict[str, _Run] = {}  # worker id of the slot -> its current run
        self._runs_lock = threading.Lock()
        self._fatal: BaseException | None = None
        self.stats: Counter[str] = Counter()
        self._ran: set[int] = set()  # ids of the jobs this pool ran

    # -- control --------------------------------------------------------------

    @property
    def aborted(self) -> bool:
        return self._aborted.is_set()

    def drain(self) -> None:
        """Stop claiming; `run` returns when the running jobs have finished."""
        self._draining.set()

    def abort(self) -> None:
        """Stop now: kill running jobs' processes and hand the jobs back to the
        queue (without counting an attempt) for another worker. The kill
        happens here, in the caller's thread, so it is done even when the
        process is about to exit."""
        self._draining.set()
        self._aborted.set()
        with self._runs_lock:
            runs = list(self._runs.values())
        for run in runs:
            for p in list(run.processes):
                _kill_group(p)

    def run(self, once: bool = False, stop: threading.Event | None = None) -> dict[str, int]:
        """Work until drained or aborted (or, with `once`, until no job this
        pool can run is queued). Returns counts of what happened."""
        threads = [
            threading.Thread(target=self._slot_loop, args=(slot, once), name=f"lattice-{slot.name}", daemon=True)
            for slot in self.slots
        ]
        for t in threads:
            t.start()
        tick = min(0.1, self.lease / 5, self.poll)
        aborted_at = None
        while any(t.is_alive() for t in threads):
            if stop is not None and stop.is_set():
                self.drain()
            self._supervise()
            if self._aborted.is_set():
                aborted_at = aborted_at or time.monotonic()
                # Handlers stuck in Python code cannot be killed; don't wait on them forever.
                if time.monotonic() - aborted_at > 5:
                    break
            time.sleep(tick)
        self._supervise()
        if self._fatal is not None:
            raise self._fatal
        return dict(self.stats)

    def failed(self) -> list[Job]:
        """The jobs this pool ran that stand failed now: failed for good here
        (out of retries, or not worth one), not those retried and then done."""
        out = []
        for job_id in sorted(self._ran):
            try:
                job = self.queue.get(job_id)
            except QueueError:  # deleted meanwhile (`lattice queue clear`)
                continue
            if job.state == "failed":
                out.append(job)
        return out

    # -- supervisor -------------------------------------------------------------

    def _supervise(self) -> None:
        """Leases, progress, timeouts, cancels and aborts, for every running job."""
        with self._runs_lock:
            runs = list(self._runs.values())
        now = time.monotonic()
        for run in runs:
            if run.outcome is not None:
                continue
            job = run.job
            if self._aborted.is_set():
                if run.last_stage == RECORDED_STAGE:
                    continue  # its result is in the manifest: handing it back would run it twice
                if run.kill("released"):
                    self._hand_back(run)
            elif run.deadline is not None and now >= run.deadline and run.last_stage != RECORDED_STAGE:
                if run.kill("timeout"):
                    self._quietly(self.queue.fail, job.id, f"timed out after {job.timeout:g} s",
                                  worker_id=run.worker_id, exit_code=GeneratorFailed.exit_code)
                    self.stats["timed_out"] += 1
            elif now - run.last_beat >= min(self.lease / 3, 1.0):
                run.last_beat = now
                if self._quietly(self.queue.heartbeat, job.id, run.worker_id, self.lease) is False:
                    # Cancelled by a user, or reclaimed after we stalled: not ours any more.
                    now_job = self._quietly(self.queue.get, job.id)
                    cancelled = now_job is not None and now_job.state == "cancelled"
                    run.kill("cancelled" if cancelled else "lost")
                    self.stats["cancelled" if cancelled else "lost"] += 1
                else:
                    run.flush(self)

    def _hand_back(self, run: _Run) -> None:
        """Give a released run's job back to the queue, once: the supervisor
        and the run's own slot thread may both get here."""
        with run.lock:
            if run.handed_back:
                return
            run.handed_back = True
        self._quietly(self.queue.release, run.job.id, worker_id=run.worker_id)
        self.stats["released"] += 1

    def _advise(self, fn: Callable[..., Any], *args: Any) -> None:
        """Progress reports are advice: a database that cannot take one
        (busy, full, read-only) must not stop the job; writing its result
        says what is wrong, if anything still is."""
        with contextlib.suppress(LatticeError):
            fn(*args)

    def _quietly(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Queue calls from the supervisor and progress reports: a busy
        database must not kill a job; a damaged one stops the pool."""
        try:
            return fn(*args, **kwargs)
        except QueueError:
            return None
        except LatticeError as e:
            self._fatal = self._fatal or e
            self.abort()
            return None

    # -- slots ----------------------------------------------------------------

    def _slot_loop(self, slot: Slot, once: bool) -> None:
        worker_id = f"{self.id}/{slot.name}"
        kinds = self._kinds[slot.kind]
        types = list(self.handlers)
        while not self._draining.is_set():
            try:
                job = self.queue.claim(worker_id, kinds, self.lease, types=types, only=self.only)
                if job is None and once and self.queue.pending(kinds, types, self.only) == 0:
                    return
            except QueueError:  # database busy past its timeout: try again later
                job = None
            except BaseException as e:  # damaged database: nothing can run
                self._fatal = self._fatal or e
                self.abort()
                return
            if job is None:
                self._draining.wait(self.poll)
                continue
            self._execute(slot, worker_id, job)

    def _execute(self, slot: Slot, worker_id: str, job: Job) -> None:
        run = _Run(job, worker_id)
        ctx = JobContext(job, slot, run, self)
        self._ran.add(job.id)
        with self._runs_lock:
            self._runs[worker_id] = run
        try:
            try:
                result = self.handlers[job.type](ctx)
            except BaseException as e:  # one poison job must never stop the others
                if isinstance(e, OSError):
                    e = refused_write(e) or e  # the path named, exit 13, not retried
                error, retry = failure(e)
                tail = getattr(e, "stderr_tail", None) or getattr(e, "stderr", None) or ""
                if isinstance(tail, bytes):
                    tail = tail.decode("utf-8", "replace")
                if run.outcome is None and self._aborted.is_set():
                    # abort() killed its process (from a signal handler, before
                    # the supervisor could void the run): hand it back, not fail it.
                    run.kill("released")
                if run.outcome is None:
                    if self._quietly(self.queue.fail, job.id, error, str(tail), retry, worker_id=worker_id,
                                     exit_code=exit_code_of(e), hint=e.hint if isinstance(e, LatticeError) else None):
                        will_retry = retry and job.attempts <= job.max_retries
                        self.stats["retried" if will_retry else "failed"] += 1
            else:
                # Recorded only if still ours: a timed-out or cancelled run's result is void.
                if run.outcome is None and self._quietly(self.queue.succeed, job.id, result, worker_id=worker_id):
                    superseded = isinstance(result, dict) and result.get("status") == "superseded"
                    self.stats["superseded" if superseded else "succeeded"] += 1
        finally:
            if run.outcome == "released":
                self._hand_back(run)
            with self._runs_lock:
                del self._runs[worker_id]
            for p in run.processes:  # a handler's children do not outlive its job
                _kill_group(p)


@contextlib.contextmanager
def graceful_signals(pool: WorkerPool, on_signal: Callable[[str], None] | None = None) -> Iterator[list[int]]:
    """For the `lattice worker` command: the first SIGINT/SIGTERM drains the
    pool (no new claims; running jobs finish), the second aborts it (running
    jobs are killed and handed back to the queue). `on_signal("drain" |
    "abort")` lets the CLI say so. Yields the list of signals received, in
    order (empty: none), for the CLI's exit status. Call from the main thread."""
    received: list[int] = []

    def handle(signum: int, frame: Any) -> None:
        received.append(signum)
        first = len(received) == 1
        pool.drain() if first else pool.abort()
        if on_signal is not None:
            on_signal("drain" if first else "abort")

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
