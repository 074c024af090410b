"""The CLI's contract at its edges: bounded numeric options, absurd numbers
refused as usage errors (never an internal error), one `error:` line and one
`hint:` line per refusal, empty names, paths named from a subfolder, and
the exit status of the long-running commands (`watch`, `worker`) when a
signal stops them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import run_cli
from lattice.repo import Repository

HUGE = "99999999999999999999"  # past SQLite's INTEGER and a C long


def ok(repo, *args):
    r = run_cli(*args, cwd=repo.root)
    assert r.code == 0, (args, r.err)
    return r


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A repository with a tiny clip, a thumbnail of it gone stale, text
    assets and one finished job (made once: ffmpeg is slow-ish)."""
    repo = Repository.init(tmp_path_factory.mktemp("cli") / "proj")
    ok(repo, "gen", "m.mp4", "--model", "ffmpeg.testsrc", "--seed", "1", "--set", "duration=0.2", "--set", "width=32", "--set", "height=32")
    ok(repo, "gen", "t.png", "--model", "ffmpeg.thumbnail", "--seed", "1", "-i", "m.mp4")
    ok(repo, "gen", "a.txt", "--model", "test.text", "--seed", "1")
    ok(repo, "gen", "b.txt", "--model", "test.join", "--seed", "1", "-i", "a.txt")
    ok(repo, "regen", "a.txt", "--seed", "2", "--no-cascade")  # b.txt is stale now
    return repo


def queued(repo) -> list:
    return [j for j in run_cli("queue", "ls", "--all", "--json", cwd=repo.root).json if j["state"] == "queued"]


@pytest.mark.parametrize("args, limit", [
    (["render", "-j", "100000000"], "1<=x<=256"),
    (["render", "--jobs", HUGE], "1<=x<=256"),
    (["regen", "a.txt", "-j", "257"], "1<=x<=256"),
    (["watch", "-j", "1000"], "1<=x<=256"),
    (["worker", "--slots", "100000000"], "0<=x<=256"),
    (["worker", "--slots", "-1"], "0<=x<=256"),  # was exit 4, unlike `render -j 0`
    (["render", "-j", "0"], "1<=x<=256"),
])
def test_parallelism_is_bounded_before_anything_is_queued(project, args, limit):
    r = run_cli(*args, cwd=project.root)
    assert r.code == 2 and f"is not in the range {limit}" in r.err, r.err
    assert queued(project) == []  # refused up front: nothing left for a worker
    assert run_cli("render", "--check", cwd=project.root).code == 1  # b.txt still stale


@pytest.mark.parametrize("args, code, said", [
    (["queue", "show", HUGE], 10, f"no job {HUGE} in the queue (its jobs run from 1 to "),
    (["queue", "cancel", HUGE], 10, f"no job {HUGE} in the queue"),
    (["queue", "retry", "1", HUGE], 10, f"no job {HUGE} in the queue"),
    (["watch", "--debounce", HUGE], 2, "is not in the range 0<=x<=60000"),
    (["queue", "watch", "--interval", "1e400", "--until-done"], 2, "inf is not in the range 0.01<=x<=3600"),
    (["queue", "watch", "--interval", "nan", "--until-done"], 2, "nan is not a number in the range 0.01<=x<=3600"),
    (["regen", "a.txt", "--seed", HUGE], 4, f"seed {HUGE} is out of range"),  # as gen says; regen recorded it
])
def test_out_of_range_numbers_are_refused_not_internal_errors(project, args, code, said):
    r = run_cli(*args, cwd=project.root)
    assert r.code == code and said in r.err, r.err
    assert "internal error" not in r.err
    assert project.record("a.txt").current.recipe.seed == 2


def test_a_huge_limit_lists_every_job_as_log_does(project):
    assert run_cli("queue", "ls", "-n", HUGE, "--json", cwd=project.root).json == run_cli("queue", "ls", "--all", "--json", cwd=project.root).json
    assert ok(project, "log", "-n", HUGE).out == ok(project, "log").out


@pytest.mark.parametrize("args, code", [
    (["gen", "x.txt", "--model", "test.text", "--set", "repeat=0"], 4),  # a parameter out of its range
    (["regen", "a.txt", "--set", "repeat=1000"], 4),
    (["export", "t.png", "--fps", "0", "-o", "f.png"], 4),
    (["export", "m.mp4", "--range", "4-1", "-o", "f.gif"], 4),
    (["regen", "m.mp4", "--seed", "1", "--new-seed"], 2),
    (["du", "--by", "nope"], 4),
    (["add", "nope.txt"], 4),
    (["verify"], 2),
    (["-C", "/nonexistent", "status"], 2),
    (["add", "--tag"], 2),
    (["-C"], 2),
    (["render", "-j", "100000000"], 2),
    (["queue", "show", HUGE], 10),
    (["branch", ""], 4),
    (["branch", "-d", ""], 4),
    (["tag", ""], 4),
    (["switch", ""], 4),
    (["merge", ""], 4),
])
def test_every_refusal_is_one_error_line_and_one_hint_line(project, args, code):
    r = run_cli(*args, cwd=project.root)
    lines = r.err.splitlines()
    assert r.code == code, r.err
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), r.err
    assert "`lattice branch `" not in r.err  # a hint built around an empty name


ODD = "my shot's \"ünï\".png"  # a space, both quotes, non-ASCII


@pytest.mark.parametrize("args, code, said", [
    (["log", ODD], 4, f"no asset named {ODD}"),
    (["show", ODD + "@v2"], 4, f"no asset named {ODD}"),
    (["restore", ODD + "@v0"], 4, f"{ODD}@v0: there is no version v0"),
    (["log", "a.txt@latest"], 4, "a.txt@latest: latest is not a version"),
    (["diff", "a.txt@v1", "@dernière"], 4, "@dernière: dernière is not a version"),
    (["gen", "c.txt", "--model", "test.join", "-i", ODD], 4, f"input {ODD} is not an asset"),
    (["gen", "c.txt", "--model", "test.nöpe"], 4, "unknown generator test.nöpe"),
    (["render", ODD], 4, f"no asset named {ODD}"),
    (["switch", "café"], 4, "no branch named café"),
    (["branch", "it's..odd"], 4, "it's..odd is not a valid branch name"),
    (["branch", "tab\there"], 4, "tab\\there is not a valid branch name"),
    (["diff", "main", "l'été"], 4, "no branch, tag or commit named l'été"),
    (["diff", "main", ""], 4, "no branch, tag or commit named ''"),
])
def test_messages_show_names_as_typed_not_as_python_reprs(project, args, code, said):
    """A name in a message is shown as lattice shows names everywhere
    (lattice.paths.shown): as typed, a control character escaped, never in
    Python's quotes."""
    r = run_cli(*args, cwd=project.root)
    first = r.err.partition("\n")[0]
    assert r.code == code and (first == f"error: {said}" or first.startswith(f"error: {said} (did you mean")), r.err


def test_empty_names_create_nothing(tmp_repo):
    for args in (["branch", ""], ["tag", ""], ["switch", ""], ["merge", ""]):
        r = run_cli(*args, cwd=tmp_repo.root)
        assert r.code == 4 and "name is empty" in r.err and r.out == "", (args, r.err)
    assert not (tmp_repo.dir / "history.git").exists()  # refused before history is made
    assert run_cli("tag", cwd=tmp_repo.root).out == ""


def test_diff_and_log_before_the_first_change_see_the_branch_that_branch_lists(tmp_repo):
    assert ok(tmp_repo, "branch").out == "* main\n"
    for args in (["diff", "main", "main"], ["diff", "HEAD", "main"], ["log"]):
        assert ok(tmp_repo, *args).out == "", args
    r = run_cli("diff", "main", "feat", cwd=tmp_repo.root)
    assert r.code == 4 and "no branch, tag or commit named feat" in r.err and "hint:" in r.err
    ok(tmp_repo, "branch", "feat")
    assert ok(tmp_repo, "diff", "main", "feat").out == ""


# -- paths from a subfolder -------------------------------------------------------


@pytest.fixture
def nested(tmp_repo):
    """Assets in the root, in `sub/` and in `other/`; from `sub/` one is
    edited, one missing, and a new image waits to be added."""
    repo = tmp_repo.gen({"top.txt": "top", "sub/a.txt": "a", "other/o.txt": "o"})
    ok(repo, "add", ".")
    (repo.root / "sub/a.txt").write_text("edited")
    (repo.root / "top.txt").unlink()
    (repo.root / "sub/new.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return repo


def test_status_ls_and_hooks_name_paths_from_the_current_folder_as_git_does(nested):
    sub = nested.root / "sub"
    assert run_cli("status", cwd=sub).out.splitlines() == ["modified:  a.txt", "new:       new.png", "missing:   ../top.txt"]
    assert run_cli("-C", "sub", "status", cwd=nested.root).out == run_cli("status", cwd=sub).out  # -C DIR: DIR is the current folder
    assert run_cli("status", cwd=nested.root).out.splitlines() == ["modified:  sub/a.txt", "new:       sub/new.png", "missing:   top.txt"]
    assert [line.split()[0] for line in run_cli("ls", cwd=sub).out.splitlines()] == ["../other/o.txt", "a.txt", "../top.txt"]
    hooks = run_cli("hooks", "check", cwd=sub)
    assert hooks.code == 1
    assert "modified: a.txt: record it with `lattice add a.txt` or discard it with `lattice checkout a.txt`" in hooks.err
    assert "missing: ../top.txt: `lattice checkout ../top.txt`" in hooks.err


def test_json_and_porcelain_name_assets_from_the_root_wherever_they_run(nested):
    sub = nested.root / "sub"
    for args in (["status", "--json"], ["status", "--porcelain"], ["ls", "--json"]):
        assert run_cli(*args, cwd=sub).out == run_cli(*args, cwd=nested.root).out, args
    assert run_cli("status", "--porcelain", cwd=sub).out.splitlines() == [" M sub/a.txt", "?? sub/new.png", " D top.txt"]
    assert [e["path"] for e in run_cli("hooks", "check", "--json", cwd=sub).json] == ["sub/a.txt", "top.txt"]


def test_a_hint_suggests_a_command_that_works_from_the_folder_it_was_given_in(nested):
    import shlex

    from lattice.switch import switch
    from lattice.errors import Conflict

    sub = nested.root / "sub"
    ok(nested, "branch", "feat")
    refused = run_cli("switch", "feat", cwd=sub)
    assert refused.code == 12 and "unrecorded changes in sub/a.txt" in refused.err
    hint = refused.err.splitlines()[1]
    discard = next(c for c in hint.split("`")[1::2] if c.startswith("lattice checkout"))
    assert discard == "lattice checkout a.txt"
    assert run_cli(*shlex.split(discard)[1:], cwd=sub).code == 0  # the suggestion, run where it was made
    assert (nested.root / "sub/a.txt").read_text() == "a"
    assert run_cli("switch", "feat", cwd=sub).code == 0
    # The library, called after the CLI ran in sub/, names assets from the root again.
    (nested.root / "sub/a.txt").write_text("edited again")
    with pytest.raises(Conflict) as e:
        switch(Repository(nested.root), "main")
    assert "`lattice checkout sub/a.txt`" in e.value.hint


# -- stopped by a signal ---------------------------------------------------------


def start(repo, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lattice", *args], cwd=repo.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(cond, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def job_state(repo) -> str:
    return run_cli("queue", "ls", "--json", cwd=repo.root).json[0]["state"]


@pytest.mark.parametrize("sig, code, said", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_watch_stopped_by_a_signal_exits_as_every_command(tmp_repo, sig, code, said):
    p = start(tmp_repo, "watch")
    assert p.stderr.readline().startswith("watching ")
    p.send_signal(getattr(signal, sig))
    _, err = p.communicate(timeout=30)
    assert p.returncode == code and err.splitlines()[-2:] == ["stopped", said], err


def test_worker_first_sigterm_finishes_the_running_job_then_exits_143(tmp_repo):
    ok(tmp_repo, "gen", "s.txt", "--model", "test.text", "--set", "delay=1", "--detach")
    p = start(tmp_repo, "worker", "--slots", "1")
    assert p.stderr.readline().startswith("worker ")
    wait_for(lambda: job_state(tmp_repo) == "running")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert err.splitlines()[-3:] == ["worker: finishing running jobs; Ctrl-C again to hand them back to the queue",
                                     "worker: 1 succeeded", "terminated"]
    assert job_state(tmp_repo) == "succeeded" and len(tmp_repo.record("s.txt").versions) == 1


def test_worker_second_ctrl_c_hands_the_running_job_back_and_exits_130(tmp_repo):
    ok(tmp_repo, "gen", "h.txt", "--model", "test.hang", "--detach")
    p = start(tmp_repo, "worker", "--slots", "1")
    assert p.stderr.readline().startswith("worker ")
    wait_for(lambda: job_state(tmp_repo) == "running")
    p.send_signal(signal.SIGINT)
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "worker: stopping; handing running jobs back to the queue" in err and err.splitlines()[-1] == "interrupted"
    job = run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json[0]
    assert (job["state"], job["attempts"]) == ("queued", 0)


def test_worker_once_exits_as_render_does_when_a_job_it_ran_failed(tmp_repo):
    """`worker --once` in a CI script exited 0 whatever its jobs did; now
    with the failures' code (8: a generator failed), naming the job. A
    long-running worker stopped by a signal exits as before."""
    ok(tmp_repo, "gen", "f.txt", "--model", "test.fail", "--detach")
    p = start(tmp_repo, "worker", "--slots", "1")
    assert p.stderr.readline().startswith("worker ")
    wait_for(lambda: job_state(tmp_repo) == "failed")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143 and err.splitlines()[-2:] == ["worker: 1 failed", "terminated"], err

    ok(tmp_repo, "gen", "s.txt", "--model", "test.text", "--detach")
    r = run_cli("gen", "g.txt", "--model", "test.fail", "--detach", "--json", cwd=tmp_repo.root)
    job = r.json[0]["job"]
    r = run_cli("worker", "--once", "--json", cwd=tmp_repo.root)
    assert r.code == 8 and r.json == {"failed": 1, "succeeded": 1}, (r.out, r.err)
    assert r.err.splitlines()[-2:] == [f"error: job {job} failed: test.fail exited with 3",
                                       f"hint: boom: model exploded; `lattice queue show {job}` has its whole error; fix the cause, "
                                       f"then `lattice queue retry {job}` queues it again"], r.err
    assert run_cli("worker", "--once", cwd=tmp_repo.root).code == 0  # nothing left to run: nothing failed now


@pytest.mark.parametrize("args", [("status",), ("status", "--porcelain"), ("ls",), ("--version",)])
def test_quick_commands_start_without_heavy_modules(tmp_repo, args):
    """Start-up is most of a no-op `status`: the quick commands import no
    msgspec, pygit2, typer or rich, and not even `typing` (3 ms)."""
    (tmp_repo.root / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 64)
    ok(tmp_repo, "add", "a.png")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "lattice", *args],
                          cwd=tmp_repo.root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "lattice.cli.entry" in loaded  # the report is read, not empty
    assert not loaded & {"typing", "msgspec", "pygit2", "typer", "rich", "tomlkit", "zstandard", "imageio_ffmpeg"}, proc.stderr[-3000:]


def test_a_path_shown_from_inside_the_folder_that_stands_where_an_asset_was(tmp_repo):
    """An asset `foo` whose file a folder `foo/` replaced, seen from inside
    that folder: status and the hooks' hints named it `.`, and suggested
    `lattice add .`, which adds every file under the folder instead."""
    repo = tmp_repo.gen({"foo": "a", "d/e/x.txt": "x"})
    ok(repo, "add", "foo", "d/e/x.txt")
    (repo.root / "foo").unlink()
    (repo.root / "foo").mkdir()
    inside = repo.root / "foo"
    assert run_cli("status", cwd=inside).out.splitlines()[0].split() == ["modified:", "../foo"]
    hooks = run_cli("hooks", "check", cwd=inside)
    assert "modified: ../foo: record it with `lattice add ../foo` or discard it with `lattice checkout ../foo`" in hooks.err
    from lattice.paths import here, show_paths_from

    try:
        show_paths_from("d/e/f")
        assert [here("d/e"), here("d"), here("d/e/f"), here("d/e/x.txt")] == ["../../e", "../../../d", "../f", "../x.txt"]
    finally:
        show_paths_from("")


def test_a_path_outside_the_project_is_hinted_as_read_from_the_current_folder(nested):
    """The hint said to name files "relative to its root", while every
    command reads paths from the current folder."""
    hint = "hint: name files inside the project; paths are read from the current folder"
    r = run_cli("render", "../../x.txt", cwd=nested.root / "sub")
    assert r.code == 4 and r.err.splitlines()[1] == hint, r.err
    # Every other refusal of such a path gives the same hint (UnsafePath's own).
    ok(nested, "gen", "s.png", "--model", "ffmpeg.testsrc", "--set", "width=16", "--set", "height=16")
    for args in (["export", "../s.png", "-o", "../.lattice/x.png"], ["add", "../.lattice/config.toml"], ["show", ".."]):
        r = run_cli(*args, cwd=nested.root / "sub")
        assert r.code == 4 and r.err.splitlines()[1:] == [hint], (args, r.err)


@pytest.mark.parametrize("args", [["show", "a.png"], ["show", "a.png", "--json"], ["cat", "a.png"]])
def test_show_and_cat_start_without_typer_or_the_catalog(tmp_repo, args):
    """Scripts call `show --json` and `cat` in loops: they take the quick
    path (no typer, rich or pygit2: 109 -> 62 ms for `show` here), and `cat`
    records the object's use without loading gc's catalog and dataclasses."""
    (tmp_repo.root / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 64)
    ok(tmp_repo, "add", "a.png")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "lattice", *args],
                          cwd=tmp_repo.root, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    stderr = proc.stderr.decode()
    loaded = {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}
    assert "lattice.cli.entry" in loaded and "lattice.cli.quick" in loaded
    assert not loaded & {"typer", "rich", "pygit2", "lattice.catalog", "dataclasses"}, stderr[-3000:]
    if args[0] == "cat":
        assert proc.stdout == b"\x89PNG\r\n\x1a\n" + b"x" * 64
    elif "--json" in args:
        assert json.loads(proc.stdout)["path"] == "a.png"
