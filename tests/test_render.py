"""Recipes, the cache, lineage and render — with the deterministic fake
generators of tests/plugins, through the CLI as a user would run them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import run_cli
from lattice.lineage import Graph
from lattice.status import status
from lattice.repo import Repository


def gen(repo, *args):
    r = run_cli("gen", *args, cwd=repo.root)
    assert r.code == 0, r.err
    return r


def states(repo):
    return {(e.path, e.state) for e in status(repo, untracked=False)}


def test_gen_records_complete_recipe_and_materializes(tmp_repo, run_log):
    gen(tmp_repo, "a.txt", "--model", "test.text", "--set", "word=sun", "--prompt", "a sunny day")
    rec = tmp_repo.record("a.txt")
    r = rec.current.recipe
    assert (rec.current.change, r.generator, r.params["word"], r.params["repeat"]) == ("initial", "test.text", "sun", 1)
    assert isinstance(r.seed, int) and len(r.key) == 64 and r.prompt == "a sunny day"
    assert (tmp_repo.root / "a.txt").read_text() == f"sun:{r.seed}\n"
    assert len(run_log()) == 1
    assert states(tmp_repo) == set()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "test.nope"], "unknown generator test.nope"),
        (["--model", "test.text", "--set", "colour=red"], "has no parameter 'colour'"),
        (["--model", "test.text", "--set", "repeat=many"], "must be of type int"),
        (["--model", "test.text", "--set", "repeat=1000"], "between 1 and 100"),
        (["--model", "test.text", "--set", "oops"], "expected KEY=VALUE"),
        (["--model", "test.join"], "takes 1 to 8 input"),
        (["--model", "test.join", "--input", "ghost.txt"], "not an asset"),
    ],
)
def test_gen_validation_errors_change_nothing(tmp_repo, args, message):
    r = run_cli("gen", "a.txt", *args, cwd=tmp_repo.root)
    assert r.code == 4 and message in r.err, r.err
    assert "Traceback" not in r.err
    assert tmp_repo.index.count() == 0 and not (tmp_repo.root / "a.txt").exists()


def test_gen_refuses_wrong_extension_naming_allowed(tmp_repo):
    r = run_cli("gen", "a.png", "--model", "test.text", cwd=tmp_repo.root)
    assert r.code == 4 and "cannot make .png" in r.err and ".txt" in r.err


def test_gen_refuses_to_overwrite_untracked_file(tmp_repo):
    tmp_repo.gen({"a.txt": "mine"})
    r = run_cli("gen", "a.txt", "--model", "test.text", cwd=tmp_repo.root)
    assert r.code == 4 and "not tracked" in r.err
    assert (tmp_repo.root / "a.txt").read_text() == "mine"


def test_same_recipe_is_a_cache_hit(tmp_repo, run_log):
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "5")
    gen(tmp_repo, "b.txt", "--model", "test.text", "--seed", "5")
    assert len(run_log()) == 1  # same key: the second gen ran no generator
    a, b = tmp_repo.record("a.txt"), tmp_repo.record("b.txt")
    assert a.current.object == b.current.object  # one shared object
    r = run_cli("gen", "a.txt", "--model", "test.text", "--seed", "5", cwd=tmp_repo.root)
    assert "unchanged" in r.out and len(tmp_repo.record("a.txt").versions) == 1


def test_cache_entry_to_missing_object_is_a_miss_and_repaired(tmp_repo, run_log):
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "5")
    oid = tmp_repo.record("a.txt").current.object
    tmp_repo.objects.remove(oid)
    gen(tmp_repo, "b.txt", "--model", "test.text", "--seed", "5")
    assert len(run_log()) == 2 and tmp_repo.objects.has(oid)
    assert tmp_repo.index.cache_get(tmp_repo.record("b.txt").current.recipe.key) == oid


def test_regen_seed_and_params_change_types(tmp_repo):
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    run_cli("regen", "a.txt", "--seed", "2", cwd=tmp_repo.root)
    run_cli("regen", "a.txt", "--set", "word=moon", cwd=tmp_repo.root)
    r = run_cli("regen", "a.txt", "--new-seed", "--json", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    rec = tmp_repo.record("a.txt")
    assert [v.change for v in rec.versions] == ["initial", "regenerated", "modified", "regenerated"]
    assert rec.versions[1].note.endswith("seed 1 -> 2")
    assert (tmp_repo.root / "a.txt").read_text().startswith("moon:")


def test_three_level_cascade_and_no_cascade(tmp_repo, run_log):
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    gen(tmp_repo, "b.txt", "--model", "test.join", "--input", "a.txt", "--seed", "1")
    gen(tmp_repo, "c.txt", "--model", "test.join", "--input", "b.txt", "--seed", "1")
    gen(tmp_repo, "other.txt", "--model", "test.text", "--seed", "9")
    runs = len(run_log())

    r = run_cli("regen", "a.txt", "--seed", "2", "--no-cascade", cwd=tmp_repo.root)
    assert r.code == 0
    assert states(tmp_repo) == {("b.txt", "stale"), ("c.txt", "stale")}
    assert run_cli("render", "--check", cwd=tmp_repo.root).code == 1
    plan = run_cli("render", "--dry-run", "--json", cwd=tmp_repo.root).json
    assert [s["path"] for s in plan["steps"]] == ["b.txt", "c.txt"]

    r = run_cli("render", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    assert states(tmp_repo) == set()
    assert run_cli("render", "--check", cwd=tmp_repo.root).code == 0
    assert (tmp_repo.root / "c.txt").read_bytes() == b"hello:2\n#1#1"
    assert [v.change for v in tmp_repo.record("c.txt").versions] == ["initial", "modified"]
    assert len(run_log()) == runs + 3  # a, b, c — never other.txt

    # With cascade (the default), regen re-renders everything downstream at once.
    r = run_cli("regen", "a.txt", "--seed", "3", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    assert (tmp_repo.root / "c.txt").read_bytes() == b"hello:3\n#1#1"
    assert states(tmp_repo) == set()


def test_gen_and_regen_never_write_over_unrecorded_edits(tmp_repo, run_log):
    """A named asset with hand edits is refused (exit 12, nothing recorded);
    an edited dependent in a cascade is skipped, with what depends on it."""
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    gen(tmp_repo, "b.txt", "--model", "test.join", "--input", "a.txt", "--seed", "1")
    gen(tmp_repo, "c.txt", "--model", "test.join", "--input", "b.txt", "--seed", "1")
    (tmp_repo.root / "a.txt").write_text("my retouch")
    for args in (["regen", "a.txt", "--seed", "2"], ["gen", "a.txt", "--model", "test.text", "--seed", "3"]):
        r = run_cli(*args, cwd=tmp_repo.root)
        assert r.code == 12 and "a.txt has changes in the working tree that are not recorded" in r.err, r.err
    assert len(tmp_repo.record("a.txt").versions) == 1 and (tmp_repo.root / "a.txt").read_text() == "my retouch"

    run_cli("checkout", "a.txt", cwd=tmp_repo.root)
    (tmp_repo.root / "b.txt").write_text("my b retouch")
    r = run_cli("regen", "a.txt", "--seed", "4", "--json", cwd=tmp_repo.root)
    assert r.code == 1
    by_name = {o["name"]: o for o in r.json}
    assert by_name["a.txt"]["status"] == "rendered"
    assert by_name["b.txt"]["status"] == "skipped" and "working file was modified" in by_name["b.txt"]["error"]
    assert by_name["c.txt"]["status"] == "skipped" and "its input b.txt was skipped" in by_name["c.txt"]["error"]
    assert (tmp_repo.root / "b.txt").read_text() == "my b retouch" and len(tmp_repo.record("b.txt").versions) == 1


def test_a_folder_in_the_way_of_an_output_is_said_to_be_moved_aside_not_added(tmp_repo, run_log):
    """A folder where a generated output's working file belongs: status
    calls it modified (no recorded version is there), but render, regen
    and restore say to move the folder aside, never to `lattice add` it;
    `add` of it says it added nothing and why."""
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    gen(tmp_repo, "b.txt", "--model", "test.join", "--input", "a.txt", "--seed", "1")
    assert run_cli("regen", "b.txt", "--seed", "2", cwd=tmp_repo.root).code == 0
    (tmp_repo.root / "b.txt").unlink()
    (tmp_repo.root / "b.txt").mkdir()
    assert run_cli("status", "--porcelain", cwd=tmp_repo.root).out == " M b.txt\n"
    r = run_cli("render", cwd=tmp_repo.root)
    assert r.code == 1 and r.err == ("skipped: b.txt: a folder is in the way of its working file; "
                                     "move the folder aside, then `lattice render` writes it\n"), r.err
    r = run_cli("regen", "a.txt", "--seed", "2", "--json", cwd=tmp_repo.root)
    assert r.code == 1 and [o["status"] for o in r.json] == ["rendered", "skipped"], r.json
    assert r.json[1]["error"].startswith("a folder is in the way of its working file")
    for args in (["regen", "b.txt", "--seed", "3"], ["restore", "b.txt@v1"]):
        r = run_cli(*args, cwd=tmp_repo.root)
        assert r.code == 12 and r.err == ("error: b.txt: a folder is in the way of its working file\n"
                                          "hint: move the folder aside, then run the command again\n"), (args, r.err)
    r = run_cli("add", "b.txt", cwd=tmp_repo.root)
    assert r.code == 0 and r.out == "" and r.err == (
        "warning: nothing added from b.txt/: b.txt is an asset, and a folder is in the way of its working file; "
        "move the folder aside, then `lattice checkout b.txt` writes the file\n"), r.err
    assert "lattice add" not in run_cli("render", cwd=tmp_repo.root).err
    assert len(tmp_repo.record("b.txt").versions) == 2 and not list((tmp_repo.root / "b.txt").iterdir())
    (tmp_repo.root / "b.txt").rmdir()
    assert run_cli("render", cwd=tmp_repo.root).code == 0 and run_cli("status", cwd=tmp_repo.root).out == ""


def test_a_version_recorded_but_not_written_says_so_and_is_not_retried(tmp_repo, run_log):
    """The working file cannot be written (a file stands where its folder
    belongs): the version is recorded, the failure says so and how to get
    the file, and no retry comes back calling it superseded."""
    import shutil

    gen(tmp_repo, "out/a.txt", "--model", "test.text", "--seed", "1")
    shutil.rmtree(tmp_repo.root / "out")
    (tmp_repo.root / "out").write_text("in the way")
    r = run_cli("regen", "out/a.txt", "--seed", "2", "--json", cwd=tmp_repo.root)
    # Exit 4 as the file in the way is for `checkout`: the cause's code.
    assert r.code == 4 and r.json[0]["status"] == "failed" and r.json[0]["exit_code"] == 4
    assert "out/a.txt v2 was recorded, but its working file could not be written" in r.json[0]["error"]
    assert len(tmp_repo.record("out/a.txt").versions) == 2
    job = run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json[0]
    assert job["attempts"] == 1, job
    (tmp_repo.root / "out").unlink()
    assert run_cli("checkout", "out/a.txt", cwd=tmp_repo.root).code == 0 and states(tmp_repo) == set()


def test_a_worker_started_in_a_subfolder_keeps_hints_that_name_paths_from_the_root(tmp_repo):
    """`lattice worker` run from `sub/` recorded a failed job's hint as
    `lattice checkout deep/a.txt`, which `queue show` (and the command
    waiting) read from the root or anywhere else: a path that names nothing
    there. What the queue keeps names assets from the project root."""
    gen(tmp_repo, "sub/deep/a.txt", "--model", "test.text", "--seed", "1", "--detach")
    (tmp_repo.root / "sub").mkdir()
    (tmp_repo.root / "sub" / "deep").write_text("in the way")
    assert run_cli("worker", "--once", cwd=tmp_repo.root / "sub").code == 4  # the job failed: a file in the way
    [job] = run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json
    shown = run_cli("queue", "show", str(job["id"]), cwd=tmp_repo.root)
    assert "`lattice checkout sub/deep/a.txt` writes it" in shown.out, shown.out


def test_a_failed_step_keeps_its_jobs_hint(tmp_repo):
    """A step whose job failed with a hint (what to do about it) printed it
    as if it were a line of the generator's stderr; now as a hint, and in
    --json as the outcome's `hint`."""
    tmp_repo.gen({"t.txt": "hello"})
    assert run_cli("add", "t.txt", cwd=tmp_repo.root).code == 0
    r = run_cli("gen", "th.png", "--model", "ffmpeg.thumbnail", "--input", "t.txt", cwd=tmp_repo.root)
    assert r.code == 4 and r.err.splitlines()[:2] == [
        "failed: th.png: input 0 (t.txt) has no picture ffmpeg can read", "    hint: give an image or video asset"], r.err
    r = run_cli("gen", "th.png", "--model", "ffmpeg.thumbnail", "--input", "t.txt", "--json", cwd=tmp_repo.root)
    assert r.code == 4 and [(o["error"], o["hint"]) for o in r.json] == [
        ("input 0 (t.txt) has no picture ffmpeg can read", "give an image or video asset")], r.out


def test_regen_of_an_asset_and_its_dependent_renders_them_in_order(tmp_repo, run_log):
    """`regen b a` with b made from a (directly, or through c): a first,
    then b from a's new version, whatever the order named; once each."""
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    gen(tmp_repo, "c.txt", "--model", "test.join", "--input", "a.txt", "--seed", "1")
    gen(tmp_repo, "b.txt", "--model", "test.join", "--input", "c.txt", "--seed", "1")
    r = run_cli("regen", "b.txt", "a.txt", "b.txt", "--seed", "2", "-j", "1", "--json", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    assert [o["name"] for o in r.json].count("b.txt") == 1
    assert states(tmp_repo) == set()
    assert (tmp_repo.root / "b.txt").read_bytes() == b"hello:2\n#1#2"


def test_cycle_is_refused_naming_it(tmp_repo):
    gen(tmp_repo, "a.txt", "--model", "test.text")
    gen(tmp_repo, "b.txt", "--model", "test.join", "--input", "a.txt")
    r = run_cli("gen", "a.txt", "--model", "test.join", "--input", "b.txt", cwd=tmp_repo.root)
    assert r.code == 4 and "cycle a.txt -> b.txt -> a.txt" in r.err
    assert "hint: b.txt is made from a.txt" in r.err and "`lattice lineage a.txt --down`" in r.err
    r = run_cli("gen", "a.txt", "--model", "test.join", "--input", "a.txt", cwd=tmp_repo.root)
    assert r.code == 4 and "hint: an asset cannot be made from itself" in r.err


def test_too_many_or_too_few_inputs_each_get_their_own_hint(tmp_repo):
    gen(tmp_repo, "a.txt", "--model", "test.text")
    r = run_cli("gen", "e.txt", "--model", "test.text", "--input", "a.txt", cwd=tmp_repo.root)
    assert r.code == 4 and "takes exactly 0 input asset(s), got 1" in r.err
    assert "leave out --input" in r.err and "name inputs with" not in r.err
    r = run_cli("gen", "e.txt", "--model", "test.join", cwd=tmp_repo.root)
    assert r.code == 4 and "hint: name inputs with --input ASSET" in r.err


def test_an_unknown_priority_is_refused_with_work_to_do_or_not(tmp_repo):
    gen(tmp_repo, "a.txt", "--model", "test.text")
    for args in ([], ["--detach"], ["--dry-run"], ["--check"]):
        r = run_cli("render", "-p", "bogus", *args, cwd=tmp_repo.root)
        assert r.code == 4 and "unknown priority 'bogus'" in r.err, (args, r.err)
    r = run_cli("regen", "a.txt", "-p", "bogus", "--detach", cwd=tmp_repo.root)
    assert r.code == 4 and [j["state"] for j in run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json] == ["succeeded"]


def test_retry_of_a_job_whose_dependency_was_cancelled_names_it_and_nothing_hangs(tmp_repo):
    from conftest import run_proc

    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    gen(tmp_repo, "b.txt", "--model", "test.join", "--input", "a.txt")
    r = run_cli("regen", "a.txt", "--seed", "2", "--detach", "--json", cwd=tmp_repo.root)
    ids = {j["path"]: j["job"] for j in r.json}
    a, b = ids["a.txt"], ids["b.txt"]
    assert run_cli("queue", "cancel", str(a), cwd=tmp_repo.root).code == 0
    r = run_cli("queue", "retry", str(b), cwd=tmp_repo.root)
    assert r.code == 10 and f"job {b} waits on job {a}, which was cancelled" in r.err
    assert f"`lattice queue retry {a} {b}`" in r.err
    w = run_proc("worker", "--once", cwd=tmp_repo.root, timeout=30)
    assert w.returncode == 0 and "no jobs run" in w.stderr
    assert run_cli("queue", "retry", str(a), str(b), cwd=tmp_repo.root).code == 0
    assert run_proc("worker", "--once", cwd=tmp_repo.root, timeout=60).returncode == 0
    assert [j["state"] for j in run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json[:2]] == ["succeeded"] * 2


def test_failing_generator_leaves_previous_version_and_reports_stderr(tmp_repo, run_log):
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    before = (tmp_repo.root / "a.txt").read_bytes()
    r = run_cli("gen", "a.txt", "--model", "test.fail", cwd=tmp_repo.root)
    assert r.code == 8 and "failed: a.txt" in r.err and "boom: model exploded" in r.err  # 8: a generator failed
    assert "hint: `lattice queue ls --state failed` lists the failed jobs" in r.err  # a job failed: the queue keeps it
    # test.fail is deterministic: its failure would repeat, so it ran once, not once per retry.
    assert [line.split()[0] for line in run_log()] == ["test.text", "test.fail"]
    assert len(tmp_repo.record("a.txt").versions) == 1
    assert (tmp_repo.root / "a.txt").read_bytes() == before
    assert list((tmp_repo.dir / "tmp").glob("out-*")) == []


def test_failure_skips_dependents_and_the_rest_goes_on(tmp_repo, tmp_path):
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    gen(tmp_repo, "b.txt", "--model", "test.join", "--input", "a.txt")
    gen(tmp_repo, "solo.txt", "--model", "test.text", "--seed", "4")
    # Make a's recipe unrunnable: point it at the failing generator with a crafted manifest edit.
    mf = tmp_repo.manifest.file_of("a.txt")
    mf.write_text(mf.read_text().replace('generator = "test.text"', 'generator = "test.fail"'))
    from lattice.fsck import rebuild_index

    rebuild_index(tmp_repo)
    for name in ("a.txt", "b.txt", "solo.txt"):
        tmp_repo.objects.remove(tmp_repo.record(name).current.object)
        os.unlink(tmp_repo.root / name)
    r = run_cli("render", "--json", cwd=tmp_repo.root)
    # The edit is caught as damage (5: its recorded key no longer matches);
    # b, skipped for it, shares its cause.
    assert r.code == 5
    by = {o["name"]: (o["status"], o["exit_code"]) for o in r.json}
    assert by == {"a.txt": ("failed", 5), "b.txt": ("skipped", 5), "solo.txt": ("rendered", None)}


@pytest.mark.parametrize("declared", ["", "deterministic = true\nslot = \"gpu\"\n"])
def test_a_generator_that_may_fail_once_is_retried(tmp_repo, declared):
    """A model may fail once (out of memory while another job held the GPU)
    and pass on the next try: generators not declared deterministic, and
    every GPU generator, are retried."""
    import json
    import sys

    script = ("import os, sys\n"
              "if not os.path.exists('tried'):\n"
              "    open('tried', 'w').close()\n"
              "    sys.exit('RuntimeError: CUDA out of memory')\n"
              "open(sys.argv[1], 'w').write('made on the second try')\n")
    (tmp_repo.root / "flaky.py").write_text(script)
    cfg = tmp_repo.dir / "config.toml"
    cfg.write_text(cfg.read_text() + f"\n[generators.flaky]\nargv = {json.dumps([sys.executable, 'flaky.py', '{output}'])}\n"
                   'extensions = ["txt"]\n' + declared + '\n[queue.types.image]\nretries = 1\n')
    assert run_cli("trust", cwd=tmp_repo.root).code == 0
    gen(tmp_repo, "f.txt", "--model", "flaky")
    assert (tmp_repo.root / "f.txt").read_text() == "made on the second try"
    jobs = run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json
    assert [(j["state"], j["attempts"]) for j in jobs] == [("succeeded", 2)]


def test_hanging_generator_times_out(tmp_repo):
    cfg = tmp_repo.dir / "config.toml"
    cfg.write_text(cfg.read_text() + "\n[queue.types.image]\nretries = 0\ntimeout = 1\n")
    r = run_cli("gen", "h.txt", "--model", "test.hang", cwd=tmp_repo.root)
    assert r.code == 8 and "timed out" in r.err
    assert tmp_repo.index.count() == 0


def test_evicted_output_is_remade_by_render(tmp_repo, run_log):
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "8")
    oid = tmp_repo.record("a.txt").current.object
    tmp_repo.objects.remove(oid)
    with tmp_repo.index as ix:
        ix.cache_drop(tmp_repo.record("a.txt").current.recipe.key)
    assert states(tmp_repo) == {("a.txt", "evicted")}
    os.unlink(tmp_repo.root / "a.txt")
    r = run_cli("render", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    assert tmp_repo.objects.has(oid) and (tmp_repo.root / "a.txt").exists()
    assert len(tmp_repo.record("a.txt").versions) == 1  # re-made, not a new version


def test_render_never_overwrites_modified_working_file(tmp_repo):
    gen(tmp_repo, "a.txt", "--model", "test.text")
    (tmp_repo.root / "a.txt").write_text("my edit")
    r = run_cli("render", cwd=tmp_repo.root)
    assert r.code == 1 and "modified" in r.err
    assert (tmp_repo.root / "a.txt").read_text() == "my edit"


def test_verify_deterministic_and_not(tmp_repo):
    gen(tmp_repo, "a.txt", "--model", "test.text")
    gen(tmp_repo, "r.txt", "--model", "test.random")
    r = run_cli("verify", "--all", "--json", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    assert {v["path"]: v["status"] for v in r.json} == {"a.txt": "reproducible", "r.txt": "not-deterministic"}
    # Tamper with the recorded output id: verify must say it differs.
    mf = tmp_repo.manifest.file_of("a.txt")
    oid = tmp_repo.record("a.txt").current.object
    mf.write_text(mf.read_text().replace(oid, "0" * 64))
    r = run_cli("verify", "a.txt", cwd=tmp_repo.root)
    assert r.code == 1 and "differs" in r.out


def test_verify_after_gc_re_makes_evicted_inputs_first(tmp_repo):
    gen(tmp_repo, "a.txt", "--model", "test.text")
    gen(tmp_repo, "b.txt", "--model", "test.join", "--input", "a.txt")
    r = run_cli("gc", "--include-current", "--older-than", "0", "--keep-versions", "0", cwd=tmp_repo.root)
    assert r.code == 0 and not tmp_repo.objects.has(tmp_repo.record("a.txt").current.object)
    (tmp_repo.root / "a.txt").unlink()  # else taken back from the working file
    r = run_cli("verify", "--all", "--json", cwd=tmp_repo.root)
    assert r.code == 0, r.out + r.err
    assert {v["path"]: v["status"] for v in r.json} == {"a.txt": "reproducible", "b.txt": "reproducible"}
    assert "re-making evicted a.txt@v1" in r.err


def test_lineage_up_and_down(tmp_repo):
    gen(tmp_repo, "a.txt", "--model", "test.text")
    gen(tmp_repo, "b.txt", "--model", "test.join", "--input", "a.txt")
    gen(tmp_repo, "c.txt", "--model", "test.join", "--input", "b.txt", "--input", "a.txt")
    assert run_cli("lineage", "c.txt", "--up", "--down", cwd=tmp_repo.root).code == 2
    assert run_cli("verify", "--all", "c.txt", cwd=tmp_repo.root).code == 2
    up = run_cli("lineage", "c.txt", "--json", cwd=tmp_repo.root).json
    assert [c["path"] for c in up["children"]] == ["b.txt", "a.txt"]
    down = run_cli("lineage", "a.txt", "--down", cwd=tmp_repo.root).out
    assert down.splitlines()[0] == "a.txt" and "b.txt" in down and "c.txt" in down


def test_generators_list_and_show(tmp_repo):
    r = run_cli("generators", "--json", cwd=tmp_repo.root)
    ids = {g["id"] for g in r.json}
    assert {"test.text", "test.join"} <= ids
    r = run_cli("generators", "show", "test.text", cwd=tmp_repo.root)
    assert "repeat" in r.out and "how many times" in r.out


def test_graph_order_and_stale():
    g = Graph([("b", "a", "1"), ("c", "b", "2"), ("d", "a", "9")], {"a": "1", "b": "2", "c": "3", "d": "4"})
    assert g.order(["c", "b", "a", "d"]) == ["a", "b", "c", "d"]
    assert g.stale() == {"d"}
    assert g.would_cycle("a", ["c"]) == ["a", "b", "c", "a"]


def test_same_key_from_two_processes_runs_once(tmp_repo, run_log):
    """Two terminals generating different assets with the same recipe at the
    same time: the generator runs once and both assets share the object."""
    import subprocess
    import sys

    args = ["--model", "test.text", "--seed", "11", "--set", "delay=1.0"]
    procs = [
        subprocess.Popen([sys.executable, "-m", "lattice", "gen", name, *args], cwd=tmp_repo.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("one.txt", "two.txt")
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert len(run_log()) == 1
    assert tmp_repo.record("one.txt").current.object == tmp_repo.record("two.txt").current.object


def test_command_generator_needs_trust_end_to_end(tmp_repo):
    script = tmp_repo.root / "gen.py"
    script.write_text("import sys\nopen(sys.argv[sys.argv.index('--out') + 1], 'w').write(sys.argv[1] + ':' + sys.argv[3])\n")
    import sys

    cfg = tmp_repo.dir / "config.toml"
    cfg.write_text(cfg.read_text() + f'\n[generators.echo]\nargv = ["{sys.executable}", "gen.py", "{{prompt}}", "--seed", "{{seed}}", "--out", "{{output}}"]\nextensions = ["txt"]\ndeterministic = true\n')
    r = run_cli("gen", "e.txt", "--model", "echo", "--prompt", "$(touch PWNED); x", "--seed", "3", cwd=tmp_repo.root)
    assert r.code == 9 and "lattice trust" in r.err
    assert tmp_repo.index.count() == 0
    assert run_cli("trust", cwd=tmp_repo.root).code == 0
    r = run_cli("gen", "e.txt", "--model", "echo", "--prompt", "$(touch PWNED); x", "--seed", "3", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    assert (tmp_repo.root / "e.txt").read_text() == "$(touch PWNED); x:3"
    assert not (tmp_repo.root / "PWNED").exists()
    cfg.write_text(cfg.read_text().replace("deterministic = true", "deterministic = true\ntimeout = 30"))
    r = run_cli("gen", "f.txt", "--model", "echo", "--seed", "4", cwd=tmp_repo.root)
    assert r.code == 9 and "lattice trust" in r.err  # changed commands need approval again
    assert run_cli("trust", cwd=tmp_repo.root).code == 0
    script.write_text(script.read_text() + "# a pull changed the script\n")
    r = run_cli("gen", "g.txt", "--model", "echo", "--seed", "5", cwd=tmp_repo.root)
    assert r.code == 9  # so does a changed script the argv runs


def test_detach_then_worker_process_completes(tmp_repo):
    from conftest import run_proc

    r = run_cli("gen", "a.txt", "--model", "test.text", "--detach", "--json", cwd=tmp_repo.root)
    assert r.code == 0 and r.json[0]["path"] == "a.txt"
    assert tmp_repo.index.count() == 0  # only queued
    w = run_proc("worker", "--once", cwd=tmp_repo.root, check=True)
    assert "succeeded" in w.stderr
    assert (tmp_repo.root / "a.txt").exists() and tmp_repo.index.count() == 1


def test_a_command_runs_the_jobs_a_killed_command_left_that_its_own_wait_on(tmp_repo):
    """A regen whose downstream job is deduplicated into one that an earlier
    command queued (detached here; killed, in life) and left waiting on its
    other jobs runs those jobs too, instead of waiting for ever."""
    from conftest import run_proc
    from lattice.repo import Repository

    assert run_cli("gen", "a.txt", "--model", "test.text", "--set", "word=one", cwd=tmp_repo.root).code == 0
    assert run_cli("gen", "b.txt", "--model", "test.join", "--input", "a.txt", cwd=tmp_repo.root).code == 0
    assert run_cli("regen", "a.txt", "--set", "word=two", "--detach", cwd=tmp_repo.root).code == 0
    r = run_proc("regen", "a.txt", "--set", "word=three", cwd=tmp_repo.root, timeout=60)
    # Both requests were planned on v1: the first to record wins, the other
    # is superseded (exit 12 if it was this command's), never stacked on it.
    assert r.returncode in (0, 12), r.stderr
    assert all(j["state"] == "succeeded" for j in run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json)
    assert (tmp_repo.root / "a.txt").read_text().split(":")[0] in ("two", "three")
    assert len(Repository.find(tmp_repo.root).record("a.txt").versions) == 2
    assert run_cli("render", "--check", cwd=tmp_repo.root).code == 0  # b.txt follows a.txt's current


def test_worker_killed_mid_render_job_completes_exactly_once(tmp_repo, run_log):
    import signal
    import subprocess
    import sys
    import time

    from conftest import run_proc

    cfg = tmp_repo.dir / "config.toml"
    cfg.write_text(cfg.read_text() + "\n[queue]\nlease = 1.0\n")
    r = run_cli("gen", "slow.txt", "--model", "test.text", "--set", "delay=3", "--detach", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    w = subprocess.Popen([sys.executable, "-m", "lattice", "worker", "--slots", "1"], cwd=tmp_repo.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while not run_log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run_log(), "the worker never started the job"
    os.killpg(w.pid, signal.SIGKILL)  # the worker and the job with it
    w.wait()
    assert tmp_repo.index.count() == 0  # nothing half-recorded
    time.sleep(1.5)  # past the lease
    run_proc("worker", "--once", "--slots", "1", cwd=tmp_repo.root, check=True)
    assert len(tmp_repo.record("slow.txt").versions) == 1
    assert len(run_log()) == 2  # the killed attempt and the one that finished
    assert run_proc("fsck", cwd=tmp_repo.root).returncode == 0
    jobs = run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json
    assert [(j["state"], j["attempts"]) for j in jobs] == [("succeeded", 2)]


def test_hand_edited_recipe_key_is_refused_not_cached(tmp_repo):
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    gen(tmp_repo, "b.txt", "--model", "test.text", "--seed", "2")
    rec = tmp_repo.record("a.txt")
    other_key = tmp_repo.record("b.txt").current.recipe.key
    mf = tmp_repo.manifest.file_of("a.txt")
    # Point a.txt's recipe at b's key, then make its output absent so it must be re-made.
    mf.write_text(mf.read_text().replace(rec.current.recipe.key, other_key))
    tmp_repo.objects.remove(rec.current.object)
    os.unlink(tmp_repo.root / "a.txt")
    from lattice.fsck import rebuild_index

    rebuild_index(tmp_repo)
    r = run_cli("render", "a.txt", cwd=tmp_repo.root)
    assert r.code == 5 and "does not match the recipe" in r.err  # 5: a damaged (hand-edited) manifest
    assert tmp_repo.index.cache_get(other_key) == tmp_repo.record("b.txt").current.object


def test_manifest_symlink_out_of_the_repository_is_refused(tmp_repo, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_repo.dir / "manifest" / "evil").symlink_to(outside)
    r = run_cli("gen", "evil/x.txt", "--model", "test.text", cwd=tmp_repo.root)
    assert r.code == 4 and "leads outside" in r.err
    assert list(outside.iterdir()) == []


def test_inline_render_runs_only_its_own_jobs(tmp_repo, run_log):
    r = run_cli("gen", "batch.txt", "--model", "test.text", "--priority", "batch", "--detach", cwd=tmp_repo.root)
    assert r.code == 0
    gen(tmp_repo, "mine.txt", "--model", "test.text", "--seed", "5")
    assert [line.split()[1] for line in run_log()] == [run_log()[0].split()[1]]  # one run: ours
    assert tmp_repo.index.get("batch.txt") is None  # the detached job still waits for a worker
    jobs = {j["state"] for j in run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json}
    assert jobs == {"queued", "succeeded"}


def test_ctrl_c_cancels_the_commands_jobs(tmp_repo):
    import signal

    p, jobs = _gen_running(tmp_repo, "slow.txt", delay=20)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err
    jobs = run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json
    assert [j["state"] for j in jobs] == ["cancelled"]
    assert tmp_repo.index.count() == 0
    # The queue says who cancelled it and why: `queue show`, and its --json.
    by = jobs[0]["cancelled_by"]
    assert (by["reason"], by["command"], by["pid"]) == ("interrupted", "lattice gen", p.pid)
    shown = run_cli("queue", "show", str(jobs[0]["id"]), cwd=tmp_repo.root).out
    assert f"cancelled:  by `lattice gen` ({by['user']} on {by['host']}, pid {p.pid}) when it was interrupted\n" in shown


def test_ctrl_c_leaves_a_job_that_another_gen_waits_for(tmp_repo, run_log):
    """Two gens of one recipe share its job. Ctrl-C in the first does not
    take the job from the second (before, the second read "was cancelled"):
    the first says it left it, hands it back, and the second makes the file."""
    import signal
    import sys
    import time

    argv = [sys.executable, "-m", "lattice", "gen", "same.txt", "--model", "test.text", "--seed", "5", "--set", "delay=5"]
    first, [job] = _gen_running(tmp_repo, "same.txt", delay=5, argv=argv)
    second = subprocess.Popen([*argv, "--priority", "high"], cwd=tmp_repo.root, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while run_cli("queue", "show", str(job["id"]), "--json", cwd=tmp_repo.root).json["priority"] != "high":
        assert time.monotonic() < deadline, "the second gen never joined the job"
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130 and err.endswith("interrupted\n"), err
    assert f"warning: job(s) {job['id']} left in the queue: another command waits for them" in err
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    [done] = run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json
    assert (done["id"], done["state"], done["attempts"], done["cancelled_by"]) == (job["id"], "succeeded", 1, None)
    assert len(tmp_repo.record("same.txt").versions) == 1 and (tmp_repo.root / "same.txt").read_text() == "hello:5\n"
    assert run_cli("fsck", cwd=tmp_repo.root).code == 0


def test_ctrl_c_leaves_a_job_queued_with_detach_to_the_worker(tmp_repo, run_log):
    """`gen --detach` asked for the job; a gen of the same recipe that joins
    it and is interrupted hands it back to the queue, not cancelled, and a
    worker makes it. (The detaching process is gone: only the record of its
    asking keeps the job.)"""
    import signal
    import sys

    argv = [sys.executable, "-m", "lattice", "gen", "d.txt", "--model", "test.text", "--seed", "5", "--set", "delay=3"]
    assert subprocess.run([*argv[:-2], "--detach"] + argv[-2:], cwd=tmp_repo.root, capture_output=True).returncode == 0
    inline, [job] = _gen_running(tmp_repo, "d.txt", delay=3, argv=argv)
    inline.send_signal(signal.SIGINT)
    _, err = inline.communicate(timeout=60)
    assert inline.returncode == 130 and f"warning: job(s) {job['id']} left in the queue" in err, err
    assert run_cli("queue", "show", str(job["id"]), "--json", cwd=tmp_repo.root).json["state"] == "queued"
    assert run_cli("worker", "--once", cwd=tmp_repo.root).code == 0
    assert (tmp_repo.root / "d.txt").read_text() == "hello:5\n"



@pytest.mark.parametrize("where", ["pool", "display"])
def test_ctrl_c_before_the_jobs_run_cancels_them(tmp_repo, monkeypatch, where):
    """Ctrl-C after the jobs are queued but before the inline pool runs
    them (starting the pool: imports, GPUs; the display) cancels them as a
    Ctrl-C while they run does. Before, they stayed queued with no one
    waiting, for a later `lattice worker` to run behind the user's back."""
    import lattice.cli.gen_cmds
    import lattice.worker

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "pool":
        monkeypatch.setattr(lattice.worker, "detect_slots", interrupted)
    else:
        monkeypatch.setattr(lattice.cli.gen_cmds._Display, "__enter__", interrupted)
    r = run_cli("gen", "x.txt", "--model", "test.text", cwd=tmp_repo.root)
    assert r.code == 130, r.err
    monkeypatch.undo()
    [job] = run_cli("queue", "ls", "--all", "--json", cwd=tmp_repo.root).json
    assert job["state"] == "cancelled", job
    assert (job["cancelled_by"]["reason"], job["cancelled_by"]["command"]) == ("interrupted", "lattice gen")
    assert run_cli("worker", "--once", cwd=tmp_repo.root).code == 0
    assert tmp_repo.index.count() == 0 and not (tmp_repo.root / "x.txt").exists()


def test_ctrl_c_halfway_through_queueing_cancels_the_jobs_queued_so_far(tmp_repo, monkeypatch):
    """`regen a.txt` queues a.txt's job, then its dependent b.txt's: a
    Ctrl-C between the two cancels the first, as the command's Ctrl-C, and
    leaves nothing for a later worker to run."""
    from lattice.queue import JobQueue

    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    gen(tmp_repo, "b.txt", "--model", "test.join", "--input", "a.txt", "--seed", "1")
    submit, calls = JobQueue.submit, []

    def second_interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return submit(self, *args, **kwargs)

    monkeypatch.setattr(JobQueue, "submit", second_interrupted)
    r = run_cli("regen", "a.txt", "--seed", "2", cwd=tmp_repo.root)
    monkeypatch.undo()
    assert r.code == 130, r.err
    jobs = [j for j in run_cli("queue", "ls", "--all", "--json", cwd=tmp_repo.root).json if j["type"] != "gc"]
    [job] = [j for j in jobs if j["state"] != "succeeded"]
    assert job["state"] == "cancelled" and job["cancelled_by"]["command"] == "lattice regen", job
    assert run_cli("worker", "--once", cwd=tmp_repo.root).code == 0
    assert tmp_repo.record("a.txt").current.number == 1


_SIGNAL_WHILE_QUEUEING = """
import os, signal, sys, time
from lattice.queue import JobQueue
from lattice.cli.entry import run
submit, calls = JobQueue.submit, []

def submit_signalled(self, *a, **k):  # the signal arrives as the second job is about to be queued
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), getattr(signal, os.environ["SIG"]))
        time.sleep(5)
    return submit(self, *a, **k)

JobQueue.submit = submit_signalled
sys.exit(run())  # as the `lattice` script: sys.argv[1:] are its arguments
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGKILL"])
def test_ctrl_c_halfway_through_a_detached_submission_leaves_no_job_behind(tmp_repo, run_log, sig):
    """`regen a.txt --detach` queues a.txt's job, then its dependent
    b.txt's. A Ctrl-C between the two gives up the first, as the same
    command's Ctrl-C without --detach does (cancelled by `lattice regen`),
    and a kill leaves it to the next worker to cancel: the jobs go to the
    worker only once all are queued. Before, the first stayed queued with
    its id never shown, and a worker made half the change."""
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    gen(tmp_repo, "b.txt", "--model", "test.join", "--input", "a.txt", "--seed", "1")
    proc = subprocess.Popen([sys.executable, "-c", _SIGNAL_WHILE_QUEUEING, "regen", "a.txt", "--seed", "2", "--detach"],
                            cwd=tmp_repo.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "SIG": sig})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == {"SIGINT": 130, "SIGKILL": -9}[sig] and "Traceback" not in err, err
    assert "queued job" not in out, out
    [job] = [j for j in run_cli("queue", "ls", "--all", "--json", cwd=tmp_repo.root).json if j["state"] != "succeeded"]
    if sig == "SIGINT":
        assert job["state"] == "cancelled", job
        assert (job["cancelled_by"]["command"], job["cancelled_by"]["reason"]) == ("lattice regen", "interrupted")
    assert run_cli("worker", "--once", cwd=tmp_repo.root).code == 0
    job = run_cli("queue", "show", str(job["id"]), "--json", cwd=tmp_repo.root).json
    assert job["state"] == "cancelled", job  # killed: by the worker, as nobody asks for it
    fresh = Repository.find(tmp_repo.root)
    assert [len(fresh.record(n).versions) for n in ("a.txt", "b.txt")] == [1, 1]
    assert run_cli("render", "--check", cwd=tmp_repo.root).code == 0


def test_a_queue_that_cannot_take_the_cancel_is_warned_of_not_a_traceback(tmp_repo, monkeypatch):
    """A Ctrl-C whose cancel the queue refuses (locked, damaged) still exits
    130, saying which jobs may still run."""
    import lattice.worker
    from lattice.errors import QueueError
    from lattice.queue import JobQueue

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    def refused(self, *args, **kwargs):
        raise QueueError("the queue is busy")

    monkeypatch.setattr(lattice.worker, "detect_slots", interrupted)
    monkeypatch.setattr(JobQueue, "abandon", refused)
    r = run_cli("gen", "x.txt", "--model", "test.text", cwd=tmp_repo.root)
    monkeypatch.undo()
    assert r.code == 130 and "Traceback" not in r.err, r.err
    [job] = run_cli("queue", "ls", "--all", "--json", cwd=tmp_repo.root).json
    assert f"warning: job(s) {job['id']} could not be cancelled and may still run: the queue is busy" in r.err, r.err


def test_a_refused_command_generator_in_a_cascade_queues_nothing(tmp_repo):
    """`regen a.txt` whose dependent is made by a command generator that is
    no longer approved is refused (exit 9) before anything is queued. Before,
    a.txt's job was queued first and left there: a later worker made a.txt
    v2 after the refusal, leaving b.txt stale."""
    import json
    import sys

    (tmp_repo.root / "cp.py").write_text("import shutil, sys\nshutil.copy(sys.argv[1], sys.argv[2])\n")
    cfg = tmp_repo.dir / "config.toml"
    cfg.write_text(cfg.read_text() + f"\n[generators.cp]\nargv = {json.dumps([sys.executable, 'cp.py', '{input0}', '{output}'])}\n"
                   'extensions = ["txt"]\ninputs = [1, 1]\n')
    assert run_cli("trust", cwd=tmp_repo.root).code == 0
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    gen(tmp_repo, "b.txt", "--model", "cp", "--input", "a.txt")
    cfg.write_text(cfg.read_text() + "timeout = 30\n")  # changed: needs approving again
    r = run_cli("regen", "a.txt", "--seed", "2", cwd=tmp_repo.root)
    assert r.code == 9 and "lattice trust" in r.err, r.err
    assert [j["state"] for j in run_cli("queue", "ls", "--all", "--json", cwd=tmp_repo.root).json] == ["succeeded"] * 2
    assert run_cli("worker", "--once", cwd=tmp_repo.root).code == 0
    assert len(tmp_repo.record("a.txt").versions) == 1


def test_a_gen_whose_job_is_cancelled_says_so(tmp_repo):
    """`lattice queue cancel` from another shell: the waiting gen says its
    job was cancelled (not failed) with a hint that fits, and exits 1."""
    p, jobs = _gen_running(tmp_repo, "cc.txt", delay=5)
    assert run_cli("queue", "cancel", str(jobs[0]["id"]), cwd=tmp_repo.root).code == 0
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1, err
    # By whom: not this gen, but `lattice queue cancel` (run here, in the test's process).
    assert f"cancelled: cc.txt: job {jobs[0]['id']} was cancelled by `lattice queue cancel` (" in err
    assert f", pid {os.getpid()})\n" in err
    assert "failed" not in err and "hint: a cancelled job records nothing" in err
    assert tmp_repo.index.count() == 0


def test_render_and_verify_take_a_folder_of_assets(tmp_repo, run_log):
    """`lattice render shots/` brings every asset under shots/ up to date
    (with what they depend on), as `checkout shots/` and `ls shots` take a
    folder; before, it was refused as "no asset named 'shots'"."""
    gen(tmp_repo, "src.txt", "--model", "test.text", "--seed", "1")
    gen(tmp_repo, "shots/s1/b.txt", "--model", "test.join", "--input", "src.txt")
    gen(tmp_repo, "c.txt", "--model", "test.join", "--input", "src.txt")
    assert run_cli("regen", "src.txt", "--seed", "2", "--no-cascade", cwd=tmp_repo.root).code == 0
    plan = run_cli("render", "--dry-run", "--json", "shots", cwd=tmp_repo.root)
    assert plan.code == 0 and [s["path"] for s in plan.json["steps"]] == ["shots/s1/b.txt"], plan.err
    r = run_cli("render", "--json", "s1/", cwd=tmp_repo.root / "shots")
    assert r.code == 0 and [(o["name"], o["status"]) for o in r.json] == [("shots/s1/b.txt", "rendered")], r.err
    assert states(tmp_repo) == {("c.txt", "stale")}
    assert run_cli("render", "--check", ".", cwd=tmp_repo.root / "shots").code == 0
    v = run_cli("verify", "--json", "shots", cwd=tmp_repo.root)
    assert v.code == 0 and [(x["path"], x["status"]) for x in v.json] == [("shots/s1/b.txt", "reproducible")], v.out


def test_a_folder_with_no_assets_is_refused_as_one(tmp_repo, run_log):
    """`render empty/` (or `.` in it) said "no asset named empty (did you
    mean: ...)", as for a typo, though the folder is there: it has no
    assets under it, which the error now says."""
    gen(tmp_repo, "shots/a.txt", "--model", "test.text", "--seed", "1")
    (tmp_repo.root / "shots/empty").mkdir()
    for args, cwd in ((("render", "empty/"), "shots"), (("verify", "."), "shots/empty"), (("checkout", "shots/empty"), ".")):
        r = run_cli(*args, cwd=tmp_repo.root / cwd)
        assert r.code == 4 and r.err.splitlines()[0] == "error: no assets under shots/empty/", (args, r.err)
    typo = run_cli("render", "shots/emty", cwd=tmp_repo.root)
    assert typo.code == 4 and "no asset named shots/emty" in typo.err


def _input_gone(repo) -> None:
    """a.txt -> b.txt -> c.txt and x.txt -> y.txt, with y.txt stale (x.txt
    regenerated) and a.txt's record gone from the manifest."""
    gen(repo, "a.txt", "--model", "test.text", "--seed", "1")
    gen(repo, "b.txt", "--model", "test.join", "--input", "a.txt")
    gen(repo, "c.txt", "--model", "test.join", "--input", "b.txt")
    gen(repo, "x.txt", "--model", "test.text", "--seed", "2")
    gen(repo, "y.txt", "--model", "test.join", "--input", "x.txt")
    assert run_cli("regen", "x.txt", "--seed", "3", "--no-cascade", cwd=repo.root).code == 0
    os.unlink(repo.manifest.file_of("a.txt"))


def test_a_recipe_whose_input_is_no_longer_an_asset_fails_alone(tmp_repo, run_log):
    """An input's record gone from the manifest (a `git checkout` or revert
    took it away): render fails that asset, skips what is made from it, and
    still renders the rest. Before, the whole command stopped with
    `error: input a.txt is no longer an asset`, naming neither the asset
    that needs it nor a way on, and rendered nothing."""
    _input_gone(tmp_repo)
    r = run_cli("render", "--json", cwd=tmp_repo.root)
    assert r.code == 8, r.err
    got = {o["name"]: (o["status"], o["error"]) for o in r.json}
    assert got == {
        "b.txt": ("failed", "input a.txt is no longer an asset"),
        "c.txt": ("skipped", "its input b.txt failed"),
        "y.txt": ("rendered", ""),
    }, got
    assert (tmp_repo.root / "y.txt").read_bytes() == b"hello:3\n#" + str(tmp_repo.record("y.txt").current.recipe.seed).encode()
    text = run_cli("render", cwd=tmp_repo.root)
    assert text.code == 8 and "failed: b.txt: input a.txt is no longer an asset" in text.err, text.err
    # Named, or named with what waits on it: the same, not an internal error (KeyError).
    for names in (["b.txt"], ["c.txt"]):
        r = run_cli("render", *names, cwd=tmp_repo.root)
        assert r.code == 8 and "failed: b.txt: input a.txt is no longer an asset" in r.err, r.err


def test_an_update_never_records_over_a_version_another_command_recorded_meanwhile(tmp_repo):
    """`lattice render` re-makes stale b.txt from its recipe while, in
    another shell, `lattice regen b.txt --set delay=0` records a new one.
    Before, the render then recorded its output, made from the old recipe,
    on top: the regen's change was silently undone. Now the update starts
    again from the version current then (here: nothing left to do)."""
    import json
    import sys

    (tmp_repo.root / "slowcp.py").write_text(
        "import shutil, sys, time\ntime.sleep(float(sys.argv[3]))\nshutil.copy(sys.argv[1], sys.argv[2])\n")
    cfg = tmp_repo.dir / "config.toml"
    argv = [sys.executable, "slowcp.py", "{input0}", "{output}", "{param.delay}"]
    cfg.write_text(cfg.read_text() + f"\n[generators.slowcp]\nargv = {json.dumps(argv)}\n"
                   'extensions = ["txt"]\ninputs = [1, 1]\ndeterministic = true\n'
                   'params.delay = {type = "float", default = 0}\n')
    assert run_cli("trust", cwd=tmp_repo.root).code == 0
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    gen(tmp_repo, "b.txt", "--model", "slowcp", "--input", "a.txt", "--set", "delay=2")
    assert run_cli("regen", "a.txt", "--seed", "2", "--no-cascade", cwd=tmp_repo.root).code == 0
    p, jobs = _gen_running(tmp_repo, "", 0, argv=[sys.executable, "-m", "lattice", "render", "--json"])
    assert jobs and jobs[0]["payload"]["step"]["action"] == "update", jobs
    r = run_cli("regen", "b.txt", "--set", "delay=0", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert [(o["path"], o["status"]) for o in json.loads(out)] == [("b.txt", "unchanged")], out
    rec = tmp_repo.record("b.txt")
    assert [v.recipe.params["delay"] for v in rec.versions] == [2.0, 0.0]
    assert (tmp_repo.root / "b.txt").read_text() == "hello:2\n" and states(tmp_repo) == set()


def test_a_detached_render_says_what_it_did_not_queue(tmp_repo):
    """`render --detach` left out an asset whose input is no longer an asset,
    and what is made from it, without a word and exit 0: only the rest was
    queued. It now says so (stderr, also with --json) and exits as render
    without --detach does; the rest is still queued."""
    _input_gone(tmp_repo)
    r = run_cli("render", "--detach", "--json", cwd=tmp_repo.root)
    assert r.code == 8, r.err
    assert [j["path"] for j in r.json] == ["y.txt"]
    assert "failed: b.txt: input a.txt is no longer an asset" in r.err
    assert "skipped: c.txt: its input b.txt failed" in r.err
    text = run_cli("render", "--detach", cwd=tmp_repo.root)
    assert text.code == 8 and "failed: b.txt: input a.txt is no longer an asset" in text.err, text.err


def test_a_job_cancelled_just_before_it_records_records_nothing(tmp_repo):
    """`lattice queue cancel` while the generator's last moments run: the
    worker hears of it at its next heartbeat (up to a second later), after
    the generator is done. Before, the step recorded the version and wrote
    the file all the same, while the queue and the command said "cancelled
    ... a cancelled job records nothing"; now the step asks the queue at its
    commit point and records nothing."""
    p, jobs = _gen_running(tmp_repo, "cc.txt", delay=0.6)
    assert run_cli("queue", "cancel", str(jobs[0]["id"]), cwd=tmp_repo.root).code == 0
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1 and f"cancelled: cc.txt: job {jobs[0]['id']} was cancelled" in err, err
    assert run_cli("queue", "show", str(jobs[0]["id"]), "--json", cwd=tmp_repo.root).json["state"] == "cancelled"
    assert tmp_repo.index.count() == 0 and tmp_repo.manifest.read("cc.txt") is None
    assert not (tmp_repo.root / "cc.txt").exists()


def test_dead_local_worker_is_reclaimed_without_waiting_for_its_lease(tmp_repo, run_log):
    import signal
    import subprocess
    import sys
    import time

    from conftest import run_proc

    cfg = tmp_repo.dir / "config.toml"
    cfg.write_text(cfg.read_text() + "\n[queue]\nlease = 600\n")  # far longer than this test
    run_cli("gen", "slow.txt", "--model", "test.text", "--set", "delay=3", "--detach", cwd=tmp_repo.root)
    w = subprocess.Popen([sys.executable, "-m", "lattice", "worker", "--slots", "1"], cwd=tmp_repo.root,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while not run_log() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(w.pid, signal.SIGKILL)
    w.wait()
    run_proc("worker", "--once", "--slots", "1", cwd=tmp_repo.root, check=True)
    assert len(tmp_repo.record("slow.txt").versions) == 1 and len(run_log()) == 2


def test_a_job_planned_on_an_older_state_is_superseded_not_stacked(tmp_repo):
    from conftest import run_proc

    r = run_cli("gen", "a.txt", "--model", "test.text", "--seed", "1", "--detach", cwd=tmp_repo.root)
    assert r.code == 0
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "2")  # the user's newer gen runs first
    w = run_proc("worker", "--once", "--json", cwd=tmp_repo.root, check=True)
    rec = tmp_repo.record("a.txt")
    assert len(rec.versions) == 1 and rec.current.recipe.seed == 2
    job = [j for j in run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json if j["id"] == 1][0]
    assert job["state"] == "succeeded" and job["result"]["status"] == "superseded"
    assert w.returncode == 0


def test_the_same_recipe_queued_on_two_branches_records_on_each(tmp_repo):
    """Jobs are deduplicated per branch: a gen on feat never merges into a
    job main queued (which could only record on main)."""
    from conftest import run_proc

    gen(tmp_repo, "seed.txt", "--model", "test.text")
    assert run_cli("gen", "x.txt", "--model", "test.text", "--detach", cwd=tmp_repo.root).code == 0
    assert run_cli("branch", "feat", cwd=tmp_repo.root).code == 0
    assert run_cli("switch", "feat", cwd=tmp_repo.root).code == 0
    r = run_cli("gen", "x.txt", "--model", "test.text", cwd=tmp_repo.root)
    assert r.code == 0 and Repository.find(tmp_repo.root).index.get("x.txt") is not None, r.err
    assert run_cli("switch", "main", cwd=tmp_repo.root).code == 0
    run_proc("worker", "--once", cwd=tmp_repo.root, check=True)
    assert Repository.find(tmp_repo.root).index.get("x.txt") is not None


def test_a_copied_project_runs_its_queued_jobs_in_itself(tmp_repo, tmp_path):
    """Jobs name the project root they were queued in; a copy (`cp -a`) or a
    moved project runs them in the repository whose queue holds them."""
    import shutil

    from conftest import run_proc

    assert run_cli("gen", "a.txt", "--model", "test.text", "--detach", cwd=tmp_repo.root).code == 0
    copy = tmp_path / "copy"
    shutil.copytree(tmp_repo.root, copy, symlinks=True)
    run_proc("worker", "--once", cwd=copy, check=True)
    assert (copy / "a.txt").exists() and Repository.find(copy).index.get("a.txt") is not None
    assert not (tmp_repo.root / "a.txt").exists() and Repository.find(tmp_repo.root).index.get("a.txt") is None


def test_a_job_queued_on_one_branch_never_records_on_another(tmp_repo):
    """A switch while a job waits (or runs): the job records nothing, rather
    than a version of another branch's asset on the branch now checked out."""
    from conftest import run_proc

    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    assert run_cli("branch", "feat", cwd=tmp_repo.root).code == 0
    assert run_cli("switch", "feat", cwd=tmp_repo.root).code == 0
    assert run_cli("regen", "a.txt", "--seed", "2", "--detach", cwd=tmp_repo.root).code == 0
    assert run_cli("gen", "b.txt", "--model", "test.text", "--detach", cwd=tmp_repo.root).code == 0
    assert run_cli("switch", "main", cwd=tmp_repo.root).code == 0
    run_proc("worker", "--once", cwd=tmp_repo.root, check=True)
    jobs = sorted(run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json, key=lambda j: j["id"])
    assert [j["result"]["status"] for j in jobs[1:]] == ["superseded", "superseded"]  # the two queued on feat
    fresh = Repository.find(tmp_repo.root)
    assert len(fresh.record("a.txt").versions) == 1 and fresh.index.get("b.txt") is None
    assert run_cli("fsck", cwd=tmp_repo.root).code == 0


@pytest.mark.parametrize("sig, code, said", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_ctrl_c_or_kill_kills_the_generators_child_process(tmp_repo, run_log, sig, code, said):
    import signal
    import subprocess
    import sys
    import time

    p = subprocess.Popen([sys.executable, "-m", "lattice", "gen", "h.txt", "--model", "test.hang"],
                         cwd=tmp_repo.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(line.startswith("child ") for line in run_log()):
        time.sleep(0.05)
    child = int([line for line in run_log() if line.startswith("child ")][0].split()[1])
    p.send_signal(getattr(signal, sig))
    _, err = p.communicate(timeout=60)
    assert p.returncode == code and err.strip().endswith(said), err
    job = run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json[0]
    assert job["state"] == "cancelled"
    for _ in range(50):  # the kill is immediate; reaping may lag a moment
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"generator child {child} survived Ctrl-C")
    assert [p.name for p in (tmp_repo.dir / "tmp").iterdir() if not p.name.startswith("key-")] == []


def test_a_generator_that_leaves_a_process_behind_is_done_when_it_exits():
    """A background child holding the generator's stdout neither keeps the
    run waiting for the pipe to close nor outlives it."""
    import sys
    import time

    from lattice.childproc import run_child

    lines: list[str] = []
    code = "import subprocess; p = subprocess.Popen(['sleep', '60']); print(p.pid, flush=True)"
    started = time.monotonic()
    run_child([sys.executable, "-c", code], name="gen", on_stdout_line=lines.append, timeout=120)
    assert time.monotonic() - started < 50  # not the 60 s the leftover would hold the pipe
    pid = int(lines[0])

    def alive() -> bool:  # a zombie nobody reaped (no init in a container) is dead too
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rpartition(")")[2].split()[0] != "Z"
        except FileNotFoundError:
            return False

    for _ in range(50):
        if not alive():
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the generator's background process outlived it")


@pytest.mark.parametrize("argv, transient", [
    (["sh", "-c", "echo 'RuntimeError: bad prompt' >&2; exit 1"], False),  # the same run fails the same way
    (["sh", "-c", "kill -KILL $$"], True),  # killed by a signal (the OOM killer)
    (["sh", "-c", "sh -c 'kill -KILL $$'; exit $?"], True),  # the same, reported by a wrapping shell as 137
    (["/nonexistent/generator"], False),  # cannot start, and never will
    (["sh", "-c", "exit 234"], False),  # ffmpeg's "invalid argument" (256 - EINVAL), no signal
    (["sh", "-c", "exit 187"], False),  # ffmpeg's failed encoder (AVERROR_EXTERNAL), though 128 + 59
    (["sh", "-c", "sh -c 'kill -TERM $$'; exit $?"], True),  # a shutdown, reported by a wrapping shell as 143
])
def test_which_child_failures_another_try_may_fix(argv, transient):
    from lattice.childproc import run_child
    from lattice.errors import GeneratorFailed

    with pytest.raises(GeneratorFailed) as e:
        run_child(argv, name="gen")
    assert e.value.transient is transient


def test_a_start_refused_for_want_of_processes_may_pass_later(monkeypatch):
    import errno
    import subprocess

    from lattice.childproc import run_child
    from lattice.errors import GeneratorFailed

    def busy(*a, **k):
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(subprocess, "Popen", busy)
    with pytest.raises(GeneratorFailed, match="cannot start gen") as e:
        run_child(["true"], name="gen")
    assert e.value.transient


def test_gen_from_an_input_gc_evicted_re_makes_it_first(tmp_repo):
    gen(tmp_repo, "a.txt", "--model", "test.text")
    gc = ["gc", "--include-current", "--older-than", "0", "--keep-versions", "0"]
    r = run_cli(*gc, cwd=tmp_repo.root)
    assert r.code == 0 and not tmp_repo.objects.has(tmp_repo.record("a.txt").current.object)
    # The working file still holds it: taken back from there, nothing re-made.
    r = run_cli("gen", "b.txt", "--model", "test.join", "--input", "a.txt", cwd=tmp_repo.root)
    assert r.code == 0 and "re-making" not in r.err and (tmp_repo.root / "b.txt").exists(), r.err
    assert run_cli(*gc, cwd=tmp_repo.root).code == 0
    (tmp_repo.root / "a.txt").unlink()
    r = run_cli("gen", "c.txt", "--model", "test.join", "--input", "a.txt", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    assert "re-making evicted a.txt@v1" in r.err and (tmp_repo.root / "c.txt").exists()


def test_a_plug_in_that_raises_fails_once_with_one_line(tmp_repo, monkeypatch):
    """A deterministic CPU generator's own exception is a GeneratorFailed
    like any other: one clear line, no retries (the same run fails the same
    way), and no scratch left; a folder written as output is cleaned up."""
    import lattice_testgens

    def boom(self, ctx):
        raise RuntimeError("model weights missing")

    monkeypatch.setattr(lattice_testgens.Text, "run", boom)
    r = run_cli("gen", "a.txt", "--model", "test.text", cwd=tmp_repo.root)
    assert r.code == 8 and "generator test.text failed: RuntimeError: model weights missing" in r.err, r.err
    assert "gave up after" not in r.err
    [job] = run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json
    assert job["attempts"] == 1

    def folder(self, ctx):
        ctx.output.mkdir()

    monkeypatch.setattr(lattice_testgens.Text, "run", folder)
    r = run_cli("gen", "b.txt", "--model", "test.text", cwd=tmp_repo.root)
    assert r.code == 8 and "wrote something other than a regular file" in r.err, r.err
    assert [p for p in (tmp_repo.dir / "tmp").iterdir() if not p.name.startswith("key-")] == []


def test_a_long_running_worker_reads_an_edited_config_again(tmp_repo):
    from lattice.jobs import _repo

    root = str(tmp_repo.root)
    assert "versions" not in _repo(root).config
    (tmp_repo.dir / "config.toml").write_text("[versions]\nimage = 3\n")
    assert _repo(root).config["versions"] == {"image": 3}


def test_a_plug_in_that_prints_leaves_json_on_stdout_intact(tmp_repo, monkeypatch):
    import lattice_testgens

    real = lattice_testgens.Text.run

    def chatty(self, ctx):
        for _ in range(100):
            print("loading weights...")
        return real(self, ctx)

    monkeypatch.setattr(lattice_testgens.Text, "run", chatty)
    r = run_cli("gen", "a.txt", "--model", "test.text", "--json", cwd=tmp_repo.root)
    assert r.code == 0 and "loading weights" not in r.out and "loading weights" in r.err, r.out[:300]
    assert [o["name"] for o in r.json] == ["a.txt"]


def test_a_damaged_config_is_reported_not_taken_for_up_to_date(tmp_repo, run_log):
    """render (--check too) and verify stop with exit 5 naming the file;
    fsck lists it as a problem."""
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    with open(tmp_repo.dir / "config.toml", "a") as f:
        f.write("[[[ broken\n")
    for args in (["render", "--check"], ["render"], ["verify", "--all"]):
        r = run_cli(*args, cwd=tmp_repo.root)
        assert r.code == 5 and "config.toml" in r.err and "fix the TOML syntax" in r.err, (args, r.err)
    r = run_cli("fsck", "--json", cwd=tmp_repo.root)
    assert r.code == 1 and [p["kind"] for p in r.json["problems"]] == ["config"]


_INTERRUPTED_AFTER_RECORD = """
import os, signal, sys, time
import lattice.worktree as worktree
from lattice.cli.entry import run
real = worktree.materialize

def materialize(*a, **k):  # the version is recorded; Ctrl-C arrives now
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)
    return real(*a, **k)

worktree.materialize = materialize
sys.argv = ["lattice", "gen", "a.txt", "--model", "test.text", "--seed", "5"]
run()
"""


def test_ctrl_c_after_a_version_is_recorded_leaves_its_job_to_finish(tmp_repo, run_log):
    """The job is past its commit point: not cancelled (the queue would then
    contradict the log), not handed back (it would run twice); it ends
    "succeeded" with its working file written, and the command exits 130."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _INTERRUPTED_AFTER_RECORD], cwd=tmp_repo.root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    jobs = run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json
    assert [j["state"] for j in jobs] == ["succeeded"], jobs
    assert len(tmp_repo.record("a.txt").versions) == 1 and (tmp_repo.root / "a.txt").read_text() == "hello:5\n"
    assert states(tmp_repo) == set()


def test_a_working_file_holding_an_older_version_is_outdated_not_modified(tmp_repo, run_log):
    """After a `git pull` or `git checkout` moved the manifest on, the file
    lattice wrote holds an older recorded version: "outdated", which render
    and checkout bring up to date and nothing refuses over, never
    "modified" with a hint to record it (that would revert the change)."""
    from lattice.add import add

    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    old_output = (tmp_repo.root / "a.txt").read_bytes()
    assert run_cli("regen", "a.txt", "--seed", "2", cwd=tmp_repo.root).code == 0
    (tmp_repo.root / "p.png").write_bytes(b"v1")
    add(tmp_repo, ["p.png"], cwd=tmp_repo.root)
    (tmp_repo.root / "p.png").write_bytes(b"v2")
    add(tmp_repo, ["p.png"], cwd=tmp_repo.root)
    (tmp_repo.root / "a.txt").write_bytes(old_output)  # what a pull leaves behind
    (tmp_repo.root / "p.png").write_bytes(b"v1")
    assert run_cli("status", "--porcelain", cwd=tmp_repo.root).out == " O a.txt\n O p.png\n"
    hooks = run_cli("hooks", "check", cwd=tmp_repo.root)
    assert hooks.code == 1 and "outdated: a.txt: `lattice checkout a.txt` (or `lattice render`)" in hooks.err
    plan = run_cli("render", "--dry-run", "--json", cwd=tmp_repo.root).json
    assert {(s["path"], s["action"]) for s in plan["steps"]} == {("a.txt", "materialize"), ("p.png", "materialize")}
    assert run_cli("render", cwd=tmp_repo.root).code == 0
    assert (tmp_repo.root / "a.txt").read_text() == "hello:2\n" and (tmp_repo.root / "p.png").read_bytes() == b"v2"
    assert states(tmp_repo) == set()
    # Nor does it block a regen or a restore, as edits would.
    (tmp_repo.root / "a.txt").write_bytes(old_output)
    assert run_cli("regen", "a.txt", "--seed", "3", cwd=tmp_repo.root).code == 0
    assert len(tmp_repo.record("a.txt").versions) == 3


def test_a_fresh_clone_takes_imports_back_from_their_working_files(tmp_repo, run_log):
    """git brought the imported file but not .lattice/objects: render,
    verify and checkout store the working file when its bytes are the
    recorded ones; without them it is exit 5, saying what would help."""
    import shutil

    from lattice.add import add

    (tmp_repo.root / "in.txt").write_text("imported")
    add(tmp_repo, ["in.txt"], cwd=tmp_repo.root)
    gen(tmp_repo, "out.txt", "--model", "test.join", "--input", "in.txt", "--seed", "1")
    shutil.rmtree(tmp_repo.dir / "objects")  # as in a clone
    (tmp_repo.root / "out.txt").unlink()
    r = run_cli("render", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    assert (tmp_repo.root / "out.txt").read_bytes() == b"imported#1" and states(tmp_repo) == set()
    assert run_cli("verify", "--all", cwd=tmp_repo.root).code == 0
    shutil.rmtree(tmp_repo.dir / "objects")
    (tmp_repo.root / "in.txt").write_text("other bytes")
    r = run_cli("cat", "in.txt@v1", cwd=tmp_repo.root)
    assert r.code == 5 and "its imported content" in r.err and "copy the original file to in.txt" in r.err, r.err


def test_an_evicted_output_does_not_block_a_commit(tmp_repo, run_log):
    """The recipe is what a commit needs; an output gc evicted is a cache."""
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    assert run_cli("gc", "--include-current", "--keep-versions", "0", "--older-than", "0", cwd=tmp_repo.root).code == 0
    assert run_cli("status", "--porcelain", cwd=tmp_repo.root).out == " E a.txt\n"
    assert run_cli("hooks", "check", cwd=tmp_repo.root).code == 0


def test_a_queued_materialize_whose_version_moved_on_re_makes_it(tmp_repo, run_log):
    """Planned on one version; by the time a worker claims it a `git pull`
    brought another whose output was never made here: it is re-made, not
    failed."""
    manifest = tmp_repo.dir / "manifest" / "a.txt.toml"
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    before = manifest.read_bytes()
    assert run_cli("regen", "a.txt", "--seed", "2", cwd=tmp_repo.root).code == 0
    after = manifest.read_bytes()
    os.chmod(tmp_repo.objects.locate(tmp_repo.record("a.txt").current.object), 0o644)
    tmp_repo.objects.locate(tmp_repo.record("a.txt").current.object).unlink()  # never made in this clone
    manifest.write_bytes(before)  # the clone before the pull
    (tmp_repo.root / "a.txt").unlink()
    assert run_cli("render", "--detach", cwd=tmp_repo.root).code == 0
    manifest.write_bytes(after)  # the pull
    r = run_cli("worker", "--once", "--json", cwd=tmp_repo.root)
    assert r.code == 0 and not r.json.get("failed") and r.json.get("succeeded"), r.out + r.err
    assert (tmp_repo.root / "a.txt").read_text() == "hello:2\n"
    assert run_cli("status", "--porcelain", cwd=tmp_repo.root).out == ""


def test_an_edit_whose_bytes_an_interrupted_add_stored_is_still_an_edit(tmp_repo, run_log):
    """An add stopped after storing objects leaves the edit's bytes in the
    store, referenced by no version: the file is still "modified", never
    "outdated" for render or switch to overwrite."""
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    (tmp_repo.root / "a.txt").write_text("my edit")
    tmp_repo.objects.put_file(tmp_repo.root / "a.txt")  # what the stopped add left
    assert run_cli("status", "--porcelain", cwd=tmp_repo.root).out == " M a.txt\n"
    r = run_cli("render", "--json", cwd=tmp_repo.root)
    assert r.code == 1 and r.json[0]["status"] == "skipped"
    assert (tmp_repo.root / "a.txt").read_text() == "my edit"


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"})


def checked_out_back(repo, edit: bool = False) -> tuple[str, str]:
    """A project in git whose output a.txt (kept out of git, as `lattice
    init --gitignore` keeps outputs) went v1 -> v2 over two commits, then
    `git checkout HEAD~1`: the manifest lists v1 only, the working file
    still holds v2 as lattice wrote it. A branch `feat` holds a third
    version. `edit`: a.txt is edited just before the checkout. Returns
    (v1's object, v2's object)."""
    from lattice.repo import write_gitignore

    _git(repo.root, "init", "-q")
    write_gitignore(repo.root)
    with open(repo.root / ".gitignore", "a") as f:
        f.write("a.txt\n")
    gen(repo, "a.txt", "--model", "test.text", "--seed", "1")
    v1 = repo.record("a.txt").current.object
    for args in (("branch", "feat"), ("switch", "feat"), ("regen", "a.txt", "--seed", "3"), ("switch", "main")):
        assert run_cli(*args, cwd=repo.root).code == 0
    _git(repo.root, "add", "-A")
    _git(repo.root, "commit", "-qm", "one")
    assert run_cli("regen", "a.txt", "--seed", "2", cwd=repo.root).code == 0
    v2 = repo.record("a.txt").current.object
    _git(repo.root, "add", "-A")
    _git(repo.root, "commit", "-qm", "two")
    if edit:
        (repo.root / "a.txt").write_text("my edit\n")
    _git(repo.root, "checkout", "-q", "HEAD~1")
    assert (repo.root / "a.txt").read_text() == ("my edit\n" if edit else "hello:2\n") and len(repo.record("a.txt").versions) == 1
    return v1, v2


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


@needs_git
def test_a_file_lattice_wrote_for_a_version_git_checkout_took_back_is_outdated(tmp_repo, run_log):
    """After `git checkout HEAD~1` the working file holds v2, which the
    manifest checked out does not list; but lattice wrote it, unchanged
    since, and the store keeps v2: "outdated", which render replaces with
    v1 (v2's object stays in the store), never "modified"."""
    _, v2 = checked_out_back(tmp_repo)
    assert run_cli("status", "--porcelain", cwd=tmp_repo.root).out == " O a.txt\n"
    assert run_cli("hooks", "check", cwd=tmp_repo.root).code == 1  # out of date, as any outdated file
    r = run_cli("render", "--json", cwd=tmp_repo.root)
    assert r.code == 0 and [(o["name"], o["status"]) for o in r.json] == [("a.txt", "materialized")], r.out + r.err
    assert (tmp_repo.root / "a.txt").read_text() == "hello:1\n" and tmp_repo.objects.has(v2)
    assert run_cli("status", "--porcelain", cwd=tmp_repo.root).out == ""
    # Back on the newer commit, v1 is an older version of the manifest: outdated as before.
    _git(tmp_repo.root, "checkout", "-q", "-")
    assert run_cli("status", "--porcelain", cwd=tmp_repo.root).out == " O a.txt\n"
    assert run_cli("render", cwd=tmp_repo.root).code == 0 and (tmp_repo.root / "a.txt").read_text() == "hello:2\n"


@needs_git
def test_a_switch_overwrites_a_file_lattice_wrote_for_a_version_git_took_back(tmp_repo, run_log):
    checked_out_back(tmp_repo)
    r = run_cli("switch", "feat", cwd=tmp_repo.root)
    assert r.code == 0 and "kept" not in r.err, r.err
    assert (tmp_repo.root / "a.txt").read_text() == "hello:3\n"
    assert run_cli("status", "--porcelain", cwd=tmp_repo.root).out == ""


@needs_git
@pytest.mark.parametrize("how", ["edited after", "edited before", "same size, same stat", "object evicted"])
def test_what_git_checkout_took_back_stays_protected_when_not_as_lattice_wrote_it(tmp_repo, run_log, how):
    """The file is lattice's only while it is exactly as lattice wrote it
    (stat and bytes) and the store still has those bytes: an edit, made
    after the checkout or before it, even one of the same size that keeps
    the stat (an edit within the same mtime tick), or a v2 whose object gc
    evicted (the file is then its only copy), stays "modified": render
    skips it, switch and regen refuse."""
    path = tmp_repo.root / "a.txt"
    _, v2 = checked_out_back(tmp_repo, edit=how == "edited before")
    if how == "edited after":
        path.write_text("my edit\n")
    elif how == "same size, same stat":
        st = os.stat(path)
        with open(path, "r+b") as f:  # in place: the inode stays
            f.write(b"HELLO:2\n")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert (os.stat(path).st_size, os.stat(path).st_ino, os.stat(path).st_mtime_ns) == (st.st_size, st.st_ino, st.st_mtime_ns)
    elif how == "object evicted":
        obj = tmp_repo.objects.locate(v2)
        os.chmod(obj, 0o644)
        obj.unlink()
    held = path.read_bytes()
    assert run_cli("status", "--porcelain", cwd=tmp_repo.root).out == " M a.txt\n"
    r = run_cli("render", "--json", cwd=tmp_repo.root)
    assert r.code == 1 and [(o["name"], o["status"]) for o in r.json] == [("a.txt", "skipped")], r.out + r.err
    assert run_cli("regen", "a.txt", "--seed", "4", cwd=tmp_repo.root).code == 12
    r = run_cli("switch", "feat", cwd=tmp_repo.root)
    assert r.code == 12 and "unrecorded changes in a.txt" in r.err and path.read_bytes() == held, r.out + r.err
    assert run_cli("status", "--porcelain", cwd=tmp_repo.root).out == " M a.txt\n"


def test_a_superseded_job_is_shown_as_such(tmp_repo, run_log):
    """Two detached regens planned on one version: the first records, the
    second records nothing; the worker and `queue ls` say so instead of
    counting both as succeeded."""
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    for seed in ("5", "6"):
        assert run_cli("regen", "a.txt", "--seed", seed, "--detach", cwd=tmp_repo.root).code == 0
    r = run_cli("worker", "--once", "--slots", "1", "--json", cwd=tmp_repo.root)
    assert r.code == 0 and r.json.get("succeeded") == 1 and r.json.get("superseded") == 1, r.out
    listing = run_cli("queue", "ls", cwd=tmp_repo.root).out
    assert "superseded: a.txt changed (v1 → v2) since this job was queued; nothing recorded" in listing, listing
    assert len(tmp_repo.record("a.txt").versions) == 2


def test_an_input_still_queued_is_named_as_such(tmp_repo, run_log):
    """`gen -i X` while X's detached job waits: not "not an asset" with a
    hint to generate it again, but the job that will make it."""
    assert run_cli("gen", "a.txt", "--model", "test.text", "--detach", cwd=tmp_repo.root).code == 0
    r = run_cli("gen", "b.txt", "--model", "test.join", "-i", "a.txt", cwd=tmp_repo.root)
    assert r.code == 4 and "job 1 that makes it is still queued" in r.err and "lattice worker --once" in r.err, r.err
    r = run_cli("gen", "c.txt", "--model", "test.join", "-i", "nope.txt", cwd=tmp_repo.root)
    assert r.code == 4 and "is not an asset" in r.err and "queued" not in r.err


# -- exit codes of gen, regen and render --------------------------------------


def test_gen_blocked_by_a_live_lock_exits_6_naming_the_holder(tmp_repo, monkeypatch):
    """The job fails on the repository lock, in the inline worker: the
    command exits 6 as any command kept out by the lock does, naming the
    holder, and records nothing. The queue keeps the code with the text."""
    import subprocess
    import sys

    import lattice.lock

    monkeypatch.setattr(lattice.lock, "DEFAULT_TIMEOUT", 0.3)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time\nfrom lattice.lock import RepoLock\nl=RepoLock(sys.argv[1]); l.acquire(); print('held', flush=True); time.sleep(60)", str(tmp_repo.dir / "lock")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        r = run_cli("gen", "a.txt", "--model", "test.text", cwd=tmp_repo.root)
        assert r.code == 6, r.err
        assert f"failed: a.txt: the repository is locked by pid {holder.pid}" in r.err and "Traceback" not in r.err
        r = run_cli("gen", "b.txt", "--model", "test.text", "--json", cwd=tmp_repo.root)
        assert r.code == 6 and r.json[0]["status"] == "failed" and r.json[0]["exit_code"] == 6
        jobs = run_cli("queue", "ls", "--json", cwd=tmp_repo.root).json
        assert [j["exit_code"] for j in jobs] == [6, 6]
        assert [j["attempts"] for j in jobs] == [1, 1]  # one wait, not a retry that makes the output again
    finally:
        holder.kill()
        holder.wait()
    assert tmp_repo.manifest.read("a.txt") is None and not (tmp_repo.root / "a.txt").exists()
    assert gen(tmp_repo, "a.txt", "--model", "test.text").code == 0  # the holder gone, it goes through


def test_a_failing_generator_exits_8_and_a_mix_of_causes_exits_1(tmp_repo):
    """README, "Exit codes": a render whose failed steps share a cause exits
    with its code (8: a generator failed), a dependent skipped for a failed
    input counting as that failure; failures with different causes exit 1,
    each listed. `render --check` still exits 1 for work to do."""
    import json
    import sys

    script = "import os, sys\nif os.path.exists('broken'): sys.exit('out of memory')\nopen(sys.argv[1], 'w').write('made')\n"
    (tmp_repo.root / "model.py").write_text(script)
    cfg = tmp_repo.dir / "config.toml"
    cfg.write_text(cfg.read_text() + f"\n[generators.model]\nargv = {json.dumps([sys.executable, 'model.py', '{output}', '{seed}'])}\n"
                   'extensions = ["txt"]\ndeterministic = true\n')
    assert run_cli("trust", cwd=tmp_repo.root).code == 0
    gen(tmp_repo, "m.txt", "--model", "model")
    gen(tmp_repo, "d.txt", "--model", "test.join", "--input", "m.txt")
    gen(tmp_repo, "k.txt", "--model", "test.text", "--seed", "1")
    (tmp_repo.root / "broken").touch()
    r = run_cli("regen", "m.txt", "--seed", "2", "--json", cwd=tmp_repo.root)
    by = {o["name"]: (o["status"], o["exit_code"]) for o in r.json}
    assert r.code == 8 and by == {"m.txt": ("failed", 8), "d.txt": ("skipped", 8)}, r.out
    # A render with m's output gone: the generator fails (8) ...
    tmp_repo.objects.remove(tmp_repo.record("m.txt").current.object)
    os.unlink(tmp_repo.root / "m.txt")
    assert run_cli("render", "--check", cwd=tmp_repo.root).code == 1
    r = run_cli("render", "m.txt", cwd=tmp_repo.root)
    assert r.code == 8 and "failed: m.txt" in r.err and "out of memory" in r.err
    # ... and with another step failing for a damaged recipe (5): a mix, exit 1.
    mf = tmp_repo.manifest.file_of("k.txt")
    mf.write_text(mf.read_text().replace('word = "hello"', 'word = "edited"'))
    tmp_repo.objects.remove(tmp_repo.record("k.txt").current.object)
    os.unlink(tmp_repo.root / "k.txt")
    r = run_cli("render", "--json", cwd=tmp_repo.root)
    by = {o["name"]: (o["status"], o["exit_code"]) for o in r.json}
    assert r.code == 1 and by == {"m.txt": ("failed", 8), "k.txt": ("failed", 5)}, r.out


@pytest.mark.parametrize("results, code", [
    ([("rendered", None), ("cached", None)], 0),
    ([("failed", 8), ("skipped", 8), ("rendered", None)], 8),  # a dependent skipped for the failure
    ([("failed", 6)], 6),
    ([("failed", 8), ("failed", 13)], 1),  # different causes
    ([("failed", None)], 1),  # a cause the queue could not name (a worker's lease expired)
    ([("skipped", None), ("failed", 8)], 8),  # a failure outweighs a skip over unrecorded edits
    ([("skipped", None)], 1),
    ([("skipped", 6)], 6),  # waited on another command's job, which failed
    ([("superseded", None), ("rendered", None)], 12),
    ([("superseded", None), ("failed", 8)], 8),
])
def test_exit_code_of_steps(results, code):
    from lattice.pipeline import exit_code
    from lattice.render import Outcome

    assert exit_code([Outcome(f"a{i}.txt", "generate", s, exit_code=c) for i, (s, c) in enumerate(results)]) == code


def test_a_progress_report_the_queue_cannot_take_does_not_stop_the_job(tmp_repo, monkeypatch, run_log):
    """Progress is advice: a full or read-only queue database refusing one
    leaves the job to finish, and its result says what is wrong, if anything."""
    from lattice.errors import WriteRefused
    from lattice.queue import JobQueue

    def refuse(self, *a, **k):
        raise WriteRefused("queue.db: no space left on the device")

    monkeypatch.setattr(JobQueue, "set_progress", refuse)
    r = gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "1")
    assert r.code == 0, r.err
    assert (tmp_repo.root / "a.txt").exists() and len(run_log()) == 1


def test_a_command_whose_worker_pool_stops_cancels_its_jobs(tmp_repo, monkeypatch, run_log):
    """The queue database failing under the inline pool (here: it cannot
    hand out the job) fails the command; its jobs are cancelled, as on
    Ctrl-C, not left queued for a later worker to record behind the user's
    back."""
    from lattice.errors import RepositoryCorrupt
    from lattice.queue import JobQueue

    def damaged(self, *a, **k):
        raise RepositoryCorrupt("queue.db: could not write the database (disk I/O error)")

    monkeypatch.setattr(JobQueue, "claim", damaged)
    r = run_cli("gen", "a.txt", "--model", "test.text", "--seed", "1", cwd=tmp_repo.root)
    assert r.code == 5 and "disk I/O error" in r.err, r.err
    monkeypatch.undo()
    jobs = run_cli("queue", "ls", "--all", "--json", cwd=tmp_repo.root).json
    assert [j["state"] for j in jobs] == ["cancelled"], jobs
    assert run_cli("worker", "--once", cwd=tmp_repo.root).code == 0
    assert tmp_repo.manifest.read("a.txt") is None and run_log() == []


_WORKER_KILLED_AFTER_RECORDING = """
import os, signal, sys
import lattice.render as render
render._write_recorded = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
from lattice.cli.entry import run
sys.argv = ["lattice", "worker", "--once"]
run()
"""


@pytest.mark.parametrize("detach", [["regen", "a.txt", "--seed", "2", "--detach"], ["regen", "a.txt", "--seed", "2", "--detach", "--model", "test.text"]])
def test_a_worker_killed_after_recording_leaves_the_next_run_to_write_the_files(tmp_repo, detach):
    """Killed between recording a version and writing its file, a job is
    handed back; its re-run (and its dependents') finds the version
    recorded and writes the files, instead of reporting it superseded and
    leaving them behind (outdated until a render)."""
    import signal
    import sys

    repo = tmp_repo
    assert run_cli("gen", "a.txt", "--model", "test.text", "--seed", "1", cwd=repo.root).code == 0
    assert run_cli("gen", "b.txt", "--model", "test.join", "-i", "a.txt", cwd=repo.root).code == 0
    assert run_cli(*detach, cwd=repo.root).code == 0
    proc = subprocess.run([sys.executable, "-c", _WORKER_KILLED_AFTER_RECORDING], cwd=repo.root, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    for _ in range(2):  # the lease of the killed worker's job lapses, then the job runs again
        r = run_cli("worker", "--once", cwd=repo.root)
        assert r.code == 0, r.err
    r = run_cli("status", "--porcelain", cwd=repo.root)
    assert r.out == "", r.out
    fresh = Repository.find(repo.root)
    assert all(repo.objects.has(fresh.record(n).current.object) for n in ("a.txt", "b.txt"))


def _gen_running(repo, name: str, delay: int, argv: list[str] | None = None):
    """A `lattice gen` of a slow output (or `argv`) in a process of its own,
    once its job is running: (the process, the queue's jobs)."""
    import subprocess
    import sys
    import time

    argv = argv or [sys.executable, "-m", "lattice", "gen", name, "--model", "test.text", "--set", f"delay={delay}"]
    p = subprocess.Popen(argv, cwd=repo.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    jobs = []
    while time.monotonic() < deadline:
        jobs = run_cli("queue", "ls", "--json", cwd=repo.root).json if (repo.dir / "queue.db").exists() else []
        if jobs and jobs[0]["state"] == "running":
            break
        time.sleep(0.1)
    return p, jobs


# -- the seed: what it changes, and a generator that ignores it ----------------

SKY = ("--set", "width=48", "--set", "height=32", "--set", "maxiter=300")


def test_a_new_seed_draws_another_mandelbrot_and_the_same_seed_the_same(tmp_repo):
    """The README's main job: `regen sky.png --seed 8` changes the picture,
    not only the recipe; going back to seed 7 gives v1's bytes again."""
    gen(tmp_repo, "sky.png", "--model", "ffmpeg.mandelbrot", "--seed", "7", *SKY)
    for seed in ("8", "7"):
        r = run_cli("regen", "sky.png", "--seed", seed, cwd=tmp_repo.root)
        assert r.code == 0, r.err
    v1, v2, v3 = tmp_repo.record("sky.png").versions
    assert v1.object != v2.object and v3.object == v1.object
    assert (v2.change, v2.recipe.params["view"], v2.recipe.generator_version) == ("regenerated", "seed", "2")


def test_regen_seed_of_a_generator_that_ignores_the_seed_is_refused(tmp_repo):
    gen(tmp_repo, "sky.png", "--model", "ffmpeg.mandelbrot", "--seed", "7", *SKY)
    gen(tmp_repo, "thumb.png", "--model", "ffmpeg.thumbnail", "--input", "sky.png", "--set", "size=16")
    assert tmp_repo.record("thumb.png").current.recipe.seed == 0  # none drawn: it would only split the cache
    for flag in (["--seed", "8"], ["--new-seed"]):
        r = run_cli("regen", "thumb.png", *flag, cwd=tmp_repo.root)
        assert r.code == 4, r.err
        assert f"ffmpeg.thumbnail makes the same output for every seed, so {' '.join(flag)} would change nothing" in r.err
        assert "`lattice regen sky.png --new-seed`" in r.err  # what would change it
    assert len(Repository(tmp_repo.root).record("thumb.png").versions) == 1
    r = run_cli("regen", "thumb.png", "--set", "size=8", cwd=tmp_repo.root)  # a parameter does change it
    assert r.code == 0, r.err
    r = run_cli("regen", "thumb.png", "--set", "size=12", "--seed", "5", cwd=tmp_repo.root)  # the seed beside it is said to do nothing
    assert r.code == 0 and "note: thumb.png: ffmpeg.thumbnail makes the same output for every seed; seed 5 is recorded" in r.err
    r = run_cli("gen", "t2.png", "--model", "ffmpeg.thumbnail", "--input", "sky.png", "--seed", "3", cwd=tmp_repo.root)
    assert r.code == 0 and "note: t2.png: ffmpeg.thumbnail makes the same output for every seed; seed 3 is recorded" in r.err


def test_mandelbrot_with_a_centre_given_ignores_the_seed_until_the_view_is_the_seeds(tmp_repo):
    gen(tmp_repo, "c.png", "--model", "ffmpeg.mandelbrot", "--seed", "7", *SKY, "--set", "start_x=-0.5")
    assert tmp_repo.record("c.png").current.recipe.params["view"] == "start"
    r = run_cli("regen", "c.png", "--seed", "8", cwd=tmp_repo.root)
    assert r.code == 4 and "--set view=seed lets the seed pick it" in r.err
    r = run_cli("regen", "c.png", "--seed", "8", "--set", "view=seed", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    v1, v2 = Repository(tmp_repo.root).record("c.png").versions
    assert v2.recipe.params["start_x"] == -0.743643887037158704752191506114774  # the given centre went with view=start
    assert v2.object != v1.object
    r = run_cli("regen", "c.png", "--set", "start_y=0.25", cwd=tmp_repo.root)  # a centre given again means it
    assert r.code == 0, r.err
    assert Repository(tmp_repo.root).record("c.png").current.recipe.params["view"] == "start"


def test_an_output_of_the_old_mandelbrot_is_kept_and_regen_records_the_new_one(tmp_repo):
    """A project recorded by version 1 (which drew one picture for every
    seed): its file stays, but is not re-made from a recipe whose meaning
    changed (as for any generator whose version changed); regen makes it
    anew, now with the seed's view."""
    from lattice.fsck import rebuild_index
    from lattice.recipe import recipe_key

    gen(tmp_repo, "sky.png", "--model", "ffmpeg.mandelbrot", "--seed", "7", *SKY)
    mf = tmp_repo.manifest.file_of("sky.png")
    mf.write_text(mf.read_text().replace('generator_version = "2"', 'generator_version = "1"').replace('view = "seed"\n', ""))
    old = tmp_repo.manifest.read("sky.png").current
    mf.write_text(mf.read_text().replace(old.recipe.key, recipe_key(old.recipe)))
    rebuild_index(tmp_repo)
    assert run_cli("render", "--check", cwd=tmp_repo.root).code == 0  # its file is still what v1 recorded
    tmp_repo.objects.remove(old.object)
    os.unlink(tmp_repo.root / "sky.png")
    r = run_cli("render", cwd=tmp_repo.root)
    # Refused before any job, as `cat` refuses it.
    assert r.code == 4 and "it cannot be re-made here: it was made by ffmpeg.mandelbrot version 1, and version 2 is installed" in r.err, r.err
    assert "`lattice regen sky.png` records a new output" in r.err
    r = run_cli("regen", "sky.png", "--seed", "8", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    new = Repository(tmp_repo.root).record("sky.png").current.recipe
    assert (new.generator_version, new.params["view"], new.seed) == ("2", "seed", 8)


def test_a_refused_command_says_whether_it_was_never_approved_or_changed_since(tmp_repo):
    """Never approved here, and approved but changed since (here a folder
    its argv names, which the program writes its cache into), are told
    apart: the second names the files the approval covers."""
    import sys

    (tmp_repo.root / "cache").mkdir()
    (tmp_repo.root / "gen.py").write_text(
        "import sys, time\nopen(f'cache/{time.time_ns()}', 'w').write('x')\nopen(sys.argv[-1], 'w').write('out')\n")
    cfg = tmp_repo.dir / "config.toml"
    cfg.write_text(cfg.read_text() + f'\n[generators.cached]\nargv = ["{sys.executable}", "gen.py", "--cache", "cache", "{{output}}"]\nextensions = ["txt"]\n')
    r = run_cli("gen", "a.txt", "--model", "cached", cwd=tmp_repo.root)
    assert r.code == 9 and "a config you have not approved" in r.err and "changed" not in r.err, r.err
    r = run_cli("trust", "--json", cwd=tmp_repo.root)
    from lattice.trust import trust_file

    assert r.code == 0 and r.json["trusted"] == ["cached"] and f'= "{r.json["digest"]}"' in trust_file().read_text()
    assert run_cli("gen", "a.txt", "--model", "cached", cwd=tmp_repo.root).code == 0
    r = run_cli("gen", "b.txt", "--model", "cached", cwd=tmp_repo.root)
    lines = r.err.strip().splitlines()
    assert r.code == 9 and len(lines) == 2, r.err
    assert lines[0] == "error: command generator cached: this project's commands changed since you approved them"
    assert lines[1].startswith("hint: review [generators] in .lattice/config.toml and the files its commands name (cache/")
    assert "gen.py" in lines[1] and "`lattice trust`" in lines[1]
    # An approvals file that cannot be read is named, not taken for no approval.
    trust_file().write_text("garbage [")
    r = run_cli("gen", "c.txt", "--model", "cached", cwd=tmp_repo.root)
    assert r.code == 9 and f"cannot read {trust_file()}" in r.err and len(r.err.strip().splitlines()) == 2, r.err
