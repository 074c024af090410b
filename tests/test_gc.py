"""gc and du: what may go, what must stay, and bringing evicted outputs back."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import run_cli, run_proc
from lattice.repo import Repository

EVERYTHING = ("--keep-versions", "0", "--older-than", "0")


def gen(repo, name, model="test.text", seed=1, inputs=(), **params):
    args = ["gen", name, "--model", model, "--seed", str(seed)]
    for k, v in params.items():
        args += ["--set", f"{k}={v}"]
    for i in inputs:
        args += ["--input", i]
    r = run_cli(*args, cwd=repo.root)
    assert r.code == 0, r.err
    return r


def gc(repo, *args):
    r = run_cli("gc", "--json", *args, cwd=repo.root)
    assert r.code == 0, r.err
    return r.json


def objects_of(repo, name):
    return [v.object for v in repo.record(name).versions]


def evicted(plan_json):
    return sorted(e["object"] for e in plan_json["evictions"])


# -- what may go ------------------------------------------------------------------


def test_old_versions_go_current_and_pinned_stay(tmp_repo):
    for word in ("a", "b", "c", "d"):
        gen(tmp_repo, "x.txt", word=word)
    run_cli("pin", "x.txt@v2", cwd=tmp_repo.root)
    v1, v2, v3, v4 = objects_of(tmp_repo, "x.txt")
    dry = gc(tmp_repo, "--dry-run", *EVERYTHING)
    real = gc(tmp_repo, *EVERYTHING)
    assert evicted(dry) == evicted(real) == sorted([v1, v3])
    assert real["bytes"] == dry["bytes"] > 0
    has = tmp_repo.objects.has
    assert not has(v1) and has(v2) and not has(v3) and has(v4)


def test_default_policy_keeps_recent_versions(tmp_repo):
    for word in ("a", "b", "c"):
        gen(tmp_repo, "x.txt", word=word)
    # The [versions] limits keep the newest versions, and a day-old output is not unused for long.
    assert gc(tmp_repo, "--dry-run")["evictions"] == []
    assert len(gc(tmp_repo, "--dry-run", "--keep-versions", "0")["evictions"]) == 0  # too recently used
    assert len(gc(tmp_repo, "--dry-run", "--older-than", "0")["evictions"]) == 0  # within the version limit


def test_imports_and_nondeterministic_outputs_stay_unless_asked(tmp_repo):
    tmp_repo.gen({"i.txt": "one"})
    run_cli("add", "i.txt", cwd=tmp_repo.root)
    tmp_repo.gen({"i.txt": "two"})
    run_cli("add", "i.txt", cwd=tmp_repo.root)
    gen(tmp_repo, "r.txt", model="test.random")
    gen(tmp_repo, "r.txt", model="test.random", seed=2)
    assert gc(tmp_repo, "--dry-run", *EVERYTHING)["evictions"] == []
    plan = gc(tmp_repo, "--dry-run", *EVERYTHING, "--include-nondeterministic")
    assert evicted(plan) == [objects_of(tmp_repo, "r.txt")[0]]  # never the import


def test_versions_on_tags_and_branches_are_protected(tmp_repo):
    gen(tmp_repo, "x.txt", word="tagged")
    assert run_cli("tag", "release", cwd=tmp_repo.root).code == 0
    gen(tmp_repo, "x.txt", word="later")
    gen(tmp_repo, "x.txt", word="latest")
    v1, v2, _ = objects_of(tmp_repo, "x.txt")
    assert evicted(gc(tmp_repo, *EVERYTHING)) == [v2]
    assert tmp_repo.objects.has(v1)


def test_include_current_evicts_remakable_current_outputs(tmp_repo, run_log):
    gen(tmp_repo, "a.txt", word="up")
    gen(tmp_repo, "b.txt", model="test.join", inputs=["a.txt"])
    a, b = objects_of(tmp_repo, "a.txt")[0], objects_of(tmp_repo, "b.txt")[0]
    assert sorted(evicted(gc(tmp_repo, *EVERYTHING, "--include-current"))) == sorted([a, b])
    assert run_cli("status", "--porcelain", cwd=tmp_repo.root).out.split("\n")[:2] == [" E a.txt", " E b.txt"]
    before = len(run_log())
    # Their working files hold them: not out of date, and render takes them back, running nothing.
    assert run_cli("render", "--check", cwd=tmp_repo.root).code == 0
    assert run_cli("render", cwd=tmp_repo.root).code == 0
    assert tmp_repo.objects.has(a) and tmp_repo.objects.has(b) and len(run_log()) == before
    # Without their working files: re-made.
    assert sorted(evicted(gc(tmp_repo, *EVERYTHING, "--include-current"))) == sorted([a, b])
    (tmp_repo.root / "a.txt").unlink()
    (tmp_repo.root / "b.txt").unlink()
    assert run_cli("render", "--check", cwd=tmp_repo.root).code == 1
    assert run_cli("render", cwd=tmp_repo.root).code == 0
    assert tmp_repo.objects.has(a) and tmp_repo.objects.has(b)
    assert len(run_log()) == before + 2


def test_makeable_needs_inputs(tmp_repo):
    tmp_repo.gen({"src.txt": "imported"})
    run_cli("add", "src.txt", cwd=tmp_repo.root)
    gen(tmp_repo, "d.txt", model="test.join", inputs=["src.txt"])
    gen(tmp_repo, "d.txt", model="test.join", inputs=["src.txt"], seed=2)
    old_d = objects_of(tmp_repo, "d.txt")[0]
    # Lose the import: nothing derived from it can be re-made any more.
    tmp_repo.objects.remove(objects_of(tmp_repo, "src.txt")[0])
    assert old_d not in evicted(gc(tmp_repo, "--dry-run", *EVERYTHING))


def test_unreferenced_objects_go_after_the_grace_period(tmp_repo):
    gen(tmp_repo, "x.txt")
    old = tmp_repo.objects.put_bytes(b"orphan, old" * 100).oid
    fresh = tmp_repo.objects.put_bytes(b"orphan, just written by a running add" * 100).oid
    past = time.time() - 15 * 86400
    os.utime(tmp_repo.objects.locate(old), (past, past))
    plan = gc(tmp_repo)
    assert [(e["object"], e["reason"]) for e in plan["evictions"]] == [(old, "unreferenced")]
    assert tmp_repo.objects.has(fresh) and not tmp_repo.objects.has(old)


def test_versions_only_history_names_are_never_swept(tmp_repo):
    """A `git checkout` of an older manifest leaves a version no branch tip
    lists, but history does (and the user's git commit of it): its object
    is kept past the grace period, and `du` does not count it unreferenced."""
    from lattice.add import add

    (tmp_repo.root / "x.txt").write_text("one")
    add(tmp_repo, ["x.txt"], cwd=tmp_repo.root)
    mf = tmp_repo.manifest.file_of("x.txt")
    older = mf.read_bytes()
    (tmp_repo.root / "x.txt").write_text("two: an import, which no recipe cache names")
    add(tmp_repo, ["x.txt"], cwd=tmp_repo.root)
    v2 = objects_of(tmp_repo, "x.txt")[-1]
    mf.unlink()
    mf.write_bytes(older)  # as git writes a checked-out file
    assert run_cli("status", cwd=tmp_repo.root).code == 0  # the manifest moved back: indexed, committed
    assert v2 not in objects_of(Repository.find(tmp_repo.root), "x.txt")
    past = time.time() - 15 * 86400
    os.utime(tmp_repo.objects.locate(v2), (past, past))
    orphan = tmp_repo.objects.put_bytes(b"named by nothing" * 100).oid
    os.utime(tmp_repo.objects.locate(orphan), (past, past))
    assert [(e["object"], e["reason"]) for e in gc(tmp_repo)["evictions"]] == [(orphan, "unreferenced")]
    assert tmp_repo.objects.has(v2)
    assert run_cli("du", "--json", cwd=tmp_repo.root).json["unreferenced"] == 0


def test_the_run_log_counts_swept_orphans_as_no_eviction_on_request(tmp_repo):
    """fsck calls a version's bytes "evicted at your request" only for what
    gc evicted by policy, not for an orphan it swept as unreferenced."""
    from lattice.gc import evicted_for_good

    gen(tmp_repo, "x.txt")
    orphan = tmp_repo.objects.put_bytes(b"named by nothing" * 100).oid
    past = time.time() - 15 * 86400
    os.utime(tmp_repo.objects.locate(orphan), (past, past))
    assert [(e["object"], e["reason"]) for e in gc(tmp_repo)["evictions"]] == [(orphan, "unreferenced")]
    assert orphan not in evicted_for_good(Repository.find(tmp_repo.root))


def test_size_cap_evicts_least_recently_used_first(tmp_repo):
    for word in ("a", "b", "c", "d"):
        gen(tmp_repo, "x.txt", word=word, repeat=50)
    v1, v2, v3, _ = objects_of(tmp_repo, "x.txt")
    run_cli("cat", "x.txt@v1", cwd=tmp_repo.root)  # v1 is now the most recently used
    total = sum(tmp_repo.objects.stored_size(o) for o in objects_of(tmp_repo, "x.txt"))
    cap = total - tmp_repo.objects.stored_size(v2) - 1
    plan = gc(tmp_repo, "--dry-run", "--max-size", str(cap))
    assert [e["object"] for e in plan["evictions"]] == [v2, v3]
    assert {e["reason"] for e in plan["evictions"]} == {"size cap"}


def test_policy_config(tmp_repo):
    from lattice.gc import DAY, policies, policy_class

    cfg = {"gc": {"policy": {"image": {"unused_for": "2d", "max_size": "1GB"}, "video": {"keep": "forever"}}}}
    p = policies(cfg)
    assert p["image"].unused_for == 2 * DAY and p["image"].max_size == 1 << 30 and p["video"].forever
    assert p["thumbnail"].forever and p["intermediate"].unused_for == DAY
    assert policy_class("shots/s1/pose_01.png", "image", [], "x") == "intermediate"
    assert policy_class("thumbs/a.png", "image", [], "x") == "thumbnail"
    assert policy_class("a.png", "image", ["thumbnail"], "x") == "thumbnail"
    from lattice.errors import InvalidInput

    with pytest.raises(InvalidInput, match="not an age"):
        policies({"gc": {"policy": {"image": {"unused_for": "soon"}}}})
    with pytest.raises(InvalidInput, match="not a known policy class"):
        policies({"gc": {"policy": {"sprites": {}}}})


@pytest.mark.parametrize("line, message", [
    ("gc = 3", "config [gc] = 3 is not a table"),
    ("versions = 3", "config [versions] = 3 is not a table"),
    ("[gc]\npolicy = 5", "config [gc.policy] = 5 is not a table"),
    ("[gc.policy.image]\nunused_for = \"soon\"", "config [gc.policy.image] unused_for: 'soon' is not an age"),
])
def test_a_gc_config_it_cannot_use_is_one_line_before_any_job(tmp_repo, line, message):
    """`gc = 3` (or `[gc] policy = 5`, `versions = 3`) in config made gc and du
    fail with "internal error: AttributeError". A bad policy was met inside
    the gc job: "gc job N failed: ..." with a hint to `queue show` it, and a
    failed job left in the queue; it is refused before any job now."""
    cfg = tmp_repo.dir / "config.toml"
    cfg.write_text(line + "\n" + cfg.read_text() if not line.startswith("[") else cfg.read_text() + "\n" + line + "\n")
    for args in (["gc", "--dry-run"], ["gc"], ["du"]):
        r = run_cli(*args, cwd=tmp_repo.root)
        assert r.code == 4 and r.err.splitlines()[0] == f"error: {message}", (args, r.err)
        assert r.err.splitlines()[1].startswith("hint: write it ")
    assert run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json == []


def test_thumbnails_are_kept_forever(tmp_repo):
    for word in ("a", "b"):
        gen(tmp_repo, "thumb.txt", word=word)
    assert gc(tmp_repo, "--dry-run", *EVERYTHING)["evictions"] == []


def test_bad_gc_options_are_one_line_errors(tmp_repo):
    r = run_cli("gc", "--older-than", "soon", cwd=tmp_repo.root)
    assert r.code == 4 and r.err.startswith("error: --older-than: 'soon' is not an age")
    r = run_cli("gc", "--max-size", "lots", cwd=tmp_repo.root)
    assert r.code == 4 and "not a size" in r.err


# -- bringing evicted outputs back ------------------------------------------------------


def test_cat_and_checkout_regenerate_evicted_outputs(tmp_repo, run_log):
    gen(tmp_repo, "a.txt", word="one")
    gen(tmp_repo, "b.txt", model="test.join", inputs=["a.txt"])
    gen(tmp_repo, "a.txt", word="two")
    v1 = objects_of(tmp_repo, "a.txt")[0]
    gc(tmp_repo, *EVERYTHING, "--include-current")
    assert not tmp_repo.objects.has(v1)
    refused = run_cli("cat", "a.txt@v1", "--no-regen", cwd=tmp_repo.root)
    assert refused.code == 4 and "evicted by gc" in refused.err and "hint:" in refused.err
    r = run_cli("cat", "a.txt@v1", cwd=tmp_repo.root)
    assert r.code == 0 and r.out == "one:1\n" and "re-making evicted a.txt@v1" in r.err
    # b.txt's recipe read a.txt v1, which must come back first (a chain of restore jobs).
    os.unlink(tmp_repo.root / "b.txt")
    refused = run_cli("checkout", "b.txt", "--no-regen", cwd=tmp_repo.root)
    assert refused.code == 4 and "lattice render b.txt" in refused.err
    tmp_repo.objects.remove(v1)
    r = run_cli("checkout", "b.txt", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    assert (tmp_repo.root / "b.txt").read_bytes() == b"one:1\n#1"


def test_checkout_over_a_folder_in_the_way_refuses_before_re_making_anything(tmp_repo, run_log):
    """The refusal comes first: re-making an evicted output that cannot be
    written is work thrown away."""
    gen(tmp_repo, "a.txt", word="one")
    gc(tmp_repo, *EVERYTHING, "--include-current")
    os.unlink(tmp_repo.root / "a.txt")
    (tmp_repo.root / "a.txt").mkdir()
    runs = len(run_log())
    r = run_cli("checkout", "a.txt", cwd=tmp_repo.root)
    assert r.code == 12 and "a folder is in the way" in r.err
    assert len(run_log()) == runs  # nothing re-made


_CTRL_C_WHILE_REMAKING = """
import os, signal, sys, time
import lattice_testgens
from lattice.cli.entry import run
real = lattice_testgens.Text.run

def run_interrupted(self, ctx):  # the re-make runs; the user presses Ctrl-C
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(1)
    return real(self, ctx)

lattice_testgens.Text.run = run_interrupted
sys.exit(run())  # as the `lattice` script: sys.argv[1:] are its arguments
"""


@pytest.mark.parametrize("command", ["checkout", "cat"])
def test_ctrl_c_while_re_making_an_evicted_output_names_the_command(tmp_repo, command):
    """The re-make's job, given up on Ctrl-C, records the command the user
    ran as its canceller (`lattice queue show`). Before, it said "cancelled
    by `lattice`", whatever the command was."""
    gen(tmp_repo, "a.txt", word="one")
    gc(tmp_repo, *EVERYTHING, "--include-current")
    os.unlink(tmp_repo.root / "a.txt")
    proc = subprocess.Popen([sys.executable, "-c", _CTRL_C_WHILE_REMAKING, command, "a.txt"], cwd=tmp_repo.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.endswith("interrupted\n") and "Traceback" not in err, err
    [job] = [j for j in run_cli("queue", "ls", "--all", "--json", cwd=tmp_repo.root).json if j["type"] == "gc"
             and j["state"] != "succeeded"]
    assert job["state"] == "cancelled", job
    by = job["cancelled_by"]
    assert (by["command"], by["reason"], by["pid"]) == (f"lattice {command}", "interrupted", proc.pid)
    shown = run_cli("queue", "show", str(job["id"]), cwd=tmp_repo.root).out
    assert f"cancelled:  by `lattice {command}` (" in shown, shown


def test_an_output_nothing_can_re_make_is_refused_as_such_not_as_a_failed_generator(tmp_repo, run_log):
    """cat and checkout of an output gc evicted at the user's request, or
    whose generator is not the one installed, exited 8 "a generator failed"
    (or queued a job that did) though no generator ran: exit 4, saying why
    and what to do, before any job; bytes lost without gc are damage (5)."""
    gen(tmp_repo, "r.txt", model="test.random")
    gen(tmp_repo, "b.txt", model="test.join", inputs=["r.txt"])
    assert run_cli("regen", "r.txt", "--seed", "2", cwd=tmp_repo.root).code == 0  # b.txt follows
    (r1, r2), (b1, _) = objects_of(tmp_repo, "r.txt"), objects_of(tmp_repo, "b.txt")
    gc(tmp_repo, *EVERYTHING, "--include-nondeterministic")
    tmp_repo.objects.remove(b1)  # as `--include-current` would once b.txt moved on: a deterministic output of a gone input
    regen = "hint: those bytes are gone for good; `lattice regen {}` records a new output\n"
    for args in (["cat", "r.txt@v1"], ["cat", "r.txt@v1", "--no-regen"]):
        r = run_cli(*args, cwd=tmp_repo.root)
        assert r.code == 4 and r.err == (f"error: r.txt@v1: its output {r1[:12]} is gone: it was evicted by `lattice gc "
                                         "--include-nondeterministic` at your request, and nothing can re-make it\n"
                                         + regen.format("r.txt")), r.err
    r = run_cli("cat", "b.txt@v1", cwd=tmp_repo.root)
    assert r.code == 4 and r.err.startswith(f"error: b.txt@v1: its output is gone, and so is that of its input r.txt@v1 ({r1[:12]}): "
                                            "it was evicted by"), r.err
    assert r.err.endswith(regen.format("b.txt"))
    gc(tmp_repo, *EVERYTHING, "--include-nondeterministic", "--include-current")
    (tmp_repo.root / "r.txt").unlink()
    r = run_cli("checkout", "r.txt", cwd=tmp_repo.root)
    assert r.code == 4 and f"r.txt@v2: its output {r2[:12]} is gone: it was evicted" in r.err, r.err
    queued = run_cli("queue", "ls", "--all", "--json", cwd=tmp_repo.root).json
    assert not [j for j in queued if j["payload"].get("op") == "restore"], queued  # nothing was queued

    # Lost without gc: damage, which fsck reports.
    gen(tmp_repo, "s.txt", model="test.random")
    [s1] = objects_of(tmp_repo, "s.txt")
    tmp_repo.objects.remove(s1)
    (tmp_repo.root / "s.txt").unlink()
    r = run_cli("cat", "s.txt", cwd=tmp_repo.root)
    assert r.code == 5 and r.err == (f"error: s.txt@v1: its output {s1[:12]} is gone: its generator test.random is not deterministic, "
                                     "so nothing can re-make it\nhint: `lattice fsck` reports lost objects; `lattice regen s.txt` "
                                     "records a new output\n"), r.err

    # Made by another version of its generator than the one installed here.
    gen(tmp_repo, "t.txt", word="one")
    [t1] = objects_of(tmp_repo, "t.txt")
    mf = tmp_repo.manifest.file_of("t.txt")
    mf.write_text(mf.read_text().replace('generator_version = "1"', 'generator_version = "0.9"', 1))
    tmp_repo.objects.remove(t1)
    (tmp_repo.root / "t.txt").unlink()
    runs = len(run_log())
    r = run_cli("cat", "t.txt", cwd=tmp_repo.root)
    assert r.code == 4 and r.err == (f"error: t.txt@v1: its output {t1[:12]} is gone: it cannot be re-made here: it was made by "
                                     "test.text version 0.9, and version 1 is installed\nhint: install test.text version 0.9, "
                                     "or `lattice regen t.txt` records a new output with a generator installed here\n"), r.err
    assert len(run_log()) == runs


def test_status_says_what_works_for_a_missing_output_nothing_can_bring_back(tmp_repo):
    """A non-deterministic output that `gc --include-nondeterministic
    --include-current` evicted, its working file deleted: status listed it
    as missing, and checkout (what missing points to) refuses it. status
    now gives checkout's hint for it, as does `hooks check`; an ordinary
    missing file gets none."""
    gen(tmp_repo, "r.txt", model="test.random")
    tmp_repo.gen({"ok.txt": "imported"})
    assert run_cli("add", "ok.txt", cwd=tmp_repo.root).code == 0
    gc(tmp_repo, *EVERYTHING, "--include-nondeterministic", "--include-current")
    for name in ("r.txt", "ok.txt"):
        (tmp_repo.root / name).unlink()
    hint = "those bytes are gone for good; `lattice regen r.txt` records a new output"
    assert run_cli("checkout", "r.txt", cwd=tmp_repo.root).err.endswith(f"hint: {hint}\n")
    r = run_cli("status", cwd=tmp_repo.root)
    assert (r.code, r.out, r.err) == (0, "missing:   ok.txt\nmissing:   r.txt\n", f"hint: r.txt: {hint}\n"), r.err
    assert run_cli("status", "--porcelain", cwd=tmp_repo.root).err == ""
    r = run_cli("hooks", "check", "--json", cwd=tmp_repo.root)
    fixes = {f["path"]: f["fix"] for f in r.json}
    assert r.code == 1 and fixes["r.txt"] == hint and "lattice checkout ok.txt" in fixes["ok.txt"], r.out


def test_render_refuses_an_output_nothing_can_re_make_as_cat_does(tmp_repo, run_log):
    """`render` of a current output that `gc --include-nondeterministic
    --include-current` evicted ran its non-deterministic generator again and
    failed "re-made output differs" (exit 8), unlike cat and checkout. Now
    it says it as they do, with their exit codes (4 gone for good, 5 bytes
    lost), runs no generator and queues no job; what is made from it is
    skipped with the same cause."""
    gen(tmp_repo, "r.txt", model="test.random")
    gen(tmp_repo, "b.txt", model="test.join", inputs=["r.txt"])
    [r1] = objects_of(tmp_repo, "r.txt")
    gc(tmp_repo, *EVERYTHING, "--include-nondeterministic", "--include-current")
    for name in ("r.txt", "b.txt"):
        (tmp_repo.root / name).unlink()
    runs, jobs = len(run_log()), len(run_cli("queue", "ls", "--all", "--json", cwd=tmp_repo.root).json)
    r = run_cli("render", cwd=tmp_repo.root)
    assert r.code == 4 and r.err.splitlines()[:3] == [
        f"failed: r.txt: r.txt@v1: its output {r1[:12]} is gone: it was evicted by `lattice gc --include-nondeterministic` "
        "at your request, and nothing can re-make it",
        "    hint: those bytes are gone for good; `lattice regen r.txt` records a new output",
        "skipped: b.txt: its input r.txt failed"], r.err
    assert len(run_log()) == runs and len(run_cli("queue", "ls", "--all", "--json", cwd=tmp_repo.root).json) == jobs
    assert "queue ls --state failed" not in r.err, r.err  # no job was queued, so none failed: no hint about jobs

    # Lost without gc: damage (5), as cat says.
    gen(tmp_repo, "s.txt", model="test.random")
    [s1] = objects_of(tmp_repo, "s.txt")
    tmp_repo.objects.remove(s1)
    (tmp_repo.root / "s.txt").unlink()
    r = run_cli("render", "s.txt", "--json", cwd=tmp_repo.root)
    assert r.code == 5 and [(o["status"], o["exit_code"], o["hint"]) for o in r.json] == [
        ("failed", 5, "`lattice fsck` reports lost objects; `lattice regen s.txt` records a new output")], r.out


def test_a_remake_step_refuses_what_nothing_can_re_make_before_running_anything(tmp_repo, run_log):
    """The job of a remake step (a working file that changed after render
    planned, a step that finds its version moved on) checks too: an import
    whose bytes are gone was a failed generator (8), an evicted
    non-deterministic output a generator run that differed (8)."""
    from lattice.errors import RepositoryCorrupt
    from lattice.remake import Evicted
    from lattice.render import Step, run_step

    tmp_repo.gen({"i.txt": "imported"})
    assert run_cli("add", "i.txt", cwd=tmp_repo.root).code == 0
    gen(tmp_repo, "r.txt", model="test.random")
    tmp_repo.objects.remove(tmp_repo.record("i.txt").current.object)
    gc(tmp_repo, *EVERYTHING, "--include-nondeterministic", "--include-current")
    for name in ("i.txt", "r.txt"):
        (tmp_repo.root / name).unlink()
    runs = len(run_log())
    with pytest.raises(RepositoryCorrupt, match="i.txt@v1: its output .* is gone: it was imported") as e:
        run_step(tmp_repo, Step("i.txt", "remake"))
    assert e.value.exit_code == 5
    with pytest.raises(Evicted, match="at your request, and nothing can re-make it") as e:
        run_step(tmp_repo, Step("r.txt", "remake"))
    assert e.value.exit_code == 4 and len(run_log()) == runs


def test_a_failed_re_make_says_its_jobs_own_hint(tmp_repo):
    """`cat` of an output whose re-make failed gave only "`lattice queue
    show N` has the details", losing what the job's error said to do."""
    gen(tmp_repo, "a.txt", word="one")
    path = tmp_repo.manifest.file_of("a.txt")
    path.write_text(path.read_text().replace(objects_of(tmp_repo, "a.txt")[0], "0" * 64))  # an output its recipe does not make
    r = run_cli("cat", "a.txt", cwd=tmp_repo.root)
    job = run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json[0]["id"]
    assert r.code == 8 and r.err.splitlines()[-1] == (
        "hint: the generator is not reproducible here; `lattice regen a.txt` records the new output as a version; "
        f"`lattice queue show {job}` has the details"), r.err


def test_a_remade_output_with_another_hash_is_refused(tmp_repo):
    from lattice.errors import GeneratorFailed
    from lattice.remake import restore_object

    gen(tmp_repo, "a.txt", word="one")
    # The record claims an output its recipe does not make.
    path = tmp_repo.manifest.file_of("a.txt")
    path.write_text(path.read_text().replace(objects_of(tmp_repo, "a.txt")[0], "0" * 64))
    with pytest.raises(GeneratorFailed, match="differs from the recorded") as e:
        restore_object(tmp_repo, "a.txt", 1)
    assert e.value.retryable is False  # it ran, and would differ again
    assert tmp_repo.index.cache_get(tmp_repo.record("a.txt").current.recipe.key) is None


# -- fsck after gc ------------------------------------------------------------------------


def test_fsck_notes_what_gc_evicted_on_request_and_passes(tmp_repo):
    """`gc --include-nondeterministic` evicts bytes nothing can re-make, at
    the user's request: fsck notes it (its own kind in --json) and passes,
    for an older version, for what was made from it, and for a current one
    once its working file is gone too; a working file that still holds the
    bytes is stored again by --repair."""
    gen(tmp_repo, "r.txt", model="test.random")
    gen(tmp_repo, "b.txt", model="test.join", inputs=["r.txt"])
    assert run_cli("regen", "r.txt", "--seed", "2", cwd=tmp_repo.root).code == 0  # b.txt follows
    (r1, r2), (b1, _) = objects_of(tmp_repo, "r.txt"), objects_of(tmp_repo, "b.txt")
    assert evicted(gc(tmp_repo, *EVERYTHING, "--include-nondeterministic")) == sorted([r1, b1])
    r = run_cli("fsck", "--json", cwd=tmp_repo.root)
    assert r.code == 0 and r.json["ok"] and r.json["problems"] == [], r.out
    notes = {n["subject"]: (n["kind"], n["message"]) for n in r.json["notes"]}
    assert notes == {
        "r.txt@v1": ("absent", f"object {r1} is not in this store: an older version, evicted by "
                               "`lattice gc --include-nondeterministic` at your request; nothing can re-make it"),
        "b.txt@v1": ("absent", f"object {b1} is not in this store: an older version, it cannot be re-made: "
                               "its input r.txt@v1 was evicted by `lattice gc --include-nondeterministic` at your request"),
    }
    r = run_cli("fsck", cwd=tmp_repo.root)
    assert r.code == 0 and f"note: r.txt@v1: object {r1} is not in this store: an older version, evicted" in r.out
    assert r.out.endswith("ok: 2 assets, 2 objects\n")
    assert run_cli("fsck", "--repair", cwd=tmp_repo.root).code == 0

    # The current version too: its working file still holds it, then not.
    assert r2 in evicted(gc(tmp_repo, *EVERYTHING, "--include-nondeterministic", "--include-current"))
    r = run_cli("fsck", "--json", cwd=tmp_repo.root)
    assert r.code == 0 and {"subject": "r.txt@v2", "kind": "absent", "repaired": "",
                            "message": f"object {r2} is not in the store, but the working file of r.txt holds it; "
                                       "`lattice fsck --repair` stores it again"} in r.json["notes"]
    r = run_cli("fsck", "--repair", cwd=tmp_repo.root)
    assert r.code == 0 and "[repaired: stored again from r.txt]" in r.out and tmp_repo.objects.has(r2)
    gc(tmp_repo, *EVERYTHING, "--include-nondeterministic", "--include-current")
    (tmp_repo.root / "r.txt").unlink()
    r = run_cli("fsck", "--json", cwd=tmp_repo.root)
    assert r.code == 0 and r.json["problems"] == []
    assert {"subject": "r.txt@v2", "kind": "absent", "repaired": "", "message": f"object {r2} is not in this store: evicted by "
            "`lattice gc --include-nondeterministic` at your request; nothing can re-make it"} in r.json["notes"]


def test_fsck_fails_for_a_current_output_lost_without_gc(tmp_repo):
    """The same absence that gc did not cause is damage: exit 1, naming the
    version, why nothing can re-make it and what to do."""
    gen(tmp_repo, "s.txt", model="test.random")
    [s1] = objects_of(tmp_repo, "s.txt")
    tmp_repo.objects.remove(s1)
    (tmp_repo.root / "s.txt").unlink()
    r = run_cli("fsck", cwd=tmp_repo.root)
    assert r.code == 1 and r.out == (f"reference: s.txt@v1: object {s1} is missing; its generator test.random is not "
                                     "deterministic, so nothing can re-make it; `lattice regen s.txt` records a new output\n")
    assert run_cli("fsck", "--repair", cwd=tmp_repo.root).code == 1  # nothing to repair it from


def test_fsck_fails_for_an_evicted_output_the_installed_generator_cannot_make_again(tmp_repo):
    """An output made by another version of its generator (a clone of a
    project made with an older release) is re-made by nothing installed
    here: once its bytes are gone, fsck says so and how to go on, as render
    would refuse it, instead of passing it as a cache; its dependent, whose
    input cannot come back, is named too."""
    gen(tmp_repo, "t.txt", word="one")
    gen(tmp_repo, "u.txt", model="test.join", inputs=["t.txt"])
    [t1], [u1] = objects_of(tmp_repo, "t.txt"), objects_of(tmp_repo, "u.txt")
    mf = tmp_repo.manifest.file_of("t.txt")
    recorded = tmp_repo.record("t.txt").current.recipe.generator_version
    mf.write_text(mf.read_text().replace(f'generator_version = "{recorded}"', 'generator_version = "0.9"', 1))
    for oid, name in ((t1, "t.txt"), (u1, "u.txt")):
        tmp_repo.objects.remove(oid)
        (tmp_repo.root / name).unlink()
    r = run_cli("fsck", cwd=tmp_repo.root)
    assert r.code == 1, r.out
    assert (f"reference: t.txt@v1: object {t1} is missing; it cannot be re-made: it was made by test.text version 0.9, "
            f"and version {recorded} is installed; `lattice regen t.txt` records a new version with the generator installed here") in r.out
    assert f"reference: u.txt@v1: object {u1} is missing; it cannot be re-made: its input t.txt@v1 is not in this store either" in r.out
    assert run_cli("regen", "t.txt", "--set", "word=two", cwd=tmp_repo.root).code == 0
    r = run_cli("fsck", cwd=tmp_repo.root)  # u.txt followed: what is gone is older versions, noted
    assert r.code == 0 and f"note: t.txt@v1: object {t1} is not in this store: an older version, it cannot be re-made: it was made by test.text version 0.9" in r.out, r.out


def test_gc_logs_every_object_it_evicts_for_good(tmp_repo):
    """The run log lists, in full, what no deterministic recipe makes again;
    fsck reads it (older runs logged only their first 10,000 objects)."""
    from lattice.gc import evicted_for_good

    gen(tmp_repo, "t.txt", word="one")
    gen(tmp_repo, "t.txt", word="two")
    gen(tmp_repo, "r.txt", model="test.random")
    gen(tmp_repo, "r.txt", model="test.random", seed=2)
    assert evicted_for_good(tmp_repo) == set()
    plan = gc(tmp_repo, *EVERYTHING, "--include-nondeterministic")
    t1, r1 = objects_of(tmp_repo, "t.txt")[0], objects_of(tmp_repo, "r.txt")[0]
    assert evicted(plan) == sorted([t1, r1])
    from lattice.storage_db import storage_db

    db = storage_db(tmp_repo)
    [(detail,)] = db.execute("SELECT detail FROM runs").fetchall()
    db.close()
    assert __import__("json").loads(detail)["for_good"] == [r1]
    assert r1 in evicted_for_good(tmp_repo)


# -- du -----------------------------------------------------------------------------------


def test_du_reports_regenerable_permanent_evicted_and_savings(tmp_repo):
    tmp_repo.gen({"i.txt": "imported bytes"})
    run_cli("add", "i.txt", cwd=tmp_repo.root)
    for word in ("a", "b"):
        gen(tmp_repo, "x.txt", word=word, repeat=20)
    before = run_cli("du", "--json", cwd=tmp_repo.root).json
    assert before["total"]["permanent"] > 0 and before["total"]["regenerable"] > 0
    freed = gc(tmp_repo, *EVERYTHING)["bytes"]
    after = run_cli("du", "--json", "--by", "generator", cwd=tmp_repo.root).json
    assert after["gc_saved"] == freed and after["gc_runs"] == 1
    assert after["total"]["evicted"] > 0
    assert after["dna_ratio"] > 0 and after["outputs_bytes"] >= before["total"]["present"]
    assert set(after["groups"]) == {"imported", "test.text"}
    branch = run_cli("du", "--json", "--by", "branch", cwd=tmp_repo.root).json
    assert "working tree" in branch["groups"] and "branch:main" in branch["groups"]
    assert run_cli("du", "--by", "colour", cwd=tmp_repo.root).code == 4


def test_a_kinds_size_cap_counts_the_bytes_it_cannot_evict_too(tmp_repo):
    """Four equal versions, the current one protected, a cap of two: the
    two oldest go (the cap counts the current version's bytes as well)."""
    for word in ("w1", "w2", "w3", "w4"):
        gen(tmp_repo, "x.txt", word=word, repeat=50)
    size = tmp_repo.objects.stored_size(objects_of(tmp_repo, "x.txt")[0])
    with open(tmp_repo.dir / "config.toml", "a") as f:
        f.write(f"\n[gc.policy.other]\nmax_size = {2 * size}\n")
    v1, v2, v3, v4 = objects_of(tmp_repo, "x.txt")
    assert evicted(gc(tmp_repo, "--dry-run")) == sorted([v1, v2])


def test_gc_sweeps_old_recipe_key_locks_fsck_leaves_them(tmp_repo):
    """One lock file per recipe ever made (lattice.produce.produce): gc removes
    those past its grace period, so .lattice/tmp does not grow for ever."""
    gen(tmp_repo, "x.txt", word="one")
    locks = sorted((tmp_repo.dir / "tmp").glob("key-*"))
    assert locks
    old = time.time() - 30 * 86400
    for p in locks:
        os.utime(p, (old, old))
    assert run_cli("fsck", cwd=tmp_repo.root).code == 0 and all(p.exists() for p in locks)
    gc(tmp_repo)
    assert not any(p.exists() for p in locks)


def test_gc_sweeps_a_killed_frames_exports_folder_in_the_project_after_its_grace_period(tmp_repo):
    """A frames export inside the project killed outright leaves its frames
    so far in a folder named as a temp file is (`.fr.tmp-PID-N`) beside the
    project's files: gc listed it past the grace period, counted 4 KiB for
    it and "removed" it, but unlink failed on the folder and it stayed."""
    gen(tmp_repo, "x.txt", word="one")
    temp = tmp_repo.root / ".fr.tmp-999999-1"
    temp.mkdir()
    (temp / "frame_00001.png").write_bytes(b"f" * 50_000)
    old = time.time() - 30 * 86400
    os.utime(temp, (old, old))
    dry = gc(tmp_repo, "--dry-run")
    assert dry["temps"] == [str(temp)] and dry["temp_bytes"] == 50_000
    assert gc(tmp_repo)["temps"] == [str(temp)] and not temp.exists()


def test_du_counts_bytes_an_import_shares_with_an_output_as_permanent(tmp_repo):
    """gc never evicts bytes an import holds, even when a recipe makes the
    same bytes: du must not promise them back as regenerable."""
    gen(tmp_repo, "x.txt", word="same", repeat=20)
    (tmp_repo.root / "mine.txt").write_bytes((tmp_repo.root / "x.txt").read_bytes())
    run_cli("add", "mine.txt", cwd=tmp_repo.root)
    total = run_cli("du", "--json", cwd=tmp_repo.root).json["total"]
    assert total["regenerable"] == 0 and total["permanent"] == total["present"] > 0


# -- the property: after gc, nothing current or pinned is lost ---------------------------

dag = st.lists(
    st.tuples(st.integers(0, 5), st.lists(st.integers(0, 5), max_size=2), st.integers(1, 3)),
    min_size=1, max_size=5,
)
options = st.fixed_dictionaries({
    "keep": st.sampled_from([None, 0, 1]),
    "older": st.sampled_from([None, "0", "1h"]),
    "cap": st.sampled_from([None, "0", "100"]),
    "current": st.booleans(),
    "nondet": st.booleans(),
    "pin": st.booleans(),
})


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dag=dag, opts=options)
def test_property_gc_never_loses_current_or_pinned(dag, opts):
    with tempfile.TemporaryDirectory() as d:
        repo = Repository.init(Path(d) / "p")
        names = []
        for i, (word, parents, regens) in enumerate(dag):
            name = f"n{i}.txt"
            inputs = sorted({names[p % len(names)] for p in parents}) if names and parents else []
            for r in range(regens):
                if inputs:
                    gen(repo, name, model="test.join", seed=r + 1, inputs=inputs)
                elif word == 5:
                    gen(repo, name, model="test.random", seed=r + 1)
                else:
                    gen(repo, name, word=f"w{word}", seed=r + 1)
            names.append(name)
        if opts["pin"]:
            run_cli("pin", f"{names[0]}@v1", cwd=repo.root)
        args = []
        if opts["keep"] is not None:
            args += ["--keep-versions", str(opts["keep"])]
        if opts["older"]:
            args += ["--older-than", opts["older"]]
        if opts["cap"]:
            args += ["--max-size", opts["cap"]]
        if opts["current"]:
            args.append("--include-current")
        if opts["nondet"] and not opts["current"]:  # both: a random current output is gone for good
            args.append("--include-nondeterministic")
        dry = gc(repo, "--dry-run", *args)
        real = gc(repo, *args)
        assert evicted(dry) == evicted(real)
        for name in names:
            record = repo.record(name)
            pinned = record.version(record.pinned) if record.pinned else None
            assert pinned is None or repo.objects.has(pinned.object)
            cur = record.current
            deterministic = cur.recipe.deterministic
            if not (opts["current"] and deterministic):
                assert repo.objects.has(cur.object)
        r = run_cli("render", cwd=repo.root)
        assert r.code == 0, r.err
        for name in names:
            record = repo.record(name)
            assert repo.objects.has(record.current.object), name  # re-made with the recorded hash


# -- concurrency: real processes ------------------------------------------------------


def test_gc_concurrent_with_render_and_add_loses_nothing(tmp_repo):
    for i in range(4):
        gen(tmp_repo, f"s{i}.txt", word=f"w{i}")
        gen(tmp_repo, f"s{i}.txt", word=f"v{i}")
    root = tmp_repo.root
    procs = [
        subprocess.Popen([sys.executable, "-m", "lattice", "gen", f"g{i}.txt", "--model", "test.text", "--set", f"word=g{i}",
                          "--set", "delay=0.2", "--seed", "3"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(3)
    ]
    for i in range(3):
        (root / f"imp{i}.txt").write_text(f"imported {i}")
    procs.append(subprocess.Popen([sys.executable, "-m", "lattice", "add", *[f"imp{i}.txt" for i in range(3)]],
                                  cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for _ in range(3):
        run_proc("gc", *EVERYTHING, "--include-current", cwd=root, check=True)
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    run_proc("gc", *EVERYTHING, "--include-current", cwd=root, check=True)
    repo = Repository(root)
    for name in repo.index.names():
        record = repo.record(name)
        if record.current.recipe is None:
            assert repo.objects.has(record.current.object), name  # imports are never evicted
    assert run_proc("render", cwd=root).returncode == 0
    for name in repo.index.names():
        assert repo.objects.has(repo.record(name).current.object), name
    fsck = run_proc("fsck", cwd=root)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_restore_and_render_re_make_evicted_inputs_first(tmp_repo):
    """An evicted old version whose input is evicted too: `restore` re-makes
    the chain; a pin on an evicted version: `render` re-makes it first."""
    gen(tmp_repo, "a.txt", word="one")
    gen(tmp_repo, "b.txt", model="test.join", inputs=["a.txt"])
    assert run_cli("regen", "a.txt", "--set", "word=two", cwd=tmp_repo.root).code == 0
    gc(tmp_repo, *EVERYTHING)
    a1, b1 = tmp_repo.record("a.txt").versions[0].object, tmp_repo.record("b.txt").versions[0].object
    assert not tmp_repo.objects.has(a1) and not tmp_repo.objects.has(b1)
    r = run_cli("restore", "b.txt@v1", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    assert (tmp_repo.root / "b.txt").read_bytes() == b"one:1\n#1"

    assert run_cli("regen", "a.txt", "--set", "word=three", cwd=tmp_repo.root).code == 0  # b follows a@v3
    gc(tmp_repo, *EVERYTHING)
    assert not tmp_repo.objects.has(a1)
    assert run_cli("pin", "a.txt@v1", cwd=tmp_repo.root).code == 0
    r = run_cli("render", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    assert "re-making evicted a.txt@v1" in r.err
    assert (tmp_repo.root / "b.txt").read_bytes() == b"one:1\n#1"
    assert run_cli("render", "--check", cwd=tmp_repo.root).code == 0


def test_render_skips_what_depends_on_a_skipped_asset(tmp_repo):
    """b holds hand edits, so it is skipped; c (made from b) is skipped with
    it instead of being reported "unchanged" and staying stale."""
    gen(tmp_repo, "a.txt", word="one")
    gen(tmp_repo, "b.txt", model="test.join", inputs=["a.txt"])
    gen(tmp_repo, "c.txt", model="test.join", inputs=["b.txt"])
    (tmp_repo.root / "b.txt").write_text("hand edit")
    assert run_cli("regen", "a.txt", "--set", "word=two", "--no-cascade", cwd=tmp_repo.root).code == 0
    plan = run_cli("render", "--dry-run", "--json", cwd=tmp_repo.root).json
    assert plan["steps"] == []
    assert {(o["name"], o["error"]) for o in plan["skipped"]} == {
        ("b.txt", "working file was modified; `lattice add` records it, `lattice checkout` discards it"),
        ("c.txt", "its input b.txt was skipped"),
    }
    r = run_cli("render", "--json", cwd=tmp_repo.root)
    assert r.code == 1 and {o["name"]: o["status"] for o in r.json} == {"b.txt": "skipped", "c.txt": "skipped"}


# -- deleting a tag ------------------------------------------------------------------


def test_deleting_a_tag_ends_its_protection_as_if_it_never_was(tmp_repo):
    """A tag protects the versions current at it; once it is deleted, gc
    may evict them if they can be re-made, as if there had been no tag.
    The catalog gc plans with (storage.db) sees the deletion at once."""
    gen(tmp_repo, "x.txt", word="tagged")
    assert run_cli("tag", "release", cwd=tmp_repo.root).code == 0
    gen(tmp_repo, "x.txt", word="later")
    gen(tmp_repo, "x.txt", word="latest")
    v1, v2, v3 = objects_of(tmp_repo, "x.txt")
    assert evicted(gc(tmp_repo, "--dry-run", *EVERYTHING)) == [v2]  # the catalog now holds the tag's facts
    assert run_cli("tag", "-d", "release", cwd=tmp_repo.root).code == 0
    assert evicted(gc(tmp_repo, "--dry-run", *EVERYTHING)) == sorted([v1, v2])
    assert evicted(gc(tmp_repo, *EVERYTHING)) == sorted([v1, v2])
    assert tmp_repo.objects.has(v3) and not tmp_repo.objects.has(v1)
    assert run_cli("cat", "x.txt@v1", cwd=tmp_repo.root).out.startswith("tagged")  # re-made on demand
    assert run_cli("fsck", cwd=tmp_repo.root).code == 0


def test_deleting_the_only_tag_of_an_import_never_loses_it(tmp_repo):
    """An import (and an output) that only a tag's commits record, their
    branch deleted: after `tag -d` history still names them, so gc keeps
    them past the grace period, and a branch at the tag's commit has them."""
    tmp_repo.gen({"base.txt": "on main"})
    assert run_cli("add", "base.txt", cwd=tmp_repo.root).code == 0
    for args in (["branch", "feat"], ["switch", "feat"]):
        assert run_cli(*args, cwd=tmp_repo.root).code == 0
    tmp_repo.gen({"photo.txt": "precious, imported"})
    assert run_cli("add", "photo.txt", cwd=tmp_repo.root).code == 0
    gen(tmp_repo, "y.txt", word="only on the tag")
    photo, y = objects_of(tmp_repo, "photo.txt")[0], objects_of(tmp_repo, "y.txt")[0]
    for args in (["tag", "snap"], ["switch", "main"], ["branch", "-D", "feat"]):
        assert run_cli(*args, cwd=tmp_repo.root).code == 0
    r = run_cli("tag", "-d", "snap", "--json", cwd=tmp_repo.root)
    assert r.code == 0 and r.json["unmerged"] == 2, r.out
    past = time.time() - 30 * 86400
    for oid in (photo, y):
        os.utime(tmp_repo.objects.locate(oid), (past, past))
    for extra in ((), ("--include-current", "--include-nondeterministic")):
        assert gc(tmp_repo, *EVERYTHING, *extra)["evictions"] == []
    assert tmp_repo.objects.has(photo) and tmp_repo.objects.has(y)
    assert run_cli("du", "--json", cwd=tmp_repo.root).json["unreferenced"] == 0
    assert run_cli("branch", "back", r.json["was"], cwd=tmp_repo.root).code == 0
    assert run_cli("switch", "back", cwd=tmp_repo.root).code == 0
    assert (tmp_repo.root / "photo.txt").read_text() == "precious, imported"
    assert run_cli("fsck", cwd=tmp_repo.root).code == 0


def test_status_reads_the_gc_run_log_once_for_many_missing_outputs(tmp_repo, monkeypatch):
    """status's hint for missing outputs nothing can bring back read every
    gc run logged once per such output (a folder of deleted images: once
    per image); it reads them once, and still gives each its hint."""
    import lattice.gc
    from lattice.status import cannot_bring_back

    names = [f"r{i}.txt" for i in range(3)]
    for i, name in enumerate(names):
        gen(tmp_repo, name, model="test.random", seed=i + 1)
    gc(tmp_repo, *EVERYTHING, "--include-nondeterministic", "--include-current")
    real, reads = lattice.gc.evicted_for_good, []
    monkeypatch.setattr(lattice.gc, "evicted_for_good", lambda repo: reads.append(1) or real(repo))
    found = cannot_bring_back(Repository.find(tmp_repo.root), names)
    assert [name for name, _ in found] == names and all("gone for good" in hint for _, hint in found), found
    assert len(reads) == 1, reads
