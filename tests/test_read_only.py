"""Reading a repository lattice may not write: `.lattice/` on read-only
media (a CI artifact, an image layer) or someone else's checkout. The
reading commands give the answers they give on a writable repository; the
writing ones still exit 13; a state only a write can put right is refused.

The real refusals need a read-only mount (a private mount namespace,
`unshare -rm`) or permissions that hold (a normal user, or root without the
capabilities that override them); each skips where it cannot be had. The
same paths run in-process everywhere, as root too, with the refusal made at
the one place lattice asks (lattice.sqlite._writable)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli, unprivileged
from lattice.repo import Repository

# Every reading command, as a script or CI would call it.
READING = [
    ["status"], ["status", "--porcelain"], ["status", "--json"], ["ls"], ["ls", "--json"], ["ls", "shots"],
    ["show", "c.txt"], ["show", "c.txt@v1", "--json"], ["cat", "a.txt"], ["cat", "c.txt@v1"],
    ["log"], ["log", "c.txt"], ["log", "--json"], ["diff", "c.txt@v1", "c.txt@v2"], ["diff", "v1", "main"],
    ["lineage", "a.txt", "--down"], ["fsck"], ["render", "--check"], ["render", "--dry-run"], ["hooks", "check"],
    ["branch"], ["tag"], ["du"], ["queue", "ls", "--json"], ["queue", "watch", "--json", "--until-done"],
    ["gc", "--dry-run"], ["generators", "--json"], ["verify", "--all", "--json"],
]
# Writing commands: exit 13 as before, with the message they always gave.
WRITING = [["add", "n.png"], ["tag", "v2"], ["tag", "-d", "v1"], ["branch", "other"], ["branch", "other", "v1"], ["render"], ["fsck", "--repair"]]

# Runs lattice commands in one process (from the project folder) and prints
# their [code, stdout, stderr] as JSON: one start-up, however many commands.
RUNNER = """
import io, json, sys
from contextlib import redirect_stderr, redirect_stdout
from lattice.cli.entry import run
out = []
for args in json.loads(sys.argv[1]):
    o, e = io.BytesIO(), io.StringIO()
    stdout = io.TextIOWrapper(o, encoding="utf-8", write_through=True)
    with redirect_stdout(stdout), redirect_stderr(e):
        code = run(args)
    out.append([code, o.getvalue().decode(), e.getvalue()])
print(json.dumps(out))
"""


@pytest.fixture
def project(tmp_repo):
    """Imports, outputs with versions and inputs, a tag and a branch, a stale
    output, an untracked file, and a working file whose stat the index does
    not know (status hashes it, and would refresh its stat cache)."""
    import gc

    repo = tmp_repo.gen({"a.txt": "a", "b.txt": "b", "shots/s.txt": "s"})
    for args in (["add", "a.txt", "b.txt", "shots/s.txt"], ["gen", "c.txt", "--model", "test.text", "--seed", "1"],
                 ["gen", "d.txt", "--model", "test.join", "-i", "a.txt"], ["regen", "c.txt", "--seed", "2"],
                 ["tag", "v1"], ["branch", "side"]):
        assert run_cli(*args, "-q", cwd=repo.root).code == 0, args
    (repo.root / "a.txt").write_text("a2")
    assert run_cli("add", "a.txt", "-q", cwd=repo.root).code == 0  # d.txt is stale now
    (repo.root / "n.png").write_bytes(b"new")
    os.utime(repo.root / "c.txt", (1, 1))  # same bytes, another stat
    gc.collect()  # the commands' database connections closed: their -wal files checkpointed now, not during a test
    time.sleep(0.15)  # past the racy window: a status would keep its walk (lattice.untracked), as it may not here
    return repo


def _answers(repo: Repository, commands: list[list[str]]) -> list[tuple[int, str, str]]:
    return [(r.code, r.out, r.err) for r in (run_cli(*args, cwd=repo.root) for args in commands)]


def _files(folder: Path) -> dict[str, bytes]:
    """The repository's files, but the -wal and -shm files a reader may leave."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


def _read_only_mount(repo: Repository) -> list[str]:
    """An argv prefix that runs a command with the project on a read-only
    mount, in a private mount namespace."""
    unshare = shutil.which("unshare")
    script = 'mount --rbind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && cd "$1" && shift && exec "$@"'
    prefix = [unshare, "-rm", "sh", "-c", script, "sh", str(repo.root)] if unshare else []
    if not prefix or subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("no private mount namespace here (unshare -rm)")
    return prefix


def _run_all(prefix: list[str], repo: Repository, commands: list[list[str]]) -> list[tuple[int, str, str]]:
    proc = subprocess.run([*prefix, sys.executable, "-c", RUNNER, json.dumps(commands)], cwd=repo.root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [tuple(r) for r in json.loads(proc.stdout)]


def _lattice(prefix: list[str], repo: Repository, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "lattice", *args], cwd=repo.root,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def refused(monkeypatch):
    """In-process: lattice may write nothing under the project's .lattice."""
    from lattice import sqlite as lattice_sqlite

    monkeypatch.setattr(lattice_sqlite, "_writable", lambda path: ".lattice" not in Path(path).parts)


def _chmod_read_only(folder: Path) -> list[Path]:
    folders = [folder, *(p for p in folder.rglob("*") if p.is_dir())]
    for p in folder.rglob("*"):
        if p.is_file():
            p.chmod(0o444)
    for d in folders:
        d.chmod(0o555)
    return folders


# -- the answers -------------------------------------------------------------------


def test_reading_commands_answer_on_a_read_only_mount_as_on_a_writable_repository(project):
    prefix = _read_only_mount(project)
    before = _files(project.dir)
    read_only = _run_all(prefix, project, READING)
    assert _files(project.dir) == before
    assert read_only == _answers(project, READING)
    assert [code for code, _, _ in read_only].count(13) == 0
    assert read_only[READING.index(["status", "--porcelain"])][1] == " S d.txt\n?? n.png\n"


def test_reading_commands_answer_where_lattice_may_not_write(project):
    """`chmod -R a-w .lattice`: someone else's checkout."""
    prefix = unprivileged()
    before = _files(project.dir)
    folders = _chmod_read_only(project.dir)
    try:
        read_only = _run_all(prefix, project, READING)
    finally:
        for d in folders:
            d.chmod(0o755)
    assert _files(project.dir) == before
    assert read_only == _answers(project, READING)


def test_reading_commands_answer_from_an_index_they_may_not_write(project, refused):
    """The same, in-process: every database is read as an in-memory copy,
    the lock is waited for but not written, and no cache is kept."""
    index = project.dir / "index.db"
    before, stamp = _files(project.dir), os.stat(index).st_mtime_ns
    read_only = _answers(project, READING)
    assert _files(project.dir) == before and os.stat(index).st_mtime_ns == stamp
    repo = Repository.find(project.root, reading=True)
    assert repo.read_only and repo.index.read_only
    assert Repository.find(project.root).read_only is False  # a writing command never reads a copy
    assert read_only[READING.index(["status", "--porcelain"])][1] == " S d.txt\n?? n.png\n"
    assert read_only == _answers_writable(project, READING)


def test_writing_commands_still_exit_13_on_a_read_only_mount(project):
    prefix = _read_only_mount(project)
    before = _files(project.dir)
    for args in WRITING:
        proc = _lattice(prefix, project, *args)
        lines = proc.stderr.splitlines()
        assert proc.returncode == 13 and len(lines) == 2, (args, proc.stderr)
        assert lines[0].startswith(f"error: {project.dir}") and "read-only" in lines[0], (args, proc.stderr)
        assert lines[1].startswith("hint: "), (args, proc.stderr)
    assert _files(project.dir) == before


# -- states only a write puts right -------------------------------------------------


def _edit_outside_lattice(repo: Repository) -> None:
    """A `git pull` of the project: the manifest moved on under the index."""
    text = repo.manifest.file_of("b.txt").read_text()
    repo.manifest.file_of("b.txt").write_text(text.replace('kind = "other"', 'kind = "other"\ntags = ["pulled"]', 1))
    repo.manifest.file_of("e.txt").write_text(text.replace('"b.txt"', '"e.txt"'))
    (repo.root / "e.txt").write_text("b")


def test_a_manifest_that_moved_on_is_read_as_it_is_without_writing(project, refused):
    """The index catches up in memory: the answers are those a writable
    repository gives once it has synced; fsck does not call history's lag
    damage (a writable lattice commits it on opening), log says it lags."""
    _edit_outside_lattice(project)
    commands = [["status", "--porcelain"], ["ls", "--json"], ["show", "e.txt", "--json"], ["fsck"], ["render", "--check"]]
    read_only = _answers(project, commands)
    assert json.loads(read_only[1][1])[1]["tags"] == ["pulled"] and json.loads(read_only[2][1])["path"] == "e.txt"
    assert read_only[3][0] == 0, read_only[3]
    log = run_cli("log", cwd=project.root)
    assert log.code == 0 and log.err.startswith("warning: history does not have manifest edits made outside lattice (b.txt, e.txt) yet"), log.err
    index = sqlite3.connect(project.dir / "index.db")
    assert index.execute("SELECT count(*) FROM assets WHERE path = 'e.txt'").fetchone() == (0,)  # nothing was written
    index.close()
    writable = _answers_writable(project, commands)
    assert read_only == writable
    assert run_cli("log", cwd=project.root).out.startswith(run_cli("log", "-n", "1", cwd=project.root).out)


def _answers_writable(repo: Repository, commands: list[list[str]]) -> list[tuple[int, str, str]]:
    """_answers with the `refused` fixture's refusal lifted."""
    from lattice import sqlite as lattice_sqlite

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lattice_sqlite, "_writable", lambda path: True)
        return _answers(repo, commands)


@pytest.mark.parametrize("journal, what", [("journal", "a switch or merge"), ("batch-journal", "a change")])
def test_an_interrupted_switch_or_change_is_refused_in_one_line(project, refused, journal, what):
    """Finishing it rewrites manifest files: refused (exit 13) rather than
    read half of one state and half of another."""
    (project.dir / journal).write_text("{}")
    for args in (["status"], ["ls"], ["show", "c.txt"], ["cat", "a.txt"], ["fsck"], ["render", "--check"], ["log"]):
        r = run_cli(*args, cwd=project.root)
        lines = r.err.splitlines()
        assert r.code == 13 and len(lines) == 2, (args, r.err)
        assert lines[0] == f"error: {project.dir} is read-only, and {what} cut short there needs a writable .lattice to finish"
    assert (project.dir / journal).read_text() == "{}"


def test_an_index_that_was_never_made_is_built_in_memory(project, refused):
    """A checkout that holds the manifest but not the index (git ignores it)."""
    expected = _answers(project, READING)
    for name in ("index.db", "queue.db", "storage.db", "lock"):
        (project.dir / name).unlink()
    answers = _answers(project, READING)
    assert not (project.dir / "index.db").exists() and not (project.dir / "lock").exists()
    queue_ls = READING.index(["queue", "ls", "--json"])
    assert answers[queue_ls] == (0, "[]\n", "")  # the queue went with its file
    assert [a for i, a in enumerate(answers) if i != queue_ls] == [a for i, a in enumerate(expected) if i != queue_ls]


def test_an_evicted_output_is_refused_not_queued(project, refused):
    oid = project.record("c.txt").versions[0].object
    os.unlink(project.objects.locate(oid))
    r = run_cli("cat", "c.txt@v1", cwd=project.root)  # the working file holds v2
    lines = r.err.splitlines()
    assert r.code == 13 and len(lines) == 2 and "not in the store nor in the working file" in lines[0], r.err
    assert lines[0].endswith("re-making it needs a writable .lattice") and lines[1].startswith("hint: "), r.err


def _evict(repo: Repository, *names: str) -> None:
    """gc took the current output of each name out of the store; its working file stays."""
    for name in names:
        os.unlink(repo.objects.locate(repo.record(name).current.object))


def test_an_evicted_output_is_read_from_a_working_file_that_holds_it(project, refused):
    """As a writable repository takes the working file back into the store
    (with --no-regen too), a read-only one serves its bytes; where the file
    holds other bytes both say so: exit 13 (a re-make needs a writable
    .lattice) or, for an import, exit 5 as on a writable repository."""
    _evict(project, "c.txt", "b.txt")
    commands = [["cat", "c.txt"], ["cat", "c.txt@v2", "--no-regen"], ["cat", "b.txt"]]
    before = _files(project.dir)
    read_only = _answers(project, commands)
    assert read_only == [(0, "hello:2\n", ""), (0, "hello:2\n", ""), (0, "b", "")]  # test.text writes "hello:SEED"
    assert _files(project.dir) == before  # nothing stored back, nothing touched
    for name in ("c.txt", "b.txt"):
        (project.root / name).write_text("edited")
    refusals = _answers(project, [["cat", "c.txt"], ["cat", "b.txt"]])
    assert [code for code, _, _ in refusals] == [13, 5], refusals
    assert "its imported content" in refusals[1][2] and refusals[1] == _answers_writable(project, [["cat", "b.txt"]])[0]
    (project.root / "c.txt").unlink()
    os.mkfifo(project.root / "c.txt")  # read by no one: a FIFO would block the command
    assert run_cli("cat", "c.txt", cwd=project.root).code == 13
    (project.root / "c.txt").unlink()
    for name, made in (("c.txt", "hello:2\n"), ("b.txt", "b")):
        (project.root / name).write_text(made)
    assert _answers_writable(project, commands) == read_only
    assert project.objects.has(project.record("c.txt").current.object)  # a writable repository took it back


def test_an_evicted_output_is_read_from_its_working_file_on_a_read_only_mount(project):
    prefix = _read_only_mount(project)
    _evict(project, "c.txt")
    before = _files(project.dir)
    proc = _lattice(prefix, project, "cat", "c.txt")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, (project.root / "c.txt").read_text(), "")
    assert _files(project.dir) == before


# -- verify and queue watch -------------------------------------------------------------


def test_verify_re_makes_outputs_outside_a_read_only_lattice(project, refused, tmp_path_factory, monkeypatch):
    """verify writes its scratch files to the system's temp folder, records
    nothing, and gives the writable repository's verdicts; an evicted input
    comes from its working file, and one that only a re-make brings back
    is refused in one line (exit 13), not called a failure."""
    import gc
    import tempfile

    scratch = tmp_path_factory.mktemp("scratch")
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # what the scratch folders are made in
    assert run_cli("gen", "e.txt", "--model", "test.join", "-i", "b.txt", "-i", "c.txt", "-q", cwd=project.root).code == 0
    _evict(project, "b.txt", "c.txt")  # e.txt's inputs, which their working files hold
    gc.collect()  # gen's database connections closed: their -wal files checkpointed now, not during verify
    commands = [["verify", "--all", "--json"], ["verify", "e.txt"]]
    before, stamp = _files(project.dir), scratch.stat().st_mtime_ns
    read_only = _answers(project, commands)
    assert read_only[0][0] == 0 and {v["path"]: v["status"] for v in json.loads(read_only[0][1])} == {
        "c.txt": "reproducible", "d.txt": "reproducible", "e.txt": "reproducible"}, read_only
    assert read_only[1][0] == 0 and read_only[1][1].split() == ["reproducible", "e.txt", "v1"]
    assert _files(project.dir) == before
    assert scratch.stat().st_mtime_ns != stamp and list(scratch.iterdir()) == []  # used, and cleared
    (project.root / "c.txt").write_text("edited")
    r = run_cli("verify", "e.txt", cwd=project.root)
    lines = r.err.splitlines()
    assert r.code == 13 and len(lines) == 2 and lines[0].startswith("error: c.txt@v2: its output"), r.err
    assert lines[0].endswith("is read-only: re-making it needs a writable .lattice") and lines[1].startswith("hint: "), r.err
    (project.root / "c.txt").write_text("hello:2\n")
    assert _answers_writable(project, commands) == read_only


def test_verify_of_several_assets_verifies_the_others_before_refusing(project, refused):
    """One asset that only a re-make of its input could check (exit 13)
    no longer throws away the verdicts of all the others: they are given
    (text or JSON), then the refusal names the asset left unchecked."""
    assert run_cli("gen", "e.txt", "--model", "test.join", "-i", "b.txt", "-i", "c.txt", "-q", cwd=project.root).code == 0
    _evict(project, "c.txt")
    (project.root / "c.txt").write_text("edited")  # the working file holds other bytes now
    r = run_cli("verify", "--all", "--json", cwd=project.root)
    assert r.code == 13 and {v["path"]: v["status"] for v in json.loads(r.out)} == {"c.txt": "reproducible", "d.txt": "reproducible"}, r
    lines = r.err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: e.txt could not be verified here: c.txt@v2: its output"), r.err
    r = run_cli("verify", "d.txt", "e.txt", cwd=project.root)
    assert r.code == 13 and r.out.split() == ["reproducible", "d.txt", "v1"], r
    r = run_cli("verify", "e.txt", cwd=project.root)  # one asset: the refusal alone, as before
    assert r.code == 13 and r.out == "" and r.err.startswith("error: c.txt@v2: its output"), r


def test_what_a_killed_verify_left_in_the_temp_folder_goes_later(project, tmp_path_factory):
    """SIGKILL runs no clean-up: a read-only verify's private scratch folder
    (its output half written) stayed in the system's temp folder for good.
    The next read-only render removes those of processes gone, once an hour
    passed; those of a live process, or touched lately, stay."""
    import signal

    prefix = unprivileged()
    scratch = tmp_path_factory.mktemp("scratch")
    scratch.chmod(0o777)
    assert run_cli("gen", "slow.txt", "--model", "test.text", "--set", "delay=2", "-q", cwd=project.root).code == 0
    folders = _chmod_read_only(project.dir)
    env = {**os.environ, "TMPDIR": str(scratch)}
    try:
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "lattice", "verify", "slow.txt"], cwd=project.root, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not list(scratch.glob("lattice-render-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = list(scratch.glob("lattice-render-*"))
        assert len(left) == 1 and left[0].is_dir()
        fresh = scratch / "lattice-render-999999999-fresh"  # no such process, but touched lately
        fresh.mkdir()
        live = scratch / f"lattice-render-{os.getpid()}-live"  # a process still running
        live.mkdir()
        for old in (left[0], live, *left[0].iterdir()):
            os.utime(old, (time.time() - 7200, time.time() - 7200))
        r = subprocess.run([*prefix, sys.executable, "-m", "lattice", "verify", "c.txt"], cwd=project.root, env=env,
                           capture_output=True, text=True, timeout=120)
    finally:
        for d in folders:
            d.chmod(0o755)
    assert r.returncode == 0 and r.stdout.split() == ["reproducible", "c.txt", "v2"], r.stderr
    assert sorted(p.name for p in scratch.iterdir()) == sorted([fresh.name, live.name])


def test_a_full_temp_folder_is_named_as_what_refused_a_read_only_verify(project, refused, tmp_path_factory, monkeypatch):
    """A read-only verify fills the system's temp folder, not the project:
    the refusal names that folder and TMPDIR (it said "no space left on the
    device" and to run `lattice gc`, which may not run there)."""
    import errno
    import tempfile

    import lattice_testgens

    from lattice.errors import refused_write

    scratch = tmp_path_factory.mktemp("scratch")
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    def fills(self, ctx):
        raise refused_write(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))  # as ffmpeg's "No space left" is

    monkeypatch.setattr(lattice_testgens.Text, "run", fills)
    r = run_cli("verify", "c.txt", cwd=project.root)
    assert r.code == 13 and r.err.splitlines() == [
        f"error: {scratch}: no space left on the device",
        f"hint: free some space in {scratch}, or point TMPDIR at a folder with room (where .lattice may not be written, renders work there), then run the command again",
    ], r.err
    assert list(scratch.iterdir()) == []


def test_queue_watch_follows_a_read_only_queue(project):
    """On a read-only mount the queue is read as a copy; watch copies it
    again for each look, so it sees the jobs that those who may write it
    move on (here: a cancel from outside the mount)."""
    import gc

    prefix = _read_only_mount(project)
    r = run_cli("gen", "w.txt", "--model", "test.text", "--detach", "--json", cwd=project.root)
    assert r.code == 0, r.err
    job = r.json[0]["job"]
    gc.collect()  # its connection closed: no -shm file left for a reader on the mount
    watch = subprocess.Popen([*prefix, sys.executable, "-m", "lattice", "queue", "watch", "--json", "--until-done", "--interval", "0.05"],
                             cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = watch.stdout.readline()
        assert line, watch.communicate(timeout=30)[1]
        first = json.loads(line)
        assert (first["job"], first["state"]) == (job, "queued"), first
        assert run_cli("queue", "cancel", str(job), cwd=project.root).code == 0
        out, err = watch.communicate(timeout=30)  # a copy made once would wait forever
    finally:
        watch.kill()
        watch.wait()
    assert watch.returncode == 0, err
    assert [(e["job"], e["state"]) for e in map(json.loads, out.splitlines())] == [(job, "cancelled")]


# -- the database copy -----------------------------------------------------------------


def _left_in_wal(path: Path) -> None:
    """A row only in the -wal file, as a killed writer leaves it."""
    code = ("import os, sqlite3, sys\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('PRAGMA journal_mode=WAL'); db.execute('PRAGMA wal_autocheckpoint=0')\n"
            "db.execute(\"INSERT INTO media(object, facts) VALUES ('in-wal', '{}')\")\n"
            "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    assert Path(f"{path}-wal").stat().st_size > 0


def test_a_copy_reads_what_a_killed_writer_left_in_the_wal(project):
    from lattice.sqlite import ReadOnlyCopy, read_only_copy

    index = project.dir / "index.db"
    _left_in_wal(index)
    db = read_only_copy(index)
    assert isinstance(db, ReadOnlyCopy)
    assert db.execute("SELECT count(*) FROM media WHERE object = 'in-wal'").fetchone() == (1,)
    db.execute("DELETE FROM assets")  # writes stay in memory
    assert sqlite3.connect(index).execute("SELECT count(*) FROM assets").fetchone()[0] == 5


@pytest.mark.parametrize("leave", ["nothing", "wal", "wal and shm"])
def test_a_copy_reads_a_database_on_a_read_only_mount(project, leave):
    """Where SQLite may not make the -shm file WAL readers need: immutable
    with no -wal to read, a private copy of both files with one."""
    prefix = _read_only_mount(project)
    index = project.dir / "index.db"
    if leave != "nothing":
        _left_in_wal(index)
    if leave == "wal":
        Path(f"{index}-shm").unlink()
    code = ("import sys; from pathlib import Path; from lattice.sqlite import read_only_copy\n"
            "db = read_only_copy(Path(sys.argv[1]))\n"
            "print(db.execute(\"SELECT count(*) FROM media WHERE object = 'in-wal'\").fetchone()[0],"
            " db.execute('SELECT count(*) FROM assets').fetchone()[0])\n")
    proc = subprocess.run([*prefix, sys.executable, "-c", code, str(index)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0" if leave == "nothing" else "1", "5"]


def test_work_is_never_submitted_to_an_in_memory_copy_of_the_queue(tmp_repo, monkeypatch):
    """`cat` reads, but re-making an evicted output submits a job: where only
    queue.db says it may not be written (another user's file in a shared
    .lattice), the job goes to the real queue or the command is refused,
    never to a copy whose jobs vanish."""
    from lattice import sqlite as lattice_sqlite

    repo = tmp_repo
    assert run_cli("gen", "e.txt", "--model", "test.text", "--seed", "1", "-q", cwd=repo.root).code == 0
    made = (repo.root / "e.txt").read_bytes()
    assert run_cli("gc", "--older-than", "0", "--include-current", "--keep-versions", "0", "-q", cwd=repo.root).code == 0
    (repo.root / "e.txt").unlink()
    real = lattice_sqlite._writable
    monkeypatch.setattr(lattice_sqlite, "_writable", lambda path: Path(path).name != "queue.db" and real(path))
    r = run_cli("cat", "e.txt", cwd=repo.root)
    assert (r.code, r.out.encode()) == (0, made), r.err  # only _writable says no here: the real file takes the job
