"""From commands to jobs: `gen`, `regen` and `render` build render steps,
submit them to the durable queue with their dependencies, and (unless
detached) run an inline worker pool until their jobs are done."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import msgspec

from lattice.errors import InvalidInput, LatticeError, command
from lattice.generators import registry
from lattice.render import Outcome, Step, why_kept
from lattice.repo import Repository


@dataclass
class Submitted:
    steps: list[Step]
    jobs: dict[str, int] = field(default_factory=dict)  # asset → job id


def queue_of(repo: Repository):
    from lattice.queue import repo_queue

    # An in-memory copy only where the repository is read-only as a whole:
    # work submitted to a copy of one unwritable queue.db would vanish.
    return repo_queue(repo.dir, repo.config, reading=repo.read_only)


def lease_of(repo: Repository) -> float:
    """How long a claimed job stays a worker's without a heartbeat (`[queue] lease`)."""
    return float((repo.config.get("queue") or {}).get("lease", 30.0))


def job_type(step: Step) -> str:
    if step.recipe is not None and step.recipe.inputs or step.action == "update":
        return "derive"
    return step.kind if step.kind in ("image", "video", "audio") else "image"


# -- building steps ---------------------------------------------------------


def gen_step(
    repo: Repository,
    name: str,
    model: str,
    *,
    prompt: str = "",
    negative_prompt: str = "",
    seed: int | None = None,
    params: dict | None = None,
    inputs: Iterable[str] = (),
) -> Step:
    from lattice.media import extension, kind_of_extension
    from lattice.recipe import build
    from lattice.worktree import require_writable

    gen = registry(repo).get(model)
    recipe = build(repo, gen, name=name, params=params or {}, seed=seed, prompt=prompt, negative_prompt=negative_prompt, inputs=list(inputs))
    record = repo.manifest.read(name)
    if record is None:
        _refuse_untracked_file(repo, name)
    else:
        require_unedited(repo, name)
    require_writable(repo, name)  # refused now, not after a render that records a version without its file
    change = "initial" if record is None else "modified"
    base = len(record.versions) if record else 0
    note = f"gen {name} v{base + 1}: {model} seed {recipe.seed}"
    return Step(name, "generate", recipe, change=change, note=note, generator=gen.id, kind=kind_of_extension(extension(name)), base=base)


def _refuse_untracked_file(repo: Repository, name: str) -> None:
    from lattice.paths import check_creatable

    check_creatable(repo.root, name)
    repo.check_not_under_asset([name])
    if os.path.lexists(repo.working_path(name)):
        raise InvalidInput(
            f"{name} already exists and is not tracked; generating would overwrite it",
            hint=f"move it aside, or track it first with {command('lattice add', name)}",
        )


def regen_step(
    repo: Repository,
    name: str,
    *,
    seed: int | None = None,
    new_seed: bool = False,
    params: dict | None = None,
    model: str | None = None,
    prompt: str | None = None,
) -> Step:
    from lattice.media import extension
    from lattice.recipe import check_media, draw_seed, recipe_key
    from lattice.worktree import require_writable

    record = repo.record(name)
    old = record.current.recipe
    if old is None:
        raise InvalidInput(f"{name} was imported, so it has no recipe to regenerate", hint=f"make a generated version with {command('lattice gen', name, options='--model ID')}")
    require_unedited(repo, name)
    require_writable(repo, name)
    if seed is not None and new_seed:
        raise InvalidInput("--seed and --new-seed exclude each other")
    reg = registry(repo)
    gen = reg.get(model or old.generator)
    if gen.id == old.generator:
        merged = gen.revise(old.params, params or {})
    else:  # keep the old params the new generator also knows
        known = {p.name for p in gen.params}
        merged = gen.revise({k: v for k, v in old.params.items() if k in known}, params or {})
    normalized = gen.normalize(merged)
    new = msgspec.structs.replace(
        old,
        generator=gen.id,
        generator_version=str(gen.version),
        params=normalized,
        seed=draw_seed() if new_seed else (old.seed if seed is None else seed),
        prompt=old.prompt if prompt is None else prompt,
        deterministic=bool(gen.deterministic),
    )
    gen.check_output(extension(name))
    gen.check_params(new.params, extension(name))
    try:
        gen.check_inputs(len(new.inputs))
    except InvalidInput as e:  # regen has no --input: the recipe's inputs stay
        e.hint = f"{name} is made from {len(new.inputs)} input(s); pick a generator that takes that many (`lattice generators` lists them)"
        raise
    check_media(repo, gen, new.params, extension(name), list(new.inputs), list(new.input_objects))
    new.key = recipe_key(new)
    what = []
    if new.seed != old.seed:
        what.append(f"seed {old.seed} -> {new.seed}")
    if new.generator != old.generator:
        what.append(f"model {old.generator} -> {new.generator}")
    for k in sorted(set(new.params) | set(old.params)):
        if new.params.get(k) != old.params.get(k):
            what.append(f"{k} {old.params.get(k)} -> {new.params.get(k)}")
    if new.prompt != old.prompt:
        what.append("prompt changed")
    only_seed = all(w.startswith("seed ") for w in what)
    if what and only_seed:
        _refuse_unseeded(repo, name, gen, new, "--new-seed" if new_seed else f"--seed {seed}")
    change = "regenerated" if only_seed else "modified"
    note = f"regen {name} v{len(record.versions) + 1}: " + (", ".join(what) or "same recipe")
    return Step(name, "generate", new, change=change, note=note, generator=gen.id, kind=record.kind, base=len(record.versions))


def _refuse_unseeded(repo: Repository, name: str, gen, recipe, flag: str) -> None:
    """A new seed alone for a generator that makes the same output for
    every seed would record a version with the same bytes: refused, with
    what would change the output."""
    from lattice.media import extension

    hint = gen.unseeded(recipe.params, extension(name))
    if hint is None:
        return
    made = [i for i in recipe.inputs if getattr(repo.index.get(i), "generator", None)]
    if made:  # a new seed upstream changes what it is made from
        hint += f"; or regenerate what it is made from ({command('lattice regen', *made, options='--new-seed')})"
    raise InvalidInput(f"{name}: {gen.id} makes the same output for every seed, so {flag} would change nothing", hint=hint)


def ignores_seed(repo: Repository, step: Step) -> bool:
    """Whether the generator of a gen or regen step makes the same output
    for every seed (its recipe's params), so the seed given changes nothing."""
    from lattice.media import extension

    assert step.recipe is not None
    return registry(repo).get(step.recipe.generator).unseeded(step.recipe.params, extension(step.name)) is not None


def with_dependents(repo: Repository, named: list[Step], cascade: bool = True) -> tuple[list[Step], list[Outcome]]:
    """The named steps plus, with `cascade`, an update step for everything
    downstream of them; all in dependency order, each depending on the
    steps that make its inputs (`regen a.png b.png` with b made from a
    renders a first, and b from a's new version). A dependent whose working
    file holds unrecorded edits is skipped, with what depends on it, never
    overwritten: the second list says so."""
    from lattice.lineage import Graph

    graph = Graph.from_index(repo.index)
    steps = {s.name: s for s in named}
    skipped: dict[str, Outcome] = {}
    if cascade:
        down: dict[str, None] = {}
        for s in named:
            for d in graph.descendants(s.name):
                if d not in steps:
                    down[d] = None
        for name in graph.order(down):
            held = next((p for p, _ in graph.parents.get(name, ()) if p in skipped), None)
            if held is not None:
                skipped[name] = Outcome(name, "update", "skipped", error=f"its input {held} was skipped")
                continue
            from lattice.versions import working_file_modified

            if working_file_modified(repo, name):
                skipped[name] = Outcome(name, "update", "skipped", error=why_kept(repo.working_path(name)))
                continue
            row = repo.index.get(name)
            steps[name] = Step(name, "update", generator=row.generator or "", kind=row.kind)
    ordered = graph.order(steps)
    for name in ordered:
        steps[name].deps = [p for p, _ in graph.parents.get(name, ()) if p in steps]
    return [steps[n] for n in ordered], list(skipped.values())


def ready_to_queue(repo: Repository, steps: list[Step], notify: Callable[[str], None] | None = None,
                   command: str | None = None) -> tuple[list[Step], list[Outcome]]:
    """`steps` (in dependency order) made ready to queue, in one pass: the
    inputs of each that gc evicted (a pinned old version's too) are made
    present first, as its job reads them (lattice.remake.ensure_inputs,
    waiting as `command`). An update whose recipe can no longer be made --
    an input that is no longer an asset (a `git checkout` or revert took
    its record away) -- fails, as does a remake of an output nothing can
    re-make (lattice.remake.refuse_unless_remakeable: evicted for good, a
    generator not installed, bytes lost), and the steps that wait on it are skipped:
    the rest of the plan still runs, as when a job fails. Returns the steps
    to queue and those outcomes."""
    from lattice.errors import GeneratorFailed
    from lattice.remake import ensure_inputs, refuse_unless_remakeable
    from lattice.render import refreshed_recipe

    planned = {s.name for s in steps}  # inputs these make are left to them
    out: dict[str, Outcome] = {}
    for step in steps:
        parent = next((d for d in step.deps if d in out), None)
        if parent is not None:
            out[step.name] = Outcome(step.name, step.action, "skipped", error=f"its input {parent} failed",
                                     exit_code=out[parent].exit_code)
            continue
        recipe = step.recipe
        if step.action == "update":
            try:
                recipe, _ = refreshed_recipe(repo, repo.record(step.name))
            except GeneratorFailed as e:
                out[step.name] = Outcome(step.name, step.action, "failed", error=e.message, exit_code=e.exit_code,
                                         hint=e.hint or "")
                continue
        elif step.action == "remake":
            current = repo.record(step.name).current
            if not step.refill:  # no working file holds its bytes: refused up front when nothing can re-make them
                try:
                    refuse_unless_remakeable(repo, f"{step.name}@v{current.number}", step.name, step.name, current)
                except LatticeError as e:
                    out[step.name] = Outcome(step.name, step.action, "failed", error=e.message, exit_code=e.exit_code,
                                             hint=e.hint or "")
                    continue
            recipe = current.recipe
        if step.action in ("generate", "update", "remake") and recipe is not None:
            ensure_inputs(repo, recipe, notify=notify, made_by=planned, command_name=command)
    return [s for s in steps if s.name not in out], list(out.values())


def require_unedited(repo: Repository, name: str) -> None:
    """A new version is never written over unrecorded edits to its working
    file (Conflict, exit 12), as restore and switch refuse to. A file that
    holds some recorded version is no edit (another job may have recorded a
    newer one and not written it yet; a git pull may have moved on)."""
    from lattice.errors import Conflict
    from lattice.versions import working_file_modified

    if working_file_modified(repo, name):
        from lattice.worktree import refuse_in_the_way

        refuse_in_the_way(name, repo.working_path(name))
        raise Conflict(
            f"{name} has changes in the working tree that are not recorded",
            hint=f"record them with {command('lattice add', name)}, or discard them with {command('lattice checkout', name)}, then run the command again",
        )


# -- running ----------------------------------------------------------------


def submit(repo: Repository, steps: list[Step], priority: str = "normal", *, waiting: bool = False,
           asked: list[int] | None = None, command: str | None = None) -> Submitted:
    """Queue `steps` as jobs, each after the jobs of the steps it reads.
    Nothing is queued when a step's generator is refused (an unapproved
    command).

    `waiting`: this process waits for the jobs (run_until_done) and asks
    for them only while it lives. Each job's id is appended to `asked` as
    it is queued: a command that waits queues them inside
    `abandoning(repo, asked, ...)`, so that a Ctrl-C or an error halfway
    gives up the jobs queued so far.

    Without it the jobs are left for `lattice worker` (`--detach`, a script
    that submits and exits) -- once all of them are queued: a Ctrl-C or an
    error halfway gives up those queued so far, recorded as cancelled by
    `command`, as a waiting command's would (and a kill leaves them to the
    next worker to cancel), so that no part of a plan is left to run
    unannounced."""
    q = queue_of(repo)
    if waiting:
        return _queue(repo, q, steps, priority, asked)
    with abandoning(repo, [], command) as ids:
        out = _queue(repo, q, steps, priority, ids)
        q.detach(ids)
    return out


def _queue(repo: Repository, q, steps: list[Step], priority: str, asked: list[int] | None) -> Submitted:
    """Queue `steps` for this process to wait for (see submit)."""
    from lattice.history import head_branch

    reg = None
    out = Submitted(steps)
    branch = head_branch(repo) or ""
    settings = []
    # Every step checked before any is queued: a refusal leaves no job
    # behind for a later worker to run.
    for step in steps:
        slot, timeout = "cpu", None
        if step.generator:
            reg = reg or registry(repo)
            try:
                gen = reg.get(step.generator)
            except InvalidInput:
                gen = None
            if gen is not None:
                # The generator's own timeout (a command's `timeout`) is the
                # job's: the worker enforces it and `queue show` shows it.
                slot, timeout = gen.slot, gen.timeout
                _require_trust(repo, gen)
        settings.append((slot, timeout))
    for step, (slot, timeout) in zip(steps, settings):
        step.branch = branch  # what it records goes on this branch or nowhere
        deps = [out.jobs[d] for d in step.deps if d in out.jobs]
        # Keyed per branch too: a job records only on its own branch.
        if step.recipe is not None:
            key = f"{branch}:{step.name}:{step.recipe.key}" if step.recipe.deterministic else None
        else:
            key = f"{branch}:{step.action}:{step.name}"
        job = q.submit(
            job_type(step),
            {"root": str(repo.root), "step": msgspec.to_builtins(step)},
            priority=priority,
            deps=deps,
            key=key,
            slot=slot,
            timeout=timeout,
            estimate_key=_estimate_key(step),
            waiting=True,
        )
        out.jobs[step.name] = job.id
        if asked is not None:
            asked.append(job.id)
    return out


def _require_trust(repo: Repository, gen) -> None:
    """Refuse before queueing anything: a command from an unapproved config never runs."""
    from lattice.generators.command import CommandGenerator
    from lattice.trust import require

    if isinstance(gen, CommandGenerator):
        require(repo.root, repo.config, gen.id)


def _estimate_key(step: Step) -> str:
    r = step.recipe
    if r is None:
        return f"{step.generator}:{step.action}"
    size = f"{r.params.get('width', '')}x{r.params.get('height', '')}:{r.params.get('duration', '')}"
    return f"{r.generator}:{size}"


def run_until_done(
    repo: Repository,
    job_ids: list[int],
    slots: int | None = None,
    on_poll: Callable[[list], None] | None = None,
    command: str | None = None,
) -> list:
    """Run an inline worker pool over `job_ids` (and nothing else) until every
    one is finished, calling `on_poll(jobs)` as they progress. Returns the
    finished jobs. On Ctrl-C (or an error) the command, named `command` in
    the queue's record (the command the user ran, `lattice checkout`; None:
    "process"), stops waiting: its jobs are cancelled, so that an
    interrupted render is not picked up later by a stranger -- except those
    another live command or a detached submission still asks for, which are
    left to it (lattice.queue's `abandon`)."""
    q = queue_of(repo)
    pool = thread = None
    error: list[BaseException] = []
    # An Event, not Thread.join: on Python 3.11 a join interrupted by Ctrl-C
    # can report a live thread as finished.
    done = threading.Event()
    try:
        # Setting up (imports, GPUs, the pool) is inside: a Ctrl-C there
        # leaves no job queued for a stranger either.
        from lattice.jobs import HANDLERS
        from lattice.worker import WorkerPool, detect_slots

        pool = WorkerPool(q, HANDLERS, detect_slots(cpu=slots), poll=0.05, lease=lease_of(repo), only=job_ids)

        def work() -> None:
            try:
                while not pool.aborted:
                    pool.only = job_ids + _unfinished_deps(q, job_ids)
                    pool.run(once=True)
                    if all(j.finished for j in _jobs(q, job_ids)):
                        return
                    time.sleep(0.05)  # our jobs wait on another worker's: look again soon
            except BaseException as e:  # surfaced in the caller's thread
                error.append(e)
            finally:
                done.set()

        started = threading.Thread(target=work, name="lattice-inline-pool", daemon=True)
        started.start()
        thread = started
        last = 0.0
        while not done.wait(0.02):
            if on_poll and time.monotonic() - last > 0.2:
                last = time.monotonic()
                on_poll(_jobs(q, job_ids))
    except BaseException as e:
        # Ctrl-C (SIGTERM too), or an error here (the display, the queue).
        # Cancelled first: the kill that follows then reads as the cancel it
        # is, not as a failure of the generator. A job left to another
        # command is handed back to the queue by the abort, for its pool.
        try:
            _abandon(q, job_ids, "interrupted" if isinstance(e, KeyboardInterrupt) else "error", command)
        finally:  # even when a second Ctrl-C cuts the cancel short
            if pool is not None:
                pool.abort()  # kills the jobs' processes now
            if thread is not None:
                done.wait(10)  # the slots clean up their scratch files
        _abandoned(e)
        raise
    if error:
        # The command fails: its jobs are not left for a later worker to
        # finish behind the user's back (as on Ctrl-C), where the queue can
        # still take the cancel.
        _abandon(q, job_ids, "error", command)
        raise _abandoned(error[0])
    return _jobs(q, job_ids)


@contextlib.contextmanager
def abandoning(repo: Repository, job_ids: list[int], command: str | None) -> Iterator[list[int]]:
    """On Ctrl-C or an error inside, this process gives up `job_ids` (read
    when it happens: a list the block fills as it queues them), as
    run_until_done does once it runs: between queueing the jobs and
    waiting for them, nothing may leave them queued for a stranger."""
    try:
        yield job_ids
    except BaseException as e:
        if job_ids and not getattr(e, "_lattice_abandoned", False):
            _abandon(lambda: queue_of(repo), list(job_ids), "interrupted" if isinstance(e, KeyboardInterrupt) else "error", command)
        _abandoned(e)
        raise


def run_job(repo: Repository, type: str, payload: dict, command: str,
            on_poll: Callable[[list], None] | None = None, **options):
    """Queue one job of `type` (`options` as JobQueue.submit takes them) and
    run it to the end with an inline worker, as `command`: a Ctrl-C or an
    error gives it up (abandoning). Returns the finished job; one that did
    not succeed is raised as the CLI reports a failed job."""
    from lattice.errors import job_failed

    q = queue_of(repo)
    with abandoning(repo, [], command) as asked:  # a Ctrl-C before it runs leaves no job behind
        asked.append(q.submit(type, payload, waiting=True, **options).id)
        [done] = run_until_done(repo, asked, on_poll=on_poll, command=command)
    if done.state != "succeeded":
        raise job_failed(done.exit_code, f"{type} job {done.id} {done.state}: {done.error or ''}".strip(),
                         hint=job_hint(done))
    return done


def job_hint(job, details: str = "has the details") -> str:
    """The hint for a job that did not succeed: its error's own (what to do
    about it, kept by the queue), then where to read the rest."""
    where = f"`lattice queue show {job.id}` {details}"
    return f"{job.hint}; {where}" if job.hint else where


def _abandoned(e: BaseException) -> BaseException:
    """`e`, marked as given up on its jobs already (one abandon, one warning)."""
    with contextlib.suppress(AttributeError):
        e._lattice_abandoned = True  # type: ignore[attr-defined]
    return e


def _abandon(q, job_ids: list[int], reason: str, command: str | None) -> None:
    """Give up `job_ids` in queue `q` (or a function that opens it), saying
    what is left to others; a queue that cannot take it is only warned of."""
    from lattice.errors import warn
    from lattice.queue import canceller

    try:
        q = q() if callable(q) else q
        _, kept = q.abandon(job_ids, by=canceller(reason, command))
    except LatticeError as e:  # the command's own failure (or Ctrl-C) is what it reports
        warn(f"job(s) {', '.join(map(str, job_ids))} could not be cancelled and may still run: {e.message}")
        return
    if kept:
        # Not cancelled: someone else still asks for them (git-like: no one's work is taken away).
        warn(f"job(s) {', '.join(map(str, kept))} left in the queue: another command waits for them, or they were queued with --detach")


def _jobs(q, ids: list[int]) -> list:
    return [q.get(i) for i in ids]


def _unfinished_deps(q, ids: list[int]) -> list[int]:
    """The unfinished jobs those of `ids` wait on, transitively, beyond
    `ids`: a job deduplicated into one that a killed command queued waits on
    that command's other jobs, which nobody else may ever run. The pool runs
    them too (one that a live worker holds stays with it)."""
    seen, todo, out = set(ids), list(ids), []
    while todo:
        try:
            job = q.get(todo.pop())
        except LatticeError:  # cleared meanwhile
            continue
        for dep in () if job.finished else job.deps:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
                out.append(dep)
    return out


def outcomes(steps: list[Step], jobs: dict[str, int], finished: list) -> list[Outcome]:
    from lattice.queue import cancel_note

    by_id = {j.id: j for j in finished}
    out = []
    for step in steps:
        job = by_id[jobs[step.name]]
        if job.state == "succeeded" and isinstance(job.result, dict):
            out.append(msgspec.convert({**job.result, "job": job.id}, Outcome))
        elif job.state == "cancelled":  # by `lattice queue cancel`, or a command that shared the job and stopped
            out.append(Outcome(step.name, step.action, "cancelled", error=f"job {job.id} was {cancel_note(job.cancelled_by)}", job=job.id))
        else:
            reason = job.error or job.state
            status = "skipped" if job.blocked_by else "failed"
            tail = f"\n{job.stderr_tail.strip()}" if job.stderr_tail and job.stderr_tail.strip() not in reason else ""
            out.append(Outcome(step.name, step.action, status, error=reason + tail, exit_code=job.exit_code,
                               hint=job.hint or "", job=job.id))
    return out


def _one_cause(codes: set[int]) -> int:
    """The exit code of failures: their cause's when they share one, else 1."""
    return next(iter(codes)) if len(codes) == 1 else 1


def failed_jobs_error(jobs: list) -> LatticeError:
    """The error for jobs that failed (what `lattice worker --once` ran), with
    the exit code a command whose steps failed so would have (exit_code)."""
    from lattice.errors import job_failed

    code = _one_cause({j.exit_code or 1 for j in jobs})
    if len(jobs) == 1:
        return job_failed(code, f"job {jobs[0].id} failed: {jobs[0].error}",
                          hint=job_hint(jobs[0], "has its whole error; fix the cause, "
                                                 f"then `lattice queue retry {jobs[0].id}` queues it again"))
    return job_failed(code, f"{len(jobs)} jobs failed: {', '.join(str(j.id) for j in jobs)}",
                      hint="`lattice queue show ID` has a job's whole error; fix the cause, "
                           "then `lattice queue retry ID` queues it again")


def exit_code(results: list[Outcome]) -> int:
    """How a command whose steps ran exits (README, "Exit codes"): 0 when
    every step succeeded. When steps failed or were cancelled (1): their cause's code when they
    share one (8 a generator failed, 6 the repository was locked, 13 a
    write was refused, …; a step skipped because its input failed shares
    its input's), else 1, with every failure listed. Steps skipped over
    unrecorded edits, with nothing failed: 1. A step superseded by another
    change, nothing else wrong: 12."""
    failed = {r.exit_code or 1 for r in results if r.status in ("failed", "cancelled")}  # a cancel: 1
    if not failed:  # skipped only because an input failed: that failure is the cause
        failed = {r.exit_code for r in results if r.status == "skipped" and r.exit_code}
    if failed:
        return _one_cause(failed)
    if any(r.status == "skipped" for r in results):
        return 1
    if any(r.status == "superseded" for r in results):
        return 12
    return 0
