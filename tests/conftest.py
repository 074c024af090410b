"""Shared fixtures: a repository built from a dict of files, and a runner for
the real `lattice` CLI (in-process through `lattice.cli.entry.run`, or as a
subprocess where process boundaries matter)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from lattice.repo import Repository

# The fake generators in tests/plugins are found through their entry points,
# in this process and in the worker processes tests start.
PLUGINS = str(Path(__file__).parent / "plugins")
sys.path.insert(0, PLUGINS)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (PLUGINS, os.environ.get("PYTHONPATH")) if p)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    # Trust approvals and authorship never leak from the developer's account.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    monkeypatch.setenv("LATTICE_AUTHOR", "tester")
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.fixture
def run_log(tmp_path, monkeypatch):
    """A file the fake generators append to on every run: count real runs."""
    log = tmp_path / "runs.log"
    log.touch()
    monkeypatch.setenv("LATTICE_TEST_LOG", str(log))
    return lambda: [line for line in log.read_text().splitlines() if line]


def write_files(root: Path, files: dict[str, bytes | str]) -> None:
    for name, content in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)


@pytest.fixture
def tmp_repo(tmp_path):
    """A fresh repository; `tmp_repo.gen({...})` writes files into it."""
    repo = Repository.init(tmp_path / "proj")

    def gen(files: dict[str, bytes | str]) -> Repository:
        write_files(repo.root, files)
        return repo

    repo.gen = gen
    return repo


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self):
        import json

        return json.loads(self.out)


def run_cli(*args: str, cwd: Path | None = None) -> Result:
    """Run `lattice ARGS` in-process (fast) from `cwd`."""
    from lattice.cli.entry import run

    err = io.StringIO()
    old = Path.cwd()
    os.chdir(cwd or old)
    try:
        stdout = _Stdout()
        with redirect_stdout(stdout), redirect_stderr(err):
            code = run(list(args))
    finally:
        os.chdir(old)
    return Result(code, stdout.bytes.getvalue().decode(errors="replace"), err.getvalue())


class _Stdout(io.TextIOWrapper):
    """A captured stdout with a `.buffer`, for commands that write bytes."""

    def __init__(self):
        self.bytes = io.BytesIO()
        super().__init__(self.bytes, encoding="utf-8", write_through=True)


def run_proc(*args: str, cwd: Path, check: bool = False, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed `lattice` entry point as a real process."""
    proc = subprocess.run(
        [sys.executable, "-m", "lattice", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"lattice {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def ffmpeg(*args: str) -> str:
    """Run the ffmpeg binary lattice uses (no whitelist: tests make their own
    media, concat lists included); its stderr."""
    from lattice.ffmpeg import ffmpeg_exe

    return subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-y", *args], capture_output=True, text=True, check=True).stderr


def decoded_frames(path) -> int:
    """How many frames ffmpeg decodes from `path`."""
    import re

    return int(re.findall(r"frame=\s*(\d+)", ffmpeg("-i", str(path), "-f", "null", "-"))[-1])


def vfr_clip(out: Path) -> Path:
    """A 32x24 variable-rate clip at `out`: 5 frames at 10 fps, then 15 at 30 fps."""
    for name, rate in (("slow.mp4", 10), ("fast.mp4", 30)):
        ffmpeg("-f", "lavfi", "-i", f"testsrc=size=32x24:rate={rate}", "-t", "0.5", "-c:v", "libx264",
               "-pix_fmt", "yuv420p", "-video_track_timescale", "1000", str(out.parent / f"{out.stem}-{name}"))
    parts = out.parent / f"{out.stem}-list.txt"
    parts.write_text(f"file '{out.stem}-slow.mp4'\nfile '{out.stem}-fast.mp4'\n")
    ffmpeg("-f", "concat", "-i", str(parts), "-c", "copy", str(out))
    for name in ("slow.mp4", "fast.mp4", "list.txt"):
        (out.parent / f"{out.stem}-{name}").unlink()
    return out


@pytest.fixture
def cli():
    return run_cli


def unprivileged() -> list[str]:
    """An argv prefix under which file permissions hold: none for a normal
    user; for root, setpriv without the capabilities that override them."""
    import shutil

    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner"] if setpriv else []
    if not prefix or subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root, and setpriv cannot drop the capabilities that override permissions")
    return prefix
