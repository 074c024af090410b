"""Recipes: building and validating one from the command line, and its key.

The recipe key is BLAKE3 over a canonical encoding of everything that
decides the output: generator id and version, normalized params (defaults
filled in, keys sorted), seed, prompts, the input objects and the output
format (the same recipe rendered to .png and to .mp4 gives different files). Same key, same
output (for a deterministic generator); the cache maps keys to objects.
"""

from __future__ import annotations

import secrets
from typing import Any, Iterable

from lattice.errors import InvalidInput, UnknownAsset, closest, command
from lattice.paths import shown
from lattice.records import Recipe

KEY_DOMAIN = b"lattice-recipe-1\0"
SEED_RANGE = 2**31


def recipe_key(recipe: Recipe) -> str:
    import blake3
    import msgspec

    canonical = msgspec.json.encode(
        {
            "generator": recipe.generator,
            "generator_version": recipe.generator_version,
            "params": recipe.params,
            "seed": recipe.seed,
            "prompt": recipe.prompt,
            "negative_prompt": recipe.negative_prompt,
            "inputs": recipe.input_objects,
            "output": recipe.output,
        },
        order="sorted",
    )
    return blake3.blake3(KEY_DOMAIN + canonical).hexdigest()


def parse_sets(pairs: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--set {pair!r}: expected KEY=VALUE", hint="for example --set width=640")
        out[key.strip()] = value
    return out


def draw_seed() -> int:
    return secrets.randbelow(SEED_RANGE)


def check_seed(seed: int) -> None:
    """Seeds are what every generator can take: a signed 64-bit integer, not negative."""
    if not 0 <= seed < 2**63:
        raise InvalidInput(f"seed {seed} is out of range", hint="seeds are integers from 0 to 2^63-1")


def build(
    repo,
    generator,
    *,
    name: str,
    params: dict[str, Any],
    seed: int | None,
    prompt: str = "",
    negative_prompt: str = "",
    inputs: list[str] = (),
) -> Recipe:
    """A complete, validated recipe for asset `name` (refuses cycles and unknown inputs)."""
    from lattice.lineage import Graph
    from lattice.media import extension

    generator.check_output(extension(name))
    generator.check_inputs(len(inputs))
    normalized = generator.normalize(params)
    generator.check_params(normalized, extension(name))
    index = repo.index
    objects = []
    for inp in inputs:
        row = index.get(inp)
        if row is None:
            pending = _pending_job(repo, inp)
            if pending is not None:
                raise UnknownAsset(f"input {shown(inp)} is not an asset yet: job {pending} that makes it is still queued",
                                   hint=f"run it first (`lattice worker --once`, or wait for `lattice queue show {pending}`), then this command again")
            raise UnknownAsset(f"input {shown(inp)} is not an asset{closest(inp, index.names())}", hint="add it first with `lattice add`, or generate it with `lattice gen`")
        objects.append(row.effective)
    check_media(repo, generator, normalized, extension(name), inputs, objects)
    cycle = Graph.from_index(index).would_cycle(name, inputs)
    if cycle:
        if len(cycle) == 2:  # [name, name]: named as its own input
            hint = "an asset cannot be made from itself; name another asset with --input"
        else:
            hint = (f"{cycle[-2]} is made from {name}, so it cannot be an input of {name}; "
                    f"{command('lattice lineage', name, options='--down')} lists what is made from it")
        raise InvalidInput(f"{name} cannot take these inputs: it would create a cycle {' -> '.join(cycle)}", hint=hint)
    if seed is not None:
        check_seed(seed)
    recipe = Recipe(
        generator=generator.id,
        generator_version=str(generator.version),
        seed=seed if seed is not None else 0 if generator.unseeded(normalized, extension(name)) else draw_seed(),
        params=normalized,
        prompt=prompt,
        negative_prompt=negative_prompt,
        inputs=list(inputs),
        input_objects=objects,
        deterministic=bool(generator.deterministic),
        output=extension(name),
    )
    recipe.key = recipe_key(recipe)
    return recipe


def _pending_job(repo, name: str) -> int | None:
    """The id of a queued or running job that will record `name` (a
    detached `gen`), if any: only asked when an input is unknown."""
    if not (repo.dir / "queue.db").exists():
        return None
    from lattice.errors import LatticeError
    from lattice.queue import repo_queue

    try:
        jobs = repo_queue(repo.dir, repo.config, reading=repo.reading).list(states=["queued", "running"], limit=None)
    except LatticeError:
        return None
    for job in jobs:
        step = job.payload.get("step") if isinstance(job.payload, dict) else None
        if isinstance(step, dict) and step.get("name") == name:
            return job.id
    return None


def check_media(repo, generator, params: dict[str, Any], ext: str, inputs: list[str], objects: list[str]) -> None:
    """The generator's input checks against the facts recorded for each
    input, so a bad request exits 4 at `gen`; an input with no recorded
    facts leaves the check to the run."""
    if not inputs:
        return
    import msgspec

    from lattice.ffmpeg import MediaInfo

    infos = []
    for inp, oid in zip(inputs, objects):
        record = repo.manifest.read(inp)
        facts = record and (repo.index.media_get(oid) or next((v.media for v in record.versions if v.object == oid), None))
        if not facts:
            return
        try:
            infos.append((inp, msgspec.convert({**facts, "kind": record.kind, "size": 0}, MediaInfo)))
        except msgspec.ValidationError:
            return
    generator.check_media(params, ext, infos)


def summary(recipe: Recipe | None) -> str:
    if recipe is None:
        return "imported"
    parts = [recipe.generator, f"seed={recipe.seed}"]
    parts += [f"{k}={v}" for k, v in recipe.params.items()]
    if recipe.prompt:
        parts.append(f"prompt={recipe.prompt!r}")
    if recipe.inputs:
        parts.append("inputs=" + ",".join(recipe.inputs))
    return " ".join(parts)
