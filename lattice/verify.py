"""`lattice verify`: re-render deterministic assets in a scratch area and
compare the hash with the recorded output. Nothing is recorded or cached."""

from __future__ import annotations

from dataclasses import dataclass

from lattice.errors import LatticeError
from lattice.repo import Repository


@dataclass
class Verdict:
    path: str
    version: int
    status: str  # reproducible, differs, not-deterministic, imported, failed
    recorded: str
    actual: str | None = None
    error: str = ""


def verify(repo: Repository, name: str, notify=None) -> Verdict:
    """Re-render `name`'s current version in a scratch area. Inputs evicted
    by gc are re-made first (through the queue, as `cat` does), so a
    verify after a gc checks the generator, not the store. Where .lattice
    may not be written, the scratch area is in the system's temp folder and
    an evicted input is read from its working file; one that only a re-make
    could bring back is refused (WriteRefused, exit 13), not a verdict."""
    from lattice.errors import WriteRefused
    from lattice.media import extension
    from lattice.remake import ensure_inputs
    from lattice.produce import generated_file
    from lattice.status import hash_file

    record = repo.record(name)
    v = record.current
    recipe = v.recipe
    if recipe is None:
        return Verdict(name, v.number, "imported", v.object)
    if not recipe.deterministic:
        return Verdict(name, v.number, "not-deterministic", v.object)
    try:
        ensure_inputs(repo, recipe, notify=notify, command_name="lattice verify")
        with generated_file(repo, recipe, extension(name)) as out:
            actual = hash_file(out)
    except WriteRefused:  # says nothing of the generator: this place cannot check it
        raise
    except LatticeError as e:  # a generator failure, an input that cannot be had
        return Verdict(name, v.number, "failed", v.object, error=e.message)
    return Verdict(name, v.number, "reproducible" if actual == v.object else "differs", v.object, actual)
