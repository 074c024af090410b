"""Version history in git: log, diff, restore, pin, branches, switch, merge,
version limits, and recovery when history is behind or damaged."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conftest import run_cli, run_proc
from lattice import history, history_fsck, history_pending, versions
from lattice.errors import Conflict, HistoryError, InvalidInput
from lattice.fsck import fsck
from lattice.repo import Repository

GIT = shutil.which("git")


def ok(*args, repo):
    r = run_cli(*args, cwd=repo.root)
    assert r.code == 0, f"lattice {' '.join(args)} -> {r.code}\n{r.out}\n{r.err}"
    return r


def write(repo, name, text):
    p = repo.root / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def add(repo, name, text):
    write(repo, name, text)
    return ok("add", name, repo=repo)


def git_log(repo, *fmt):
    return subprocess.run(
        ["git", f"--git-dir={repo.dir / 'history.git'}", "log", *fmt], capture_output=True, text=True, check=True
    ).stdout


def git_parents(repo) -> list[str]:
    """The parents of history's HEAD commit."""
    from lattice.history import open_git

    return [str(p) for p in open_git(repo).head.peel().parent_ids]


def gen(repo, name, width, seed=1):
    return ok("gen", name, "--model", "ffmpeg.testsrc", "--set", f"width={width}", "--set", "height=24", "--seed", str(seed), repo=repo)


def fresh(repo):
    return Repository(repo.root)


# -- history commits ------------------------------------------------------------


@pytest.mark.skipif(GIT is None, reason="needs the git binary")
def test_every_change_is_a_commit_readable_by_git(tmp_repo):
    repo = tmp_repo
    (repo.dir / "config.toml").write_text('[user]\nname = "Ada"\nemail = "ada@example.org"\n')
    add(repo, "a.txt", "one")
    add(repo, "a.txt", "two")
    ok("pin", "a.txt@v1", repo=repo)
    out = git_log(repo, "--format=%an <%ae>|%s")
    assert out.splitlines() == ["Ada <ada@example.org>|pin a.txt v1", "Ada <ada@example.org>|add a.txt", "Ada <ada@example.org>|add a.txt"]
    shown = subprocess.run(
        ["git", f"--git-dir={repo.dir / 'history.git'}", "show", "HEAD:manifest/a.txt.toml"], capture_output=True, text=True, check=True
    ).stdout
    assert shown == (repo.dir / "manifest" / "a.txt.toml").read_text()
    assert (repo.dir / "history.git" / "HEAD").read_text().strip() == "ref: refs/heads/main"


def test_commit_rewrites_only_the_changed_directories(tmp_repo):
    repo = tmp_repo
    add(repo, "a/x.txt", "1")
    add(repo, "b/y.txt", "1")
    g = history.open_git(repo)
    before = history.head_commit(g).tree
    add(repo, "a/x.txt", "2")
    after = history.head_commit(g).tree
    assert (after / "manifest" / "b").id == (before / "manifest" / "b").id
    assert (after / "manifest" / "a").id != (before / "manifest" / "a").id


def test_repository_without_history_gains_one_with_everything(tmp_repo):
    repo = tmp_repo
    add(repo, "a.txt", "1")
    shutil.rmtree(repo.dir / "history.git")
    add(repo, "b.txt", "1")
    g = history.open_git(repo)
    assert sorted(history.manifest_blobs(g, history.head_commit(g).tree)) == ["a.txt", "b.txt"]
    assert fsck(fresh(repo)).ok


# -- log and diff ---------------------------------------------------------------


def test_log_of_a_branch_or_tag_name_says_what_log_takes(tmp_repo):
    """`lattice log feat` reads as an asset's log: where feat is a branch
    or a tag, say so, and how to see it."""
    add(tmp_repo, "a.txt", "1")
    ok("branch", "feat", repo=tmp_repo)
    ok("tag", "v1", repo=tmp_repo)
    r = run_cli("log", "feat", cwd=tmp_repo.root)
    assert r.code == 4 and "feat is a branch" in r.err and "`lattice diff main feat`" in r.err and "`lattice switch feat`" in r.err
    r = run_cli("log", "v1", cwd=tmp_repo.root)
    assert r.code == 4 and "v1 is a tag" in r.err and "`lattice diff main v1`" in r.err
    r = run_cli("log", "nope", cwd=tmp_repo.root)
    assert r.code == 4 and "no asset named nope" in r.err and "lattice ls" in r.err
    r = run_cli("log", "main", cwd=tmp_repo.root)  # not `lattice diff main main`, nor a switch to where it is
    assert r.code == 4 and r.err == ("error: no asset named main: main is the current branch, and `lattice log PATH` lists an asset's versions\n"
                                     "hint: `lattice log` shows its history\n"), r.err


def test_log_project_and_asset_in_text_and_json(tmp_repo):
    repo = tmp_repo
    add(repo, "a.txt", "one")
    add(repo, "a.txt", "two")
    r = ok("log", repo=repo)
    assert r.out.count("add a.txt") == 2 and "tester" in r.out
    r = ok("log", "-n", "1", "--json", repo=repo)
    [c] = r.json
    assert c["message"] == "add a.txt" and len(c["commit"]) == 40 and c["author"].startswith("tester")
    r = ok("log", "a.txt", repo=repo)
    lines = r.out.splitlines()
    assert lines[0].startswith("v2 ") and "edited" in lines[0] and "present (current)" in lines[0]
    assert "imported" in r.out
    data = ok("log", "a.txt", "--json", repo=repo).json
    assert [v["number"] for v in data] == [2, 1] and data[0]["current"] and data[1]["present"]
    r = run_cli("log", "b.txt", cwd=repo.root)
    assert r.code == 4 and "a.txt" in r.err  # the closest name is offered


def test_log_of_a_version_starts_there_and_refuses_one_the_asset_lacks(tmp_repo):
    """`lattice log PATH@vN` lists vN and the versions before it, as `git log
    REV` starts at REV; a version the asset does not have is refused (4),
    naming those it has."""
    repo = tmp_repo
    for text in ("one", "two", "three"):
        add(repo, "a.txt", text)
    lines = [line for line in ok("log", "a.txt@v2", repo=repo).out.splitlines() if line.startswith("v")]
    assert [line.split()[0] for line in lines] == ["v2", "v1"] and "(current)" not in lines[0]
    assert [v["number"] for v in ok("log", "a.txt@v3", "-n", "1", "--json", repo=repo).json] == [3]
    assert [v["number"] for v in ok("log", "a.txt@1", "--json", repo=repo).json] == [1]
    r = run_cli("log", "a.txt@v999", cwd=repo.root)
    assert r.code == 4 and r.out == ""
    assert "error: a.txt has no version v999" in r.err and "its versions are v1 to v3" in r.err


def test_a_version_an_asset_with_one_version_lacks_is_refused_in_words(tmp_repo):
    """`log a.txt@v2` of an asset with v1 alone hinted "its versions are v1
    to v1"."""
    repo = tmp_repo
    add(repo, "a.txt", "one")
    r = run_cli("log", "a.txt@v2", cwd=repo.root)
    assert r.code == 4 and r.err.splitlines() == ["error: a.txt has no version v2", "hint: its only version is v1 (`lattice log a.txt`)"]
    assert run_cli("show", "a.txt@v3", cwd=repo.root).err.splitlines()[1] == "hint: its only version is v1 (`lattice log a.txt`)"


def test_diff_versions_text_and_json(tmp_repo):
    repo = tmp_repo
    gen(repo, "x.png", 32, seed=1)
    ok("regen", "x.png", "--seed", "2", "--set", "width=48", repo=repo)
    r = ok("diff", "x.png@v1", "x.png@v2", repo=repo)
    assert "seed: 1 -> 2" in r.out and "params.width: 32 -> 48" in r.out and "object:" in r.out
    data = ok("diff", "x.png@v1", "@v2", "--json", repo=repo).json
    fields = {c["field"]: (c["old"], c["new"]) for c in data["changes"]}
    assert fields["seed"] == (1, 2) and fields["params.width"] == (32, 48)
    r = run_cli("diff", "x.png@v1", "x.png@v9", cwd=repo.root)
    assert r.code == 4 and "no version v9" in r.err


def test_diff_between_branches_and_tags(tmp_repo):
    repo = tmp_repo
    add(repo, "a.txt", "1")
    add(repo, "b.txt", "1")
    ok("tag", "start", repo=repo)
    add(repo, "a.txt", "2")
    add(repo, "c.txt", "1")
    (repo.root / "b.txt").unlink()
    with repo.transaction("remove b.txt") as tx:
        tx.remove("b.txt")
    r = ok("diff", "start", "main", repo=repo)
    assert r.out.splitlines() == ["A  c.txt", "D  b.txt", "M  a.txt (v1 -> v2)"]
    data = ok("diff", "start", "HEAD", "--json", repo=repo).json
    assert data["added"] == ["c.txt"] and data["removed"] == ["b.txt"] and data["changed"][0]["path"] == "a.txt"
    assert ok("tag", repo=repo).out.split() == ["start"]
    r = run_cli("diff", "strat", "main", cwd=repo.root)
    assert r.code == 4 and "start" in r.err and "Traceback" not in r.err


# -- restore and pin ----------------------------------------------------------------


def test_restore_round_trip_adds_a_version(tmp_repo):
    repo = tmp_repo
    add(repo, "a.txt", "first")
    add(repo, "a.txt", "second")
    r = ok("restore", "a.txt@v1", repo=repo)
    assert "restored a.txt v1 as v3" in r.out
    assert (repo.root / "a.txt").read_text() == "first"
    record = fresh(repo).record("a.txt")
    v3 = record.current
    assert (v3.number, v3.change, v3.restored_from, v3.object) == (3, "restored", 1, record.versions[0].object)
    assert [v.change for v in record.versions] == ["imported", "edited", "restored"]
    assert run_cli("status", cwd=repo.root).out == ""
    assert "restore a.txt v1 as v3" in history.log(repo, 1)[0].message


def test_restore_rerenders_an_evicted_output(tmp_repo):
    repo = tmp_repo
    gen(repo, "x.png", 32)
    old_bytes = (repo.root / "x.png").read_bytes()
    gen(repo, "x.png", 48)
    v1 = fresh(repo).record("x.png").versions[0]
    os.unlink(repo.objects.locate(v1.object))
    with repo.index as index:
        index.cache_drop(v1.recipe.key)
    data = ok("restore", "x.png@v1", "--json", repo=repo).json
    assert data["rendered"] and data["version"] == 3 and data["object"] == v1.object
    assert (repo.root / "x.png").read_bytes() == old_bytes


def test_restoring_an_output_made_from_an_older_input_says_render_makes_it_again(tmp_repo):
    """A restored output whose input has moved on is stale at once: the
    next render makes it again from the current input, undoing the
    restore. restore says so, and how to bring the input back too."""
    repo = tmp_repo
    gen(repo, "a.png", 32)
    ok("gen", "b.png", "--model", "ffmpeg.thumbnail", "--input", "a.png", "--set", "size=16", repo=repo)
    ok("regen", "a.png", "--set", "width=48", repo=repo)  # b.png follows: v2, made from a.png v2
    r = ok("restore", "b.png@v1", repo=repo)
    assert r.err == ("note: b.png v3 is made from a.png v1, and a.png is at v2: it is stale, and `lattice render` makes it "
                     "again from the current input; `lattice restore a.png@v1` brings that input back too\n"), r.err
    assert ok("restore", "b.png@v2", "--json", repo=repo).json["moved_inputs"] == []
    assert ok("restore", "b.png@v1", "--json", repo=repo).json["moved_inputs"] == [["a.png", 1, 2]]
    ok("restore", "a.png@v1", repo=repo)
    assert ok("render", "--check", repo=repo).code == 0  # b.png v5 and a.png v3 agree again


def test_restore_refuses_bad_input_and_unrecorded_edits(tmp_repo):
    repo = tmp_repo
    add(repo, "a.txt", "1")
    add(repo, "a.txt", "2")
    r = run_cli("restore", "a.txt@v7", cwd=repo.root)
    assert r.code == 4 and "no version v7" in r.err and "hint:" in r.err
    r = run_cli("restore", "a.txt", cwd=repo.root)
    assert r.code == 4 and "needs a version" in r.err
    r = run_cli("restore", "a.tx@v1", cwd=repo.root)
    assert r.code == 4 and "did you mean: a.txt" in r.err
    assert run_cli("restore", "a.txt@v2", cwd=repo.root).code == 4  # already current
    write(repo, "a.txt", "unsaved work")
    r = run_cli("restore", "a.txt@v1", cwd=repo.root)
    assert r.code == 12 and "not recorded" in r.err
    assert (repo.root / "a.txt").read_text() == "unsaved work"
    assert len(fresh(repo).record("a.txt").versions) == 2


def test_pin_holds_while_new_versions_are_added(tmp_repo):
    repo = tmp_repo
    gen(repo, "x.png", 32)
    ok("pin", "x.png@v1", repo=repo)
    gen(repo, "x.png", 48)
    ok("regen", "x.png", "--set", "width=64", repo=repo)
    record = fresh(repo).record("x.png")
    assert record.pinned == 1 and len(record.versions) == 3
    assert record.effective.object == record.versions[0].object != record.current.object
    assert fresh(repo).index.get("x.png").effective == record.versions[0].object
    assert "pinned" in ok("log", "x.png", repo=repo).out.splitlines()[-2]
    assert "was v1" in ok("unpin", "x.png", repo=repo).out
    assert fresh(repo).record("x.png").pinned is None
    assert run_cli("pin", "x.png@v4", cwd=repo.root).code == 4


def test_gen_and_regen_of_a_pinned_asset_say_what_the_pin_keeps(tmp_repo):
    """A new version of a pinned asset is current and in the working file;
    dependents and exports stay on the pin: gen, regen and restore all say so."""
    import blake3

    repo = tmp_repo
    gen(repo, "x.png", 32)
    ok("gen", "t.png", "--model", "ffmpeg.thumbnail", "--input", "x.png", repo=repo)
    ok("pin", "x.png@v1", repo=repo)
    note = "note: x.png is pinned at v1: the working file has v{}, but dependents and exports keep using v1 (`lattice unpin x.png` makes"
    r = ok("regen", "x.png", "--set", "width=48", repo=repo)
    assert note.format(2) in r.err and "unchanged    t.png v1" in r.out
    record = fresh(repo).record("x.png")
    assert (record.pinned, len(record.versions)) == (1, 2)
    assert blake3.blake3((repo.root / "x.png").read_bytes()).hexdigest() == record.current.object != record.effective.object
    assert fresh(repo).record("t.png").current.recipe.input_objects == [record.versions[0].object]
    assert note.format(3) in gen(repo, "x.png", 40).err
    assert note.format(4) in ok("restore", "x.png@v2", repo=repo).err
    assert ok("regen", "x.png", "--set", "width=56", "--json", repo=repo).json[0]["pinned"] == 1
    r = ok("regen", "x.png", "--set", "width=64", "--detach", repo=repo)
    assert "x.png is pinned at v1: the working file will have the new version" in r.err
    ok("unpin", "x.png", repo=repo)
    assert "pinned" not in ok("gen", "y.png", "--model", "ffmpeg.testsrc", repo=repo).err


# -- branches, switch, merge ---------------------------------------------------------


def test_branch_switch_and_clean_merge(tmp_repo):
    repo = tmp_repo
    add(repo, "a.txt", "a1")
    add(repo, "b.txt", "b1")
    ok("branch", "feat", repo=repo)
    assert ok("branch", repo=repo).out.splitlines() == ["  feat", "* main"]
    ok("switch", "feat", repo=repo)
    add(repo, "a.txt", "a2")
    add(repo, "c.txt", "c1")
    r = ok("switch", "main", repo=repo)
    assert "2 assets differ" in r.out
    assert (repo.root / "a.txt").read_text() == "a1" and not (repo.root / "c.txt").exists()
    assert ok("status", repo=repo).out == ""
    add(repo, "b.txt", "b2")
    data = ok("merge", "feat", "--json", repo=repo).json
    assert data["status"] == "merged" and data["taken"] == ["a.txt", "c.txt"] and data["conflicts"] == []
    assert (repo.root / "a.txt").read_text() == "a2" and (repo.root / "c.txt").read_text() == "c1"
    assert (repo.root / "b.txt").read_text() == "b2"
    g = history.open_git(repo)
    assert len(history.head_commit(g).parents) == 2
    assert ok("merge", "feat", repo=repo).out.strip() == "already up to date"
    assert fsck(fresh(repo)).ok and ok("status", repo=repo).out == ""


def _feat_one_version_ahead(repo) -> None:
    """a.txt at v1 on main and v2 on feat; main checked out."""
    add(repo, "a.txt", "1")
    ok("branch", "feat", repo=repo)
    ok("switch", "feat", repo=repo)
    add(repo, "a.txt", "2")
    ok("switch", "main", repo=repo)


def test_merge_fast_forward_and_branch_delete(tmp_repo):
    repo = tmp_repo
    _feat_one_version_ahead(repo)
    assert "fast-forward" in ok("merge", "feat", repo=repo).out
    assert (repo.root / "a.txt").read_text() == "2"
    for delete in ("--delete", "-D"):  # a conflict with the state of the project, not a history error
        r = run_cli("branch", delete, "main", cwd=repo.root)
        assert r.code == Conflict.exit_code == 12, r.err
        assert r.err == ("error: cannot delete branch main: it is the current branch\n"
                         "hint: switch to another branch first (`lattice switch feat`), then delete it\n")
    assert "main" in history.branches(history.open_git(repo))
    assert "deleted branch feat" in ok("branch", "-d", "feat", repo=repo).out


def test_branch_delete_refuses_commits_no_other_ref_has(tmp_repo):
    """`branch -d` of a branch whose import is on no other branch would leave
    that content for gc to sweep: refused (12) as git refuses, unless -D;
    a branch merged elsewhere, or kept by a tag, goes with -d."""
    repo = tmp_repo
    add(repo, "a.txt", "a")
    ok("branch", "feat", repo=repo)
    ok("switch", "feat", repo=repo)
    add(repo, "photo.txt", "precious")
    add(repo, "photo.txt", "more precious")
    ok("switch", "main", repo=repo)
    tip = history.resolve(history.open_git(repo), "feat").id
    r = run_cli("branch", "-d", "feat", cwd=repo.root)
    assert r.code == 12 and "branch feat is not merged: 2 commits on it are on no other branch or tag" in r.err, r.err
    assert "`lattice branch -D feat`" in r.err and "feat" in history.branches(history.open_git(repo))
    ok("tag", "kept", repo=repo)  # on main: still nothing of feat's
    assert run_cli("branch", "--delete", "feat", "--json", cwd=repo.root).code == 12
    ok("branch", "copy", "--json", repo=repo)
    ok("switch", "feat", repo=repo)
    ok("branch", "also", repo=repo)  # feat's commits are on `also` too now
    ok("switch", "main", repo=repo)
    assert ok("branch", "-d", "feat", "--json", repo=repo).json == {"deleted": "feat", "was": str(tip), "unmerged": 0}
    assert run_cli("branch", "-d", "also", "-D", "also", cwd=repo.root).code == 2
    assert "1 commit" not in ok("branch", "-d", "copy", repo=repo).out
    r = ok("branch", "-D", "also", repo=repo)
    assert "deleted branch also" in r.out and "2 commits no other branch or tag has" in r.out
    ok("branch", "again", repo=repo)
    assert ok("branch", "-d", "again", "--force", repo=repo).out.startswith("deleted branch again")
    assert history.branches(history.open_git(repo)) == ["main"]


def _conflict(repo):
    add(repo, "a.txt", "base")
    ok("branch", "feat", repo=repo)
    ok("switch", "feat", repo=repo)
    add(repo, "a.txt", "theirs")
    add(repo, "t.txt", "only theirs")
    ok("switch", "main", repo=repo)
    add(repo, "a.txt", "ours")


def test_merge_conflict_is_left_at_ours_then_resolved_with_theirs(tmp_repo):
    repo = tmp_repo
    _conflict(repo)
    r = run_cli("merge", "feat", cwd=repo.root)
    assert r.code == 1 and "CONFLICT a.txt" in r.err and "--theirs" in r.err
    assert (repo.root / "a.txt").read_text() == "ours"
    assert (repo.root / "t.txt").read_text() == "only theirs"  # the clean part is taken
    r = ok("merge", "feat", "--theirs", repo=repo)
    assert "resolved a.txt" in r.out
    assert (repo.root / "a.txt").read_text() == "theirs"
    record = fresh(repo).record("a.txt")
    # Nothing is dropped: ours v1, v2, then their v2 as v3.
    assert [v.number for v in record.versions] == [1, 2, 3] and "merged from feat v2" in record.current.note
    assert len(history.head_commit(history.open_git(repo)).parents) == 2
    assert fsck(fresh(repo)).ok


@pytest.mark.parametrize("side", ["ours", "theirs"])
def test_a_config_changed_on_both_sides_is_a_conflict_then_resolved(tmp_repo, side):
    """config.toml edited on both branches is a conflict like an asset's;
    --ours or --theirs lists it as resolved, as the merge commit says."""
    repo = tmp_repo
    add(repo, "a.txt", "1")
    ok("branch", "feat", repo=repo)
    cfg = repo.dir / "config.toml"
    cfg.write_text("[versions]\nimage = 3\n")
    ok("switch", "feat", repo=repo)
    cfg.write_text("[versions]\nimage = 7\n")
    ok("switch", "main", repo=repo)
    r = run_cli("merge", "feat", "--json", cwd=repo.root)
    assert r.code == 1 and r.json["conflicts"] == ["config.toml"] and r.json["resolved"] == []
    r = run_cli("merge", "feat", f"--{side}", "--json", cwd=repo.root)
    assert r.code == 0 and r.json["status"] == "merged" and r.json["resolved"] == ["config.toml"], r.out + r.err
    assert cfg.read_text() == ("[versions]\nimage = 3\n" if side == "ours" else "[versions]\nimage = 7\n")
    assert history.log(repo, 1)[0].message == f"merge feat into main ({side} on 1 conflicts)"


def test_merge_conflict_resolved_with_ours(tmp_repo):
    repo = tmp_repo
    _conflict(repo)
    assert run_cli("merge", "feat", cwd=repo.root).code == 1
    ok("restore", "a.txt@v1", repo=repo)
    ok("merge", "feat", "--ours", repo=repo)
    assert (repo.root / "a.txt").read_text() == "base"
    assert ok("merge", "feat", repo=repo).out.strip() == "already up to date"


def test_switch_and_merge_refuse_unrecorded_edits(tmp_repo):
    repo = tmp_repo
    add(repo, "a.txt", "1")
    ok("branch", "feat", repo=repo)
    write(repo, "a.txt", "my unsaved edit")
    r = run_cli("switch", "feat", cwd=repo.root)
    assert r.code == 12 and "unrecorded changes in a.txt" in r.err and "--force" in r.err
    assert run_cli("merge", "feat", cwd=repo.root).code == 12
    r = ok("switch", "feat", "--force", repo=repo)
    assert (repo.root / "a.txt").read_text() == "my unsaved edit"
    assert history.current_branch(history.open_git(repo)) == "feat"


def test_switch_and_merge_say_to_move_a_folder_in_the_way_aside(tmp_repo):
    """A folder where an asset's working file belongs is no edit to record:
    the refusal names it apart from real edits, and says to move it aside."""
    repo = tmp_repo
    add(repo, "a.txt", "1")
    add(repo, "b.txt", "2")
    ok("branch", "feat", repo=repo)
    (repo.root / "b.txt").unlink()
    (repo.root / "b.txt").mkdir()
    r = run_cli("switch", "feat", cwd=repo.root)
    assert r.code == 12 and r.err == ("error: cannot switch: a folder is in the way of the working file of b.txt\n"
                                      "hint: move the folder aside, or pass --force to switch and leave it as it is\n"), r.err
    write(repo, "a.txt", "my unsaved edit")
    r = run_cli("merge", "feat", cwd=repo.root)
    assert r.code == 12 and r.err == (
        "error: cannot merge: unrecorded changes in a.txt; a folder is in the way of the working file of b.txt\n"
        "hint: record it with `lattice add a.txt`, discard it with `lattice checkout a.txt`; move the folder aside\n"), r.err


def test_the_refusal_over_unrecorded_edits_names_them_in_commands_to_copy(tmp_repo):
    """The hint's commands name the edited files, quoted for the shell (the
    first three; status lists the rest), so that they run as written."""
    import shlex

    repo = tmp_repo
    names = ["a shot.txt", "b.txt", "c.txt", "d.txt"]
    for name in names:
        add(repo, name, "1")
    ok("branch", "feat", repo=repo)
    for name in names:
        write(repo, name, "my unsaved edit")
    r = run_cli("switch", "feat", cwd=repo.root)
    assert r.code == 12 and r.err == (
        "error: cannot switch: unrecorded changes in a shot.txt, b.txt, c.txt, d.txt\n"
        "hint: record them with `lattice add 'a shot.txt' b.txt c.txt`, "
        "discard them with `lattice checkout 'a shot.txt' b.txt c.txt` (the first 3 of 4: `lattice status` lists them all), "
        "or pass --force to switch and leave them as they are\n"), r.err
    record = r.err.split("`")[1]
    ok(*shlex.split(record)[1:], repo=repo)
    assert run_cli("status", "--porcelain", cwd=repo.root).out == " M d.txt\n"


def test_switch_and_merge_keep_a_manifest_file_edited_by_hand(tmp_repo):
    """A manifest file edited outside lattice is a change: a switch or merge
    that would write the other side's text over it records it first."""
    repo = tmp_repo
    _feat_one_version_ahead(repo)
    mf = repo.manifest.file_of("a.txt")
    mf.write_text(mf.read_text().replace('kind = "other"\n', 'kind = "other"\ntags = ["by-hand"]\n', 1))
    ok("switch", "feat", repo=repo)
    assert "by-hand" not in mf.read_text()
    ok("switch", "main", repo=repo)
    assert fresh(repo).record("a.txt").tags == ["by-hand"]
    log = [c.message for c in history.open_git(repo).walk(history.head_commit(history.open_git(repo)).id)]
    assert log[0].startswith("record manifest edits made outside lattice: a.txt")
    # A merge that would take feat's a.txt over a new hand edit keeps it, as a conflict.
    mf.write_text(mf.read_text().replace('"by-hand"', '"by-hand", "again"', 1))
    r = run_cli("merge", "feat", cwd=repo.root)
    assert r.code == 1 and "CONFLICT a.txt (left at ours)" in r.err
    assert "again" in mf.read_text()
    assert fresh(repo).record("a.txt").tags == ["by-hand", "again"]


def test_switch_over_a_symlinked_manifest_file_is_one_clear_error(tmp_repo, tmp_path):
    repo = tmp_repo
    _feat_one_version_ahead(repo)
    mf = repo.manifest.file_of("a.txt")
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_bytes(mf.read_bytes())
    mf.unlink()
    os.symlink(elsewhere, mf)
    for args in (("switch", "feat"), ("switch", "feat", "--force")):
        r = run_cli(*args, cwd=repo.root)
        assert r.code == 5 and "a.txt.toml is a symbolic link" in r.err and "Traceback" not in r.err, (args, r.err)
    assert history.current_branch(history.open_git(repo)) == "main"


def test_a_working_file_replaced_by_a_link_out_of_the_project_is_refused_with_a_hint_that_works(tmp_repo, tmp_path):
    """Lattice never writes through a link that leads out of the project:
    switch and checkout refuse, and their hint is about the link (not about
    paths typed wrong); doing what it says lets the switch run. `status`
    said such a link was clean when it held the recorded bytes; now it is
    modified (in the way) and status gives the same hint."""
    repo = tmp_repo
    add(repo, "a.txt", "main's")
    ok("branch", "feat", repo=repo)
    ok("switch", "feat", repo=repo)
    add(repo, "a.txt", "feat's")
    ok("switch", "main", repo=repo)
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("main's")
    (repo.root / "a.txt").unlink()
    (repo.root / "a.txt").symlink_to(outside)
    hint = "hint: a.txt is a symbolic link: put a copy of the file it points to in its place, or remove it\n"
    r = ok("status", repo=repo)
    assert (r.out, r.err) == ("modified:  a.txt\n", hint), (r.out, r.err)
    assert ok("status", "--porcelain", repo=repo).out == " M a.txt\n"
    assert ok("status", "--json", repo=repo).json == [{"path": "a.txt", "state": "modified"}]
    for args in (("switch", "feat"), ("checkout", "a.txt")):
        r = run_cli(*args, cwd=repo.root)
        assert r.code == 4 and r.err == f"error: a.txt: a symlink leads outside the project (to {outside})\n" + hint, r.err
    assert outside.read_text() == "main's" and history.current_branch(history.open_git(repo)) == "main"
    (repo.root / "a.txt").unlink()
    shutil.copyfile(outside, repo.root / "a.txt")
    assert ok("status", repo=repo).out == ""
    ok("switch", "feat", repo=repo)
    assert (repo.root / "a.txt").read_text() == "feat's" and outside.read_text() == "main's"


def test_switch_warns_of_jobs_queued_on_the_branch_it_leaves(tmp_repo):
    """Jobs queued with --detach on a branch record nothing once another is
    checked out (superseded), and switch said nothing of it. Now it warns
    once, naming them and how to keep their work, and still switches; back
    on their branch, they record as if nothing happened."""
    repo = tmp_repo
    add(repo, "a.txt", "a")
    ok("branch", "feat", repo=repo)
    queued = [run_cli("gen", n, "--model", "test.text", "--detach", "--json", cwd=repo.root).json[0]["job"]
              for n in ("b.txt", "c.txt")]
    r = ok("switch", "feat", repo=repo)
    assert r.err == (f"warning: 2 job(s) queued on main ({queued[0]}, {queued[1]}) will be superseded: they record nothing "
                     "while feat is checked out; `lattice switch main` before they finish keeps their work\n"), r.err
    assert history.current_branch(history.open_git(repo)) == "feat"
    r = ok("switch", "main", repo=repo)
    assert r.err == "", r.err  # nothing queued on feat
    assert ok("worker", "--once", repo=repo).code == 0
    assert sorted(row.path for row in fresh(repo).index.rows()) == ["a.txt", "b.txt", "c.txt"]
    assert ok("switch", "feat", repo=repo).err == ""  # finished: nothing left to supersede


def test_switch_leaves_absent_outputs_to_render(tmp_repo):
    repo = tmp_repo
    gen(repo, "x.png", 32)
    ok("branch", "feat", repo=repo)
    ok("switch", "feat", repo=repo)
    gen(repo, "x.png", 48)
    ok("switch", "main", repo=repo)
    v1 = fresh(repo).record("x.png").current
    r = ok("switch", "main", repo=repo)  # no-op
    ok("switch", "feat", repo=repo)
    os.unlink(repo.objects.locate(v1.object))  # evicted while no working file holds it
    r = ok("switch", "main", repo=repo)
    assert "lattice render" in r.err and not (repo.root / "x.png").exists()
    ok("render", repo=repo)
    assert repo.objects.has(v1.object)


def test_branch_and_switch_bad_names(tmp_repo):
    """An unknown or malformed name is invalid input (4), as an unknown
    asset is; a name already taken is a history error (11)."""
    repo = tmp_repo
    add(repo, "a.txt", "1")
    ok("branch", "feature", repo=repo)
    r = run_cli("switch", "featur", cwd=repo.root)
    assert r.code == 4 and "did you mean: feature" in r.err
    assert run_cli("branch", "feature", cwd=repo.root).code == HistoryError.exit_code
    assert run_cli("branch", "bad..name", cwd=repo.root).code == 4
    r = run_cli("switch", "bad..name", cwd=repo.root)
    assert r.code == 4 and "not a valid branch name" in r.err and "creates one" not in r.err
    assert run_cli("merge", "nope", cwd=repo.root).code == 4
    assert run_cli("diff", "nope", "main", cwd=repo.root).code == 4
    # Longer than a ref file's name may be: invalid input, not a damaged history.
    ok("branch", "b" * 250, repo=repo)
    for kind, name in (("branch", "b" * 251), ("tag", "t" * 300), ("branch", "é" * 126), ("switch", "s" * 251)):
        r = run_cli(kind, name, cwd=repo.root)
        what = "tag" if kind == "tag" else "branch"
        assert r.code == 4 and f"is not a valid {what} name: it is {len(name.encode())} bytes long; the limit is 250 bytes" in r.err, r.err
    assert fsck(fresh(repo)).ok and len(history.branches(history.open_git(repo))) == 3


# -- a branch from a tag, a branch or a commit; deleting a tag --------------------------


def _released(repo):
    """main: a.txt v1 and x.txt (made by test.text) v1 tagged `rel`; then
    a.txt v2, x.txt v2 and a new b.txt. Returns rel's commit id."""
    add(repo, "a.txt", "a1")
    ok("gen", "x.txt", "--model", "test.text", "--set", "word=first", repo=repo)
    ok("tag", "rel", repo=repo)
    add(repo, "a.txt", "a2")
    ok("regen", "x.txt", "--set", "word=second", repo=repo)
    add(repo, "b.txt", "b1")
    return str(history.resolve(history.open_git(repo), "rel").id)


def test_branch_at_a_tag_brings_back_the_tagged_state_end_to_end(tmp_repo):
    """`lattice branch fix rel` makes fix at rel without switching; switching
    to it brings rel's manifest and working files back, status is clean,
    fsck passes, log shows rel's history, and merging it back works."""
    repo = tmp_repo
    rel = _released(repo)
    r = ok("branch", "fix", "rel", repo=repo)
    assert r.out == f"created branch fix at {rel[:12]} (tag rel)\n"
    g = history.open_git(repo)
    assert history.current_branch(g) == "main" and str(history.resolve(g, "fix").id) == rel  # as git branch: no switch
    assert (repo.root / "a.txt").read_text() == "a2" and (repo.root / "b.txt").exists()
    assert ok("switch", "fix", repo=repo).out == "switched to fix (3 assets differ from main)\n"
    assert (repo.root / "a.txt").read_text() == "a1" and (repo.root / "x.txt").read_text().startswith("first:")
    assert not (repo.root / "b.txt").exists()
    assert [v.number for v in fresh(repo).record("x.txt").versions] == [1]
    assert ok("status", repo=repo).out == "" and fsck(fresh(repo)).ok
    assert [c["commit"] for c in ok("log", "--json", repo=repo).json] == [c.commit for c in history.log(repo, ref="rel")]
    assert ok("log", "--json", repo=repo).json[0]["commit"] == rel
    add(repo, "c.txt", "fixed")  # work on the fix, then bring it back to main
    ok("switch", "main", repo=repo)
    data = ok("merge", "fix", "--json", repo=repo).json
    assert data["status"] == "merged" and data["taken"] == ["c.txt"] and data["conflicts"] == []
    assert (repo.root / "c.txt").read_text() == "fixed" and (repo.root / "a.txt").read_text() == "a2"
    assert (repo.root / "x.txt").read_text().startswith("second:") and (repo.root / "b.txt").read_text() == "b1"
    assert ok("status", repo=repo).out == "" and fsck(fresh(repo)).ok


def test_branch_at_a_branch_a_commit_id_or_a_prefix_of_one(tmp_repo):
    repo = tmp_repo
    rel = _released(repo)
    head = str(history.head_commit(history.open_git(repo)).id)
    assert ok("branch", "copy", "main", repo=repo).out == f"created branch copy at {head[:12]} (branch main)\n"
    assert ok("branch", "full", rel, repo=repo).out == f"created branch full at {rel[:12]}\n"
    assert ok("branch", "short", rel[:7], repo=repo).out == f"created branch short at {rel[:12]}\n"
    assert ok("branch", "back", "HEAD~1", repo=repo).out.endswith(" (HEAD~1)\n")
    g = history.open_git(repo)
    assert {b: str(history.resolve(g, b).id) for b in ("copy", "full", "short")} == {"copy": head, "full": rel, "short": rel}
    assert ok("branch", "j", "rel", "--json", repo=repo).json == {"created": "j", "at": rel, "start": "rel", "start_kind": "tag"}
    assert ok("branch", "k", rel[:9], "--json", repo=repo).json == {"created": "k", "at": rel, "start": rel[:9], "start_kind": "commit"}
    # Without START: as before, at the current commit (and where it started: nowhere given).
    assert ok("branch", "here", "--json", repo=repo).json == {"created": "here", "at": head, "start": None, "start_kind": None}
    assert ok("branch", "here2", repo=repo).out == f"created branch here2 at {head[:12]}\n"
    # A branch deleted with -D is made again from the id its deletion printed.
    ok("switch", "short", repo=repo)
    add(repo, "only.txt", "only here")
    was = str(history.resolve(history.open_git(repo), "short").id)
    ok("switch", "main", repo=repo)
    r = ok("branch", "-D", "short", repo=repo)
    assert f"(was {was[:12]}; 1 commit no other branch or tag has)" in r.out
    ok("branch", "again", was[:12], repo=repo)
    ok("switch", "again", repo=repo)
    assert (repo.root / "only.txt").read_text() == "only here" and fsck(fresh(repo)).ok


def test_branch_start_refusals_create_nothing(tmp_repo):
    """An unknown, too short or empty START is invalid input (4), a name
    taken by a branch or tag a history error (11), as without START; each
    says what to do, and no branch is created."""
    repo = tmp_repo
    rel = _released(repo)
    before = history.branches(history.open_git(repo))

    def refused(*args, code):
        r = run_cli("branch", *args, cwd=repo.root)
        assert r.code == code, (args, r.code, r.err)
        assert r.out == "" and len(r.err.splitlines()) == 2 and r.err.startswith("error: ") and "\nhint: " in r.err, r.err
        return r.err

    assert refused("fix", "rle", code=4) == (
        "error: no branch, tag or commit named rle (did you mean: rel?)\n"
        "hint: `lattice branch` lists branches, `lattice tag` lists tags, `lattice log` lists commits\n")
    assert refused("fix", "0" * 12, code=4).startswith("error: no branch, tag or commit named 000000000000\n")
    for short in (rel[:6], rel[:1]):
        assert refused("fix", short, code=4) == (
            f"error: {short} is too short to name a commit: give at least 7 hex digits of its id\n"
            "hint: `lattice log` lists commits (12 digits of each id); `lattice branch` and `lattice tag` list the names to start at\n")
    assert refused("fix", "", code=4) == (
        "error: the start of branch fix is empty\n"
        "hint: name a branch, tag or commit to start it at, or leave it out: `lattice branch fix` starts it at the current commit\n")
    assert refused("main", "rel", code=11).startswith("error: branch main already exists\n")
    assert "cannot create branch rel: a tag has that name" in refused("rel", "main", code=11)
    assert "is not a valid branch name" in refused("bad..name", "rel", code=4)
    assert "the branch name is empty" in refused("", "rel", code=4)
    assert history.branches(history.open_git(repo)) == before


def test_branch_start_in_a_repository_with_no_commit_yet(tmp_repo):
    repo = tmp_repo
    for start in ("main", "HEAD", "abcdef1"):
        r = run_cli("branch", "feat", start, cwd=repo.root)
        assert r.code == 4 and r.err == (
            f"error: cannot start branch feat at {start}: the history has no commit yet\n"
            "hint: the first change (`lattice add`, `lattice gen`) makes one; `lattice branch feat` without a start branches from the state there is\n"), r.err
    assert history.branches(history.open_git(repo)) == ["main"]
    ok("branch", "feat", repo=repo)  # the hint works
    assert history.branches(history.open_git(repo)) == ["feat", "main"]


def _colliding_objects(repo, kinds=("commit", "commit"), digits=7):
    """Write two history objects of `kinds` whose ids share their first
    `digits` hex digits (found by hashing, birthday style); their ids, in
    the order of `kinds`."""
    import hashlib

    import pygit2

    g = history.open_git(repo)
    head = history.head_commit(g)
    seen: dict[tuple[str, str], tuple[str, bytes]] = {}

    def body(kind: str, i: int) -> bytes:
        if kind == "blob":
            return f"blob {kinds} {i}\n".encode()
        return (f"tree {head.tree_id}\nparent {head.id}\nauthor t <t@x> 1700000000 +0000\n"
                f"committer t <t@x> 1700000000 +0000\n\nattempt {kinds} {i}\n").encode()

    i = 0
    while True:
        i += 1
        for n, kind in enumerate(kinds):
            data = body(kind, i)
            oid = hashlib.sha1(f"{kind} {len(data)}\0".encode() + data).hexdigest()
            other = seen.get((kinds[1 - n], oid[:digits]))
            if other is not None and other[0] != oid:
                types = {"blob": pygit2.enums.ObjectType.BLOB, "commit": pygit2.enums.ObjectType.COMMIT}
                ids = [str(g.odb.write(types[k], d)) for k, d in ((kinds[1 - n], other[1]), (kind, data))]
                assert ids[1] == oid and ids[0][:digits] == oid[:digits]
                return ids if n == 1 else ids[::-1]
            seen[(kind, oid[:digits])] = (oid, data)


def test_branch_at_an_ambiguous_prefix_is_refused_a_longer_one_is_taken(tmp_repo):
    repo = tmp_repo
    add(repo, "a.txt", "1")
    one, two = sorted(_colliding_objects(repo))
    r = run_cli("branch", "fix", one[:7], cwd=repo.root)
    assert r.code == 4 and r.err == (
        f"error: commit id {one[:7]} is ambiguous: 2 commits begin with it ({one[:12]}, {two[:12]})\n"
        "hint: give more of its digits; `lattice log` lists commits with 12\n"), r.err
    assert "fix" not in history.branches(history.open_git(repo))
    r = run_cli("diff", one[:7], "HEAD", cwd=repo.root)  # every command that takes a commit says so
    assert r.code == 4 and r.err.startswith(f"error: commit id {one[:7]} is ambiguous: 2 commits begin with it"), r.err
    longer = next(n for n in range(8, 41) if one[:n] != two[:n])
    assert ok("branch", "fix", one[:longer], "--json", repo=repo).json["at"] == one
    # A prefix a manifest blob begins too names the one commit that has it.
    blob, commit = _colliding_objects(repo, kinds=("blob", "commit"))
    assert history.open_git(repo)[blob].type_str == "blob" and blob[:7] == commit[:7]
    assert ok("branch", "fix2", commit[:7], "--json", repo=repo).json["at"] == commit


def test_tag_delete(tmp_repo):
    """`tag -d NAME` (--delete) deletes a tag, as `git tag -d`; an unknown
    one is invalid input (4) with the way to list them; the name is free
    again, for a tag or a branch."""
    repo = tmp_repo
    rel = _released(repo)
    ok("tag", "now", repo=repo)
    assert ok("tag", "-d", "rel", repo=repo).out == f"deleted tag rel (was {rel[:12]})\n"
    assert ok("tag", repo=repo).out == "now\n"
    now = str(history.head_commit(history.open_git(repo)).id)
    assert ok("tag", "--delete", "now", "--json", repo=repo).json == {"deleted": "now", "was": now, "unmerged": 0}
    assert ok("tag", "--json", repo=repo).json == [] and history.tags(history.open_git(repo)) == []
    r = run_cli("diff", "rel", "HEAD", cwd=repo.root)
    assert r.code == 4 and "no branch, tag or commit named rel" in r.err
    ok("branch", "rel", rel, repo=repo)  # a tag no longer shadows the name
    ok("tag", "now", repo=repo)
    for args, code, err in (
        (("-d", "nwo"), 4, "error: no tag named nwo (did you mean: now?)\nhint: `lattice tag` lists the tags\n"),
        (("-d", "rel"), 4, "error: no tag named rel: rel is a branch\nhint: `lattice tag` lists the tags; `lattice branch -d rel` deletes the branch\n"),
        (("-d", ""), 4, "error: the tag name is empty\nhint: `lattice tag` lists the tags\n"),
        (("x", "-d", "now"), 2, "error: a tag to create and -d exclude each other\nhint: `lattice tag -d NAME` deletes one, `lattice tag NAME` creates one\n"),
    ):
        r = run_cli("tag", *args, cwd=repo.root)
        assert (r.code, r.err) == (code, err) and r.out == "", (args, r.code, r.err)
    assert history.tags(history.open_git(repo)) == ["now"] and fsck(fresh(repo)).ok


def test_branch_refuses_a_name_to_create_with_one_to_delete_as_tag_does(tmp_repo):
    """`lattice branch -d X Y` deleted X and ignored Y; now, as `tag`, the
    mix is refused (exit 2) before anything is deleted."""
    repo = tmp_repo
    add(repo, "a.txt", "1")
    ok("branch", "x", repo=repo)
    for flag in ("-d", "-D"):
        r = run_cli("branch", flag, "x", "y", cwd=repo.root)
        assert (r.code, r.out, r.err) == (2, "", f"error: a branch to create and {flag} exclude each other\n"
                                          f"hint: `lattice branch {flag} NAME` deletes one, `lattice branch NAME` creates one\n"), r.err
    assert "x" in history.branches(history.open_git(repo)) and "y" not in history.branches(history.open_git(repo))


def test_switch_to_a_name_under_an_existing_branch_says_there_is_no_such_branch(tmp_repo):
    """`lattice switch feat/x` where `feat` exists said "cannot create
    branch feat/x"; a switch creates nothing: there is no branch of that
    name, and the hint lists branches without offering to create one that
    cannot be."""
    repo = tmp_repo
    add(repo, "a.txt", "1")
    ok("branch", "feat", repo=repo)
    for args in (("switch", "feat/x"), ("branch", "-d", "feat/x")):
        r = run_cli(*args, cwd=repo.root)
        assert (r.code, r.err) == (4, "error: no branch named feat/x (did you mean: feat?)\nhint: `lattice branch` lists branches\n"), r.err
    r = run_cli("branch", "feat/x", cwd=repo.root)  # creating it is still refused, saying why
    assert r.code == 11 and r.err.startswith("error: cannot create branch feat/x: branch feat exists"), r.err


def test_tag_delete_in_a_repository_with_no_history(tmp_repo):
    r = run_cli("tag", "-d", "v1", cwd=tmp_repo.root)
    assert r.code == 4 and r.err == "error: no tag named v1\nhint: `lattice tag` lists the tags\n"
    assert not history.exists(tmp_repo)  # refusing created nothing


def test_deleting_the_only_tag_of_commits_keeps_them_for_a_branch(tmp_repo):
    """A tag of commits no branch has: deleting it says so, history keeps
    them, and the branch its note suggests brings their state back."""
    repo = tmp_repo
    add(repo, "a.txt", "1")
    ok("branch", "feat", repo=repo)
    ok("switch", "feat", repo=repo)
    add(repo, "photo.txt", "only on feat")
    ok("tag", "snap", repo=repo)
    ok("switch", "main", repo=repo)
    ok("branch", "-D", "feat", repo=repo)
    snap = str(history.resolve(history.open_git(repo), "snap").id)
    r = ok("tag", "-d", "snap", repo=repo)
    assert r.out == f"deleted tag snap (was {snap[:12]})\n"
    assert r.err == (f"note: its commit is on no branch or tag now; history keeps it, and `lattice branch NAME {snap[:12]}` "
                     "starts a branch there\n")
    ok("branch", "back", snap[:12], repo=repo)
    ok("switch", "back", repo=repo)
    assert (repo.root / "photo.txt").read_text() == "only on feat" and fsck(fresh(repo)).ok


# -- crash safety and damaged history ---------------------------------------------------


def test_crash_between_manifest_write_and_commit_is_repaired(tmp_repo, monkeypatch):
    repo = tmp_repo
    add(repo, "a.txt", "1")
    real = history.commit

    def crash(*a, **k):
        raise OSError("simulated crash")

    monkeypatch.setattr(history, "commit", crash)
    r = add(repo, "a.txt", "2")
    assert "warning:" in r.err and "fsck --repair" in r.err
    monkeypatch.setattr(history, "commit", real)
    assert len(fresh(repo).record("a.txt").versions) == 2  # the version was recorded
    report = fsck(fresh(repo))
    [p] = [p for p in report.problems if p.kind == "history"]
    assert "manifest differs from history HEAD" in p.message and not report.ok
    r = ok("fsck", "--repair", repo=repo)
    assert "recovered" in history.log(repo, 1)[0].message or "committed" in r.out
    assert history.log(repo, 1)[0].message == f"add a.txt ({history.RECOVERED})"  # the commit it meant to make
    assert fsck(fresh(repo)).ok and len(fresh(repo).record("a.txt").versions) == 2


def test_manifest_written_without_commit_is_caught_up_by_fsck(tmp_repo, monkeypatch):
    repo = tmp_repo
    add(repo, "a.txt", "1")
    monkeypatch.setattr(history_pending, "finish", lambda *a, **k: None)  # "killed" before the commit
    add(repo, "a.txt", "2")
    monkeypatch.undo()
    # fsck, like any command, catches up first: nothing recorded is missing from history.
    r = run_cli("fsck", cwd=repo.root)
    assert r.code == 0, r.out
    add(repo, "b.txt", "1")
    assert [c.message for c in history.log(repo, 2)] == ["add b.txt", f"add a.txt ({history.RECOVERED})"]
    assert fsck(fresh(repo)).ok


@pytest.mark.parametrize("killed", ["during the journal", "before the commit"])
def test_a_merge_killed_midway_is_caught_up_as_that_merge(tmp_repo, monkeypatch, killed):
    """The next command finishes the change and makes the merge commit it
    meant to make (second parent and all); running the merge again is then
    up to date, not a second round of versions."""
    from lattice import switch

    repo = tmp_repo
    for name in ("a.txt", "b.txt"):
        add(repo, name, "base")
    ok("branch", "feat", repo=repo)
    add(repo, "a.txt", "main")
    ok("switch", "feat", repo=repo)
    add(repo, "a.txt", "feat")
    add(repo, "b.txt", "feat")
    ok("switch", "main", repo=repo)

    def die(*a, **k):
        raise KeyboardInterrupt  # as a kill leaves it: nothing after runs

    with monkeypatch.context() as m:
        m.setattr(*((switch, "_apply") if killed == "during the journal" else (history_pending, "finish")), die)
        assert run_cli("merge", "feat", "--theirs", cwd=repo.root).code == 130
    assert (repo.root / "a.txt").read_text() == ("main" if killed == "during the journal" else "feat")
    r = ok("merge", "feat", "--theirs", "--json", repo=repo)  # the user tries again
    assert r.json["status"] == "up-to-date"
    assert history.log(repo, 1)[0].message == f"merge feat into main (theirs on 1 conflicts) ({history.RECOVERED})"
    assert len(git_parents(repo)) == 2
    assert len(fresh(repo).record("a.txt").versions) == 3 and (repo.root / "a.txt").read_text() == "feat"
    assert fsck(fresh(repo)).ok


def test_a_merge_that_fails_before_its_journal_is_never_caught_up_as_a_merge(tmp_repo):
    """A file in the way of a folder the merge brings: the merge stops before
    it changes anything, and no later change may record it as merged."""
    repo = tmp_repo
    add(repo, "a.txt", "a")
    ok("branch", "feat", repo=repo)
    ok("switch", "feat", repo=repo)
    add(repo, "d/x.txt", "x")
    ok("switch", "main", repo=repo)
    add(repo, "b.txt", "b")
    if (repo.root / "d").is_dir():  # the switch back left the emptied folder
        (repo.root / "d").rmdir()
    (repo.root / "d").write_text("in the way")
    r = run_cli("merge", "feat", cwd=repo.root)
    assert r.code == 12 and "d is a file" in r.err, r.err  # something in the way
    (repo.root / "d").unlink()
    add(repo, "c.txt", "c")  # a later change catches up whatever is pending
    assert len(git_parents(repo)) == 1 and "merge" not in history.log(repo, 1)[0].message
    r = ok("merge", "feat", "--json", repo=repo)
    assert r.json["status"] == "merged" and (repo.root / "d" / "x.txt").read_text() == "x"


def test_damaged_history_never_loses_work(tmp_repo):
    repo = tmp_repo
    add(repo, "a.txt", "1")
    kept = history.log(repo)[0].commit
    heads = repo.dir / "history.git" / "refs" / "heads" / "main"
    heads.write_text("0123456789012345678901234567890123456789\n")  # points at nothing
    r = add(repo, "a.txt", "2")
    assert "warning:" in r.err
    assert len(fresh(repo).record("a.txt").versions) == 2
    assert ok("status", repo=repo).out == "" and ok("log", "a.txt", repo=repo).out
    r = run_cli("fsck", cwd=repo.root)
    assert r.code == 1 and "history:" in r.out
    r = ok("fsck", "--repair", repo=repo)
    assert f"branch main moved from 012345678901 (not in this copy) to {kept[:12]}" in r.out, r.out
    assert fsck(fresh(repo)).ok and history_fsck.check(fresh(repo)) == []
    assert not (repo.dir / "quarantine").exists()  # the intact commit is kept, not thrown away with the rest
    assert [c.commit for c in history.log(repo)[1:]] == [kept]
    assert history.log(repo)[0].message.startswith(history.RECOVERED)


def _outer_git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"})


def _loose(repo, oid) -> "os.PathLike":
    return history.git_dir(repo) / "objects" / str(oid)[:2] / str(oid)[2:]


@pytest.mark.skipif(GIT is None, reason="needs the git binary")
def test_a_clone_missing_historys_newest_objects_keeps_every_commit_it_has(tmp_repo, tmp_path):
    """`git commit -a` takes history's changed ref but not its new, untracked
    objects: in a clone the branch names a commit that is not there. Repair
    moves the branch back to the newest commit the clone has, keeps every
    earlier one, and commits the manifest on disk on top."""
    from lattice.repo import write_gitignore

    repo = tmp_repo
    _outer_git(repo.root, "init", "-q")
    write_gitignore(repo.root)
    with open(repo.root / ".gitignore", "a") as f:
        f.write("*.png\n")
    gen(repo, "a.png", 32, seed=1)
    gen(repo, "b.png", 32, seed=2)
    _outer_git(repo.root, "add", "-A")
    _outer_git(repo.root, "commit", "-qm", "one")
    kept = [c.commit for c in history.log(repo)]
    ok("regen", "a.png", "--set", "width=40", repo=repo)  # testsrc ignores the seed: a new one alone is refused
    lost = history.log(repo)[0].commit
    _outer_git(repo.root, "commit", "-qam", "two")  # -a: history's new loose objects stay untracked
    clone = tmp_path / "clone"
    _outer_git(tmp_path, "clone", "-q", str(repo.root), str(clone))

    r = run_cli("log", cwd=clone)
    assert r.code == 11
    r = run_cli("fsck", "--repair", cwd=clone)
    assert r.code == 0, r.out + r.err
    assert f"branch main moved from {lost[:12]} (not in this copy) to {kept[0][:12]}" in r.out, r.out
    assert f"lost: {lost[:12]}" in r.out and "git add .lattice/history.git" in r.out
    assert not (clone / ".lattice" / "quarantine").exists()
    cloned = Repository(clone)
    log = history.log(cloned)
    assert [c.commit for c in log[1:]] == kept
    assert log[0].message.startswith(history.RECOVERED) and f"main back from {lost[:12]} to {kept[0][:12]}" in log[0].message
    # The repair commit holds the manifest on disk: a.png at its second version.
    g = history.open_git(cloned)
    blobs = history.manifest_blobs(g, history.head_commit(g).tree)
    assert g[blobs["a.png"]].data == cloned.manifest.file_of("a.png").read_bytes()
    assert len(cloned.record("a.png").versions) == 2
    assert history_fsck.check(cloned) == [] and fsck(Repository(clone)).ok
    assert len(ok("log", repo=cloned).out.splitlines()) == 3
    assert [line[:2] for line in ok("log", "a.png", repo=cloned).out.splitlines() if line[:1] == "v"] == ["v2", "v1"]


@pytest.mark.parametrize("gone", ["commit", "tree"])
def test_a_tip_that_cannot_be_read_goes_back_to_its_intact_parent(tmp_repo, gone):
    """The tip's commit object is missing (no parent pointer to follow: the
    newest intact commit no other ref reaches is taken), or it reads but its
    tree does not (its newest intact ancestor). Other refs stay as they were."""
    repo = tmp_repo
    add(repo, "a.txt", "1")
    ok("tag", "v1", repo=repo)
    add(repo, "b.txt", "2")
    g = history.open_git(repo)
    tip = history.head_commit(g)
    parent = tip.parent_ids[0]
    os.unlink(_loose(repo, tip.id if gone == "commit" else tip.tree_id))
    r = ok("fsck", "--repair", repo=repo)
    assert f"branch main moved from {str(tip.id)[:12]} (not {'in this copy' if gone == 'commit' else 'intact'}) to {str(parent)[:12]}" in r.out, r.out
    assert f"lost: {str(tip.id)[:12]}" in r.out and "tag v1" not in r.out
    assert not (repo.dir / "quarantine").exists()
    log = history.log(fresh(repo))
    assert [c.commit for c in log[1:]] == [str(parent)] and log[0].message.startswith(history.RECOVERED)
    assert history.resolve(history.open_git(repo), "v1").id == parent
    assert history_fsck.check(fresh(repo)) == [] and fsck(fresh(repo)).ok
    assert sorted(fresh(repo).manifest.names()) == ["a.txt", "b.txt"]


def test_a_history_with_no_intact_commit_is_still_started_afresh(tmp_repo):
    repo = tmp_repo
    add(repo, "a.txt", "1")
    add(repo, "b.txt", "2")
    for folder in (history.git_dir(repo) / "objects").iterdir():
        if len(folder.name) == 2:
            for f in folder.iterdir():
                f.unlink()
                f.write_bytes(b"garbage")
    r = ok("fsck", "--repair", repo=repo)
    assert "damaged history moved to" in r.out and "moved from" not in r.out, r.out
    assert any((repo.dir / "quarantine").glob("history.git-*"))
    assert [c.message for c in history.log(fresh(repo))] == [history.RECOVERED]
    assert history_fsck.check(fresh(repo)) == [] and fsck(fresh(repo)).ok


def _manifest_bytes(repo) -> dict:
    return {f.relative_to(repo.manifest.dir).as_posix(): f.read_bytes() for f in repo.manifest.dir.rglob("*") if f.is_file()}


def _same_but_parents(old, new) -> bool:
    sig = lambda s: (s.name, s.email, s.time, s.offset)  # noqa: E731
    return (old.tree_id, old.raw_message, sig(old.author), sig(old.committer)) == (
        new.tree_id, new.raw_message, sig(new.author), sig(new.committer))


@pytest.mark.skipif(GIT is None, reason="git fsck finds the missing blob")
def test_a_lost_blob_of_an_old_commit_keeps_the_later_commits_whose_trees_are_complete(tmp_repo):
    """Only the first two commits name a.txt's first manifest blob: they are
    dropped, and the two after them, whose own trees are complete, are
    re-made on the cut history (a branch and a tag with them), instead of
    the whole history going to quarantine."""
    repo = tmp_repo
    add(repo, "a.txt", "1")
    add(repo, "b.txt", "2")
    add(repo, "a.txt", "3")
    ok("branch", "feat", repo=repo)
    ok("tag", "v3", repo=repo)
    add(repo, "c.txt", "4")
    g = history.open_git(repo)
    c4, c3, c2, c1 = g.walk(g.head.target)
    os.unlink(_loose(repo, c1.tree["manifest"]["a.txt.toml"].id))
    manifest = _manifest_bytes(repo)
    assert run_cli("fsck", cwd=repo.root).code == 1

    r = ok("fsck", "--repair", repo=repo)
    assert "branch main moved from" in r.out and f"lost: {str(c2.id)[:12]}, {str(c1.id)[:12]};" in r.out, r.out
    assert not (repo.dir / "quarantine").exists()
    g = history.open_git(fresh(repo))
    new4, new3 = g.walk(g.head.target)
    assert _same_but_parents(c4, new4) and _same_but_parents(c3, new3) and new3.parents == []
    assert f"{str(c4.id)[:12]} as {str(new4.id)[:12]}" in r.out and f"{str(c3.id)[:12]} as {str(new3.id)[:12]}" in r.out
    # The branch and tag that named c3 name its one re-made copy.
    assert history.resolve(g, "feat").id == new3.id and history.resolve(g, "v3").id == new3.id
    assert _manifest_bytes(repo) == manifest
    assert history_fsck.check(fresh(repo)) == [] and run_cli("fsck", cwd=repo.root).code == 0
    assert [line.split()[0] for line in ok("log", repo=repo).out.splitlines()] == [str(new4.id)[:12], str(new3.id)[:12]]
    assert [c.message for c in history.log(fresh(repo))] == ["add c.txt", "add a.txt"]


@pytest.mark.skipif(GIT is None, reason="git fsck finds the missing commit")
def test_a_missing_old_commit_object_keeps_the_commits_before_and_after_it(tmp_repo):
    """The second commit's object is gone: the third and fourth are re-made
    on the first, the newest commit nothing follows any more; only the
    missing one is lost."""
    repo = tmp_repo
    add(repo, "a.txt", "1")
    ok("tag", "v1", repo=repo)
    add(repo, "b.txt", "2")
    add(repo, "a.txt", "3")
    add(repo, "c.txt", "4")
    g = history.open_git(repo)
    c4, c3, c2, c1 = g.walk(g.head.target)
    os.unlink(_loose(repo, c2.id))
    manifest = _manifest_bytes(repo)

    r = ok("fsck", "--repair", repo=repo)
    assert f"{str(c2.id)[:12]} is missing" in r.out and f"now follows {str(c1.id)[:12]}" in r.out, r.out
    assert f"lost: {str(c2.id)[:12]};" in r.out  # only the missing one
    g = history.open_git(fresh(repo))
    new4, new3, first = g.walk(g.head.target)
    assert first.id == c1.id and new3.parent_ids == [c1.id]
    assert _same_but_parents(c4, new4) and _same_but_parents(c3, new3)
    assert history.resolve(g, "v1").id == c1.id
    assert _manifest_bytes(repo) == manifest
    assert history_fsck.check(fresh(repo)) == [] and run_cli("fsck", cwd=repo.root).code == 0
    assert len(ok("log", repo=repo).out.splitlines()) == 3


def _three_commits(repo):
    """Three adds, each a commit: (newest, middle, first)."""
    for name, text in (("a.txt", "1"), ("b.txt", "2"), ("c.txt", "3")):
        add(repo, name, text)
    g = history.open_git(repo)
    return tuple(g.walk(g.head.target))


@pytest.mark.skipif(GIT is None, reason="git fsck finds the damaged object file")
def test_an_empty_object_file_is_set_aside_and_the_commits_above_it_are_kept(tmp_repo):
    """A crash can leave a history object file empty (libgit2 writes them
    without fsync). It is moved to quarantine/ like a missing object, and
    the commits whose trees are complete are re-made on what is kept: left
    in place it kept `git fsck` failing, and the whole history went to
    quarantine."""
    repo = tmp_repo
    c3, c2, c1 = _three_commits(repo)
    path = _loose(repo, c1.id)
    os.chmod(path, 0o644)
    path.write_bytes(b"")
    manifest = _manifest_bytes(repo)

    r = ok("fsck", "--repair", repo=repo)
    assert "1 damaged object file of history moved to" in r.out and f"lost: {str(c1.id)[:12]};" in r.out, r.out
    assert not list((repo.dir / "quarantine").glob("history.git-*")), r.out  # history itself stays
    aside = list((repo.dir / "quarantine").glob(f"history-objects-*/{str(c1.id)[:2]}/{str(c1.id)[2:]}"))
    assert len(aside) == 1 and aside[0].read_bytes() == b""
    g = history.open_git(fresh(repo))
    new3, new2 = g.walk(g.head.target)
    assert _same_but_parents(c3, new3) and _same_but_parents(c2, new2) and new2.parents == []
    assert _manifest_bytes(repo) == manifest
    assert history_fsck.check(fresh(repo)) == [] and run_cli("fsck", cwd=repo.root).code == 0
    assert subprocess.run(["git", f"--git-dir={history.git_dir(repo)}", "fsck", "--full"], capture_output=True).returncode == 0
    assert ok("fsck", "--repair", repo=repo).out.startswith("ok:")  # a second repair finds nothing to do


@pytest.mark.skipif(GIT is None, reason="git fsck finds the damaged object file")
def test_a_stray_empty_object_file_is_no_reason_to_start_history_afresh(tmp_repo):
    """An object no commit names, left empty by a crash: every commit is
    intact, and all of them stay (the whole history went to quarantine)."""
    repo = tmp_repo
    add(repo, "a.txt", "1")
    add(repo, "b.txt", "2")
    before = [c.commit for c in history.log(repo)]
    stray = history.git_dir(repo) / "objects" / "ab" / ("cd" * 19)
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"")
    assert run_cli("fsck", cwd=repo.root).code == 1

    r = ok("fsck", "--repair", repo=repo)
    assert "1 damaged object file of history moved to" in r.out and "nothing to commit" in r.out, r.out
    assert [c.commit for c in history.log(fresh(repo))] == before and not stray.exists()
    assert not list((repo.dir / "quarantine").glob("history.git-*"))
    assert history_fsck.check(fresh(repo)) == [] and run_cli("fsck", cwd=repo.root).code == 0


@pytest.mark.skipif(GIT is None, reason="git fsck finds the cut pack")
def test_a_cut_pack_is_read_back_as_far_as_it_reads_and_set_aside(tmp_repo):
    """`lattice gc` packs all of history into one pack (with deltas): cut
    short, neither git nor libgit2 reads anything of it. Repair reads back
    every object before the cut (deltas applied, each checked against its
    id), sets the pack aside and keeps the commits that are whole again,
    instead of starting history afresh from the manifest."""
    repo = tmp_repo
    for i in range(12):
        write(repo, "a.txt", f"take {i}\n" + "".join(f"line {n}\n" for n in range(40)))
        write(repo, f"b{i % 3}.txt", f"{i}")
        ok("add", "a.txt", f"b{i % 3}.txt", repo=repo)
    with repo.lock:
        assert history.repack(repo, force=True)
    packs = list((history.git_dir(repo) / "objects" / "pack").glob("*.pack"))
    assert len(packs) == 1 and not list((history.git_dir(repo) / "objects").glob("??/*"))
    data = packs[0].read_bytes()
    cut = len(data) - 40  # the trailer and the end of the last object
    # What reads whole before the cut (an entry, and its delta base), and
    # so the commits whose own trees are complete then.
    rows = [line.split() for line in subprocess.run(["git", "verify-pack", "-v", str(packs[0].with_suffix(".idx"))],
                                                    capture_output=True, text=True, check=True).stdout.splitlines()]
    entries = {r[0]: (int(r[4]) + int(r[3]) <= cut, r[6] if len(r) > 6 else None) for r in rows if len(r) >= 5 and len(r[0]) == 40}
    readable = lambda oid: entries[oid][0] and (entries[oid][1] is None or readable(entries[oid][1]))  # noqa: E731
    g = history.open_git(repo)

    def complete(tree) -> bool:
        return readable(str(tree.id)) and all(complete(g[e.id]) if e.type_str == "tree" else readable(str(e.id)) for e in tree)

    whole = {str(c.tree_id) for c in g.walk(g.head.target) if readable(str(c.id)) and complete(c.tree)}
    assert 1 < len(whole) < 12
    os.chmod(packs[0], 0o644)
    packs[0].write_bytes(data[:cut])
    assert run_cli("fsck", cwd=repo.root).code == 1

    r = ok("fsck", "--repair", repo=repo)
    assert "2 damaged object files of history moved to" in r.out and "read back from damaged packs first" in r.out, r.out
    assert "damaged history moved to" not in r.out and not list((repo.dir / "quarantine").glob("history.git-*"))
    g = history.open_git(fresh(repo))
    kept = [c for c in g.walk(g.head.target) if not c.message.startswith(history.RECOVERED)]
    assert {str(c.tree_id) for c in kept} == whole and len(kept) == len(whole)  # every whole commit, once
    assert history_fsck.check(fresh(repo)) == [] and run_cli("fsck", cwd=repo.root).code == 0
    assert subprocess.run(["git", f"--git-dir={history.git_dir(repo)}", "fsck", "--full"], capture_output=True).returncode == 0


@pytest.mark.skipif(GIT is None, reason="git fsck finds the missing commit")
def test_a_missing_tip_goes_back_to_the_newest_commit_when_many_share_a_second(tmp_repo, monkeypatch):
    """A script commits many changes in one second: commit times tie. The
    branch whose tip object is missing went back to whichever of them came
    first (here often an old one, dropping the commits above it while the
    report named only the tip as lost); a commit that follows another is
    the newer one."""
    import pygit2

    repo = tmp_repo
    monkeypatch.setattr(history, "signature", lambda repo: pygit2.Signature("t", "t@x", 1_700_000_000, 0))
    for i in range(12):
        add(repo, f"f{i}.txt", f"{i}")
    g = history.open_git(repo)
    commits = list(g.walk(g.head.target))
    assert len({c.commit_time for c in commits}) == 1
    os.unlink(_loose(repo, commits[0].id))

    r = ok("fsck", "--repair", repo=repo)
    assert f"to {str(commits[1].id)[:12]}" in r.out and f"lost: {str(commits[0].id)[:12]} and any commits" in r.out, r.out
    log = history.log(fresh(repo))
    assert [c.commit for c in log[1:]] == [str(c.id) for c in commits[1:]]
    assert history_fsck.check(fresh(repo)) == [] and run_cli("fsck", cwd=repo.root).code == 0


# A real `lattice fsck --repair`, killed once it has re-made its first commit
# (before any ref moved): the copy stays behind in history's objects.
_KILLED_REPAIR = """
import os, signal, sys
import pygit2
from lattice.cli.entry import run
real = pygit2.Repository.create_commit

def create_commit(self, *a, **k):
    made = real(self, *a, **k)
    os.kill(os.getpid(), signal.SIGKILL)
    return made

pygit2.Repository.create_commit = create_commit
sys.argv = ["lattice", "fsck", "--repair"]
run()
"""


@pytest.mark.skipif(GIT is None, reason="git fsck finds the missing commit")
def test_a_repair_killed_after_re_making_a_commit_is_finished_the_same_by_the_next(tmp_repo):
    """The first commit's object is gone: the second and third are re-made
    without it. A repair killed after re-making the second left that copy,
    which nothing follows; the next repair took it for what the lost first
    commit followed and re-made the second on its own copy (it appeared
    twice in the log). It ends as one uninterrupted repair does."""
    import sys

    repo = tmp_repo
    c3, c2, c1 = _three_commits(repo)
    os.unlink(_loose(repo, c1.id))
    proc = subprocess.run([sys.executable, "-c", _KILLED_REPAIR], cwd=repo.root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert history_fsck.check(fresh(repo)) != []  # no ref moved yet

    r = ok("fsck", "--repair", repo=repo)
    assert "now follows nothing" in r.out, r.out
    g = history.open_git(fresh(repo))
    new3, new2 = g.walk(g.head.target)
    assert _same_but_parents(c3, new3) and _same_but_parents(c2, new2) and new2.parents == []
    assert [c.message for c in history.log(fresh(repo))] == ["add c.txt", "add b.txt"]
    assert history_fsck.check(fresh(repo)) == [] and run_cli("fsck", cwd=repo.root).code == 0


# -- version limits ---------------------------------------------------------------------


def test_evictable_versions_respects_limits_current_and_pin(tmp_repo):
    repo = tmp_repo
    (repo.dir / "config.toml").write_text("[versions]\nimage = 2\n")
    for i, w in enumerate((16, 24, 32, 40, 48), 1):
        gen(repo, "x.png", w, seed=i)
    add(repo, "notes.txt", "import")
    ok("pin", "x.png@v1", repo=repo)
    r = fresh(repo)
    got = versions.evictable_versions(r)
    record = r.record("x.png")
    assert got == [("x.png", 2, record.versions[1].object), ("x.png", 3, record.versions[2].object)]
    assert versions.limits({}) == versions.DEFAULT_LIMITS
    with pytest.raises(InvalidInput, match="valid limit"):
        versions.limits({"versions": {"image": 0}})


def test_fsck_repair_restores_a_truncated_manifest_from_history_never_commits_it(tmp_repo):
    from conftest import run_cli

    repo = tmp_repo.gen({"a.txt": "one"})
    run_cli("add", "a.txt", cwd=repo.root)
    (repo.root / "a.txt").write_text("two")
    run_cli("add", "a.txt", cwd=repo.root)
    mf = repo.manifest.file_of("a.txt")
    good = mf.read_bytes()
    mf.write_bytes(good[:100])
    r = run_cli("fsck", "--repair", cwd=repo.root)
    assert r.code == 0, r.out + r.err
    assert "restored from history HEAD" in r.out
    assert mf.read_bytes() == good
    assert len(repo.record("a.txt").versions) == 2
    assert run_cli("fsck", cwd=repo.root).code == 0


def test_fsck_repair_quarantines_a_garbage_queue(tmp_repo):
    from conftest import run_cli

    (tmp_repo.dir / "queue.db").write_bytes(b"garbage" * 1000)
    r = run_cli("fsck", "--repair", cwd=tmp_repo.root)
    assert r.code == 0, r.out
    assert list((tmp_repo.dir / "quarantine").glob("queue.db-*"))
    assert run_cli("queue", "ls", cwd=tmp_repo.root).code == 0


def test_fsck_repair_mends_a_garbled_head_keeping_history(tmp_repo):
    from conftest import run_cli

    repo = tmp_repo.gen({"a.txt": "one"})
    run_cli("add", "a.txt", cwd=repo.root)
    run_cli("branch", "side", cwd=repo.root)
    before = run_cli("log", "--json", cwd=repo.root).json
    (repo.dir / "history.git" / "HEAD").write_text("garbage\n")
    r = run_cli("log", cwd=repo.root)
    assert r.code != 0 and "Traceback" not in r.err
    r = run_cli("fsck", "--repair", cwd=repo.root)
    assert "now names its branch again" in r.out
    assert run_cli("log", "--json", cwd=repo.root).json == before
    assert "side" in run_cli("branch", cwd=repo.root).out


def test_switch_keeps_a_hand_edit_of_the_config_on_its_branch(tmp_repo):
    from conftest import run_cli

    repo = tmp_repo.gen({"a.txt": "one"})
    run_cli("add", "a.txt", cwd=repo.root)
    run_cli("branch", "side", cwd=repo.root)
    cfg = repo.dir / "config.toml"
    cfg.write_text(cfg.read_text() + "\n# tuned on main\n")
    assert run_cli("switch", "side", cwd=repo.root).code == 0
    assert "tuned on main" not in cfg.read_text()
    assert run_cli("switch", "main", cwd=repo.root).code == 0
    assert "tuned on main" in cfg.read_text()


def test_manifest_cut_at_a_line_boundary_is_damage_not_a_change(tmp_repo):
    from conftest import run_cli

    repo = tmp_repo.gen({"a.txt": "one"})
    run_cli("add", "a.txt", cwd=repo.root)
    for text in ("two", "three"):
        (repo.root / "a.txt").write_text(text)
        run_cli("add", "a.txt", cwd=repo.root)
    mf = repo.manifest.file_of("a.txt")
    good = mf.read_bytes()
    cut = good[: good.index(b"\n[[versions]]", good.index(b"[[versions]]") + 1) + 1]  # v1 only, still valid TOML
    mf.write_bytes(cut)
    r = run_cli("status", cwd=repo.root)
    assert r.code == 5 and "truncated" in r.err
    r = run_cli("fsck", cwd=repo.root)
    assert r.code == 1 and "history HEAD has 3" in r.out
    r = run_cli("fsck", "--repair", cwd=repo.root)
    assert r.code == 0, r.out
    assert mf.read_bytes() == good
    assert [v["number"] for v in run_cli("show", "a.txt", "--json", cwd=repo.root).json["versions"]] == [1, 2, 3]


def test_a_hand_edit_is_recorded_on_the_branch_it_was_made_on(tmp_repo):
    """The first command to see a manifest file edited outside lattice
    commits it on the current branch: a switch never carries it elsewhere."""
    repo = tmp_repo
    add(repo, "a.txt", "a")
    add(repo, "b.txt", "b")
    ok("branch", "feat", repo=repo)
    mf = repo.manifest.file_of("b.txt")
    mf.write_text(mf.read_text().replace('kind = "other"', 'kind = "image"', 1))
    ok("switch", "feat", repo=repo)
    assert 'kind = "other"' in mf.read_text()  # feat's own record
    ok("pin", "b.txt@v1", repo=repo)
    ok("switch", "main", repo=repo)
    assert 'kind = "image"' in mf.read_text() and "pinned" not in mf.read_text()
    assert history.log(repo, 1)[0].message == "record manifest edits made outside lattice: b.txt"
    assert fsck(fresh(repo)).ok


def test_manifest_files_only_touched_write_nothing_to_history(tmp_repo):
    """After a clone or a `touch`, every manifest file's stamp changed but
    not its text: plain `fsck` (and any command) commits nothing and writes
    no pack of blobs history already holds; one real edit among them is
    committed alone."""
    repo = tmp_repo
    for i in range(20):  # over gitpack.PACK_FROM: the blobs would go into a pack
        write(repo, f"d/f{i}.txt", str(i))
    ok("add", "d", repo=repo)
    objects = repo.dir / "history.git" / "objects"
    before = sorted(p for p in objects.rglob("*") if p.is_file())
    later = os.stat(repo.manifest.file_of("d/f0.txt")).st_mtime + 5
    for i in range(20):
        os.utime(repo.manifest.file_of(f"d/f{i}.txt"), (later, later))
    ok("fsck", repo=repo)
    assert sorted(p for p in objects.rglob("*") if p.is_file()) == before
    assert history.log(repo, 1)[0].message == "add 20 files"
    mf = repo.manifest.file_of("d/f3.txt")
    mf.write_text(mf.read_text().replace('kind = "other"', 'kind = "image"', 1))
    for i in range(20):
        os.utime(repo.manifest.file_of(f"d/f{i}.txt"), (later + 5, later + 5))
    ok("fsck", repo=repo)
    assert history.log(repo, 1)[0].message == "record manifest edits made outside lattice: d/f3.txt"


def _file_here_folder_there(repo):
    """x.txt a file on main, x.txt/ a folder of assets on feat; feat checked out."""
    add(repo, "base.txt", "base")
    ok("branch", "feat", repo=repo)
    add(repo, "x.txt", "main's file")
    ok("switch", "feat", repo=repo)
    assert not (repo.root / "x.txt").exists()
    add(repo, "x.txt/a.txt", "feat's a")
    add(repo, "x.txt/sub/b.txt", "feat's b")


def test_merge_refuses_a_name_that_is_a_file_on_one_side_and_a_folder_on_the_other(tmp_repo):
    repo = tmp_repo
    _file_here_folder_there(repo)
    for into, other, message in (("feat", "main", "x.txt is a file on main and a folder on feat (x.txt/a.txt)"),
                                 ("main", "feat", "x.txt is a file on main and a folder on feat (x.txt/a.txt)")):
        ok("switch", into, repo=repo)
        head = history.log(repo, 1)[0].commit
        r = run_cli("merge", other, cwd=repo.root)
        assert r.code == 12 and f"cannot merge {other} into {into}: {message}" in r.err, r.err
        assert "hint: nothing was changed" in r.err and "kept" not in r.err
        assert history.log(repo, 1)[0].commit == head and ok("status", repo=repo).out == ""
        assert fsck(fresh(repo)).ok
    assert (repo.root / "x.txt").read_text() == "main's file"
    # A manifest that holds both (as merges before the check could make):
    text = repo.manifest.file_of("x.txt").read_bytes()
    ok("switch", "feat", repo=repo)
    repo.manifest.file_of("x.txt").write_bytes(text)
    r = run_cli("fsck", cwd=repo.root)
    assert r.code == 1 and "manifest: x.txt: is an asset, and so is x.txt/a.txt: a name cannot be both" in r.out, r.out


def test_switch_removes_the_folders_it_empties_and_no_others(tmp_repo):
    """As git does: the folders a switch empties by taking assets away go
    too; one still holding a file of no asset stays, with the file, and a
    folder the other branch writes into is kept."""
    repo = tmp_repo
    add(repo, "base.txt", "base")
    ok("branch", "feat", repo=repo)
    ok("switch", "feat", repo=repo)
    add(repo, "shots/a/one.txt", "1")
    add(repo, "shots/b/two.txt", "2")
    add(repo, "keep/x.txt", "x")
    write(repo, "keep/notes.md", "mine")
    add(repo, "both/feat.txt", "feat")
    ok("switch", "main", repo=repo)
    add(repo, "both/main.txt", "main")
    ok("switch", "feat", repo=repo)
    r = ok("switch", "main", repo=repo)
    assert not (repo.root / "shots").exists()
    assert sorted(os.listdir(repo.root / "keep")) == ["notes.md"]
    assert sorted(os.listdir(repo.root / "both")) == ["main.txt"]
    assert ok("status", repo=repo).out == "" and r.err == ""
    ok("switch", "feat", repo=repo)
    assert (repo.root / "shots/b/two.txt").read_text() == "2"


def test_a_merge_or_switch_blocked_by_something_in_the_way_exits_12_and_leaves_nothing(tmp_repo):
    """A merge blocked by a file of no asset where a folder of assets must
    go exited 4 (as an unsafe path), one blocked by a folder where a file
    must go 12; both left an empty history-pending marker behind. Both are
    something in the way (12), refused before anything changed, and leave
    no marker, nor a "recovered" commit for the next command to make."""
    repo = tmp_repo
    add(repo, "a.txt", "a")
    ok("branch", "feat", repo=repo)
    ok("switch", "feat", repo=repo)
    add(repo, "d/x.txt", "x")
    add(repo, "f.txt", "f")
    ok("switch", "main", repo=repo)
    add(repo, "m.txt", "m")  # the branches diverge: a merge commit, not a fast-forward
    head = history.open_git(repo).head.target
    write(repo, "d", "a file of mine")
    for args in (("merge", "feat"), ("switch", "feat")):
        r = run_cli(*args, cwd=repo.root)
        assert r.code == 12 and r.err.splitlines() == [
            f"error: cannot {args[0]}: d/x.txt: d is a file, so nothing can be created under it",
            "hint: nothing was changed; move d aside, then run the command again"], r.err
        assert not (repo.dir / "history-pending").exists()
    (repo.root / "d").unlink()
    write(repo, "f.txt/z", "mine")
    r = run_cli("merge", "feat", cwd=repo.root)
    assert r.code == 12 and "cannot merge: f.txt would be a file, but f.txt/ is a folder here holding f.txt/z" in r.err, r.err
    assert not (repo.dir / "history-pending").exists()
    assert history.open_git(repo).head.target == head  # nothing committed
    shutil.rmtree(repo.root / "f.txt")
    assert "merged: feat into main" in ok("merge", "feat", repo=repo).out
    merged = history.open_git(repo).head.peel()
    assert merged.message.startswith("merge feat into main") and head in merged.parent_ids and fsck(fresh(repo)).ok


def test_switch_between_a_file_and_a_folder_of_the_same_name(tmp_repo, monkeypatch):
    """Switching moves the folder's files out, removes the folder they leave,
    and writes the file (and back); only files of no asset leaving it keep
    the folder, and then the switch is refused before it starts."""
    repo = tmp_repo
    _file_here_folder_there(repo)
    r = ok("switch", "main", repo=repo)
    assert r.err == "" and (repo.root / "x.txt").read_text() == "main's file"
    assert ok("status", repo=repo).out == ""
    r = ok("switch", "feat", repo=repo)
    assert r.err == "" and (repo.root / "x.txt/sub/b.txt").read_text() == "feat's b"
    assert ok("status", repo=repo).out == "" and fsck(fresh(repo)).ok
    write(repo, "x.txt/sub/notes.md", "mine")
    r = run_cli("switch", "main", cwd=repo.root)
    assert r.code == 12 and "cannot switch: x.txt would be a file, but x.txt/ is a folder here holding x.txt/sub/notes.md" in r.err, r.err
    assert history.current_branch(history.open_git(repo)) == "feat" and (repo.root / "x.txt/a.txt").exists()
    (repo.root / "x.txt/sub/notes.md").unlink()
    from lattice import switch

    def die(*a, **k):
        raise KeyboardInterrupt  # as a kill leaves it: the journal, nothing done

    with monkeypatch.context() as m:
        m.setattr(switch, "_apply", die)
        assert run_cli("switch", "main", cwd=repo.root).code == 130
    assert (repo.root / "x.txt/a.txt").exists()
    assert ok("status", repo=repo).out == ""  # the next command finishes the switch
    assert (repo.root / "x.txt").read_text() == "main's file" and history.current_branch(history.open_git(repo)) == "main"
    assert fsck(fresh(repo)).ok


def _half_cycles(repo) -> None:
    """x made from y on main, y made from x on feat (z, a third, on both); main checked out."""
    for name in ("x.txt", "y.txt", "z.txt"):
        ok("gen", name, "--model", "test.text", "--set", f"word={name}", repo=repo)
    ok("branch", "feat", repo=repo)
    ok("switch", "feat", repo=repo)
    ok("gen", "y.txt", "--model", "test.join", "--input", "x.txt", repo=repo)
    ok("switch", "main", repo=repo)
    ok("gen", "x.txt", "--model", "test.join", "--input", "y.txt", repo=repo)


def _suggested_gen(text: str) -> list[str]:
    """The arguments of the `lattice gen …` a message suggests, with z.txt for its `…` input."""
    import re
    import shlex

    (line,) = re.findall(r"`lattice (gen [^`]*)`", text)
    return [a if a != "…" else "z.txt" for a in shlex.split(line)]


def test_a_merge_that_would_close_a_lineage_cycle_is_refused(tmp_repo, monkeypatch):
    """Each branch is a DAG, the merge would not be. Refused before any
    change; fsck names a cycle that got in anyway (here: a merge that did
    not check). What either suggests breaks the cycle."""
    from lattice import merge

    repo = tmp_repo
    _half_cycles(repo)
    head = history.log(repo, 1)[0].commit
    r = run_cli("merge", "feat", cwd=repo.root)
    assert r.code == 4 and "would make a cycle in the lineage: " in r.err and "y.txt -> x.txt" in r.err, r.err
    assert history.log(repo, 1)[0].commit == head and fsck(fresh(repo)).ok
    monkeypatch.setattr(merge, "_refuse_cycles", lambda *a: None)
    ok("merge", "feat", repo=repo)
    r = run_cli("fsck", cwd=repo.root)
    assert r.code == 1 and "lineage" in r.out and "recipes make a cycle" in r.out
    ok(*_suggested_gen(r.out), repo=repo)
    assert ok("fsck", repo=repo).out.startswith("ok")


def test_a_lineage_cycle_hint_names_the_branch_and_a_command_that_breaks_it(tmp_repo):
    repo = tmp_repo
    _half_cycles(repo)
    r = run_cli("merge", "feat", cwd=repo.root)
    assert r.code == 4
    assert "`lattice gen x.txt --model test.join --input …`" in r.err and "on the branch where x.txt is made from y.txt" in r.err, r.err
    ok(*_suggested_gen(r.err), repo=repo)  # x.txt is made from y.txt on main, checked out
    assert "merged: feat into main" in ok("merge", "feat", repo=repo).out
    ok("render", repo=repo)  # y.txt, made from x.txt, follows its new version
    assert fsck(fresh(repo)).ok and ok("render", "--check", repo=repo).out == "up to date\n"


def test_a_ref_name_that_is_also_a_folder_of_refs_is_one_clear_error(tmp_repo):
    repo = tmp_repo
    add(repo, "a.txt", "a")
    for kind, first, second in (("branch", "feat", "feat/x"), ("branch", "a/b", "a"), ("tag", "v1", "v1/x")):
        ok(kind, first, repo=repo)
        r = run_cli(kind, second, cwd=repo.root)
        assert r.code == 11 and f"cannot create {kind} {second}: {kind} {first} exists" in r.err, r.err
        assert ("`lattice branch feat-x`" in r.err) == (second == "feat/x")
        assert len(r.err.strip().splitlines()) == 2
    assert fsck(fresh(repo)).ok


def test_diff_at_version_shorthand_and_branch_json_from_anywhere(tmp_repo):
    repo = tmp_repo
    assert run_cli("branch", "--json", cwd=repo.root).json == {"current": "main", "branches": ["main"]}
    add(repo, "d/s.txt", "one")
    add(repo, "d/s.txt", "two")
    r = run_cli("diff", "s.txt@v1", "@v2", "--json", cwd=repo.root / "d")
    assert r.code == 0 and (r.json["old"], r.json["new"]) == ("d/s.txt@v1", "d/s.txt@v2"), r.err


def test_an_add_commit_names_what_changed(tmp_repo):
    repo = tmp_repo
    write(repo, "a.txt", "a")
    write(repo, "b.txt", "b")
    ok("add", "a.txt", "b.txt", repo=repo)
    assert history.log(repo, 1)[0].message == "add 2 files"
    add(repo, "a.txt", "a, edited")
    ok("add", "a.txt", "b.txt", repo=repo)  # nothing changed: no commit
    write(repo, "b.txt", "b, edited")
    ok("add", "a.txt", "b.txt", repo=repo)
    assert [c.message for c in history.log(repo, 2)] == ["add b.txt", "add a.txt"]


def test_a_hand_edit_history_could_not_take_is_caught_up_by_the_next_change(tmp_repo, monkeypatch):
    repo = tmp_repo
    add(repo, "a.txt", "a")
    mf = repo.manifest.file_of("a.txt")
    mf.write_text(mf.read_text().replace('kind = "other"', 'kind = "image"', 1))

    def broken(*a, **k):
        raise OSError("history is on a full disk")

    with monkeypatch.context() as m:
        m.setattr(history, "commit", broken)
        r = run_cli("status", cwd=repo.root)
    assert r.code == 0 and "warning: manifest edits made outside lattice are not in history yet" in r.err
    (repo.dir / history.PENDING).write_text("{not json")  # a damaged marker reads as an anonymous catch-up
    add(repo, "b.txt", "b")
    assert [c.message for c in history.log(repo, 2)] == ["add b.txt", history.RECOVERED]
    assert fsck(fresh(repo)).ok


def test_in_threads_keeps_order_and_raises_the_first_error_in_order():
    import threading

    from lattice.fsutil import in_threads

    def work(i):
        if i in (7, 40):
            raise ValueError(i)
        return i * 2

    assert in_threads(lambda i: i * 2, list(range(100))) == [i * 2 for i in range(100)]
    with pytest.raises(ValueError, match="^7$"):
        in_threads(work, list(range(100)))
    assert in_threads(work, [1, 2]) == [2, 4]  # few items: run here, in order
    meeting = threading.Barrier(2)  # passes only if two calls run at once
    assert in_threads(lambda i: meeting.wait(timeout=30) is not None, [0, 1], from_items=2) == [True, True]


def test_deleted_manifest_file_is_restored_by_repair(tmp_repo):
    from conftest import run_cli

    repo = tmp_repo.gen({"a.txt": "one", "b.txt": "two"})
    run_cli("add", ".", cwd=repo.root)
    mf = repo.manifest.file_of("b.txt")
    good = mf.read_bytes()
    mf.unlink()
    assert run_cli("fsck", cwd=repo.root).code == 1
    assert run_cli("fsck", "--repair", cwd=repo.root).code == 0
    assert mf.read_bytes() == good
    assert [e["path"] for e in run_cli("ls", "--json", cwd=repo.root).json] == ["a.txt", "b.txt"]


def test_garbled_head_is_reattached_to_the_branch_in_use(tmp_repo):
    from conftest import run_cli

    repo = tmp_repo.gen({"a.txt": "one"})
    run_cli("add", "a.txt", cwd=repo.root)
    run_cli("branch", "feat", cwd=repo.root)
    run_cli("switch", "feat", cwd=repo.root)
    (repo.root / "a.txt").write_text("feat")
    run_cli("add", "a.txt", cwd=repo.root)
    main_log = run_cli("log", "--json", cwd=repo.root).json
    (repo.dir / "history.git" / "HEAD").write_text("x\n")
    assert run_cli("fsck", "--repair", cwd=repo.root).code == 0
    assert (repo.dir / "history.git" / "HEAD").read_text().strip() == "ref: refs/heads/feat"
    assert run_cli("log", "--json", cwd=repo.root).json == main_log


# -- packs ------------------------------------------------------------------------


def test_blobs_written_as_a_pack_read_back_by_pygit2_and_git(tmp_path):
    import pygit2

    from lattice import gitpack

    pygit2.init_repository(str(tmp_path / "h.git"), bare=True)
    # Sizes cross each width of git's variable-length size header; one duplicate.
    blobs = [b"", b"x" * 15, b"y" * 16, os.urandom(2047), os.urandom(2048), os.urandom(300_000), b"x" * 15]
    ids = gitpack.write_blobs(tmp_path / "h.git" / "objects", blobs)
    assert ids == [gitpack.blob_id(b) for b in blobs]
    fresh_g = pygit2.Repository(str(tmp_path / "h.git"))
    for oid, data in zip(ids, blobs):
        assert fresh_g[oid].data == data
    packs = list((tmp_path / "h.git" / "objects" / "pack").glob("*.pack"))
    assert len(packs) == 1
    if GIT:
        out = subprocess.run(["git", "verify-pack", "-v", str(packs[0])], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert sum(1 for line in out.stdout.splitlines() if " blob " in line) == len(set(ids))


def test_a_large_change_is_committed_as_one_pack(tmp_repo):
    repo = tmp_repo
    for i in range(40):
        write(repo, f"set/f{i:02}.txt", f"content {i}")
    ok("add", "set", repo=repo)
    objects = repo.dir / "history.git" / "objects"
    assert len(list((objects / "pack").glob("*.idx"))) == 1
    loose = [p for p in objects.glob("??/*")]
    assert len(loose) < 10  # trees and the commit; no blob per manifest file
    g = history.open_git(repo)
    blobs = history.manifest_blobs(g, history.head_commit(g).tree)
    assert len(blobs) == 40
    assert g[blobs["set/f07.txt"]].data == (repo.dir / "manifest" / "set" / "f07.txt.toml").read_bytes()
    write(repo, "set/f07.txt", "changed")
    ok("add", "set/f07.txt", repo=repo)  # a small change: loose objects on top of the pack
    assert fsck(fresh(repo)).ok
    if GIT:
        p = subprocess.run(["git", f"--git-dir={repo.dir / 'history.git'}", "fsck", "--strict"], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr


# -- journaled switch --------------------------------------------------------------


def _two_branches(repo, count=6):
    for i in range(count):
        add(repo, f"d/f{i}.txt", f"main {i}")
    ok("branch", "feat", repo=repo)
    ok("switch", "feat", repo=repo)
    for i in range(0, count, 2):
        add(repo, f"d/f{i}.txt", f"feat {i} " * 50)
    add(repo, "d/only-feat.txt", "new on feat")
    ok("switch", "main", repo=repo)


def _die_at_second_manifest_write(monkeypatch):
    """Make a switch stop dead among its in-place manifest writes, as kill -9 would."""
    from lattice.manifest import Manifest

    real, calls = Manifest.overwrite, []

    def dying_overwrite(self, name, data):
        calls.append(name)
        if len(calls) == 2:
            raise SystemExit("killed")
        return real(self, name, data)

    monkeypatch.setattr(Manifest, "overwrite", dying_overwrite)


@pytest.mark.parametrize("crash_after", [0, 1, 3])
def test_switch_killed_midway_is_finished_by_the_next_command(tmp_repo, monkeypatch, crash_after):
    """A crash between the journal and its end leaves manifest files of both
    branches: the next command re-applies the journal, as if never stopped."""
    from lattice import switch
    from lattice.objects import ObjectStore

    repo = tmp_repo
    _two_branches(repo)
    writes = []
    real_copy = ObjectStore.copy_to

    def dying_copy(self, *a, **k):
        if len(writes) == crash_after:
            raise SystemExit("killed")  # nothing after this line runs, as with kill -9
        writes.append(a[0])
        return real_copy(self, *a, **k)

    monkeypatch.setattr(ObjectStore, "copy_to", dying_copy)
    if crash_after == 0:  # die among the manifest writes instead
        _die_at_second_manifest_write(monkeypatch)
    with pytest.raises(SystemExit):
        switch.switch(fresh(repo), "feat")
    monkeypatch.undo()
    assert (repo.dir / "journal").exists()
    r = ok("status", "--porcelain", repo=repo)  # any command finishes the switch first
    assert r.out == ""
    assert not (repo.dir / "journal").exists()
    g = history.open_git(repo)
    assert history.current_branch(g) == "feat"
    tree = history.head_commit(g).tree
    for name, blob in history.manifest_blobs(g, tree).items():
        assert (repo.dir / "manifest" / f"{name}.toml").read_bytes() == g[blob].data
    assert (repo.root / "d" / "f2.txt").read_text() == "feat 2 " * 50
    assert (repo.root / "d" / "f1.txt").read_text() == "main 1"
    assert (repo.root / "d" / "only-feat.txt").read_text() == "new on feat"
    assert fsck(fresh(repo)).ok


@pytest.mark.parametrize("to", ["main", "feat"])
def test_switch_over_a_file_folder_clash_killed_after_writing_is_finished(tmp_repo, monkeypatch, to):
    """The journal is re-done whole: its deletes then meet the file (or the
    folder) its writes already put at that name, which must not stop it."""
    from lattice import switch

    repo = tmp_repo
    _file_here_folder_there(repo)  # on feat
    if to == "feat":
        ok("switch", "main", repo=repo)
    real_unlink = os.unlink

    def dying_unlink(path, *a, **k):
        if str(path).endswith("journal"):
            raise SystemExit("killed")  # every file written, the journal not yet gone
        return real_unlink(path, *a, **k)

    monkeypatch.setattr(switch.os, "unlink", dying_unlink)
    with pytest.raises(SystemExit):
        switch.switch(fresh(repo), to)
    monkeypatch.undo()
    assert (repo.dir / "journal").exists()
    assert ok("status", "--porcelain", repo=repo).out == ""  # finishes the switch first
    assert not (repo.dir / "journal").exists() and history.current_branch(history.open_git(repo)) == to
    if to == "main":
        assert (repo.root / "x.txt").read_text() == "main's file"
    else:
        assert (repo.root / "x.txt/sub/b.txt").read_text() == "feat's b"
    assert fsck(fresh(repo)).ok


def test_fsck_run_first_after_a_killed_switch_finishes_it_once(tmp_repo, monkeypatch):
    """fsck opens the journal before the index, whose opening finishes the
    journal too: it must be finished once, not re-done over a deleted file."""
    from lattice import switch
    from lattice.objects import ObjectStore

    repo = tmp_repo
    _two_branches(repo)

    def dying_copy(self, *a, **k):
        raise SystemExit("killed")

    monkeypatch.setattr(ObjectStore, "copy_to", dying_copy)
    with pytest.raises(SystemExit):
        switch.switch(fresh(repo), "feat")
    monkeypatch.undo()
    assert (repo.dir / "journal").exists()
    r = run_cli("fsck", cwd=repo.root)
    assert r.code == 0 and not (repo.dir / "journal").exists(), r.out + r.err
    assert (repo.root / "d" / "f2.txt").read_text() == "feat 2 " * 50


def test_a_command_that_waited_on_a_switch_that_died_finishes_it_first(tmp_repo, monkeypatch):
    """A process that opened the index before a switch began, and re-reads
    the manifest after the switch died under the lock, finishes the journal
    instead of indexing half-written manifest files."""
    from lattice import switch
    from lattice.index_sync import sync_index
    repo = tmp_repo
    _two_branches(repo)
    waiting = fresh(repo)
    waiting.index  # opened (and synced) before the switch
    _die_at_second_manifest_write(monkeypatch)
    with pytest.raises(SystemExit):
        switch.switch(fresh(repo), "feat")
    monkeypatch.undo()
    assert (repo.dir / "journal").exists()
    sync_index(waiting)
    assert not (repo.dir / "journal").exists() and not waiting.damaged
    assert history.current_branch(history.open_git(repo)) == "feat"
    assert waiting.index.get("d/f2.txt").object == waiting.manifest.read("d/f2.txt").current.object
    assert (repo.root / "d" / "only-feat.txt").read_text() == "new on feat"
    assert ok("status", "--porcelain", repo=repo).out == ""


@pytest.mark.parametrize("then", [["switch", "--force", "other"], ["switch", "--force", "main"], ["branch", "-d", "feat"], ["merge", "other"]])
def test_a_killed_switch_is_finished_before_a_command_reads_head(tmp_repo, monkeypatch, then):
    """A switch killed before it moved HEAD leaves the manifest half feat's:
    the next switch, merge or branch deletion finishes it before reading
    HEAD, rather than switching from main (feat's state landing under the
    branch switched to), or deleting feat for the journal to check it out."""
    from lattice import switch

    repo = tmp_repo
    _two_branches(repo)
    ok("branch", "other", repo=repo)
    _die_at_second_manifest_write(monkeypatch)
    with pytest.raises(SystemExit):
        switch.switch(fresh(repo), "feat")
    monkeypatch.undo()
    assert (repo.dir / "journal").exists()
    r = run_cli(*then, cwd=repo.root)
    assert not (repo.dir / "journal").exists()
    g = history.open_git(repo)
    if then[0] == "branch":  # feat is checked out by then: the current branch stays
        assert r.code == 12 and "it is the current branch" in r.err, r.err
        assert history.current_branch(g) == "feat" and "feat" in history.branches(g)
    elif then[0] == "merge":  # into feat, which has other's commits already
        assert r.code == 0 and r.out == "already up to date\n" and history.current_branch(g) == "feat", r.out + r.err
    else:
        assert r.code == 0 and history.current_branch(g) == then[-1], r.out + r.err
    tree = history.head_commit(g).tree
    for name, blob in history.manifest_blobs(g, tree).items():
        assert (repo.dir / "manifest" / f"{name}.toml").read_bytes() == g[blob].data, name
    assert ok("status", "--porcelain", repo=repo).out == ""
    assert fsck(fresh(repo)).ok


def test_finishing_a_killed_switch_keeps_files_edited_since(tmp_repo, monkeypatch):
    """The command that finishes a switch cut short (Ctrl-C, kill -9) never
    writes over an edit made after it: such a file is kept, said, and
    listed as modified. A file the killed switch had begun to write is no
    edit: it is written whole."""
    from lattice import switch

    repo = tmp_repo
    _two_branches(repo)
    ok("switch", "feat", repo=repo)
    write(repo, "d/only-feat.txt", "my notes")  # feat's asset, edited: the switch to main must keep it
    ok("add", "d/only-feat.txt", repo=repo)
    ok("switch", "main", repo=repo)
    _die_at_second_manifest_write(monkeypatch)
    with pytest.raises(SystemExit):
        switch.switch(fresh(repo), "feat")
    monkeypatch.undo()
    write(repo, "d/f0.txt", "edited after the kill")  # to be replaced by feat's
    write(repo, "d/f2.txt", ("feat 2 " * 50)[:100])  # the start of feat's, as a cut-short write leaves it
    write(repo, "d/only-feat.txt", "mine, made after the kill")  # to be written afresh
    r = run_cli("status", "--porcelain", cwd=repo.root)
    assert r.code == 0 and not (repo.dir / "journal").exists()
    assert "warning: finishing an interrupted switch or merge, kept d/f0.txt, d/only-feat.txt: edited since it was cut short" in r.err, r.err
    assert history.current_branch(history.open_git(repo)) == "feat"
    assert (repo.root / "d/f0.txt").read_text() == "edited after the kill"
    assert (repo.root / "d/only-feat.txt").read_text() == "mine, made after the kill"
    assert (repo.root / "d/f2.txt").read_text() == "feat 2 " * 50
    assert (repo.root / "d/f4.txt").read_text() == "feat 4 " * 50
    assert ok("status", "--porcelain", repo=repo).out.split() == ["M", "d/f0.txt", "M", "d/only-feat.txt"]
    ok("switch", "--force", "main", repo=repo)  # and back: the edits stay, feat's versions too
    assert (repo.root / "d/f0.txt").read_text() == "edited after the kill"
    assert fsck(fresh(repo)).ok


def test_switching_back_and_forth_reuses_parked_records_and_the_stat_cache(tmp_repo, monkeypatch):
    from lattice import records
    from lattice.records import decode

    repo = tmp_repo
    _two_branches(repo)
    ok("switch", "feat", repo=repo)
    parsed = []
    real = records.decode
    monkeypatch.setattr(records, "decode", lambda data, path: parsed.append(path) or real(data, path))
    ok("switch", "main", repo=repo)
    ok("switch", "feat", repo=repo)
    assert parsed == []  # both sides were parked: no TOML parsed
    r = fresh(repo)
    for row in r.index.rows():
        if row.path not in ("d/f0.txt", "d/f2.txt", "d/f4.txt", "d/only-feat.txt"):
            continue  # untouched by the switch (and added inside the racy window)
        assert row.wt_object == row.object and row.wt_size == os.path.getsize(repo.root / row.path)  # no re-hash needed
        path = repo.dir / "manifest" / f"{row.path}.toml"
        assert r.record(row.path) == decode(path.read_bytes(), path)


def test_a_damaged_journal_is_one_clear_error(tmp_repo):
    repo = tmp_repo
    add(repo, "a.txt", "1")
    (repo.dir / "journal").write_bytes(b"{not json")
    r = run_cli("status", cwd=repo.root)
    assert r.code == 5 and "interrupted switch or merge" in r.err and "fsck --repair" in r.err and "Traceback" not in r.err
    r = run_cli("fsck", cwd=repo.root)
    assert r.code != 0 and "journal" in r.out + r.err and "Traceback" not in r.err
    r = ok("fsck", "--repair", repo=repo)
    assert "quarantine" in r.out and not (repo.dir / "journal").exists()
    assert ok("status", repo=repo).out == "" and fsck(fresh(repo)).ok


def test_parked_records_are_taken_once_and_capped(tmp_path):
    from lattice.index import Index

    index = Index(tmp_path / "index.db")
    with index:
        index.park_many((f"b{i}", b"body %d" % i) for i in range(10))
        index.park_many([("b3", b"again")])  # re-parked: now among the newest
        index.trim_parked(keep=4)
    assert sorted(r[0] for r in index.db.execute("SELECT blob FROM parked")) == ["b3", "b7", "b8", "b9"]
    with index:
        assert index.unpark_many(["b3", "b0", "b8"]) == {"b3": b"again", "b8": b"body 8"}
        assert index.unpark_many(["b3", "b8"]) == {}


def test_a_journal_re_done_after_its_object_went_leaves_the_file_to_render(tmp_repo, monkeypatch):
    from lattice import switch
    from lattice.manifest import Manifest

    repo = tmp_repo
    _two_branches(repo)
    real = Manifest.overwrite
    monkeypatch.setattr(Manifest, "overwrite", lambda self, name, data: (_ for _ in ()).throw(SystemExit("killed")))
    with pytest.raises(SystemExit):
        switch.switch(fresh(repo), "feat")
    monkeypatch.setattr(Manifest, "overwrite", real)
    journal = (repo.dir / "journal").read_text()
    g = history.open_git(repo)
    feat = history.resolve(g, "feat").tree
    from lattice.records import decode

    record = decode(g[history.manifest_blobs(g, feat)["d/f2.txt"]].data, repo.dir / "x")
    assert record.current.object in journal
    os.chmod(repo.objects.locate(record.current.object), 0o644)
    os.unlink(repo.objects.locate(record.current.object))
    r = run_cli("status", "--porcelain", cwd=repo.root)
    assert r.code == 0 and not (repo.dir / "journal").exists(), r.err
    assert not (repo.root / "d" / "f2.txt").exists()
    assert (repo.root / "d" / "f0.txt").read_text() == "feat 0 " * 50
    assert fresh(repo).record("d/f2.txt").current.object == record.current.object  # recorded, to re-make or re-add


def test_switch_killed_with_sigkill_leaves_one_branch_or_the_other(tmp_repo):
    """Real processes, killed at points spread over a 400-asset switch (from
    start-up to done): afterwards the project is wholly on one branch."""
    import signal
    import sys
    import time

    repo = tmp_repo
    repo.gen({f"d/f{i:03}.txt": f"main {i}" for i in range(400)})
    ok("add", "d", repo=repo)
    ok("branch", "feat", repo=repo)
    ok("switch", "feat", repo=repo)
    repo.gen({f"d/f{i:03}.txt": f"feat {i}" for i in range(0, 400, 2)})
    ok("add", "d", repo=repo)
    ok("switch", "main", repo=repo)
    started = time.perf_counter()
    run_proc("switch", "feat", cwd=repo.root, check=True)
    whole = time.perf_counter() - started
    ok("switch", "main", repo=repo)
    interrupted = 0
    for fraction in (0.3, 0.5, 0.65, 0.8, 0.9, 1.0):
        proc = subprocess.Popen([sys.executable, "-m", "lattice", "switch", "feat"], cwd=repo.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(whole * fraction)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        interrupted += (repo.dir / "journal").exists()
        assert ok("status", "--porcelain", repo=repo).out == ""  # finishes a journaled switch first
        g = history.open_git(repo)
        branch = history.current_branch(g)
        blobs = history.manifest_blobs(g, history.head_commit(g).tree)
        for i in range(400):
            name = f"d/f{i:03}.txt"
            assert (repo.dir / "manifest" / f"{name}.toml").read_bytes() == g[blobs[name]].data
            assert (repo.root / name).read_text() == (f"feat {i}" if branch == "feat" and i % 2 == 0 else f"main {i}")
        assert fsck(fresh(repo)).ok
        if branch == "feat":
            ok("switch", "main", repo=repo)
    print(f"{interrupted} of 6 kills fell inside the journaled part")


# A real `lattice add` of 60 files, stopped at its 20th manifest rename: by
# SIGKILL, or by Ctrl-C / SIGTERM (signal number in argv[1], 0 for SIGKILL).
_STOPPED_ADD = """
import os, signal, sys
from lattice.cli.entry import run
real, seen, sig = os.replace, [0], int(sys.argv[1])

def replace(src, dst, *a, **k):
    if str(dst).endswith(".toml") and "/manifest/" in str(dst):
        seen[0] += 1
        if seen[0] == 20:
            os.kill(os.getpid(), sig or signal.SIGKILL)
    return real(src, dst, *a, **k)

os.replace = replace
sys.argv = ["lattice", "add", "batch"]
run()
"""


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGINT", "SIGTERM"])
def test_an_add_stopped_during_its_renames_lands_whole(tmp_repo, sig):
    """Once a batch's first manifest file is renamed into place the change
    is decided: Ctrl-C and SIGTERM wait for it to end (index and history
    included), and after SIGKILL the next command finishes it from its
    journal; history then holds all 60 under the add's own message."""
    import signal
    import sys

    repo = tmp_repo
    repo.gen({f"batch/f{i:02}.txt": f"take {i}" for i in range(60)})
    number = 0 if sig == "SIGKILL" else int(getattr(signal, sig))
    proc = subprocess.run([sys.executable, "-c", _STOPPED_ADD, str(number)], cwd=repo.root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == {"SIGKILL": -9, "SIGINT": 130, "SIGTERM": 143}[sig], proc.stderr
    if sig == "SIGKILL":
        assert (repo.dir / "batch-journal").exists()
    assert ok("status", "--porcelain", repo=repo).out == ""  # every file recorded, nothing new
    assert not (repo.dir / "batch-journal").exists()
    assert len(ok("ls", repo=repo).out.splitlines()) == 60
    g = history.open_git(repo)
    head = history.head_commit(g)
    assert len(history.manifest_blobs(g, head.tree)) == 60 and head.message.startswith("add 60 files")
    assert fsck(fresh(repo)).ok and not repo.objects.stray_temps()


def test_gc_packs_history_and_removes_what_the_pack_replaces(tmp_repo, monkeypatch):
    repo = tmp_repo
    for i in range(20):
        write(repo, f"set/f{i:02}.txt", f"{i}")
    ok("add", "set", repo=repo)  # one pack
    for i in range(5):
        add(repo, "a.txt", f"v{i}")  # loose objects
    objects = repo.dir / "history.git" / "objects"
    loose_before = list(objects.glob("??/*"))
    assert loose_before and len(list(objects.glob("pack/*.pack"))) == 1
    log_before = history.log(repo)
    assert ok("gc", repo=repo).out.count("history:") == 0  # below the limits: left alone
    monkeypatch.setattr(history, "LOOSE_LIMIT", 5)
    r = ok("gc", "--json", repo=repo).json
    assert r["history_packed"] > len(loose_before)
    assert list(objects.glob("??/*")) == [] and len(list(objects.glob("pack/*.pack"))) == 1
    assert [c.commit for c in history.log(repo)] == [c.commit for c in log_before]
    assert fsck(fresh(repo)).ok and fresh(repo).record("a.txt").versions[-1].number == 5
    if GIT:
        p = subprocess.run(["git", f"--git-dir={repo.dir / 'history.git'}", "fsck", "--strict"], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    add(repo, "a.txt", "after")  # history goes on on top of the pack
    assert len(history.log(repo)) == len(log_before) + 1


def test_a_version_that_is_not_one_is_named_as_such(tmp_repo):
    """`a.txt@latest`, `a.txt@`, `a.txt@v-1` on an asset: one error about
    the version, never "no asset named" or a spec with two '@'."""
    repo = tmp_repo
    add(repo, "a.txt", "1")
    for spec, why in (("a.txt@latest", "a.txt@latest: latest is not a version"), ("a.txt@", "a.txt@: the version is missing"), ("a.txt@v-1", "a.txt@v-1: v-1 is not a version")):
        for command in ("restore", "log", "show"):
            r = run_cli(command, spec, cwd=repo.root)
            assert r.code == 4 and why in r.err and "lattice log a.txt" in r.err and "@vN" not in r.err, (command, r.err)


def test_a_git_merge_conflict_in_history_refs_is_joined_not_thrown_away(tmp_repo):
    """Two clones each committed, and `git merge` of the project left both
    tips in a ref file: fsck --repair makes a merge of both (the manifest on
    disk as its tree) and keeps every branch; conflict markers in a manifest
    file are named as what they are."""
    repo = tmp_repo
    add(repo, "a.txt", "1")
    ok("branch", "feat", repo=repo)
    ok("switch", "feat", repo=repo)
    add(repo, "b.txt", "theirs")
    theirs = history.head_commit(history.open_git(repo)).id
    ok("switch", "main", repo=repo)
    add(repo, "c.txt", "ours")
    g = history.open_git(repo)
    ours = history.head_commit(g).id
    ref = history.git_dir(repo) / "refs" / "heads" / "main"
    ref.write_text(f"<<<<<<< HEAD\n{ours}\n=======\n{theirs}\n>>>>>>> origin/main\n")
    r = run_cli("log", cwd=repo.root)
    assert r.code == 11 and "fsck --repair" in r.err
    r = run_cli("fsck", "--repair", cwd=repo.root)
    assert r.code == 0 and "joined both sides of a git merge conflict in refs/heads/main" in r.out, r.out + r.err
    g = history.open_git(repo)
    head = history.head_commit(g)
    assert {str(p) for p in head.parent_ids} == {str(ours), str(theirs)}
    assert "feat" in ok("branch", repo=repo).out and ok("log", "-n", "1", repo=repo).out
    assert fsck(fresh(repo)).ok

    manifest = repo.dir / "manifest" / "a.txt.toml"
    manifest.write_text("<<<<<<< HEAD\n" + manifest.read_text() + "=======\nx = 1\n>>>>>>> theirs\n")
    r = run_cli("status", cwd=repo.root)
    assert r.code == 5 and "unresolved git merge conflict" in r.err and "git checkout --ours/--theirs" in r.err


def test_an_older_manifest_brought_back_by_git_is_no_damage(tmp_repo):
    """`git checkout` of an older commit (or `git stash`) puts back a
    manifest file with fewer versions: history holds that very text, so it
    is re-indexed, not called truncated; a cut file still is."""
    repo = tmp_repo
    add(repo, "a.txt", "1")
    older = (repo.dir / "manifest" / "a.txt.toml").read_bytes()
    add(repo, "a.txt", "2")
    add(repo, "b.txt", "b")
    assert len(repo.record("a.txt").versions) == 2
    (repo.dir / "manifest" / "a.txt.toml").write_bytes(older)
    r = run_cli("status", "--porcelain", cwd=repo.root)
    # The working file holds v2's bytes, which the manifest no longer lists:
    # kept as if edited (only recorded versions are safe to overwrite).
    assert r.code == 0 and r.out == " M a.txt\n", r.err
    assert len(fresh(repo).record("a.txt").versions) == 1
    assert run_cli("checkout", "a.txt", cwd=repo.root).code == 0 and (repo.root / "a.txt").read_text() == "1"
    # A file cut to fewer versions, which history never held, is still damage.
    text = (repo.dir / "manifest" / "b.txt.toml").read_bytes()
    add(repo, "b.txt", "b2")
    (repo.dir / "manifest" / "b.txt.toml").write_bytes(text + b"\n# cut here\n")
    r = run_cli("status", cwd=repo.root)
    assert r.code == 5 and "truncated?" in r.err, r.err


def test_git_lock_files_a_killed_process_left_do_not_stop_history(tmp_repo):
    """pygit2 writes HEAD and refs through NAME.lock files; a lattice killed
    meanwhile leaves them, and each would refuse every later update of its
    ref. Holding the repository lock, lattice knows them stale."""
    repo = tmp_repo
    add(repo, "a.txt", "one")
    git = repo.dir / "history.git"
    for stale in ("HEAD.lock", "refs/heads/main.lock", "packed-refs.lock"):
        (git / stale).write_text("")
    add(repo, "a.txt", "two")
    ok("branch", "feat", repo=repo)
    ok("switch", "feat", repo=repo)
    assert history.current_branch(history.open_git(repo)) == "feat"
    assert [c["message"] for c in ok("log", "--json", repo=repo).json] == ["add a.txt", "add a.txt"]  # the second add committed
    assert not any(git.rglob("*.lock")) and fsck(fresh(repo)).ok


_KILLED_BEFORE_HISTORY = """
import os, signal, sys
import lattice.history as history
history.commit = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
from lattice.cli.entry import run
sys.argv = ["lattice", "add", "b.txt"]
run()
"""


def test_a_change_killed_before_its_history_commit_is_committed_by_the_next_command(tmp_repo):
    """Manifest and index written, history not: the next command, even a
    reading one, commits it (marked recovered), so fsck agrees at once."""
    import signal
    import sys

    repo = tmp_repo
    add(repo, "a.txt", "one")
    write(repo, "b.txt", "two")
    proc = subprocess.run([sys.executable, "-c", _KILLED_BEFORE_HISTORY], cwd=repo.root, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL and (repo.dir / "history-pending").exists()
    assert ok("status", "--porcelain", repo=repo).out == ""
    assert not (repo.dir / "history-pending").exists()
    assert ok("fsck", repo=repo).code == 0
    assert ok("log", "--json", repo=repo).json[0]["message"].startswith("add b.txt")


def test_fsck_as_the_first_command_after_the_kill_commits_the_change_first(tmp_repo):
    """fsck catches history up before it compares it with the manifest: it
    passes at once, not only from its second run on."""
    import signal
    import sys

    repo = tmp_repo
    add(repo, "a.txt", "one")
    write(repo, "b.txt", "two")
    proc = subprocess.run([sys.executable, "-c", _KILLED_BEFORE_HISTORY], cwd=repo.root, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL and (repo.dir / "history-pending").exists()
    r = run_cli("fsck", cwd=repo.root)
    assert r.code == 0, r.out + r.err
    assert ok("log", "--json", repo=repo).json[0]["message"].startswith("add b.txt")


def test_a_history_commit_that_failed_is_not_retried_by_every_later_command(tmp_repo, monkeypatch):
    """A commit that failed (not a kill) waits for the next change or
    `fsck --repair`: reading commands stay quiet, rather than retrying it
    and warning each time."""
    repo = tmp_repo
    add(repo, "a.txt", "1")
    monkeypatch.setattr(history, "commit", lambda *a, **k: (_ for _ in ()).throw(OSError("simulated failure")))
    r = add(repo, "a.txt", "2")
    assert "warning: the change was recorded, but not in history" in r.err
    monkeypatch.undo()
    assert history_pending._intent(repo)["failed"] is True
    for _ in range(2):
        r = ok("status", repo=repo)
        assert r.err == "" and (repo.dir / "history-pending").exists()
    add(repo, "b.txt", "3")  # the next change catches up first
    assert [c["message"] for c in ok("log", "--json", repo=repo).json][:2] == ["add b.txt", f"add a.txt ({history.RECOVERED})"]
    assert fsck(fresh(repo)).ok


def test_a_lock_file_that_cannot_be_opened_is_a_lock_not_taken(tmp_repo):
    """Reading commands only try the lock (to catch history up): a lock file
    that cannot be opened (someone else's project) is "not now", not an error."""
    from lattice.lock import RepoLock

    lock = RepoLock(tmp_repo.dir / "missing-folder" / "lock")
    assert lock.try_acquire() is False and lock.held_here() is False


def test_switch_and_merge_store_back_an_output_only_its_working_file_holds(tmp_repo, tmp_path, monkeypatch):
    """gc evicted the store's copy of outputs whose working files still
    hold them: a switch or merge that removes or replaces such a file
    stores its bytes back first, so switching back brings back a
    non-deterministic output (which nothing could re-make) and re-makes no
    deterministic one."""
    repo = tmp_repo
    runs = tmp_path / "runs.log"
    monkeypatch.setenv("LATTICE_TEST_LOG", str(runs))
    ok("gen", "r.txt", "--model", "test.random", repo=repo)
    ok("gen", "d.txt", "--model", "test.text", "--seed", "1", repo=repo)
    ok("branch", "x", repo=repo)
    ok("gen", "r.txt", "--model", "test.random", repo=repo)
    ok("regen", "d.txt", "--seed", "2", repo=repo)
    ok("branch", "y", repo=repo)
    ok("switch", "y", repo=repo)
    ok("gen", "r.txt", "--model", "test.random", repo=repo)
    ok("switch", "main", repo=repo)
    held = {n: (repo.root / n).read_bytes() for n in ("r.txt", "d.txt")}
    objects = {n: fresh(repo).record(n).current.object for n in held}
    ok("gc", "--include-current", "--include-nondeterministic", "--older-than", "0", "--keep-versions", "0", repo=repo)
    assert not any(repo.objects.has(o) for o in objects.values())
    assert ok("status", repo=repo).out == "evicted:   d.txt\n"  # r.txt is held by its working file alone
    made = runs.read_text()
    r = ok("switch", "x", repo=repo)
    assert not (repo.root / "r.txt").exists() and "lattice render" in r.err  # x's versions were evicted too
    assert all(repo.objects.has(o) for o in objects.values())
    r = ok("switch", "main", repo=repo)
    assert {n: (repo.root / n).read_bytes() for n in held} == held and "lattice render" not in r.err
    assert runs.read_text() == made and ok("status", repo=repo).out == ""
    # A merge that takes another version over the file stores it back too.
    ok("gc", "--include-current", "--include-nondeterministic", "--older-than", "0", "--keep-versions", "0", repo=repo)
    assert not repo.objects.has(objects["r.txt"])
    assert ok("merge", "y", "--json", repo=repo).json["status"] == "fast-forward"
    assert repo.objects.has(objects["r.txt"]) and not (repo.root / "r.txt").exists()
    # An edit made to such a file is kept, as any edit is.
    ok("switch", "x", repo=repo)
    ok("render", "d.txt", repo=repo)
    ok("gc", "--include-current", "--older-than", "0", "--keep-versions", "0", repo=repo)
    (repo.root / "d.txt").write_text("edited")
    r = run_cli("switch", "main", cwd=repo.root)
    assert r.code == 12 and "d.txt" in r.err
    r = ok("switch", "main", "--force", repo=repo)
    assert "kept (unrecorded edits): d.txt" in r.err and (repo.root / "d.txt").read_text() == "edited"
    # Gone is only what gc was told to evict while no working file held it:
    # fsck notes it (evicted at the user's request), and fails on nothing.
    report = fsck(fresh(repo))
    assert report.ok and [p.subject for p in report.notes] == ["r.txt@v1", "r.txt@v3"]


def test_render_stores_back_an_outdated_file_whose_version_gc_evicted(tmp_repo):
    """A working file holding an older version of an output whose object gc
    evicted is outdated, and render replaces it: its bytes are stored back
    first, the only copy of a non-deterministic version."""
    repo = tmp_repo
    ok("gen", "r.txt", "--model", "test.random", repo=repo)
    first = fresh(repo).record("r.txt").current.object
    old = (repo.root / "r.txt").read_bytes()
    ok("gen", "r.txt", "--model", "test.random", repo=repo)
    (repo.root / "r.txt").write_bytes(old)  # as a `git checkout` of the project's files leaves it
    ok("gc", "--include-nondeterministic", "--older-than", "0", "--keep-versions", "0", repo=repo)
    assert not repo.objects.has(first)
    assert ok("status", repo=repo).out == "outdated:  r.txt\n"
    ok("render", repo=repo)
    assert repo.objects.has(first) and (repo.root / "r.txt").read_bytes() != old
    with repo.objects.open(first) as f:
        assert f.read() == old


@pytest.mark.parametrize("command", [["switch", "feat"], ["switch", "feat", "--force"], ["merge", "feat"], ["status"]])
def test_manifest_edits_outside_lattice_that_drop_versions_are_committed_with_a_warning(tmp_repo, command):
    """An older manifest file put back by hand (`git checkout HEAD~1 --
    .lattice/manifest`) is committed as the edit it is, but a version it
    drops is said, naming the asset and the command that takes its record
    back from the commit before; an edit that drops nothing is not."""
    repo = tmp_repo
    add(repo, "a.txt", "1")
    add(repo, "b.txt", "1")
    mf = repo.manifest.file_of("a.txt")
    old = mf.read_bytes()
    add(repo, "a.txt", "2")
    ok("branch", "feat", repo=repo)
    mf.write_bytes(old)
    write(repo, "a.txt", "1")  # as `git checkout HEAD~1 -- .` leaves it
    other = repo.manifest.file_of("b.txt")
    other.write_text(other.read_text().replace('kind = "other"\n', 'kind = "other"\ntags = ["by-hand"]\n', 1))
    r = run_cli(*command, cwd=repo.root)
    assert r.code == 0, r.err
    [line] = [w for w in r.err.splitlines() if w.startswith("warning:")]
    assert "dropped versions of a.txt (1 of 2 left); committed on main as they are" in line and "b.txt" not in line, line
    if command[0] == "switch":
        ok("switch", "main", repo=repo)
    g = history.open_git(repo)
    edit = history.head_commit(g)
    assert edit.message.startswith("record manifest edits made outside lattice: ")
    assert len(fresh(repo).record("a.txt").versions) == 1
    diff, back = line.split("`")[1:4:2]
    assert "M  a.txt (v2 -> v1)\n" in ok(*diff.split()[1:], repo=repo).out
    subprocess.run(back, shell=True, cwd=repo.root, check=True)
    assert [v.number for v in fresh(repo).record("a.txt").versions] == [1, 2]
    assert fresh(repo).record("b.txt").tags == ["by-hand"]
    r = ok("status", repo=repo)
    assert "warning" not in r.err  # taking versions back drops none
    assert fsck(fresh(repo)).ok


def test_a_branch_and_a_tag_never_share_a_name(tmp_repo):
    """A tag named like a branch could never be reached by name (the branch
    wins), nor could a tag once a branch took its name: each is refused as
    a name already taken (11), and `switch TAG` does not suggest making one."""
    repo = tmp_repo
    add(repo, "a.txt", "1")
    r = run_cli("tag", "main", cwd=repo.root)
    assert r.code == HistoryError.exit_code == 11
    assert r.err == ("error: cannot create tag main: a branch has that name, which would always mean the branch, never the tag\n"
                     "hint: pick another name for the tag; `lattice branch` lists the branches\n")
    ok("tag", "rel", repo=repo)
    r = run_cli("branch", "rel", cwd=repo.root)
    assert r.code == 11 and "cannot create branch rel: a tag has that name" in r.err and "`lattice tag` lists the tags" in r.err
    g = history.open_git(repo)
    assert history.tags(g) == ["rel"] and history.branches(g) == ["main"]
    for args in (["switch", "rel"], ["branch", "-d", "rel"]):
        r = run_cli(*args, cwd=repo.root)
        assert r.code == 4 and "no branch named rel: rel is a tag" in r.err and "creates one" not in r.err, r.err
        # rel is here or behind: merging it would bring nothing
        assert "`lattice diff rel HEAD`" in r.err and "`lattice merge rel`" not in r.err and "`lattice restore PATH@vN`" in r.err
    assert "creates one" in run_cli("switch", "nope", cwd=repo.root).err  # a free name still may be
    ok("branch", "feat", repo=repo)
    ok("switch", "feat", repo=repo)
    add(repo, "a.txt", "2")
    ok("tag", "ahead", repo=repo)
    ok("switch", "main", repo=repo)
    r = run_cli("switch", "ahead", cwd=repo.root)
    assert r.code == 4 and "`lattice merge ahead` brings its changes into the current branch" in r.err, r.err
    ok("merge", "ahead", repo=repo)  # the hint works
    assert (repo.root / "a.txt").read_text() == "2"


def test_the_current_branch_of_a_fresh_repository_is_taken_before_its_first_commit(tmp_repo):
    """`lattice branch` lists `main` before any commit; it is the branch in
    use, not a free name: switching to it is no switch, and neither a branch
    nor a tag of its name is made (the tag would have shared its name with
    the branch the first commit makes)."""
    repo = tmp_repo
    assert ok("switch", "main", repo=repo).out == "already on main\n"
    r = run_cli("branch", "main", cwd=repo.root)
    assert r.code == 11 and r.err.startswith("error: branch main already exists\n"), r.err
    r = run_cli("tag", "main", cwd=repo.root)
    assert r.code == 11 and "cannot create tag main: a branch has that name" in r.err, r.err
    assert run_cli("branch", "main/x", cwd=repo.root).code == 11
    g = history.open_git(repo)
    assert history.tags(g) == [] and history.branches(g) == ["main"]
    ok("tag", "rel", repo=repo)  # the first commit, on main
    assert history.tags(g) == ["rel"] and history.branches(g) == ["main"]


def test_diff_of_a_state_and_a_version_says_which_forms_work(tmp_repo):
    repo = tmp_repo
    add(repo, "a.txt", "1")
    add(repo, "a.txt", "2")
    ok("tag", "rel", repo=repo)
    for old, new, ref, version, states in (("main", "a.txt@v1", "main", "a.txt@v1", "main HEAD"),
                                           ("a.txt@v1", "rel", "rel", "a.txt@v1", "rel HEAD"),
                                           ("HEAD", "a.txt@v2", "HEAD", "a.txt@v2", "'HEAD~1' HEAD")):
        r = run_cli("diff", old, new, cwd=repo.root)
        assert r.code == 4 and r.err == (
            f"error: cannot compare {old} with {new}: {ref} is a branch, tag or commit, {version} a version of an asset\n"
            f"hint: compare two versions with `lattice diff a.txt@v1 a.txt@v2`, or two states of the project with `lattice diff {states}`\n"), r.err
    # An asset's bare name is its current version; an unknown one is still unknown.
    assert "seed" not in ok("diff", "a.txt@v1", "a.txt", repo=repo).out and "a.txt@v2" in ok("diff", "a.txt@v1", "a.txt", repo=repo).out
    r = run_cli("diff", "a.txt@v1", "nope", cwd=repo.root)
    assert r.code == 4 and "no asset named nope" in r.err


def test_diff_with_a_name_holding_an_at_sign_and_a_bad_short_version(tmp_repo):
    """`lattice diff me@home.png main` names me@home.png in its hint (not
    `me@v1`); `lattice diff a.txt@v1 @` / `@latest` says the version is
    missing or not one, never "no asset named 'a.txt@'"."""
    repo = tmp_repo
    add(repo, "me@home.txt", "1")
    add(repo, "a.txt", "1")
    add(repo, "a.txt", "2")
    for old, new in (("me@home.txt", "main"), ("main", "me@home.txt"), ("main", "me@home.txt@v1")):
        r = run_cli("diff", old, new, cwd=repo.root)
        assert r.code == 4 and "`lattice diff me@home.txt@v1 me@home.txt@v2`" in r.err, r.err
    for new, why in (("@", "@: the version is missing after the @"), ("@latest", "@latest: latest is not a version"), ("@v", "@v: v is not a version")):
        r = run_cli("diff", "a.txt@v1", new, cwd=repo.root)
        assert r.code == 4 and why in r.err and "no asset named" not in r.err and "lattice log a.txt" in r.err, r.err
    assert "a.txt@v2" in ok("diff", "a.txt@v1", "@v2", repo=repo).out


@pytest.mark.skipif(GIT is None, reason="needs git")
def test_a_history_without_objects_never_opens_the_projects_own_git(tmp_path):
    """git carries no empty folder: a history.git committed before it held
    objects comes back without objects/ (or refs/). lattice must not then
    open the project's .git above it and commit into the user's branch."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    top = tmp_path / "project"
    repo = Repository.init(top)
    subprocess.run(["git", "init", "-q"], cwd=top, check=True, env=env)
    add(repo, "a.txt", "1")
    subprocess.run(["git", "add", "-A"], cwd=top, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "one"], cwd=top, check=True, env=env)
    for part in ("objects", "refs"):
        shutil.rmtree(repo.dir / "history.git" / part)
    add(repo, "b.txt", "2")
    outer = subprocess.run(["git", "log", "--format=%s"], cwd=top, capture_output=True, text=True, check=True).stdout.split("\n")
    assert outer[0] == "one"  # the user's own branch got no lattice commit
    assert git_log(repo, "--format=%s").splitlines()[0] == "add b.txt"
    assert run_cli("fsck", cwd=top).code == 0


def test_switch_force_leaves_a_folder_in_the_way_of_a_file_the_branches_differ_in(tmp_repo):
    """The refusal over a folder standing where a working file belongs offers
    --force "to switch and leave it as it is": so it does, when the two
    branches hold different versions of that asset too (it was refused, exit
    12, with the folder named as if a file/folder swap)."""
    repo = tmp_repo
    add(repo, "b.txt", "1")
    ok("branch", "feat", repo=repo)
    ok("switch", "feat", repo=repo)
    add(repo, "b.txt", "2")
    ok("switch", "main", repo=repo)
    (repo.root / "b.txt").unlink()
    (repo.root / "b.txt").mkdir()
    (repo.root / "b.txt" / "mine.txt").write_text("keep")
    r = run_cli("switch", "feat", cwd=repo.root)
    assert r.code == 12 and "pass --force to switch and leave it as it is" in r.err, r.err
    ok("switch", "feat", "--force", repo=repo)
    assert history.current_branch(history.open_git(repo)) == "feat"
    assert (repo.root / "b.txt" / "mine.txt").read_text() == "keep"
    assert run_cli("status", "--porcelain", cwd=repo.root).out == " M b.txt\n"
    shutil.rmtree(repo.root / "b.txt")
    ok("checkout", "b.txt", repo=repo)
    assert (repo.root / "b.txt").read_text() == "2"


@pytest.mark.skipif(GIT is None, reason="lattice fsck runs git fsck")
def test_fsck_never_runs_a_program_the_shared_history_config_names(tmp_repo, tmp_path):
    """`.lattice/history.git` is committed and cloned with the project: its
    config is someone else's text. git reads `core.fsmonitor` (and more) as
    a program to run; `lattice fsck` must run none of them, and still find
    damage (here, a missing commit object)."""
    repo = tmp_repo
    add(repo, "a.txt", "1")
    marker = tmp_path / "ran"
    config = repo.dir / "history.git" / "config"
    config.write_text(config.read_text().replace("bare = true", "bare = false")
                      + f'\tfsmonitor = "touch {marker}; false"\n\tpager = "touch {marker}; cat"\n'
                      f'[core]\n\tworktree = {repo.root}\n')
    r = run_proc("fsck", cwd=repo.root)
    assert r.returncode == 0 and not marker.exists(), (r.stdout, r.stderr)
    head = history.open_git(fresh(repo)).head.target
    os.unlink(_loose(repo, head))
    r = run_proc("fsck", cwd=repo.root)
    assert r.returncode == 1 and "git fsck" in r.stdout + r.stderr and not marker.exists(), (r.stdout, r.stderr)


def test_a_git_fsck_that_cannot_run_is_said_and_never_sets_history_aside(tmp_repo, tmp_path):
    """git fsck that cannot start (or times out on a large history) found no
    damage: fsck says so and fails, and --repair leaves history as it is
    rather than moving it to quarantine and starting afresh."""
    repo = tmp_repo
    add(repo, "a.txt", "1")
    add(repo, "a.txt", "2")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text("#!/no/such/interpreter\n")  # found on PATH, fails to start
    (bin_dir / "git").chmod(0o755)
    env = {"PATH": str(bin_dir)}  # alone: the search would go on to the real git
    r = run_proc("fsck", cwd=repo.root, env=env)
    assert r.returncode == 1 and "git fsck could not run" in r.stdout, (r.stdout, r.stderr)
    r = run_proc("fsck", "--repair", cwd=repo.root, env=env)
    assert "git fsck could not run" in r.stdout and "quarantine" not in r.stdout + r.stderr, (r.stdout, r.stderr)
    assert not (repo.dir / "quarantine").exists()
    assert [c.message for c in history.log(fresh(repo), 5)] == ["add a.txt", "add a.txt"]


def test_in_threads_when_slow_stays_here_while_calls_are_fast_and_spreads_when_slow():
    import threading
    import time

    from lattice.fsutil import in_threads_when_slow

    def where(i):
        return i, threading.current_thread() is threading.main_thread()

    fast = in_threads_when_slow(where, list(range(200)), slow_s=1.0)
    assert [i for i, _ in fast] == list(range(200))
    assert all(here for _, here in fast)  # never left this thread

    def slow(i):
        time.sleep(0.002)
        return where(i)

    spread = in_threads_when_slow(slow, list(range(200)), slow_s=0.001, chunk=8)
    assert [i for i, _ in spread] == list(range(200))  # in order, all of them
    # The first chunk decides nothing (it pays for one-time costs), the second does.
    assert all(here for _, here in spread[:16]) and not any(here for _, here in spread[16:])

    def failing(i):
        if i == 50:
            raise ValueError(i)
        return i

    with pytest.raises(ValueError, match="^50$"):
        in_threads_when_slow(failing, list(range(100)), slow_s=1.0)
