"""The committed shell completions and man pages match the CLI, and the
completions really complete through the `lattice` script."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "run `python scripts/gen_docs.py` to regenerate completions/ and man/"


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen_docs():
    return _gen_docs()


@pytest.fixture(scope="module")
def generated(gen_docs, tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    files = gen_docs.render_all()
    gen_docs.write(out, files)
    return out, files


def test_committed_docs_are_up_to_date(gen_docs, generated):
    out, files = generated
    problems = gen_docs.differences(ROOT, files)
    assert not problems, f"{REGENERATE}: " + "; ".join(problems)


def test_generation_is_repeatable(gen_docs, generated):
    out, files = generated
    assert gen_docs.render_all() == files
    assert gen_docs.write(out, files) == []


def test_a_page_per_command_and_sub_command(generated):
    out, files = generated
    pages = {p for p in files if p.startswith("man/")}
    for page in ("lattice.1", "lattice-status.1", "lattice-queue.1", "lattice-queue-ls.1", "lattice-generators-show.1"):
        assert f"man/{page}" in pages
    page = files["man/lattice-queue-ls.1"]
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "SEE ALSO"):
        assert f".SH {section}\n" in page
    assert "\\fB\\-n, \\-\\-limit <int range>\\fR" in page
    assert "\\fB130\\fR\ninterrupted (Ctrl-C)" in page
    assert "\\fBlattice\\-queue\\fR(1)" in page


def test_stale_pages_are_reported_and_removed(gen_docs, tmp_path):
    files = gen_docs.render_all()
    gen_docs.write(tmp_path, files)
    (tmp_path / "man" / "lattice-gone.1").write_text("old\n")
    (tmp_path / "man" / "lattice-status.1").write_text("old\n")
    assert gen_docs.differences(tmp_path, files) == ["out of date: man/lattice-status.1", "no longer generated: man/lattice-gone.1"]
    assert gen_docs.write(tmp_path, files) == ["man/lattice-status.1", "man/lattice-gone.1"]
    assert gen_docs.differences(tmp_path, files) == []


# -- completion through the installed `lattice` script ------------------------


def _lattice_script() -> Path:
    script = Path(sys.executable).parent / "lattice"
    if not script.exists():
        found = shutil.which("lattice")
        if not found:
            pytest.skip("the `lattice` script is not installed (pip install -e .)")
        script = Path(found)
    return script


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(_lattice_script().parent), env.get("PATH", "")])
    env.update(extra)
    return env


def _protocol(**env: str) -> str:
    proc = subprocess.run([str(_lattice_script())], env=_env(**env), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip(), (
        f"completion through `lattice` failed (rc {proc.returncode}): {proc.stderr.strip()}"
        " -- _run_typer() in lattice/cli/entry.py must register typer's completion classes when _LATTICE_COMPLETE is set"
    )
    return proc.stdout


def test_bash_protocol_offers_commands():
    out = _protocol(_LATTICE_COMPLETE="complete_bash", COMP_WORDS="lattice sta", COMP_CWORD="1")
    assert out.split() == ["status"]


def test_zsh_and_fish_protocols_offer_commands():
    assert '"status"' in _protocol(_LATTICE_COMPLETE="complete_zsh", _TYPER_COMPLETE_ARGS="lattice sta")
    fish = _protocol(_LATTICE_COMPLETE="complete_fish", _TYPER_COMPLETE_FISH_ACTION="get-args", _TYPER_COMPLETE_ARGS="lattice queue ")
    assert "ls\tList jobs, newest first." in fish.splitlines()


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_committed_bash_script_completes():
    """Source completions/lattice.bash in a real bash and press Tab."""
    script = ROOT / "completions" / "lattice.bash"
    program = f"""
source {script}
complete -p lattice >/dev/null || exit 3
show() {{ COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); _lattice_completion lattice; echo "${{COMPREPLY[*]}}"; }}
show lattice sta
show lattice queue l
show lattice add --t
"""
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["status", "ls", "--tag"], (
        f"{proc.stdout!r} {proc.stderr.strip()}"
        " -- _run_typer() in lattice/cli/entry.py must register typer's completion classes when _LATTICE_COMPLETE is set"
    )


@pytest.mark.skipif(shutil.which("fish") is None, reason="no fish")
def test_committed_fish_script_completes():
    script = ROOT / "completions" / "lattice.fish"
    proc = subprocess.run(
        ["fish", "--no-config", "-c", f"source {script}; complete -C 'lattice sta'"],
        env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.stdout.startswith("status\t"), f"{proc.stdout!r} {proc.stderr.strip()}"
