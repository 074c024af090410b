"""Working with other tools: watch, pre-commit hooks, the plain git hook,
.gitignore advice, and the JSON contract of reporting commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import run_cli, run_proc
from lattice.repo import Repository
from lattice.watch import watch

ROOT = Path(__file__).resolve().parent.parent


def gen(repo, *args):
    r = run_cli("gen", *args, cwd=repo.root)
    assert r.code == 0, r.err


def test_watch_rerenders_dependent_and_debounces_a_burst(tmp_repo, run_log):
    repo = tmp_repo.gen({"src.txt": "v1"})
    run_cli("add", "src.txt", cwd=repo.root)
    gen(repo, "out.txt", "--model", "test.join", "--input", "src.txt", "--seed", "1")
    runs_before = len(run_log())
    stop, ready = threading.Event(), threading.Event()
    cycles = []
    t = threading.Thread(target=watch, args=(repo, cycles.append), kwargs={"stop": stop, "debounce_ms": 300, "ready": ready}, daemon=True)
    t.start()
    try:
        assert ready.wait(10)
        for i in range(5):  # a burst of saves
            (repo.root / "src.txt").write_text(f"v{i + 2}")
            time.sleep(0.02)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(c.outcomes for c in cycles):
            time.sleep(0.1)
        time.sleep(1.0)  # nothing else should arrive: the burst was one cycle
    finally:
        stop.set()
        t.join(10)
    assert len([c for c in cycles if c.recorded]) == 1
    assert cycles[0].recorded == ["src.txt"]
    assert [o.status for o in cycles[0].outcomes] == ["rendered"]
    assert len(run_log()) == runs_before + 1
    assert (repo.root / "out.txt").read_bytes() == b"v6#1"
    assert [v.change for v in repo.record("src.txt").versions] == ["imported", "edited"]


def test_watch_debounce_0_does_not_spin(tmp_repo, monkeypatch):
    """`--debounce 0` is allowed; the watcher's poll sleep is never 0 (a
    busy loop at 100% CPU while nothing changes)."""
    import watchfiles

    asked = {}

    def fake_watch(*args, **kwargs):
        asked.update(kwargs)
        return iter(())

    monkeypatch.setattr(watchfiles, "watch", fake_watch)
    watch(tmp_repo.gen({}), lambda c: None, debounce_ms=0)
    assert asked["step"] >= 10


def test_watch_reports_a_config_that_no_longer_parses(tmp_repo):
    """A save of config.toml that breaks it is reported in that cycle (it
    was only read, and the error shown, when a render first needed it)."""
    from lattice.watch import _guarded_cycle

    repo = tmp_repo.gen({})
    with open(repo.dir / "config.toml", "a") as f:
        f.write("this is [ not toml\n")
    cycle = _guarded_cycle(repo, [], True, None, None, 0)
    assert "config.toml" in cycle.error


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"})


def _precommit_config(project: Path) -> None:
    """A local pre-commit config with the hooks exactly as this repository
    ships them in .pre-commit-hooks.yaml, run with the installed `lattice`
    (language: system) so no network install is needed."""
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    bindir = str(Path(sys.executable).parent)
    for h in hooks:
        h["language"] = "system"
        h["entry"] = h["entry"].replace("lattice ", f"{bindir}/lattice ", 1)
    (project / ".pre-commit-config.yaml").write_text(yaml.safe_dump({"repos": [{"repo": "local", "hooks": hooks}]}))


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_precommit_hooks_pass_clean_and_fail_stale(tmp_repo):
    pre_commit = Path(sys.executable).parent / "pre-commit"
    repo = tmp_repo.gen({"src.txt": "v1"})
    _git(repo.root, "init", "-q")
    run_cli("init", "--gitignore", cwd=repo.root)  # already a repo: refused, but check the gitignore writer below
    from lattice.repo import write_gitignore

    write_gitignore(repo.root)
    run_cli("add", "src.txt", cwd=repo.root)
    gen(repo, "out.txt", "--model", "test.join", "--input", "src.txt")
    _precommit_config(repo.root)
    env = {**os.environ, "PRE_COMMIT_HOME": str(repo.root.parent / "pc-home")}
    _git(repo.root, "add", "-A")
    ok = subprocess.run([str(pre_commit), "run", "--all-files"], cwd=repo.root, capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    (repo.root / "src.txt").write_text("v2")  # an edit not recorded: out.txt would be stale
    run_cli("add", "src.txt", cwd=repo.root)
    _git(repo.root, "add", "-A")
    bad = subprocess.run([str(pre_commit), "run", "--all-files"], cwd=repo.root, capture_output=True, text=True, env=env)
    assert bad.returncode == 1
    assert "stale: out.txt" in bad.stdout + bad.stderr


def test_hooks_check_names_incomplete_recipes(tmp_repo):
    """A generator that is not installed here, or an input that is no longer
    an asset, makes a recipe that cannot be re-made: the hook says which."""
    from lattice.repo import Repository

    repo = tmp_repo.gen({"src.txt": "v1", "other.txt": "o"})
    run_cli("add", "src.txt", "other.txt", cwd=repo.root)
    gen(repo, "out.txt", "--model", "test.join", "--input", "src.txt")
    gen(repo, "two.txt", "--model", "test.join", "--input", "other.txt")
    assert run_cli("hooks", "check", cwd=repo.root).code == 0
    mf = repo.manifest.file_of("two.txt")
    mf.write_text(mf.read_text().replace('generator = "test.join"', 'generator = "gone.plugin"'))
    os.unlink(repo.manifest.file_of("src.txt"))  # src.txt is no longer an asset
    r = run_cli("hooks", "check", "--json", cwd=repo.root)
    assert r.code == 1
    found = {(f["path"], f["problem"], f["fix"].split(" ")[1]) for f in r.json}
    assert ("out.txt", "incomplete-recipe", "src.txt") in found
    assert ("two.txt", "incomplete-recipe", "gone.plugin") in found
    assert Repository.find(repo.root).index.generators() == {"out.txt": "test.join", "two.txt": "gone.plugin"}


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_large_media_hook_names_the_command(tmp_repo):
    pre_commit = Path(sys.executable).parent / "pre-commit"
    repo = tmp_repo.gen({"big.mp4": os.urandom(2 << 20), "small.png": b"tiny"})
    _git(repo.root, "init", "-q")
    _precommit_config(repo.root)
    _git(repo.root, "add", "big.mp4", "small.png", ".pre-commit-config.yaml")
    env = {**os.environ, "PRE_COMMIT_HOME": str(repo.root.parent / "pc-home")}
    r = subprocess.run([str(pre_commit), "run", "lattice-large-media"], cwd=repo.root, capture_output=True, text=True, env=env)
    assert r.returncode == 1
    assert "big.mp4" in r.stdout and "lattice add big.mp4" in r.stdout and "small.png" not in r.stdout


def test_hooks_manifest_is_valid_for_pre_commit():
    pre_commit = Path(sys.executable).parent / "pre-commit"
    r = subprocess.run([str(pre_commit), "validate-manifest", str(ROOT / ".pre-commit-hooks.yaml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_hooks_install_refuses_to_clobber(tmp_repo):
    _git(tmp_repo.root, "init", "-q")
    r = run_cli("hooks", "install", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    hook = tmp_repo.root / ".git" / "hooks" / "pre-commit"
    assert "lattice hooks check" in hook.read_text() and os.access(hook, os.X_OK)
    r = run_cli("hooks", "install", "--json", cwd=tmp_repo.root)  # idempotent
    assert r.code == 0 and r.json == {"installed": str(hook)}
    from lattice.hooks import HOOK_MARK

    hook.write_text(f"#!/bin/sh\n{HOOK_MARK}\nlattice hooks check\n")  # an older hook of ours
    assert run_cli("hooks", "install", cwd=tmp_repo.root).code == 0
    assert "large-media --" in hook.read_text()
    hook.write_text("#!/bin/sh\necho mine\n")
    r = run_cli("hooks", "install", cwd=tmp_repo.root)
    assert r.code == 12 and "already exists" in r.err
    assert hook.read_text() == "#!/bin/sh\necho mine\n"
    # A link whose target is gone is not written through, to wherever it points.
    hook.unlink()
    hook.symlink_to(tmp_repo.root / "gone" / "pre-commit")
    (tmp_repo.root / "gone").mkdir()
    r = run_cli("hooks", "install", cwd=tmp_repo.root)
    assert r.code == 12 and "which does not exist" in r.err and len(r.err.strip().splitlines()) == 2, r.err
    assert not (tmp_repo.root / "gone" / "pre-commit").exists() and hook.is_symlink()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_plain_git_hook_blocks_commit_of_stale_project(tmp_repo):
    repo = tmp_repo.gen({"src.txt": "v1"})
    _git(repo.root, "init", "-q")
    run_cli("add", "src.txt", cwd=repo.root)
    gen(repo, "out.txt", "--model", "test.join", "--input", "src.txt")
    run_cli("hooks", "install", cwd=repo.root)
    env_path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    (repo.root / "src.txt").write_text("v2")
    run_cli("add", "src.txt", cwd=repo.root)
    _git(repo.root, "add", "src.txt")
    r = subprocess.run(["git", "commit", "-qm", "x"], cwd=repo.root, capture_output=True, text=True,
                       env={**os.environ, "PATH": env_path, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"})
    assert r.returncode != 0 and "stale: out.txt" in r.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_plain_git_hook_works_for_a_project_inside_a_bigger_git_tree(tmp_path):
    """git runs hooks at the top of its working tree: the hook goes into the
    lattice project first, and sees only files staged inside it."""
    from lattice.repo import Repository

    top = tmp_path / "top"
    top.mkdir()
    _git(top, "init", "-q")
    repo = Repository.init(top / "my proj")
    (repo.root / "src.txt").write_text("v1")
    run_cli("add", "src.txt", cwd=repo.root)
    gen(repo, "out.txt", "--model", "test.join", "--input", "src.txt")
    assert run_cli("hooks", "install", cwd=repo.root).code == 0
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    (top / "readme.txt").write_text("hi")
    _git(top, "add", "readme.txt")
    r = subprocess.run(["git", "commit", "-qm", "x"], cwd=top, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    (repo.root / "src.txt").write_text("v2")
    run_cli("add", "src.txt", cwd=repo.root)
    (top / "readme.txt").write_text("again")
    _git(top, "add", "readme.txt")
    r = subprocess.run(["git", "commit", "-qm", "y"], cwd=top, capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "stale: out.txt" in r.stderr, r.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_init_in_git_tree_offers_and_writes_gitignore(tmp_path):
    _git(tmp_path, "init", "-q")
    r = run_cli("init", "p1", cwd=tmp_path)
    assert ".lattice/objects/" in r.out and not (tmp_path / ".gitignore").exists()
    r = run_cli("init", "p2", "--gitignore", cwd=tmp_path)
    assert r.code == 0
    # Beside the project's .lattice (a subfolder of the git tree here): git
    # anchors `.lattice/objects/` to the folder of the .gitignore saying it.
    text = (tmp_path / "p2" / ".gitignore").read_text()
    assert ".lattice/objects/" in text and ".lattice/manifest" not in text
    (tmp_path / "p2" / "a.txt").write_text("a")
    assert run_cli("add", "a.txt", cwd=tmp_path / "p2").code == 0
    _git(tmp_path, "add", "-A")
    staged = subprocess.run(["git", "diff", "--cached", "--name-only"], cwd=tmp_path, capture_output=True, text=True).stdout.split()
    assert "p2/.lattice/manifest/a.txt.toml" in staged
    assert not [p for p in staged if p.startswith(("p2/.lattice/objects/", "p2/.lattice/index.db", "p2/.lattice/lock"))], staged


def test_clone_without_index_rebuilds_it_and_render_recreates_outputs(tmp_repo, tmp_path):
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "3")
    gen(tmp_repo, "b.txt", "--model", "test.join", "--input", "a.txt")
    clone = tmp_path / "clone"
    clone.mkdir()
    # What git carries: the manifest, config and format — no objects, index or outputs.
    for part in ("manifest", "config.toml", "format", "README"):
        src = tmp_repo.dir / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, clone / ".lattice" / part if src.is_dir() else clone / ".lattice")
    st = run_proc("status", "--json", cwd=clone, check=True)
    assert {e["state"] for e in __import__("json").loads(st.stdout)} == {"evicted"}
    run_proc("render", cwd=clone, check=True)
    assert (clone / "b.txt").read_bytes() == (tmp_repo.root / "b.txt").read_bytes()
    assert run_proc("render", "--check", cwd=clone).returncode == 0


def _ci_example_steps() -> list[list[str]]:
    """The lattice commands docs/ci-example.yml runs, in order."""
    import shlex

    steps = yaml.safe_load((ROOT / "docs" / "ci-example.yml").read_text())["jobs"]["reproducible"]["steps"]
    runs = [shlex.split(s["run"], comments=True) for s in steps if "run" in s]
    return [argv[1:] for argv in runs if argv[0] == "lattice"]


def test_the_ci_example_fails_a_commit_whose_recipes_are_stale_and_passes_an_up_to_date_one(tmp_repo, tmp_path):
    """CI runs docs/ci-example.yml on a fresh clone. A commit made after
    `regen a.txt --no-cascade` without `lattice render` (b.txt is stale in
    the committed manifest) must fail it. Before, the example rendered
    first: that made b.txt's new version in CI's clone, and every later
    check (render --check, verify, hooks check) passed. A clone of an up
    to date project passes every step."""
    gen(tmp_repo, "a.txt", "--model", "test.text", "--seed", "3")
    gen(tmp_repo, "b.txt", "--model", "test.join", "--input", "a.txt")
    steps = _ci_example_steps()
    assert ["render", "--check"] in steps and ["hooks", "check"] in steps

    def ci(name: str) -> list[int]:
        clone = tmp_path / name
        for part in ("manifest", "history.git"):
            shutil.copytree(tmp_repo.dir / part, clone / ".lattice" / part)
        for part in ("config.toml", "format", "README"):
            shutil.copy(tmp_repo.dir / part, clone / ".lattice" / part)
        codes = []
        for argv in steps:
            codes.append(run_cli(*argv, cwd=clone).code)
            if codes[-1]:
                break  # a CI job stops at its first failing step
        return codes

    assert ci("fresh") == [0] * len(steps)
    assert run_cli("regen", "a.txt", "--seed", "4", "--no-cascade", cwd=tmp_repo.root).code == 0
    codes = ci("stale")
    assert codes[-1] == 1 and steps[len(codes) - 1] == ["hooks", "check"], codes


def test_reporting_commands_json_keys(tmp_repo):
    gen(tmp_repo, "a.txt", "--model", "test.text")
    keys = {
        ("status", "--json"): None,
        ("ls", "--json"): {"path", "kind", "version", "object", "size", "generator", "tags"},
        ("show", "a.txt", "--json"): {"path", "kind", "versions", "current"},
        ("fsck", "--json"): {"ok", "objects", "assets", "problems", "notes"},
        ("render", "--dry-run", "--json"): {"steps", "skipped"},
        ("verify", "--all", "--json"): {"path", "version", "status", "recorded"},
        ("lineage", "a.txt", "--json"): {"path", "children"},
        ("generators", "--json"): {"id", "version", "params", "deterministic"},
        ("queue", "ls", "--json"): {"id", "type", "state", "priority", "progress", "stage"},
        ("hooks", "check", "--json"): None,
    }
    for args, want in keys.items():
        r = run_cli(*args, cwd=tmp_repo.root)
        assert r.code == 0, (args, r.err)
        data = r.json
        if want:
            item = data[0] if isinstance(data, list) else data
            assert want <= set(item), (args, set(item))
    # What gen, regen and render did name each asset as `path` too (and `name`, as before).
    for args in (("gen", "b.txt", "--model", "test.join", "--input", "a.txt", "--json"),
                 ("regen", "a.txt", "--seed", "9", "--json")):
        r = run_cli(*args, cwd=tmp_repo.root)
        assert r.code == 0 and r.json and all(o["path"] == o["name"] for o in r.json), (args, r.out)
    (tmp_repo.root / "b.txt").write_text("my edit")
    assert run_cli("regen", "a.txt", "--seed", "10", "--no-cascade", cwd=tmp_repo.root).code == 0
    plan = run_cli("render", "--dry-run", "--json", cwd=tmp_repo.root).json
    assert [(o["path"], o["status"]) for o in plan["skipped"]] == [("b.txt", "skipped")], plan
    done = run_cli("render", "--json", cwd=tmp_repo.root)
    assert done.code == 1 and [(o["path"], o["status"]) for o in done.json] == [("b.txt", "skipped")], done.out


def test_watch_survives_a_file_still_being_written(tmp_repo, monkeypatch):
    """A save that is still in progress when the cycle starts is retried,
    never ends the watch."""
    from lattice import watch as w
    from lattice.errors import ContentChanged

    calls = {"n": 0}

    def flaky(repo, sources, config_changed, slots=None, on_poll=None, cycle=None):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ContentChanged("src.txt: file changed while being added")
        return w.Cycle(recorded=list(sources))

    monkeypatch.setattr(w, "run_cycle", flaky)
    cycle = w._guarded_cycle(tmp_repo, ["src.txt"], False, None, None, 10)
    assert cycle.recorded == ["src.txt"] and calls["n"] == 2


def test_a_watch_cycle_that_fails_after_recording_reports_what_it_recorded(tmp_repo, monkeypatch):
    from lattice import watch as w
    from lattice.errors import TrustRequired

    tmp_repo.gen({"src.txt": "one"})
    run_cli("add", "src.txt", cwd=tmp_repo.root)
    (tmp_repo.root / "src.txt").write_text("two")

    def not_approved(*a, **k):
        raise TrustRequired("command generator up is declared in a config you have not approved")

    monkeypatch.setattr("lattice.lineage.Graph.from_index", not_approved)
    cycle = w._guarded_cycle(Repository.find(tmp_repo.root), ["src.txt"], False, None, None, 10)
    assert cycle.recorded == ["src.txt"] and "not approved" in cycle.error


@pytest.mark.parametrize("args", [["watch", "--debounce", "-5"], ["watch", "-j", "0"], ["queue", "watch", "--interval", "-1"]])
def test_watchers_refuse_impossible_settings_up_front(tmp_repo, args):
    from conftest import run_cli

    r = run_cli(*args, cwd=tmp_repo.root)
    assert r.code == 2 and "is not in the range" in r.err


def test_a_watch_cycle_renders_what_a_source_made_stale_whoever_recorded_it(tmp_repo, run_log):
    """The user ran `lattice add` on the edited input before the watcher's
    cycle: its own add finds nothing new, and the dependents it left stale
    are still rendered."""
    from lattice import watch as w

    tmp_repo.gen({"src.txt": "one"})
    assert run_cli("add", "src.txt", cwd=tmp_repo.root).code == 0
    assert run_cli("gen", "out.txt", "--model", "test.join", "--input", "src.txt", "--seed", "1", cwd=tmp_repo.root).code == 0
    (tmp_repo.root / "src.txt").write_text("two")
    assert run_cli("add", "src.txt", cwd=tmp_repo.root).code == 0  # before the watcher's cycle
    cycle = w.run_cycle(Repository.find(tmp_repo.root), ["src.txt"], False)
    assert cycle.recorded == [] and [o.name for o in cycle.outcomes] == ["out.txt"]
    assert (tmp_repo.root / "out.txt").read_bytes() == b"two#1"
    assert run_cli("status", "--porcelain", cwd=tmp_repo.root).out == ""


def test_a_watch_cycle_fails_an_unmakeable_asset_alone_as_render_does(tmp_repo, run_log):
    """An input that is no longer an asset (its record gone from the
    manifest): the cycle fails that asset and skips what waits on it, as
    `lattice render` does, and renders the rest. It queued it anyway, and
    its dependent failed as a job whose dependency had failed."""
    from lattice import watch as w

    tmp_repo.gen({"src.txt": "one", "gone.txt": "x"})
    assert run_cli("add", "src.txt", "gone.txt", cwd=tmp_repo.root).code == 0
    for name, inputs in (("a.txt", ["src.txt", "gone.txt"]), ("b.txt", ["a.txt"]), ("ok.txt", ["src.txt"])):
        args = [a for i in inputs for a in ("--input", i)]
        assert run_cli("gen", name, "--model", "test.join", *args, "--seed", "1", cwd=tmp_repo.root).code == 0
    os.unlink(tmp_repo.manifest.file_of("gone.txt"))
    (tmp_repo.root / "src.txt").write_text("two")
    cycle = w.run_cycle(Repository.find(tmp_repo.root), ["src.txt"], False)
    got = {o.name: (o.status, o.error) for o in cycle.outcomes}
    assert got == {"a.txt": ("failed", "input gone.txt is no longer an asset"),
                   "b.txt": ("skipped", "its input a.txt failed"),
                   "ok.txt": ("rendered", "")}, got


def _suggested(text: str, verb: str) -> list[list[str]]:
    """The `lattice VERB …` commands a message suggests, split as a shell would."""
    import re
    import shlex

    return [shlex.split(c) for c in re.findall(r"`(lattice " + verb + r" [^`]*)`", text)]


def test_hints_quote_names_for_the_shell(tmp_repo):
    """Every command a hint suggests runs as printed: a name with a space is
    quoted, one starting with '-' comes after `--`."""
    repo = tmp_repo.gen({"my shot.txt": "1", "-x.txt": "1", "big shot.mp4": b"\0" * 2048, "-big.mp4": b"\0" * 2048})
    assert run_cli("add", "--", "my shot.txt", "-x.txt", cwd=repo.root).code == 0
    for name in ("my shot.txt", "-x.txt"):
        (repo.root / name).write_text("2")
    r = run_cli("hooks", "check", cwd=repo.root)
    assert r.code == 1
    assert "`lattice add 'my shot.txt'`" in r.err and "`lattice checkout -- -x.txt`" in r.err, r.err
    for argv in _suggested(r.err, "add"):
        assert run_cli(*argv[1:], cwd=repo.root).code == 0, argv
    assert run_cli("hooks", "check", cwd=repo.root).code == 0
    r = run_cli("restore", "--", "-x.txt@v1", cwd=repo.root)
    assert r.code == 0, r.err
    (repo.root / "-x.txt").write_text("3")
    r = run_cli("restore", "--", "-x.txt@v1", cwd=repo.root)
    assert r.code == 12 and "`lattice restore --force -- -x.txt@v1`" in r.err, r.err
    (argv,) = _suggested(r.err, "restore")
    assert run_cli(*argv[1:], cwd=repo.root).code == 0 and (repo.root / "-x.txt").read_text() == "1"
    r = run_cli("hooks", "large-media", "--max-size", "1K", "--", "big shot.mp4", "-big.mp4", cwd=repo.root)
    assert r.code == 1
    assert "`lattice add 'big shot.mp4'`" in r.err and "`git rm --cached -- -big.mp4`" in r.err, r.err
    for argv in _suggested(r.err, "add"):
        assert run_cli(*argv[1:], cwd=repo.root).code == 0, argv
    assert {row.path for row in Repository.find(repo.root).index.rows(None)} >= {"big shot.mp4", "-big.mp4"}


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_hook_refuses_a_history_ref_committed_without_its_objects(tmp_path):
    """`git commit -a` takes history's changed ref file but not its new,
    untracked objects: a clone would have a branch naming a commit it lacks.
    The hook refuses that commit and names `git add`; with history staged
    whole (or no ref change) it passes."""
    from lattice.repo import write_gitignore

    top = tmp_path / "top"
    top.mkdir()
    _git(top, "init", "-q")
    repo = Repository.init(top / "proj")
    write_gitignore(repo.root)
    (repo.root / "src.txt").write_text("v1")
    run_cli("add", "src.txt", cwd=repo.root)
    assert run_cli("hooks", "install", cwd=repo.root).code == 0
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    _git(top, "add", "-A")
    assert run_cli("hooks", "check", cwd=repo.root).code == 0
    r = subprocess.run(["git", "commit", "-qm", "one"], cwd=top, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr

    (repo.root / "src.txt").write_text("v2")
    run_cli("add", "src.txt", cwd=repo.root)
    r = subprocess.run(["git", "commit", "-qam", "two"], cwd=top, capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "history-not-staged: proj/.lattice/history.git/refs/heads/main" in r.stderr, r.stderr
    assert "`git add -A proj/.lattice/history.git`" in r.stderr
    _git(top, "add", "proj/.lattice/history.git/refs")
    r = run_cli("hooks", "check", "--json", cwd=repo.root)
    assert r.code == 1 and [f["problem"] for f in r.json] == ["history-not-staged"]
    _git(top, "add", "-A")
    r = subprocess.run(["git", "commit", "-qm", "two"], cwd=top, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr


def _hook_project(top: Path, sub: str = "proj"):
    """A git working tree at `top` with a lattice project at `sub` (or at the
    top for "."), one asset, the plain hook installed; and a `commit` that
    runs `git commit ARGS` there as a user does (the hook runs)."""
    from lattice.repo import write_gitignore

    top.mkdir(parents=True, exist_ok=True)
    _git(top, "init", "-q")
    repo = Repository.init(top / sub)
    write_gitignore(repo.root)
    assert run_cli("hooks", "install", cwd=repo.root).code == 0
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}

    def commit(*args, cwd=top):
        return subprocess.run(["git", "commit", "-q", *args], cwd=cwd, capture_output=True, text=True, env=env)

    return repo, commit


def _record(repo, name, text):
    (repo.root / name).write_text(text)
    assert run_cli("add", name, cwd=repo.root).code == 0


def _clone_history_log(src: Path, dest: Path, sub: str) -> list[str]:
    import pygit2

    subprocess.run(["git", "clone", "-q", str(src), str(dest)], check=True, capture_output=True)
    gitdir = dest / sub / ".lattice" / "history.git"
    (gitdir / "refs").mkdir(exist_ok=True)  # git keeps no empty folder: refs/ is gone when packed-refs holds them all
    g = pygit2.Repository(str(gitdir), pygit2.enums.RepositoryOpenFlag.NO_SEARCH)
    return [c.message.strip() for c in g.walk(g.head.target)]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_hook_never_refuses_a_commit_of_history_staged_whole(tmp_path):
    """A false refusal blocks every commit: the first commit, one before any
    history, `git add -A` after adds, after a repack and after `git
    pack-refs`, and a commit that leaves history alone all pass."""
    from lattice import history

    repo, commit = _hook_project(tmp_path / "top", ".")
    top = repo.root
    (top / "readme.txt").write_text("hi")
    _git(top, "add", "-A")
    assert not history.exists(repo)
    r = commit("-m", "first")  # no history commit yet, no git HEAD yet
    assert r.returncode == 0, r.stderr
    _record(repo, "a.txt", "1")
    _git(top, "add", "-A")
    assert (r := commit("-m", "a")).returncode == 0, r.stderr
    _record(repo, "b.txt", "1")
    (top / "readme.txt").write_text("unrelated")
    _git(top, "add", "readme.txt")  # history moved, none of it staged: an older, whole history is committed
    assert (r := commit("-m", "readme")).returncode == 0, r.stderr
    _git(top, "add", "-A")
    _record(repo, "c.txt", "1")  # staged, then history moves again: what is staged is whole
    assert (r := commit("-m", "b")).returncode == 0, r.stderr
    _git(top, "add", "-A")
    assert (r := commit("-m", "c")).returncode == 0, r.stderr
    assert history.repack(repo, force=True)
    _git(top, "add", "-A")
    assert (r := commit("-m", "repacked")).returncode == 0, r.stderr
    _git(top, "--git-dir", str(history.git_dir(repo)), "pack-refs", "--all")
    _git(top, "add", "-A")
    assert (r := commit("-m", "packed refs")).returncode == 0, r.stderr
    _record(repo, "d.txt", "1")
    assert (r := commit("-am", "d")).returncode != 0  # new objects untracked
    _git(top, "add", "-A")
    assert (r := commit("-m", "d")).returncode == 0, r.stderr
    assert _clone_history_log(top, tmp_path / "clone", ".")[0] == "add d.txt"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_hook_refuses_a_commit_deleting_repacked_history_objects(tmp_path):
    """`lattice gc` repacks history: every loose object file is deleted and a
    new, untracked pack written. `git commit -a` stages the deletions with no
    ref changed; the clone would have a history with no objects at all."""
    from lattice import history

    repo, commit = _hook_project(tmp_path / "top")
    for i in range(3):
        _record(repo, f"a{i}.txt", str(i))
    _git(tmp_path / "top", "add", "-A")
    assert (r := commit("-m", "base")).returncode == 0, r.stderr
    assert history.repack(repo, force=True)
    r = commit("-am", "gc")
    assert r.returncode != 0, r.stdout
    assert "history-not-staged: proj/.lattice/history.git/objects: the commit deletes history object files" in r.stderr, r.stderr
    assert "`git add -A proj/.lattice/history.git`" in r.stderr
    # the pack staged without its index is not enough either
    pack = next((history.git_dir(repo) / "objects" / "pack").glob("pack-*.pack"))
    _git(tmp_path / "top", "add", "-u")
    _git(tmp_path / "top", "add", str(pack))
    r = run_cli("hooks", "check", "--json", cwd=repo.root)
    assert r.code == 1 and [f["path"] for f in r.json] == ["proj/.lattice/history.git/objects"]
    _git(tmp_path / "top", "add", "-A")
    assert (r := commit("-m", "gc")).returncode == 0, r.stderr
    assert _clone_history_log(tmp_path / "top", tmp_path / "clone", "proj")[0] == "add a2.txt"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_hook_refuses_a_commit_losing_history_refs_to_pack_refs(tmp_path):
    """`git pack-refs` in history deletes refs/heads/main and writes an
    untracked packed-refs: `git commit -a` would commit history without its
    branch. The refs history has are compared with those the commit holds."""
    from lattice import history

    repo, commit = _hook_project(tmp_path / "top")
    _record(repo, "a.txt", "1")
    _git(tmp_path / "top", "add", "-A")
    assert (r := commit("-m", "base")).returncode == 0, r.stderr
    _git(tmp_path / "top", "--git-dir", str(history.git_dir(repo)), "pack-refs", "--all")
    r = commit("-am", "packed")
    assert r.returncode != 0
    assert "history-not-staged: proj/.lattice/history.git/refs/heads/main: history has refs/heads/main" in r.stderr, r.stderr
    _git(tmp_path / "top", "add", "-A")
    assert (r := commit("-m", "packed")).returncode == 0, r.stderr
    assert _clone_history_log(tmp_path / "top", tmp_path / "clone", "proj") == ["add a.txt"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_hook_checks_history_in_a_git_worktree_of_a_subfolder_project(tmp_path):
    """In a `git worktree`, git runs the hook with GIT_DIR set and no
    GIT_WORK_TREE; the hook goes into the project, which git would then take
    for the top of the working tree: no staged path would match."""
    repo, commit = _hook_project(tmp_path / "top")
    _record(repo, "a.txt", "1")
    _git(tmp_path / "top", "add", "-A")
    assert (r := commit("-m", "base")).returncode == 0, r.stderr
    wt = tmp_path / "wt"
    _git(tmp_path / "top", "worktree", "add", "-q", str(wt), "-b", "w")
    other = Repository.find(wt / "proj")
    _record(other, "b.txt", "2")
    r = commit("-am", "b", cwd=wt)
    assert r.returncode != 0 and "history-not-staged: proj/.lattice/history.git/refs/heads/main" in r.stderr, r.stderr
    r = commit("-am", "b", cwd=wt / "proj")  # from inside the project too
    assert r.returncode != 0 and "history-not-staged" in r.stderr, r.stderr
    hook = tmp_path / "top" / ".git" / "hooks" / "pre-commit"
    script = hook.read_text()
    hook.write_text("#!/bin/sh\ncd proj || exit 1\nlattice hooks check || exit 1\n")  # a hook of an older lattice
    r = commit("-am", "b", cwd=wt)
    assert r.returncode != 0 and "history-not-staged: proj/.lattice/history.git/refs/heads/main" in r.stderr, r.stderr
    hook.write_text(script)
    _git(wt, "add", "-A")
    assert (r := commit("-m", "b", cwd=wt / "proj")).returncode == 0, r.stderr
    (wt / "readme.txt").write_text("hi")
    _git(wt, "add", "readme.txt")
    assert (r := commit("-m", "readme", cwd=wt)).returncode == 0, r.stderr
