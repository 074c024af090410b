"""Command generators: a program of the user's, declared in the repository
config as an argv template.

    [generators.mygen]
    argv = ["python", "gen.py", "--prompt", "{prompt}", "--seed", "{seed}", "--out", "{output}"]
    extensions = ["png"]
    deterministic = false     # default: a program is not assumed to repeat itself
    timeout = 600             # seconds; the process group is killed after it (default: the job type's timeout)
    version = "1"
    inputs = [1, 2]           # min and max input assets
    slot = "gpu"              # default "cpu"
    params.steps = {type = "int", default = 30, min = 1, max = 200, help = "sampling steps"}

Placeholders, replaced in one pass so a prompt containing `{seed}` stays
text: {prompt} {negative_prompt} {seed} {output} {param.NAME},
{input0}..{inputN} (N below the minimum input count), and an argv element
that is exactly "{inputs}" becomes one element per input given. Any other brace is literal. The program runs without a
shell, in the repository root, in its own process group. A stdout line
`progress 0.42` reports progress.

The generator id is NAME as written in the config. Names of built-ins and
the reserved `ffmpeg.` namespace are refused, so a config can never shadow a
built-in. Nothing runs until the user approves the config (lattice.trust).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from lattice.errors import GeneratorFailed, InvalidInput
from lattice.generators.base import Generator, Param, RunContext
from lattice.paths import shown

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
# An extension names files and picks their kind: letters and digits only.
EXTENSION = re.compile(r"^[a-z0-9]{1,16}$")
RESERVED_PREFIX = "ffmpeg."
_PLACEHOLDER = re.compile(r"\{(prompt|negative_prompt|seed|output|inputs|input(\d+)|param\.([A-Za-z_][A-Za-z0-9_-]*))\}")
_PROGRESS = re.compile(r"^progress[=: ]\s*([0-9]*\.?[0-9]+)", re.I)
_DEFAULTS = {"int": 0, "float": 0.0, "str": "", "bool": False}
_KEYS = {"argv", "extensions", "deterministic", "timeout", "version", "inputs", "params", "slot", "description"}


class CommandGenerator(Generator):
    def __init__(self, name: str, table: dict[str, Any], *, config: dict, repo_root: Path | None):
        """Parse one `[generators.NAME]` table; raises InvalidInput naming the
        problem when the table is malformed."""
        from lattice.media import kind_of_extension

        def bad(why: str) -> InvalidInput:
            return InvalidInput(f"command generator {shown(name)}: {why}", hint="fix [generators] in .lattice/config.toml")

        if not NAME.match(name):
            raise bad("a name must start with a letter and use letters, digits, '_', '-' or '.'")
        if not isinstance(table, dict):
            raise bad("must be a table")
        unknown = sorted(set(table) - _KEYS)
        if unknown:
            raise bad(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
        argv = table.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv) or not argv[0]:
            raise bad("argv must be a non-empty list of strings")
        exts = table.get("extensions")
        if not isinstance(exts, list) or not exts or not all(isinstance(e, str) and EXTENSION.match(e.strip(". ").lower()) for e in exts):
            raise bad("extensions must be a non-empty list of letters and digits, like [\"png\"]")
        inputs = table.get("inputs", [0, 0])
        if (not isinstance(inputs, list) or len(inputs) != 2 or not all(type(i) is int for i in inputs)
                or not 0 <= inputs[0] <= inputs[1] <= 64):
            raise bad("inputs must be [min, max] with 0 <= min <= max <= 64")
        timeout = table.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            raise bad("timeout must be a positive number of seconds")
        deterministic = table.get("deterministic", False)
        slot = table.get("slot", "cpu")
        if not isinstance(deterministic, bool):
            raise bad("deterministic must be true or false")
        if slot not in ("cpu", "gpu"):
            raise bad("slot must be \"cpu\" or \"gpu\"")

        self.id = name
        self.argv = list(argv)
        self.extensions = tuple(dict.fromkeys(e.strip(". ").lower() for e in exts))
        self.kinds = tuple(dict.fromkeys(kind_of_extension(e) for e in self.extensions))
        self.min_inputs, self.max_inputs = inputs
        self.timeout = float(timeout) if timeout is not None else None
        self.deterministic = deterministic
        self.slot = slot
        self.version = str(table.get("version", "1"))
        self.description = str(table.get("description", f"command: {argv[0]}"))
        self.params = tuple(_param(n, spec, bad) for n, spec in (table.get("params") or {}).items())
        self.config = config
        self.repo_root = repo_root
        self._check_placeholders(bad)
        # The seed reaches the program only through {seed}.
        self.uses_seed = any(m[1] == "seed" for arg in self.argv for m in _PLACEHOLDER.finditer(arg))

    def _check_placeholders(self, bad) -> None:
        names = {p.name for p in self.params}
        for arg in self.argv:
            for m in _PLACEHOLDER.finditer(arg):
                if m[1] == "inputs" and arg != "{inputs}":
                    raise bad("{inputs} must be an argv element of its own")
                # Optional inputs are reached through {inputs}; {inputN} must always exist.
                if m[2] is not None and int(m[2]) >= self.min_inputs:
                    raise bad(f"{m[0]} needs inputs = [min, max] with min > {m[2]}")
                if m[3] is not None and m[3] not in names:
                    raise bad(f"{m[0]} names no declared parameter")

    def unseeded(self, params: dict[str, Any], extension: str) -> str | None:
        if self.uses_seed:
            return None
        again = "; `lattice regen PATH` without --seed runs it again" if not self.deterministic else ""
        return f"its argv in config.toml [generators.{self.id}] has no {{seed}} to pass the seed to the program{again}"

    def expand(self, ctx: RunContext, params: dict[str, Any]) -> list[str]:
        """The argv with placeholders filled in, each element staying one
        argument whatever it contains."""
        values = {
            "prompt": ctx.prompt,
            "negative_prompt": ctx.negative_prompt,
            "seed": str(ctx.seed),
            "output": os.path.abspath(ctx.output),
        }

        def value(m: re.Match) -> str:
            if m[2] is not None:
                return os.path.abspath(ctx.inputs[int(m[2])])
            if m[3] is not None:
                return _text(params[m[3]])
            return values[m[1]]

        out: list[str] = []
        for i, arg in enumerate(self.argv):
            if arg == "{inputs}":
                out += [os.path.abspath(p) for p in ctx.inputs]
            else:
                out.append(_PLACEHOLDER.sub(value, arg))
                if out[-1].startswith("-"):
                    self._refuse_option_text(i, out[-1])
        return out

    def _refuse_option_text(self, i: int, text: str) -> None:
        """A recipe's text (a prompt, a str parameter: in a cloned project,
        someone else's) that starts with '-' and begins an argument of its
        own (`{prompt}`, `{prompt}.txt`) where an option may stand would
        reach the program as an option the approved argv does not name. It
        may follow an option of the argv (`--prompt`, `{prompt}`) or `--`,
        or follow the argv's own text in an element (`--prompt={prompt}`)."""
        m = _PLACEHOLDER.match(self.argv[i])  # the placeholder the element starts with: its text starts the argument
        if m is None or "--" in self.argv[:i] or (i > 0 and self.argv[i - 1].startswith("-")):
            return
        if m[3] is not None:
            if next(p for p in self.params if p.name == m[3]).type != "str":
                return  # a number (-0.5) or one of the config's own choices
            what = f"parameter {m[3]!r}"
        elif m[1] in ("prompt", "negative_prompt"):
            what = m[1].replace("_", " ")
        else:
            return
        raise InvalidInput(
            f"{what} {_short(text)!r} starts with '-': command generator {shown(self.id)} would pass it "
            "as an argument of its own, where its program may take it for an option",
            hint=f"write it without the leading '-', or in [generators.{self.id}] put \"--\" or an option before \"{self.argv[i]}\"",
        )

    def run(self, ctx: RunContext) -> None:
        from lattice.childproc import run_child
        from lattice.media import extension
        from lattice.trust import require

        require(self.repo_root, self.config, self.id)
        self.check_output(extension(ctx.output.name))
        self.check_inputs(len(ctx.inputs))
        argv = self.expand(ctx, self.normalize(ctx.params))
        limits = [t for t in (self.timeout, ctx.timeout) if t]
        output = Path(ctx.output)
        # Whatever is at the output path now is not the program's work.
        output.unlink(missing_ok=True)
        output.parent.mkdir(parents=True, exist_ok=True)

        def on_line(line: str) -> None:
            m = _PROGRESS.match(line.strip())
            if m:
                ctx.progress(min(float(m[1]), 1.0), "generating")

        ctx.progress(0.0, "preparing")
        run_child(argv, name=f"command generator {shown(self.id)}", timeout=min(limits) if limits else None,
                  on_process=ctx.on_process, on_stdout_line=on_line, cwd=self.repo_root,
                  env={**os.environ, **ctx.env})
        if not output.is_file() or output.stat().st_size == 0:
            state = "an empty file" if output.is_file() else "nothing"
            raise GeneratorFailed(
                f"command generator {shown(self.id)} exited 0 but wrote {state} at {{output}}",
                hint=f"the program must write its result to the path given for {{output}} ({output.name})",
            )
        from lattice.imagehead import lacks_signature

        ext = extension(output.name)
        if lacks_signature(output, ext):  # garbage recorded as a valid image would fail every later use
            raise GeneratorFailed(
                f"command generator {shown(self.id)} exited 0 but what it wrote at {{output}} is not a {ext.upper()} file",
                hint=f"the program must write a real .{ext} file ({output.name}); its first bytes are not a {ext.upper()} signature",
            )
        ctx.progress(1.0, "finalizing")


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:39] + "…"


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


def _param(name: str, spec: Any, bad) -> Param:
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_-]*$", name):
        raise bad(f"parameter name {name!r} must be letters, digits, '_' or '-'")
    if not isinstance(spec, dict):
        raise bad(f"params.{name} must be a table like {{type = \"int\", default = 1}}")
    ptype = spec.get("type", "str")
    choices = spec.get("choices", [])
    if ptype not in ("int", "float", "str", "bool", "choice"):
        raise bad(f"params.{name}: type must be int, float, str, bool or choice")
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices) or (ptype == "choice") != bool(choices):
        raise bad(f"params.{name}: a choice needs choices = [\"a\", \"b\"], other types none")
    bounds = {k: spec.get(k) for k in ("min", "max")}
    for k, b in bounds.items():
        if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float))):
            raise bad(f"params.{name}: {k} must be a number")
    p = Param(name, ptype, None, str(spec.get("help", "")), bounds["min"], bounds["max"], tuple(choices))
    default = spec.get("default", choices[0] if choices else _DEFAULTS.get(ptype))
    try:
        default = p.convert(default)
    except InvalidInput as e:
        raise bad(f"params.{name}: default: {e.message}") from None
    return Param(p.name, p.type, default, p.help, p.min, p.max, p.choices)
