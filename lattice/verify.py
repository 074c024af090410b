"""`lattice verify`: re-render deterministic assets in a scratch area and
compare the hash with the recorded output. Nothing is recorded or cached."""

from __future__ import annotations

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
    from lattice.media import extension
    from lattice.render import generated_file
    from lattice.status import hash_file

    record = repo.record(name)
    v = record.current
    recipe = v.recipe
    if recipe is None:
        return Verdict(name, v.number, "imported", v.object)
    if not recipe.deterministic:
        return Verdict(name, v.number, "not-deterministic", v.object)
    try:
        with generated_file(repo, recipe, extension(name)) as out:
            actual = hash_file(out)
    except GeneratorFailed as e:
        return Verdict(name, v.number, "failed", v.object, error=e.message)
    return Verdict(name, v.number, "reproducible" if actual == v.object else "differs", v.object, actual)
