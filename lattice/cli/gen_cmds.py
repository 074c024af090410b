"""Commands that make outputs from recipes: gen, regen, render, verify,
lineage, generators, trust."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from lattice.cli.common import MAX_JOBS, OPTIONS, cwd, echo, emit_json, note_pinned, repo_from_ctx, say

JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")
PRIORITY = typer.Option("normal", "--priority", "-p", help="Queue priority: urgent, high, normal, low, batch.")
DETACH = typer.Option(False, "--detach", help="Only enqueue: print the job ids and leave the work to `lattice worker`.")
JOBS = typer.Option(None, "--jobs", "-j", min=1, max=MAX_JOBS, help="Parallel jobs (default: one per CPU core, one per GPU).")


def _names(repo, paths: list[str], stored: bool = True) -> list[str]:
    """Asset names for paths typed by the user; `stored`: of assets that
    exist (not a new asset's name: see paths.check_name)."""
    from lattice.paths import name_for

    return [name_for(repo.root, p, cwd(), stored) for p in paths]


def _check_priority(priority: str) -> None:
    """An unknown --priority exits 4 before anything else is looked at, work
    to do or not (render with nothing stale, --dry-run, --detach)."""
    from lattice.queue import PRIORITIES

    if priority not in PRIORITIES:
        from lattice.errors import InvalidInput, closest

        raise InvalidInput(f"unknown priority {priority!r}{closest(priority, PRIORITIES)}", hint=f"priorities are: {', '.join(PRIORITIES)}")


def _execute(repo, steps, skipped=(), *, command: str, priority="normal", detach=False, jobs=None, json=False) -> None:
    """Submit steps as jobs; unless detached, run them with a live display and
    print a summary. Exits as lattice.pipeline.exit_code says when a step
    failed, was skipped or was superseded."""
    from lattice.pipeline import abandoning, exit_code, outcomes, ready_to_queue, run_until_done, submit

    _check_priority(priority)
    steps, unready = ready_to_queue(repo, steps, notify=lambda m: echo(m, err=True), command=command)
    results = [*skipped, *unready]
    if detach:
        # Left to `lattice worker` once all are queued; a Ctrl-C halfway
        # gives up those queued so far (as `command`), as without --detach.
        submitted = submit(repo, steps, priority=priority, command=command) if steps else None
        ids = submitted.jobs if submitted else {}
        if json:
            emit_json([{"path": n, "job": j} for n, j in ids.items()])
        else:
            for n, j in ids.items():
                say(f"queued job {j}: {n}")
            for step in steps:
                row = repo.index.get(step.name) if step.action == "generate" else None
                if row is not None and row.pinned:
                    note_pinned(step.name, row.pinned)
        for r in results:  # not queued: skipped over edits, failed, or waiting on one that failed
            _say_outcome(r)
        code = exit_code(results)
        if code:
            raise typer.Exit(code)
        return
    if steps:
        # From the first job queued: a Ctrl-C before the jobs run (the
        # display, the pool starting) gives them up as one while they run does.
        with abandoning(repo, [], command) as asked:
            submitted = submit(repo, steps, priority=priority, waiting=True, asked=asked)
            with _Display(submitted, enabled=not json) as display:
                finished = run_until_done(repo, list(submitted.jobs.values()), slots=jobs, on_poll=display.update, command=command)
        results = outcomes(steps, submitted.jobs, finished) + results
    if json:
        emit_json(_outcomes_json(results))
    else:
        _summary(results)
        for r in results:  # a new version of a pinned asset: its dependents stay on the pin
            if r.pinned and r.status in ("rendered", "cached", "unchanged"):
                note_pinned(r.name, r.pinned, r.version)
    code = exit_code(results)
    if code:
        raise typer.Exit(code)


def _outcomes_json(results) -> list[dict]:
    """Outcomes as JSON: each names its asset as `path`, as every other
    command's JSON does (and as `name`, which scripts already read)."""
    import dataclasses

    return [{"path": r.name, **dataclasses.asdict(r)} for r in results]


def _say_outcome(r) -> None:
    """A step that failed, was cancelled, skipped or superseded, on stderr."""
    first, _, rest = (r.error or r.status).partition("\n")
    echo(f"{r.status}: {r.name}: {first}", err=True)
    for line in rest.strip().splitlines()[-8:]:
        echo(f"    {line}", err=True)
    if r.hint:
        echo(f"    hint: {r.hint}", err=True)


def _summary(results) -> None:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
        if r.status in ("failed", "cancelled", "skipped", "superseded"):
            _say_outcome(r)
        else:
            v = f" v{r.version}" if r.version else ""
            say(f"{r.status:<12} {r.name}{v} {(r.object or '')[:12]}")
    if len(results) > 1:
        say(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    # Only about jobs: a step refused before any was queued has its own hint.
    if any(r.status == "failed" and r.job is not None for r in results):
        say("hint: `lattice queue ls --state failed` lists the failed jobs, `lattice queue show ID` one's whole error; "
            "fix the cause, then run the command again", err=True)
    if counts.get("cancelled"):
        say("hint: a cancelled job records nothing (`lattice queue ls --state cancelled` lists them); "
            "run the command again to make it", err=True)


class _Display:
    """A rich live view of the submitted jobs on stderr: one bar per running
    job (generator, stage, percent) and an overall bar with cache hits."""

    def __init__(self, submitted, enabled: bool):
        self.submitted = submitted
        self.names = {j: n for n, j in submitted.jobs.items()}
        self.generators = {s.name: s.generator or s.action for s in submitted.steps}
        self.enabled = enabled and not OPTIONS.quiet and sys.stderr.isatty()
        self.progress = None
        self.tasks: dict[int, int] = {}

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

            from lattice.cli.common import console

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TextColumn("{task.fields[stage]}"),
                TimeRemainingColumn(), console=console(stderr=True), transient=True,
            )
            self.progress.__enter__()
            self.overall = self.progress.add_task("total", total=len(self.names), stage="")
        return self

    def update(self, jobs) -> None:
        if not self.progress:
            return
        done = cached = 0
        for job in jobs:
            name = self.names[job.id]
            if job.finished:
                done += 1
                cached += bool(isinstance(job.result, dict) and job.result.get("status") == "cached")
                if job.id in self.tasks:
                    self.progress.remove_task(self.tasks.pop(job.id))
            elif job.state == "running":
                if job.id not in self.tasks:
                    self.tasks[job.id] = self.progress.add_task(f"{name} [{self.generators.get(name, '')}]", total=1.0, stage="")
                self.progress.update(self.tasks[job.id], completed=job.progress or 0, stage=job.stage or "")
        self.progress.update(self.overall, completed=done, stage=f"{cached} cached" if cached else "")

    def __exit__(self, *exc):
        if self.progress:
            self.progress.__exit__(*exc)


def gen(
    path: str = typer.Argument(..., help="Asset to create (its extension picks the format)."),
    model: str = typer.Option(..., "--model", "-m", help="Generator id (`lattice generators` lists them)."),
    prompt: str = typer.Option("", "--prompt", help="Prompt text, recorded in the recipe."),
    negative_prompt: str = typer.Option("", "--negative-prompt", help="Negative prompt, recorded in the recipe."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed; drawn at random and recorded when omitted (0 for a generator that does not use one)."),
    set_: List[str] = typer.Option([], "--set", help="Generator parameter KEY=VALUE (repeatable)."),
    input_: List[str] = typer.Option([], "--input", "-i", help="Input asset (repeatable, in order)."),
    priority: str = PRIORITY,
    detach: bool = DETACH,
    json: bool = JSON,
) -> None:
    """Record a generated asset (or a new version of one) and render it.

    Example: lattice gen sky.png --model ffmpeg.mandelbrot --set width=640 --seed 7
    """
    from lattice.pipeline import gen_step
    from lattice.recipe import parse_sets

    _check_priority(priority)
    repo = repo_from_ctx()
    name = _names(repo, [path], stored=False)[0]
    inputs = _names(repo, input_)
    step = gen_step(repo, name, model, prompt=prompt, negative_prompt=negative_prompt, seed=seed, params=parse_sets(set_), inputs=inputs)
    if seed is not None:
        _note_ignored_seed(repo, [step])
    _execute(repo, [step], command="lattice gen", priority=priority, detach=detach, json=json)


def _note_ignored_seed(repo, steps) -> None:
    """A seed given where a generator makes the same output for every seed
    is recorded, and said to change nothing (`regen` refuses it alone)."""
    from lattice.pipeline import ignores_seed

    for step in steps:
        if ignores_seed(repo, step):
            say(f"note: {step.name}: {step.recipe.generator} makes the same output for every seed; "
                f"seed {step.recipe.seed} is recorded but changes nothing", err=True)


def regen(
    paths: List[str] = typer.Argument(..., help="Assets to regenerate."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Use this seed (refused alone where the generator makes the same output for every seed)."),
    new_seed: bool = typer.Option(False, "--new-seed", help="Draw a new random seed."),
    set_: List[str] = typer.Option([], "--set", help="Change a parameter KEY=VALUE (repeatable)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Switch to another generator."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Change the prompt."),
    no_cascade: bool = typer.Option(False, "--no-cascade", help="Do not re-render dependents; they are only marked stale."),
    priority: str = PRIORITY,
    detach: bool = DETACH,
    jobs: Optional[int] = JOBS,
    json: bool = JSON,
) -> None:
    """Make a new version from a changed recipe, then re-render everything downstream.

    A new seed alone records change type `regenerated`; changed parameters or
    model record `modified`. A new seed alone for a generator that makes the
    same output for every seed (`lattice generators show ID` says so) is
    refused: it would record a version with the same bytes.
    """
    from lattice.errors import UsageError
    from lattice.pipeline import regen_step, with_dependents
    from lattice.recipe import check_seed, parse_sets

    if seed is not None and new_seed:
        raise UsageError("--seed and --new-seed exclude each other", hint="pass --seed N to use seed N, or --new-seed to draw one")
    _check_priority(priority)
    if seed is not None:
        check_seed(seed)  # as gen does: regen_step would record any integer
    repo = repo_from_ctx()
    params = parse_sets(set_)
    named = [regen_step(repo, n, seed=seed, new_seed=new_seed, params=params, model=model, prompt=prompt) for n in dict.fromkeys(_names(repo, paths))]
    if seed is not None or new_seed:
        _note_ignored_seed(repo, named)
    steps, skipped = with_dependents(repo, named, cascade=not no_cascade)
    _execute(repo, steps, skipped, command="lattice regen", priority=priority, detach=detach, jobs=jobs, json=json)


def render(
    paths: List[str] = typer.Argument(None, help="Assets (or folders of assets) to bring up to date (default: all), with what they depend on."),
    check: bool = typer.Option(False, "--check", help="Render nothing; exit 1 if any output is stale, missing, outdated or edited by hand (for CI; `lattice hooks check` also covers unrecorded edits of imports). An output gc evicted while its working file holds it is not out of date."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan in order and stop."),
    jobs: Optional[int] = JOBS,
    priority: str = PRIORITY,
    detach: bool = DETACH,
    json: bool = JSON,
) -> None:
    """Bring stale and missing outputs up to date, in dependency order, in parallel where possible."""
    from lattice.cli.common import assets_named
    from lattice.render import plan

    _check_priority(priority)
    repo = repo_from_ctx(reading=check or dry_run)
    repo.config  # a damaged config.toml is reported (exit 5), never taken for "up to date"
    steps, skipped = plan(repo, assets_named(repo, paths) if paths else None)
    if check:  # taking a working file back into the store leaves the working tree as it is
        steps = [s for s in steps if not s.refill]
    if check or dry_run:
        if json:
            emit_json({"steps": [{"path": s.name, "action": s.action, "after": s.deps} for s in steps], "skipped": _outcomes_json(skipped)})
        else:
            for i, s in enumerate(steps, 1):
                after = f" (after {', '.join(s.deps)})" if s.deps else ""
                echo(f"{i:>4}. {s.action:<11} {s.name}{after}")
            for o in skipped:
                echo(f"skipped: {o.name}: {o.error}", err=True)
            if not steps and not skipped:
                say("up to date")
        if check and (steps or skipped):
            raise typer.Exit(1)
        return
    if not steps and not skipped:
        if json:
            emit_json([])
        else:
            say("up to date")
        return
    _execute(repo, steps, skipped, command="lattice render", priority=priority, detach=detach, jobs=jobs, json=json)


def verify(
    paths: List[str] = typer.Argument(None, help="Assets (or folders of assets) to verify."),
    all_: bool = typer.Option(False, "--all", help="Verify every generated asset."),
    json: bool = JSON,
) -> None:
    """Re-render deterministic assets in a scratch area and compare hashes.
    Exits 1 when an output differs or a render fails."""
    from lattice.cli.common import assets_named
    from lattice.errors import UsageError, WriteRefused
    from lattice.verify import verify as do_verify

    repo = repo_from_ctx(reading=True)  # records nothing: works where .lattice may not be written
    repo.config  # a damaged config.toml is reported (exit 5), not as every asset failing
    if not paths and not all_:
        raise UsageError("name assets to verify, or pass --all", hint="`lattice verify PATH...` checks those assets, `lattice verify --all` every generated one")
    if paths and all_:
        raise UsageError("name assets to verify, or pass --all, not both", hint="drop the names to verify every generated asset, or drop --all")
    names = [r.path for r in repo.index.rows() if r.generator] if all_ else assets_named(repo, paths)
    verdicts, refused = [], []
    for n in names:
        try:
            verdicts.append(do_verify(repo, n, notify=lambda m: echo(m, err=True)))
        except WriteRefused as e:  # this place cannot check it (read-only): the others are still checked
            if len(names) == 1:
                raise
            refused.append((n, e))
    if json:
        emit_json(verdicts)
    else:
        for v in verdicts:
            extra = f" (recorded {v.recorded[:12]}, got {v.actual[:12]})" if v.status == "differs" else f": {v.error}" if v.error else ""
            echo(f"{v.status:<18} {v.path} v{v.version}{extra}")
    if refused:
        (name, e), more = refused[0], f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        raise WriteRefused(f"{name} could not be verified here{more}: {e.message}", hint=e.hint)
    if any(v.status in ("differs", "failed") for v in verdicts):
        raise typer.Exit(1)


def lineage(
    path: str = typer.Argument(..., help="Asset."),
    up: bool = typer.Option(False, "--up", help="Ancestors: what it is made from (the default)."),
    down: bool = typer.Option(False, "--down", help="Dependents: what is made from it."),
    json: bool = JSON,
) -> None:
    """Print an asset's ancestors or dependents as a tree."""
    from lattice.lineage import Graph

    from lattice.errors import UsageError

    if up and down:
        raise UsageError("--up and --down exclude each other", hint="ask for one direction at a time")
    repo = repo_from_ctx(reading=True)
    name = _names(repo, [path])[0]
    repo.record(name)
    graph = Graph.from_index(repo.index)
    if down:
        step = lambda n: sorted(set(graph.children.get(n, ())))  # noqa: E731
    else:
        step = lambda n: [p for p, _ in graph.parents.get(n, ())]  # noqa: E731

    def tree(n: str, seen: frozenset) -> dict:
        return {"path": n, "children": [tree(c, seen | {n}) for c in step(n) if c not in seen]}

    t = tree(name, frozenset())
    if json:
        emit_json(t)
        return

    def show(node: dict, prefix: str = "", last: bool = True, top: bool = True) -> None:
        echo(node["path"] if top else f"{prefix}{'└── ' if last else '├── '}{node['path']}")
        kids = node["children"]
        for i, c in enumerate(kids):
            show(c, prefix if top else prefix + ("    " if last else "│   "), i == len(kids) - 1, False)

    show(t)


generators_app = typer.Typer(name="generators", help="List generators and their parameters.", invoke_without_command=True, add_completion=False, rich_markup_mode=None)


@generators_app.callback(invoke_without_command=True)
def generators_list(ctx: typer.Context, json: bool = JSON) -> None:
    """List the generators: built-in, plug-ins and the repository's commands."""
    if ctx.invoked_subcommand:
        return
    reg = _registry()
    gens = reg.all()
    if json:
        emit_json([_gen_json(g) for g in gens])
    else:
        for g in gens:
            det = "" if g.deterministic else " (non-deterministic)"
            echo(f"{g.id:<22} v{g.version:<4} {','.join(g.extensions):<28} {g.description}{det}")
    for w in reg.warnings:
        echo(f"warning: {w}", err=True)


@generators_app.command("show")
def generators_show(generator_id: str = typer.Argument(..., metavar="ID"), json: bool = JSON) -> None:
    """Show one generator's parameters with defaults, ranges and help."""
    g = _registry().get(generator_id)
    if json:
        emit_json(_gen_json(g))
        return
    echo(f"{g.id} v{g.version}: {g.description}")
    echo(f"makes: {', '.join('.' + e for e in g.extensions)} ({', '.join(g.kinds)}); deterministic: {'yes' if g.deterministic else 'no'}; "
         f"seed: {'used' if g.uses_seed else 'not used'}; slot: {g.slot}")
    if g.max_inputs:
        echo(f"inputs: {g.min_inputs} to {g.max_inputs}")
    for p in g.params:
        rng = f" [{p.min}..{p.max}]" if p.min is not None or p.max is not None else ""
        ch = f" one of {', '.join(p.choices)}" if p.choices else ""
        echo(f"  {p.name:<16} {p.type:<6} default {p.default!r}{rng}{ch}  {p.help}")


def _registry():
    from lattice import generators
    from lattice.errors import NotARepository

    try:
        repo = repo_from_ctx(reading=True)
        return generators.load(repo.config, repo_root=repo.root)
    except NotARepository:
        return generators.load(None)


def _gen_json(g) -> dict:
    return {
        "id": g.id, "version": str(g.version), "kinds": list(g.kinds), "extensions": list(g.extensions),
        "deterministic": bool(g.deterministic), "uses_seed": bool(g.uses_seed), "slot": g.slot, "inputs": [g.min_inputs, g.max_inputs],
        "description": g.description,
        "params": [
            {"name": p.name, "type": p.type, "default": p.default, "help": p.help, "min": p.min, "max": p.max, "choices": list(p.choices)}
            for p in g.params
        ],
    }


def trust(
    revoke: bool = typer.Option(False, "--revoke", help="Withdraw this project's approval: its commands refuse to run until you approve them again."),
    json: bool = JSON,
) -> None:
    """Approve the command generators declared in this repository's config.

    A cloned project never runs its commands until you run this; changing
    the commands asks for approval again. Approvals are kept per user, outside
    the project (so a clone cannot bring its own).

    Example: lattice trust --revoke"""
    from lattice.trust import trust as do_trust, untrust

    from lattice.errors import InvalidInput

    repo = repo_from_ctx()
    if revoke:
        withdrawn = untrust(repo.root)
        if json:
            emit_json({"revoked": withdrawn})
        else:
            say("approval withdrawn: this project's commands refuse to run until `lattice trust`" if withdrawn
                else "nothing to withdraw: this project's commands were not approved")
        return
    table = repo.config.get("generators") or {}
    if not isinstance(table, dict):
        raise InvalidInput(f"config.toml: generators must be a table of [generators.NAME], not {type(table).__name__}",
                           hint="see the README's section on command generators")
    digest = do_trust(repo.root, repo.config)  # the one recorded: files may change while it runs
    names = sorted(table)
    if json:
        emit_json({"trusted": names, "digest": digest})
    else:
        say(f"trusted {len(names)} command generator(s): {', '.join(names) or 'none'}")


def register(app: typer.Typer) -> None:
    for fn in (gen, regen, render, verify, lineage, trust):
        app.command()(fn)
    app.add_typer(generators_app)
