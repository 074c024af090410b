"""`lattice verify`: re-render deterministic assets in a scratch area and
compare the hash with the recorded output. Nothing is recorded or cached."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

from lattice.errors import GeneratorFailed
from lattice.repo import Repository


@dataclass
class Verdict:
    path: str
    version: int
    status: str  # reproducible, differs, not-deterministic, imported, failed
    recorded: str
    actual: str | None = None
    error: str = ""


def verify(repo: Repository, name: str) -> Verdict:
    from lattice.generators.base import RunContext
    from lattice.media import extension
    from lattice.render import input_files, registry
    from lattice.status import _hash

    record = repo.record(name)
    v = record.current
    recipe = v.recipe
    if recipe is None:
        return Verdict(name, v.number, "imported", v.object)
    if not recipe.deterministic:
        return Verdict(name, v.number, "not-deterministic", v.object)
    scratch: list = []
    out = repo.tmp / f"verify-{uuid.uuid4().hex}.{extension(name)}"
    try:
        gen = registry(repo).get(recipe.generator)
        inputs = input_files(repo, recipe, scratch)
        gen.run(
            RunContext(
                params=dict(recipe.params), seed=recipe.seed, prompt=recipe.prompt,
                negative_prompt=recipe.negative_prompt, inputs=inputs, output=out,
            )
        )
        if not out.exists() or out.stat().st_size == 0:
            raise GeneratorFailed(f"generator {gen.id} wrote no output")
        actual = _hash(out)
    except GeneratorFailed as e:
        return Verdict(name, v.number, "failed", v.object, error=e.message)
    finally:
        for p in (out, *scratch):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
    return Verdict(name, v.number, "reproducible" if actual == v.object else "differs", v.object, actual)
