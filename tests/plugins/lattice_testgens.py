"""Deterministic fake generators for tests, discovered the way third-party
plug-ins are: through the `lattice.generators` entry-point group (see the
dist-info folder beside this file, which tests put on sys.path).

Each run appends a line to $LATTICE_TEST_LOG (when set), so tests can count
how often a generator really ran."""

from __future__ import annotations

import os
import subprocess
import sys

from lattice.errors import GeneratorFailed
from lattice.generators.base import Generator, Param


def _log(gen_id: str, ctx) -> None:
    log = os.environ.get("LATTICE_TEST_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{gen_id} {ctx.output.name} seed={ctx.seed}\n")


class Text(Generator):
    id = "test.text"
    version = "1"
    kinds = ("other",)
    extensions = ("txt",)
    params = (
        Param("word", "str", "hello", "what to write"),
        Param("repeat", "int", 1, "how many times", min=1, max=100),
        Param("delay", "float", 0.0, "seconds to sleep first", min=0, max=30),
    )
    description = "writes a word, deterministically"

    def run(self, ctx):
        _log(self.id, ctx)
        if ctx.params["delay"]:
            import time

            time.sleep(ctx.params["delay"])
        ctx.progress(0.5, "generating")
        ctx.output.write_text(f"{ctx.params['word']}:{ctx.seed}\n" * ctx.params["repeat"])


class Join(Generator):
    id = "test.join"
    version = "1"
    kinds = ("other",)
    extensions = ("txt",)
    params = (Param("sep", "str", "+", "separator"),)
    min_inputs, max_inputs = 1, 8
    description = "joins its inputs"

    def run(self, ctx):
        _log(self.id, ctx)
        parts = [p.read_bytes() for p in ctx.inputs]
        ctx.output.write_bytes(ctx.params["sep"].encode().join(parts) + f"#{ctx.seed}".encode())


class Random(Generator):
    id = "test.random"
    version = "1"
    kinds = ("other",)
    extensions = ("txt",)
    deterministic = False
    description = "different bytes every run"

    def run(self, ctx):
        _log(self.id, ctx)
        ctx.output.write_bytes(os.urandom(16).hex().encode())


class Fail(Generator):
    id = "test.fail"
    version = "1"
    kinds = ("other",)
    extensions = ("txt",)
    min_inputs, max_inputs = 0, 4
    description = "always fails, with stderr"

    def run(self, ctx):
        _log(self.id, ctx)
        proc = subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('boom: model exploded\\n'); sys.exit(3)"], capture_output=True, text=True)
        raise GeneratorFailed(f"test.fail exited with {proc.returncode}", hint=proc.stderr.strip())


class Hang(Generator):
    id = "test.hang"
    version = "1"
    kinds = ("other",)
    extensions = ("txt",)
    description = "sleeps in a child process until killed"

    def run(self, ctx):
        _log(self.id, ctx)
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
        ctx.on_process(proc)
        log = os.environ.get("LATTICE_TEST_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"child {proc.pid}\n")
        try:
            proc.wait(timeout=ctx.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            raise GeneratorFailed(f"test.hang timed out after {ctx.timeout} s") from None
        raise GeneratorFailed("test.hang was killed")
