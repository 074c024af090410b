"""A generator dies with lattice, however lattice dies: `kill -9` of `lattice
gen` or `lattice worker` takes the command generator and what it started
with it (lattice.childguard, Linux only). And the guard is invisible
otherwise: exit statuses, environment, signals, a thread that ends."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import run_cli
from lattice import childproc

pytestmark = pytest.mark.skipif(not childproc.GUARDED, reason="the guard is Linux-only")

# A shell script that starts a python, as a user's generator may: both wait
# a minute, and say who they are once both are running.
SCRIPT = f"""{sys.executable} -c 'import time; time.sleep(60)' &
echo $! > grand.pid.tmp && mv grand.pid.tmp grand.pid
echo $$ > gen.pid.tmp && mv gen.pid.tmp gen.pid
wait
"""


@pytest.fixture
def slow_repo(tmp_repo):
    (tmp_repo.root / "slow.sh").write_text(SCRIPT)
    cfg = tmp_repo.dir / "config.toml"
    cfg.write_text(cfg.read_text() + '\n[generators.slow]\nargv = ["sh", "slow.sh", "{output}"]\nextensions = ["txt"]\n')
    assert run_cli("trust", cwd=tmp_repo.root).code == 0
    return tmp_repo


def lattice(repo, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lattice", *args], cwd=repo.root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def generator_pids(repo, proc: subprocess.Popen) -> tuple[int, int]:
    """(the script, its python) once both run."""
    deadline = time.monotonic() + 30
    while not (repo.root / "gen.pid").exists() or not (repo.root / "grand.pid").exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the generator never started"
        time.sleep(0.02)
    return int((repo.root / "gen.pid").read_text()), int((repo.root / "grand.pid").read_text())


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"  # dead; init has not reaped it yet
    except FileNotFoundError:
        return True


def wait_gone(*pids: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not all(gone(p) for p in pids):
        if time.monotonic() > deadline:
            alive = [p for p in pids if not gone(p)]
            for p in alive:  # not left behind for the rest of the run
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            pytest.fail(f"still running: {alive}")
        time.sleep(0.02)


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGINT", "SIGTERM"])
def test_a_killed_gen_takes_its_generator_and_its_children_with_it(slow_repo, sig):
    p = lattice(slow_repo, "gen", "out.txt", "--model", "slow")
    script, python = generator_pids(slow_repo, p)
    p.send_signal(getattr(signal, sig))
    p.wait(timeout=30)
    assert p.returncode == {"SIGKILL": -9, "SIGINT": 130, "SIGTERM": 143}[sig], p.stderr.read()
    wait_gone(script, python)


def test_a_killed_worker_takes_its_generators_with_it(slow_repo):
    assert run_cli("gen", "out.txt", "--model", "slow", "--detach", cwd=slow_repo.root).code == 0
    w = lattice(slow_repo, "worker", "--slots", "1")
    script, python = generator_pids(slow_repo, w)
    w.kill()
    w.wait(timeout=30)
    wait_gone(script, python)


def test_the_thread_that_started_a_child_may_end_first():
    # The kernel sends the death signal when the forking *thread* ends: the
    # guard must tell that from the end of lattice.
    procs: list[subprocess.Popen] = []
    t = threading.Thread(target=lambda: procs.append(childproc.start([sys.executable, "-c", "import time; time.sleep(30)"])))
    t.start()
    t.join()
    (proc,) = procs
    try:
        time.sleep(0.5)
        assert proc.poll() is None, "killed when its thread ended"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_the_guard_starts_nothing_for_a_parent_already_gone(tmp_path):
    # Lattice may die before the guard asks to follow it; the guard then sees
    # another parent and must not start the program.
    dead = subprocess.Popen(["true"])
    dead.wait()
    read_end, write_end = os.pipe()
    marker = tmp_path / "ran"
    guard = subprocess.run([sys.executable, "-I", "-S", childproc._GUARD, str(write_end), str(dead.pid), "touch", str(marker)],
                           pass_fds=(write_end,), timeout=30)
    os.close(write_end)
    os.close(read_end)
    assert guard.returncode == 125 and not marker.exists()


def test_the_guarded_child_exits_and_sees_the_world_as_an_unguarded_one(tmp_path):
    def status(*argv: str, **kw) -> int:
        proc = childproc.start(list(argv), **kw)
        return proc.wait()

    assert status("sh", "-c", "exit 3") == 3
    assert status("sh", "-c", "kill -TERM $$") == -signal.SIGTERM
    assert status("sh", "-c", "ulimit -c 0; kill -SEGV $$", cwd=tmp_path) == -signal.SIGSEGV
    assert not list(tmp_path.iterdir()), "no core file from the guard"
    with pytest.raises(FileNotFoundError) as e:
        childproc.start(["/nonexistent/generator"])
    assert e.value.filename == "/nonexistent/generator"

    # A signal to the whole group is the program's to handle; the guard
    # exits as the program does.
    proc = childproc.start(["sh", "-c", "trap 'exit 7' TERM; echo ready; sleep 30 & wait"], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=10) == 7
    proc.stdout.close()

    # The environment as given (no LC_CTYPE from Python's locale coercion),
    # the working directory, blocked and ignored signals (SIGHUP under
    # nohup) and file descriptors as subprocess gives them.
    env = {"PATH": os.environ["PATH"], "LANG": "C", "ODD": "a=b c"}
    probe = [sys.executable, "-I", "-S", "-c", "import json, os, sys; "
             "print(json.dumps([open('/proc/self/environ').read(), os.getcwd(), "
             "[l for l in open('/proc/self/status') if l.startswith(('SigBlk', 'SigIgn'))], sorted(os.listdir('/proc/self/fd'))]))"]
    seen = []
    for hup in (signal.SIG_DFL, signal.SIG_IGN):
        before = signal.signal(signal.SIGHUP, hup)
        try:
            plain = subprocess.run(probe, env=env, cwd=tmp_path, capture_output=True, text=True, start_new_session=True)
            proc = childproc.start(probe, env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
            guarded = proc.stdout.read()
            proc.wait()
            proc.stdout.close()
        finally:
            signal.signal(signal.SIGHUP, before)
        assert json.loads(guarded) == json.loads(plain.stdout)
        assert Path(json.loads(guarded)[1]) == tmp_path
        seen.append(json.loads(guarded)[2])
    assert seen[0] != seen[1]  # SIGHUP's disposition is among what was compared


def test_a_child_that_leaves_a_daemon_holding_its_stdout_returns_when_it_exits(tmp_path):
    """A program that starts a daemon in a session of its own (`setsid cmd
    &`, a model server) and exits: the daemon keeps the stdout pipe open,
    and the run must end with the program, not with the daemon."""
    pidfile = tmp_path / "daemon.pid"
    code = ("import subprocess, sys\n"
            "d = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
            f"open({str(pidfile)!r}, 'w').write(str(d.pid))\n"
            "print('progress 0.5', flush=True)\n")
    seen = []
    start = time.monotonic()
    try:
        childproc.run_child([sys.executable, "-c", code], name="daemonizer", on_stdout_line=seen.append, timeout=30)
        took = time.monotonic() - start
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
    assert seen == ["progress 0.5"] and took < 10, (seen, took)


def test_a_failing_program_printing_megabytes_on_one_line_makes_a_short_error():
    code = "import sys\nsys.stderr.write('E' * 5_000_000 + '\\n'); sys.stderr.write('the cause\\n'); sys.exit(1)\n"
    with pytest.raises(childproc.GeneratorFailed) as e:
        childproc.run_child([sys.executable, "-c", code], name="chatty")
    assert e.value.message.endswith("the cause") and len(e.value.hint) < 5000
    assert "more bytes)" in e.value.hint
