"""The generator registry: built-ins, Python plug-ins, and the repository's
command generators, by id.

Plug-ins come from the `lattice.generators` entry-point group; each entry
loads a Generator subclass or instance. A plug-in that fails to import or is
malformed, and a malformed command table, is skipped with a warning: one bad
plug-in must not stop every command. On a name clash the first source wins:
built-ins, then plug-ins, then commands.

Loading runs no subprocess and imports no plug-in code beyond the entry
points themselves; the modules here are imported only by `load`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from lattice.errors import InvalidInput
from lattice.generators.base import Generator
from lattice.paths import shown

if TYPE_CHECKING:
    from lattice.repo import Repository

ENTRY_POINT_GROUP = "lattice.generators"


class Registry:
    """The generators by id. Built-ins win every name clash, so asking for
    one needs nothing else loaded: plug-ins and command generators are
    loaded the first time something beyond the built-ins is asked for
    (scanning entry points costs about 15 ms, a tenth of a cache-hit gen)."""

    def __init__(self, builtin: dict[str, Generator], load_rest: Callable[[dict[str, Generator]], tuple[list[str], dict[str, str]]]):
        self._builtin = builtin
        self._load_rest = load_rest
        self._loaded: tuple[dict[str, Generator], list[str], dict[str, str]] | None = None

    def _everything(self) -> tuple[dict[str, Generator], list[str], dict[str, str]]:
        if self._loaded is None:
            gens = dict(self._builtin)
            warnings, skipped = self._load_rest(gens)
            self._loaded = gens, warnings, skipped  # skipped: id -> why, for a better error
        return self._loaded

    @property
    def _by_id(self) -> dict[str, Generator]:
        return self._everything()[0]

    @property
    def _skipped(self) -> dict[str, str]:
        return self._everything()[2]

    @property
    def warnings(self) -> list[str]:
        return self._everything()[1]

    def get(self, gen_id: str) -> Generator:
        gen = self._builtin.get(gen_id)
        if gen is not None:
            return gen
        try:
            return self._by_id[gen_id]
        except KeyError:
            pass
        if gen_id in self._skipped:
            raise InvalidInput(f"generator {shown(gen_id)} could not be loaded: {self._skipped[gen_id]}",
                               hint="`lattice generators` lists what loaded, with warnings")
        raise InvalidInput(
            f"unknown generator {shown(gen_id)}" + _closest(gen_id, self._by_id),
            hint="`lattice generators` lists them",
        )

    def all(self) -> list[Generator]:
        return [self._by_id[k] for k in sorted(self._by_id)]

    def __contains__(self, gen_id: str) -> bool:
        return gen_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)


def _closest(name: str, names: Iterable[str]) -> str:
    from lattice.errors import closest

    return closest(name, names)


def builtins() -> list[Generator]:
    from lattice.export import ExportGenerator
    from lattice.generators.derive import DERIVATIONS
    from lattice.generators.sources import SOURCES

    return [cls() for cls in (*SOURCES, *DERIVATIONS, ExportGenerator)]


def entry_points() -> list[Any]:
    """The installed plug-ins' entry points (tests replace this)."""
    from importlib.metadata import entry_points as eps

    return list(eps(group=ENTRY_POINT_GROUP))


def load(config: dict | None = None, *, repo_root: Path | None = None) -> Registry:
    """Every generator available here (the plug-ins and command generators
    when first needed). `repo_root` lets command generators check the
    user's approval when they run; without it they refuse to run."""
    return Registry({g.id: g for g in builtins()}, lambda gens: _load_rest(gens, config, repo_root))


def registry(repo: Repository) -> Registry:
    """The generators for this repository, loaded once per Repository object
    (scanning entry points costs tens of milliseconds)."""
    reg = repo.__dict__.get("_generators")
    if reg is None:
        reg = repo.__dict__["_generators"] = load(repo.config, repo_root=repo.root)
    return reg


def _load_rest(gens: dict[str, Generator], config: dict | None, repo_root: Path | None) -> tuple[list[str], dict[str, str]]:
    """Add the plug-ins, then the command generators, to `gens` (the
    built-ins); returns the warnings and what was skipped (id -> why)."""
    warnings: list[str] = []
    skipped: dict[str, str] = {}

    for ep in entry_points():
        name = getattr(ep, "name", "?")
        try:
            gen = _instantiate(ep.load())
            _check_shape(gen)
        except (Exception, SystemExit) as e:  # a plug-in's import can raise anything (argparse at import: SystemExit)
            why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            warnings.append(f"plug-in {name!r} ({getattr(ep, 'value', '?')}) skipped: {why}")
            skipped[name] = why
            continue
        if gen.id in gens:
            warnings.append(f"plug-in {name!r} skipped: generator id {gen.id!r} is already taken")
            continue
        gens[gen.id] = gen

    table = (config or {}).get("generators") or {}
    if not isinstance(table, dict):
        warnings.append("config [generators] is not a table; no command generators loaded")
        table = {}
    if table:
        from lattice.generators.command import RESERVED_PREFIX, CommandGenerator

        for name, spec in table.items():
            if name in gens or name.startswith(RESERVED_PREFIX):
                why = f"the name {shown(name)} is taken by a built-in or plug-in (or reserved); rename it"
                warnings.append(f"command generator {shown(name)} skipped: {why}")
                skipped.setdefault(name, why)  # asked for by that name, it says why it is not there
                continue
            try:
                gens[name] = CommandGenerator(name, spec, config=config, repo_root=repo_root)
            except InvalidInput as e:
                warnings.append(e.message)
                skipped[name] = e.message
    return warnings, skipped


def _instantiate(obj: Any) -> Generator:
    if isinstance(obj, type) and issubclass(obj, Generator):
        return obj()
    if isinstance(obj, Generator):
        return obj
    raise TypeError(f"{obj!r} is not a lattice Generator subclass or instance")


def _check_shape(gen: Generator) -> None:
    """Refuse a plug-in that would break callers later, with a reason now."""
    from lattice.generators.command import EXTENSION, NAME

    if not isinstance(gen.id, str) or not gen.id:
        raise ValueError("it has no id")
    if not NAME.match(gen.id):
        raise ValueError(f"id {gen.id!r}: it must start with a letter and use letters, digits, '_', '-' or '.' (64 at most)")
    if (isinstance(gen.extensions, str) or not gen.extensions
            or not all(isinstance(e, str) and EXTENSION.match(e) for e in gen.extensions)):
        raise ValueError(f"{gen.id}: extensions must be a non-empty tuple of lower-case letters and digits, without the dot")
    if type(gen).run is Generator.run:
        raise ValueError(f"{gen.id}: it does not implement run()")
    if not 0 <= gen.min_inputs <= gen.max_inputs:
        raise ValueError(f"{gen.id}: min_inputs/max_inputs out of order")
    if gen.slot not in ("cpu", "gpu"):
        raise ValueError(f"{gen.id}: slot must be 'cpu' or 'gpu'")
