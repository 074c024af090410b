"""The one small interface every generator implements.

A generator turns a recipe (params, seed, prompt, input files) into one output
file. Built-ins drive the ffmpeg binary; plug-ins come from the
`lattice.generators` entry-point group or from `[generators.NAME]` command
tables in the repository config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lattice.errors import InvalidInput, closest
from lattice.paths import shown

ProgressFn = Callable[[float, str], None]
"""progress(fraction 0..1, stage name); stages: preparing, generating, encoding, finalizing."""

KINDS = ("image", "video", "audio", "vector")


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # "int" | "float" | "str" | "bool" | "choice"
    default: Any
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()

    def convert(self, value: Any) -> Any:
        """Coerce a value (a string from `--set KEY=VALUE`, or a typed value
        from a recipe) to this parameter's type, checking range and choices."""
        try:
            if self.type == "int":
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                v: Any = int(value)
            elif self.type == "float":
                if isinstance(value, bool):
                    raise ValueError
                v = float(value)
                if not math.isfinite(v):  # nan passes every range test; inf has no use
                    raise InvalidInput(f"parameter {self.name!r} must be a finite number; got {value!r}",
                                       hint=f"{self.name}: {self.help}" if self.help else None)
            elif self.type == "bool":
                if isinstance(value, bool):
                    v = value
                elif str(value).lower() in ("1", "true", "yes", "on"):
                    v = True
                elif str(value).lower() in ("0", "false", "no", "off"):
                    v = False
                else:
                    raise ValueError
            else:
                v = str(value)
        except (TypeError, ValueError):
            raise InvalidInput(
                f"parameter {self.name!r} must be of type {self.type}, got {value!r}",
                hint=f"{self.name}: {self.help}" if self.help else None,
            ) from None
        if self.choices and v not in self.choices:
            raise InvalidInput(f"parameter {self.name!r} must be one of {', '.join(self.choices)}; got {v!r}", hint=self._hint())
        if self.min is not None and v < self.min or self.max is not None and v > self.max:
            raise InvalidInput(f"parameter {self.name!r} must be between {self.min} and {self.max}; got {v!r}", hint=self._hint())
        return v

    def _hint(self) -> str:
        return f"{self.name}: {self.help}" if self.help else "`lattice generators show ID` lists each parameter's range and choices"


@dataclass
class RunContext:
    """What a generator's run call gets."""

    params: dict[str, Any]  # normalized: every schema key present, typed
    seed: int
    prompt: str
    negative_prompt: str
    inputs: list[Path]  # input asset files, in recipe order
    output: Path  # write here; the extension is the asset's
    progress: ProgressFn = lambda fraction, stage: None
    timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)  # e.g. CUDA_VISIBLE_DEVICES
    # Lets the runner kill a child group. Start children with lattice.childproc
    # (run_child, start): on Linux they then die with lattice, even by SIGKILL.
    on_process: Callable[[Any], None] = lambda popen: None
    input_names: list[str] = field(default_factory=list)  # the inputs' asset names, in the same order

    def input_name(self, i: int) -> str:
        """What to call input `i` in a message: its asset name, not the
        scratch view in `.lattice/tmp` that `inputs` points at."""
        return self.input_names[i] if i < len(self.input_names) else self.inputs[i].name


class Generator:
    """Base class. Subclasses set the class attributes and implement run()."""

    id: str = ""
    version: str = "1"
    kinds: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()  # without dot, lower case
    params: tuple[Param, ...] = ()
    deterministic: bool = True
    uses_seed: bool = True  # False: the same output for every seed (a media operation, a test tone)
    min_inputs: int = 0
    max_inputs: int = 0
    slot: str = "cpu"  # "cpu" or "gpu"
    description: str = ""
    timeout: float | None = None  # seconds a run may take, in place of its job type's; None: the type's

    def kind_for(self, extension: str) -> str:
        """The asset kind this generator makes for an output extension."""
        from lattice.media import kind_of_extension

        return kind_of_extension(extension)

    def normalize(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Fill defaults and coerce types; unknown keys are refused."""
        schema = {p.name: p for p in self.params}
        unknown = sorted(set(raw) - set(schema))
        if unknown:
            allowed = ", ".join(schema) or "none"
            raise InvalidInput(
                f"generator {shown(self.id)} has no parameter {unknown[0]!r}{closest(unknown[0], list(schema))}",
                hint=f"its parameters are: {allowed} (`lattice generators show {self.id}`)",
            )
        params = {name: p.convert(raw[name]) if name in raw else p.default for name, p in schema.items()}
        self.check(params)
        return params

    def check(self, params: dict[str, Any]) -> None:
        """Refuse values that pass their type and range but not the
        generator (a malformed rule string): at `gen`, not at render time."""

    def revise(self, params: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        """The raw params of a `regen`: the recorded `params` with the
        user's `changes` (`--set`) over them. A generator whose params
        depend on each other says here what a change brings along."""
        return {**params, **changes}

    def unseeded(self, params: dict[str, Any], extension: str) -> str | None:
        """None when the seed changes the output of these (normalized)
        params; else a hint on what does, for `regen --seed`'s refusal."""
        if self.uses_seed:
            return None
        return f"change its parameters with --set KEY=VALUE (`lattice generators show {self.id}` lists them)"

    def check_params(self, params: dict[str, Any], extension: str) -> None:
        """Refuse (normalized) params that do not suit the output's extension
        (lattice.export's format): at `gen` and `regen`, before any job runs."""

    def check_media(self, params: dict[str, Any], extension: str, inputs: list[tuple[str, Any]]) -> None:
        """Refuse inputs that cannot work (a sound where a picture is needed,
        a frame past the end), from each input's (asset name, MediaInfo): at
        `gen` from the recorded facts, before any job runs."""

    def check_output(self, extension: str) -> None:
        ext = extension.lower().lstrip(".")
        if not ext:
            raise InvalidInput(
                "the output has no file extension: the extension picks the format",
                hint=f"{self.id} makes: {', '.join('.' + e for e in self.extensions)}",
            )
        if ext not in self.extensions:
            raise InvalidInput(
                f"generator {shown(self.id)} cannot make .{ext} files",
                hint=f"it makes: {', '.join('.' + e for e in self.extensions)}",
            )

    def check_inputs(self, count: int) -> None:
        if not self.min_inputs <= count <= self.max_inputs:
            want = (
                f"exactly {self.min_inputs}"
                if self.min_inputs == self.max_inputs
                else f"{self.min_inputs} to {self.max_inputs}"
            )
            if count > self.max_inputs:
                hint = ("it makes its output from no input: leave out --input" if self.max_inputs == 0
                        else f"name at most {self.max_inputs} with --input")
            else:
                hint = "name inputs with --input ASSET"
            raise InvalidInput(f"generator {shown(self.id)} takes {want} input asset(s), got {count}", hint=hint)

    def run(self, ctx: RunContext) -> None:
        raise NotImplementedError
