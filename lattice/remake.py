"""Bringing back outputs that gc evicted: `ensure_present` re-makes a missing
output (and, first, any of its inputs that are missing too) through the
queue, as "gc" jobs with op "restore", for any version, not just the
current one. A re-made output whose hash differs from the recorded one is
refused, never silently accepted."""

from __future__ import annotations

import os
from typing import BinaryIO, Callable, Container

from lattice.storage_db import touch
from lattice.errors import GeneratorFailed, InvalidInput, RepositoryCorrupt, command, job_failed
from lattice.paths import here
from lattice.repo import Repository

# -- bringing evicted outputs back -------------------------------------------------


class Evicted(InvalidInput):
    """An output that a command needs was evicted by gc."""


def ensure_present(repo: Repository, name: str, number: int | None = None, *, regen: bool = True,
                   notify: Callable[[str], None] | None = None, command_name: str | None = None) -> list[str]:
    """Make the output of `name` at version `number` (default: current)
    present, re-making it and any evicted inputs through the queue first,
    waiting for them as `command_name` (the command the user ran: `lattice
    checkout`), which a Ctrl-C records as the canceller of the jobs it gives
    up. Returns the "name@vN" re-made. With regen=False refuses instead,
    naming the command that would re-make it."""
    record = repo.record(name)
    v = record.version(number)
    if repo.objects.has(v.object):
        return []
    spec = f"{name}@v{v.number}"
    if not repo.read_only and adopt_working_file(repo, name, v.object):  # a clone, or gc evicted only the store's copy
        return []
    if v.recipe is None:  # read-only as well: only the original bytes bring it back
        raise RepositoryCorrupt(f"{spec}: its imported content {v.object[:12]} is missing from the store",
                                hint=f"copy the original file to {here(name)} and run the command again (lattice takes it back when its bytes match)")
    if repo.read_only:
        from lattice.errors import WriteRefused

        raise WriteRefused(f"{spec}: its output {v.object[:12]} is not in the store nor in the working file, and {repo.dir} is read-only: "
                           "re-making it needs a writable .lattice",
                           hint=f"run {command('lattice render', name)} where .lattice may be written")
    chain = _restore_chain(repo, name, v.number)  # before --no-regen: an output nothing can re-make says so
    if not regen:
        how = (command("lattice render", name) if v.number == len(record.versions)
               else f"the same command without --no-regen (e.g. {command('lattice cat', spec, after=' > FILE')})")
        raise Evicted(f"{spec}: its output {v.object[:12]} was evicted by gc and --no-regen forbids re-making it",
                      hint=f"re-make it with {how}")
    if notify:
        notify("re-making evicted " + ", ".join(f"{n}@v{k}" for n, k, _ in chain) + " through the queue")
    from lattice.pipeline import abandoning, job_hint, queue_of, run_until_done

    q = queue_of(repo)
    ids: dict[str, int] = {}
    # A Ctrl-C halfway through queueing the chain leaves none of it behind.
    with abandoning(repo, [], command_name) as order:
        for n, k, deps in chain:
            job = q.submit("gc", {"op": "restore", "root": str(repo.root), "name": n, "version": k},
                           key=f"restore:{n}@v{k}", deps=[ids[d] for d in deps], priority="high", waiting=True)
            ids[f"{n}@v{k}"] = job.id
            order.append(job.id)
        finished = run_until_done(repo, order, command=command_name)
    for job in finished:
        if job.state != "succeeded":
            raise job_failed(job.exit_code, f"re-making {spec} failed: {job.error or job.state}", hint=job_hint(job))
    return list(ids)


def _restore_chain(repo: Repository, name: str, number: int) -> list[tuple[str, int, list[str]]]:
    """(name, version, the specs it waits for), inputs before their users.
    An output in it that nothing can re-make is refused up front (see
    refuse_unless_remakeable), before any job is queued."""
    out: list[tuple[str, int, list[str]]] = []
    seen: set[str] = set()
    wanted = f"{name}@v{number}"

    def visit(n: str, k: int) -> str:
        spec = f"{n}@v{k}"
        if spec in seen:
            return spec
        seen.add(spec)
        v = repo.record(n).version(k)
        refuse_unless_remakeable(repo, wanted, name, n, v)
        deps = []
        for inp, oid in zip(v.recipe.inputs, v.recipe.input_objects):
            if repo.objects.has(oid):
                continue
            maker = _version_with_object(repo, inp, oid)
            if maker is None:
                raise RepositoryCorrupt(f"{spec}: input {inp} ({oid[:12]}) is gone and no version of it records that output",
                                        hint="`lattice fsck` reports lost objects")
            deps.append(visit(inp, maker))
        out.append((n, k, deps))
        return spec

    visit(name, number)
    return out


def refuse_unless_remakeable(repo: Repository, wanted: str, wanted_name: str, name: str, v, *,
                             for_good: set[str] | None = None) -> None:
    """Refuse version `v` of `name` (whose output the store lacks, needed for
    `wanted`: itself or what is made from it) when nothing can re-make it,
    with the exit code of why: gc evicted it at the user's request
    (`--include-nondeterministic`) or the generator installed here cannot
    make it (4), else its bytes are lost (5). No generator ran, so never
    GeneratorFailed. `for_good`: lattice.gc.evicted_for_good, where the
    caller asks about many versions (read here when not given)."""
    from lattice.fsck import NONDETERMINISTIC_GC, generator_gap

    spec = f"{name}@v{v.number}"
    error: type[InvalidInput] | type[RepositoryCorrupt] = RepositoryCorrupt
    regen = f"{command('lattice regen', wanted_name)} records a new output"
    if v.recipe is None:
        why, hint = "it was imported, so nothing can re-make it", f"copy the original file to {here(name)} and run the command again"
    elif not v.recipe.deterministic:
        if for_good is None:
            from lattice.gc import evicted_for_good

            for_good = evicted_for_good(repo)
        if v.object in for_good:
            error, why = Evicted, f"it was evicted by {NONDETERMINISTIC_GC} at your request, and nothing can re-make it"
            hint = f"those bytes are gone for good; {regen}"
        else:
            why = f"its generator {v.recipe.generator} is not deterministic, so nothing can re-make it"
            hint = f"`lattice fsck` reports lost objects; {regen}"
    else:
        gap = generator_gap(repo, v.recipe)
        if gap is None:
            return
        error, why = InvalidInput, f"it cannot be re-made here: {gap}"
        hint = f"install {v.recipe.generator} version {v.recipe.generator_version}, or {regen} with a generator installed here"
    if spec == wanted:
        raise error(f"{spec}: its output {v.object[:12]} is gone: {why}", hint=hint)
    raise error(f"{wanted}: its output is gone, and so is that of its input {spec} ({v.object[:12]}): {why}", hint=hint)


def _version_with_object(repo: Repository, name: str, oid: str) -> int | None:
    """The newest version of `name` recording `oid`, one a deterministic
    recipe makes first; None when none records it."""
    record = repo.manifest.read(name)
    if record is None:
        return None
    recording = [v for v in reversed(record.versions) if v.object == oid]
    remakeable = [v for v in recording if v.recipe is not None and v.recipe.deterministic]
    found = remakeable or recording
    return found[0].number if found else None


def restore_object(repo: Repository, name: str, number: int, hooks=None) -> dict:
    """Re-make the output of one recorded version (the "restore" gc job).
    A re-made output that hashes differently is refused and not cached."""
    from lattice.media import extension

    v = repo.record(name).version(number)
    if repo.objects.has(v.object):
        return {"name": name, "version": number, "object": v.object, "status": "present"}
    from lattice.produce import produce

    oid, cached = produce(repo, v.recipe, extension(name), hooks)
    if oid != v.object:
        with repo.index as index:
            index.cache_drop(v.recipe.key)
        raise output_differs(f"{name}@v{number}", name, oid, v.object)
    touch(repo, oid)
    return {"name": name, "version": number, "object": oid, "status": "cached" if cached else "rendered"}


def adopt_working_file(repo: Repository, name: str, oid: str) -> bool:
    """Store the working file of an asset whose object the store lacks (a
    fresh clone: git brought the file, not .lattice/objects; an output gc
    evicted while its file stayed), when its bytes are that object's. True
    when the object is now present."""
    from lattice.errors import ContentChanged
    from lattice.status import hash_file

    path = repo.working_path(name)
    if hash_file(path) != oid:
        return False
    try:
        return repo.objects.put_file(path).oid == oid
    except (ContentChanged, FileNotFoundError):  # changed meanwhile: not the bytes recorded
        return False


def copy_working_file(repo: Repository, name: str, oid: str, out: BinaryIO) -> int | None:
    """Write the working file of `name` to `out` when its bytes are object
    `oid`'s; None (nothing written) when they are not, or there is no file.
    Where .lattice may not be written, it stands in for an object the store
    lacks (adopt_working_file stores it back where it may be). The bytes are
    hashed before and again while written: a file changed in between is
    ContentChanged, after writing (as ObjectStore.copy_to(verify=True))."""
    import stat

    import blake3

    from lattice.errors import ContentChanged
    from lattice.objects import CHUNK

    try:  # O_NONBLOCK: a FIFO put there must not hang the command
        fd = os.open(repo.working_path(name), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        before = blake3.blake3()
        while chunk := f.read(CHUNK):
            before.update(chunk)
        if before.hexdigest() != oid:
            return None
        f.seek(0)
        h, total = blake3.blake3(), 0
        while chunk := f.read(CHUNK):
            h.update(chunk)
            out.write(chunk)
            total += len(chunk)
    if h.hexdigest() != oid:
        raise ContentChanged(f"{name}: the working file changed while it was being read")
    return total


def ensure_inputs(repo: Repository, recipe, notify: Callable[[str], None] | None = None, made_by: Container[str] = (),
                  command_name: str | None = None) -> list[str]:
    """Make the input objects a recipe names present, re-making those gc
    evicted (ensure_present, as `command_name`) before a job that reads them is queued: the
    job itself could only fail. Inputs in `made_by` (made by earlier steps
    of the same plan) are left to those steps. Returns the "name@vN" re-made.
    Read-only: nothing can be stored, so nothing is done here; the render
    reads an evicted input from its working file, or refuses
    (lattice.produce.input_files)."""
    if repo.read_only:
        return []
    made = []
    for parent, oid in zip(recipe.inputs, recipe.input_objects):
        if parent in made_by or repo.objects.has(oid):
            continue
        numbers = [v.number for v in repo.record(parent).versions if v.object == oid]
        if numbers:  # else the job names the missing input
            made += ensure_present(repo, parent, numbers[-1], notify=notify, command_name=command_name)
    return made


def output_differs(label: str, name: str, oid: str, recorded: str) -> GeneratorFailed:
    """The error for a re-made output that hashes differently from the
    recorded one. Not retried: the generator ran and would differ again."""
    e = GeneratorFailed(
        f"{label}: re-made output {oid[:12]} differs from the recorded {recorded[:12]}",
        hint=f"the generator is not reproducible here; {command('lattice regen', name)} records the new output as a version",
    )
    e.retryable = False
    return e
