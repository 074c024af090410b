"""The foundation: init, add, status, ls, show, cat, checkout, fsck — through
the library and the CLI, including the failure paths."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli, run_proc, unprivileged
from lattice.add import add
from lattice.errors import ContentChanged, RepositoryCorrupt, UnsafePath
from lattice.fsck import fsck
from lattice.repo import Repository
from lattice.status import status


def replace_index_file(repo, data: bytes) -> None:
    """Put `data` where the index database is (closing it first)."""
    repo.index.close()
    for suffix in ("-wal", "-shm"):
        try:
            os.unlink(str(repo.dir / "index.db") + suffix)
        except FileNotFoundError:
            pass
    (repo.dir / "index.db").write_bytes(data)


def states(repo):
    return {(e.path, e.state) for e in status(repo)}


# -- init and finding the repository ------------------------------------------


def test_init_creates_layout_and_refuses_nesting(tmp_path):
    r = run_cli("init", str(tmp_path / "p"), cwd=tmp_path)
    assert r.code == 0, r.err
    d = tmp_path / "p" / ".lattice"
    assert (d / "format").read_text().strip() == "1"
    assert (d / "README").exists() and (d / "config.toml").exists()
    (tmp_path / "p" / "sub").mkdir()
    r = run_cli("init", cwd=tmp_path / "p" / "sub")
    assert r.code == 4 and "already inside" in r.err and "hint:" in r.err


def test_commands_find_repository_upward_and_with_C(tmp_repo, tmp_path):
    sub = tmp_repo.root / "a" / "b"
    sub.mkdir(parents=True)
    assert run_cli("status", cwd=sub).code == 0
    assert run_cli("-C", str(tmp_repo.root), "ls", cwd=tmp_path).code == 0
    r = run_cli("status", cwd=tmp_path)
    assert r.code == 3 and r.err.startswith("error: not inside a lattice repository")


def test_unknown_format_is_refused(tmp_repo):
    (tmp_repo.dir / "format").write_text("99\n")
    with pytest.raises(RepositoryCorrupt, match="format '99'"):
        Repository.find(tmp_repo.root)
    r = run_cli("status", cwd=tmp_repo.root)
    assert r.code == 5 and "format" in r.err and "Traceback" not in r.err


def test_version_flag():
    r = run_cli("--version")
    assert r.code == 0 and r.out.startswith("lattice ")


# -- add ------------------------------------------------------------------------


def test_add_records_versions_and_is_idempotent(tmp_repo):
    repo = tmp_repo.gen({"notes/a.txt": "hello", "img/b.json": '{"v": "5.7.0", "w": 10, "h": 20, "fr": 30, "ip": 0, "op": 60, "layers": []}'})
    res = add(repo, ["notes", "img"], tags=["draft"], cwd=repo.root)
    assert sorted((r.path, r.status, r.version) for r in res) == [("img/b.json", "added", 1), ("notes/a.txt", "added", 1)]
    assert add(repo, ["notes/a.txt"], cwd=repo.root)[0].status == "unchanged"
    (repo.root / "notes/a.txt").write_text("hello again")
    again = add(repo, ["notes/a.txt"], cwd=repo.root)[0]
    assert (again.status, again.version) == ("updated", 2)
    rec = repo.record("notes/a.txt")
    assert [v.change for v in rec.versions] == ["imported", "edited"]
    assert rec.tags == ["draft"]
    lottie = repo.record("img/b.json")
    assert lottie.kind == "vector" and lottie.current.media["width"] == 10


def test_add_probes_media_before_the_lock_and_again_if_it_must(tmp_repo, monkeypatch):
    """Facts are probed before the lock, only for content the index does not
    hold as current; content that turns out new under the lock (another add
    got in between) is probed there."""
    from lattice import ffmpeg

    lottie = '{"v": "5.7.0", "w": 10, "h": 20, "fr": 30, "ip": 0, "op": 60, "layers": []}'
    repo = tmp_repo.gen({"a.json": lottie, "b.json": lottie.replace('"w": 10', '"w": 11')})
    asked = []
    real = ffmpeg.probe_many
    monkeypatch.setattr(ffmpeg, "probe_many", lambda paths: asked.append(sorted(os.path.basename(p) for p in paths)) or real(paths))
    add(repo, ["a.json", "b.json"], cwd=repo.root)
    (repo.root / "b.json").write_text(lottie.replace('"w": 10', '"w": 12'))
    add(repo, ["a.json", "b.json"], cwd=repo.root)
    assert asked == [["a.json", "b.json"], ["b.json"]]
    assert repo.record("b.json").current.media["width"] == 12
    monkeypatch.setattr(ffmpeg, "probe_many", lambda paths: [])  # as if all changed after the probes
    (repo.root / "a.json").write_text(lottie.replace('"w": 10', '"w": 13'))
    add(repo, ["a.json"], cwd=repo.root)
    assert repo.record("a.json").current.media["width"] == 13


def test_add_cli_messages_and_json(tmp_repo):
    tmp_repo.gen({"x.txt": "1"})
    r = run_cli("add", "x.txt", "--json", cwd=tmp_repo.root)
    assert r.code == 0 and r.json[0]["status"] == "added"
    r = run_cli("add", "x.txt", cwd=tmp_repo.root)
    assert "unchanged" in r.out


def test_add_never_takes_lattice_or_git(tmp_repo):
    repo = tmp_repo.gen({".git/config": "x", "a/.hidden": "h", "a/ok.txt": "ok"})
    res = add(repo, ["."], cwd=repo.root)
    assert [r.path for r in res] == ["a/ok.txt"]
    with pytest.raises(UnsafePath):
        add(repo, [".lattice/format"], cwd=repo.root)
    r = run_cli("add", ".git/config", cwd=repo.root)
    assert r.code == 4 and "never tracks" in r.err


def test_add_refuses_paths_outside_and_symlink_escapes(tmp_repo, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("s")
    (tmp_repo.root / "link.txt").symlink_to(outside)
    for arg in (str(outside), "../secret.txt", "link.txt"):
        r = run_cli("add", arg, cwd=tmp_repo.root)
        assert r.code == 4, (arg, r.err)
        assert r.err.count("\n") <= 2 and "Traceback" not in r.err
    assert tmp_repo.index.count() == 0


def test_a_walk_passes_over_what_is_no_file_to_record(tmp_repo, tmp_path):
    """`add .` and `status` never hang on a FIFO, never fail on a link out
    of the project, a dangling or looping link or a name that is not UTF-8:
    add warns and goes on with the rest; status does not offer them."""
    import socket

    repo = tmp_repo.gen({"a.png": b"img"})
    root = repo.root
    os.mkfifo(root / "pipe.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.png"))
    (tmp_path / "secret.png").write_bytes(b"s")
    (root / "out.png").symlink_to(tmp_path / "secret.png")
    (root / "dangling.png").symlink_to(root / "nowhere.png")
    (root / "l1.png").symlink_to(root / "l2.png")
    (root / "l2.png").symlink_to(root / "l1.png")
    (root / "real").mkdir()
    (root / "real" / "r.png").write_bytes(b"r")
    (root / "linked").symlink_to(root / "real")
    with open(os.path.join(os.fsencode(root), b"bad\xff.png"), "wb") as f:
        f.write(b"x")
    try:
        st = run_proc("status", "--porcelain", cwd=root, timeout=30)
        assert (st.returncode, st.stdout) == (0, "?? a.png\n?? real/r.png\n"), st.stderr
        r = run_proc("add", ".", cwd=root, timeout=30)
        assert r.returncode == 0 and "added      a.png" in r.stdout, r.stderr
        for name in ("pipe.png", "sock.png", "out.png", "dangling.png", "l1.png", "l2.png", "linked/"):
            assert f"warning: skipped {name}: " in r.stderr
        assert "not valid UTF-8" in r.stderr and "by their real path" in r.stderr
        assert [row.path for row in Repository.find(root).index.rows()] == ["a.png", "real/r.png"]
        r = run_proc("add", os.fsdecode(b"bad\xff.png"), cwd=root)
        # The byte shown as the rest of lattice shows it, not as '?'.
        assert r.returncode == 4 and "error: asset name bad\\xff.png is not valid UTF-8\n" in r.stderr, r.stderr
    finally:
        sock.close()


def test_a_named_file_add_cannot_record_is_one_error_with_a_hint(tmp_repo):
    """A FIFO or a dangling link named on the command line, or a name with
    a backslash: exit 4, an error line saying what is wrong and a hint."""
    root = tmp_repo.root
    os.mkfifo(root / "fifo.png")
    (root / "dangling.png").symlink_to(root / "nowhere.png")
    (root / "back\\slash.png").write_bytes(b"b")
    for name, error in (("fifo.png", "fifo.png: not a regular file or directory (a FIFO, socket or device)"),
                        ("dangling.png", "dangling.png: a symbolic link to nothing (or to itself)"),
                        ("back\\slash.png", "asset name back\\slash.png contains a backslash, which lattice does not allow in names")):
        r = run_cli("add", name, cwd=root)
        lines = r.err.splitlines()
        assert r.code == 4 and len(lines) == 2 and lines[0] == f"error: {error}" and lines[1].startswith("hint: "), r.err
        assert "relative path" not in r.err
    assert tmp_repo.index.count() == 0


# The start of a 1x1 PNG, all `add` reads of one: without a picture it warns.
# A whole 1x1 picture (a header alone is a PNG cut short, which add warns of).
_PNG_1X1 = (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0\x90wS\xde"
            b"\0\0\0\x0cIDATx\x9cc```\0\0\0\x04\0\x01\xf6\x178U\0\0\0\0IEND\xaeB`\x82")


def test_add_of_a_folder_with_nothing_to_add_says_so(tmp_repo):
    """Not silence: a warning naming the folder, exit 0 (as `add DIR`
    warns of each file it passes over and goes on)."""
    repo = tmp_repo.gen({"full/a.png": _PNG_1X1, "hidden/.h.png": b"h"})  # a real picture: no warning of its own
    (repo.root / "empty").mkdir()
    r = run_cli("add", "empty", "hidden/", "full", cwd=repo.root)
    assert r.code == 0 and "added      full/a.png" in r.out, r.err
    assert r.err == ("warning: nothing added from empty/: it holds no file to add\n"
                     "warning: nothing added from hidden/: it holds no file to add\n"), r.err
    assert list(repo.index.names()) == ["full/a.png"]


def test_status_warns_of_new_files_whose_names_add_refuses(tmp_repo):
    """status does not list a media file `add` would refuse, but says so,
    one line each, as `add DIR` does; not for links or special files."""
    repo = tmp_repo.gen({"a.png": b"a", "tab\tx.png": b"t", "nl\nx.png": b"n", "b\\s.png": b"b",
                         "d/" + "y" * 251 + ".png": b"y", "notes@v2": b"not media"})
    os.mkfifo(repo.root / "pipe.png")
    (repo.root / "dangling.png").symlink_to(repo.root / "nowhere.png")
    r = run_cli("status", "--porcelain", cwd=repo.root)
    assert r.code == 0 and r.out == "?? a.png\n", r.out
    lines = r.err.splitlines()
    assert [line.split(":")[0] for line in lines] == ["warning"] * 4, r.err
    assert lines[0] == "warning: skipped b\\s.png: asset name b\\s.png contains a backslash, which lattice does not allow in names"
    assert lines[1].startswith("warning: skipped nl\\nx.png: asset name nl\\nx.png contains a control character")
    assert lines[2].startswith("warning: skipped tab\\tx.png: asset name tab\\tx.png contains a control character")
    assert lines[3].startswith("warning: skipped d/yyy") and "longer than 250 bytes" in lines[3]
    # add passes over the same four, and notes@v2 (status lists media only), the fifo and the link
    assert run_cli("add", ".", cwd=repo.root).err.count("warning: skipped ") == 7
    r = run_cli("status", cwd=repo.root)
    assert r.out == "" and len(r.err.splitlines()) == 4, (r.out, r.err)


def test_add_missing_file_is_one_clear_error(tmp_repo):
    r = run_cli("add", "nope.png", cwd=tmp_repo.root)
    assert r.code == 4 and "no such file" in r.err


def test_file_vanishing_during_add_records_nothing(tmp_repo, monkeypatch):
    repo = tmp_repo.gen({"a.txt": "first", "b.txt": "second"})
    from lattice.objects import ObjectStore

    real = ObjectStore.put_file

    def vanish_b(self, path, compress=None, durable=True, st=None):
        if os.path.basename(path) == "b.txt":
            os.unlink(path)  # deleted by someone else after add listed it
        return real(self, path, compress, durable, st)

    monkeypatch.setattr(ObjectStore, "put_file", vanish_b)
    with pytest.raises(ContentChanged, match="vanished"):
        add(repo, ["."], cwd=repo.root)
    assert repo.index.count() == 0 and list(repo.manifest.names()) == []


def test_file_vanishing_before_its_probe_records_nothing(tmp_repo):
    """Stored, then deleted before its media facts are read: the same exit-7
    error, not an OS error with a hint about disk space."""
    repo = tmp_repo.gen({"a.png": b"not really a png", "b.txt": "second"})

    def progress(i, n, name):
        if i == n:  # every file stored; the probes come next
            os.unlink(repo.root / "a.png")

    with pytest.raises(ContentChanged, match="a.png: file vanished while being added"):
        add(repo, ["."], cwd=repo.root, progress=progress)
    assert repo.index.count() == 0 and list(repo.manifest.names()) == []


def test_a_large_add_stores_on_threads_and_a_failure_among_them_records_nothing(tmp_repo):
    """Files of 1 MiB and more are stored on threads, smaller ones one after
    another (on threads too once that proves slow), in scratch folders: all
    land, in the order named, none is left behind; a file vanishing while
    its neighbours are stored records nothing."""
    files = {f"shots/{i:02d}.txt": f"take {i}" * 50 for i in range(60)}
    files.update({f"shots/big{i:02d}.bin": bytes([i]) * (1 << 20) for i in range(33)})
    repo = tmp_repo.gen(files)
    results = add(repo, ["shots"], cwd=repo.root)
    assert [r.path for r in results] == sorted(files) and {r.status for r in results} == {"added"}
    assert {r.path: r.size for r in results} == {name: len(data) for name, data in files.items()}
    assert repo.index.count() == 93 and sorted(repo.manifest.names()) == sorted(files)
    assert repo.objects.stray_temps() == [] and run_cli("fsck", cwd=repo.root).code == 0

    tmp_repo.gen({f"more/{i:02d}.txt": f"more {i}" for i in range(40)})

    def progress(i, n, name):
        if i == 5:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(repo.root / "more" / "39.txt")

    with pytest.raises(ContentChanged, match="39.txt: file vanished while being added"):
        add(repo, ["more"], cwd=repo.root, progress=progress)
    assert repo.index.count() == 93 and not any(n.startswith("more/") for n in repo.manifest.names())
    assert repo.objects.stray_temps() == []


def test_a_file_replaced_before_its_probe_records_nothing(tmp_repo):
    """The media facts are read after the content is stored: a file changed
    in between would pair one file's facts with another's bytes (exit 7)."""
    repo = tmp_repo.gen({"a.png": b"not really a png", "b.txt": "second"})

    def progress(i, n, name):
        if i == n:
            (repo.root / "a.png").write_bytes(b"other content, longer than before")

    with pytest.raises(ContentChanged, match="a.png: file changed while being added"):
        add(repo, ["."], cwd=repo.root, progress=progress)
    assert repo.index.count() == 0 and list(repo.manifest.names()) == []


def test_compressed_content_changing_size_while_stored_is_a_change(tmp_repo):
    """The zstd frame declares the size first: growing or shrinking content
    is the same exit-7 change as on the raw path, not a zstd error."""
    path = tmp_repo.root / "notes.txt"
    for grow in (True, False):
        path.write_bytes(b"lattice " * (1 << 20))  # 8 MiB that compresses
        before = os.stat(path)
        with open(path, "ab" if grow else "r+b") as f:
            if grow:
                f.write(b"more")
            else:
                f.truncate(1 << 20)
        with pytest.raises(ContentChanged, match="file changed while being added"):
            tmp_repo.objects.put_file(path, compress=True, st=before)
    assert tmp_repo.objects.stray_temps() == []


def test_hash_windows_may_start_off_a_page_boundary(tmp_path):
    """After a short copy the next window starts anywhere: mmap needs a
    page-aligned offset, the hash must not care."""
    import blake3

    from lattice.objects import _hash_window

    data = os.urandom(3 * 4096 + 123)
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        h = blake3.blake3()
        for start, end in ((0, 5000), (5000, 9001), (9001, len(data))):
            _hash_window(h, fd, start, end)
    finally:
        os.close(fd)
    assert h.hexdigest() == blake3.blake3(data).hexdigest()


def _store_while_growing(repo, path) -> None:
    """A writer appends to `path` while the store reads it: ContentChanged,
    and no object or temp file left."""
    writer = subprocess.Popen(
        [sys.executable, "-c", f"import time\nfor i in range(400):\n    open({str(path)!r}, 'ab').write(b'x' * 65536); time.sleep(0.001)"]
    )
    try:
        with pytest.raises(ContentChanged):
            for _ in range(50):
                repo.objects.put_file(path)
    finally:
        writer.wait()
    assert repo.objects.stray_temps() == []


def test_put_file_detects_concurrent_modification(tmp_repo):
    """A writer appending while the store reads: ContentChanged, no object left."""
    repo = tmp_repo.gen({"grow.bin": os.urandom(8 << 20)})
    path = repo.root / "grow.bin"
    _store_while_growing(repo, path)


def test_large_raw_content_is_copied_in_the_kernel_and_hashed_from_the_copy(tmp_repo):
    """From 32 MiB on, raw content is copied by copy_file_range while the
    copy is hashed window by window: same object, same bytes, no temp left;
    content growing meanwhile is refused as before."""
    from lattice.objects import COPY_FROM

    data = os.urandom(COPY_FROM + 12345)  # not a whole number of windows
    repo = tmp_repo.gen({"take.mp4": data})
    stored = repo.objects.put_file(repo.root / "take.mp4")
    import blake3

    assert stored.oid == blake3.blake3(data).hexdigest() and not stored.compressed and stored.size == len(data)
    with repo.objects.open(stored.oid) as f:
        assert f.read() == data
    assert repo.objects.put_file(repo.root / "take.mp4").new is False
    assert repo.objects.stray_temps() == []

    path = repo.root / "take.mp4"
    _store_while_growing(repo, path)


def test_large_content_the_kernel_cannot_copy_is_streamed(tmp_repo):
    """copy_file_range refuses to copy between filesystems (EXDEV): the
    store streams the content instead, with the same result."""
    from lattice.objects import COPY_FROM

    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_repo.dir.stat().st_dev:
        pytest.skip("needs a second filesystem at /dev/shm")
    data = os.urandom(COPY_FROM + 1)
    src = shm / f"lattice-test-{os.getpid()}.mp4"
    src.write_bytes(data)
    try:
        stored = tmp_repo.objects.put_file(src)
    finally:
        src.unlink()
    import blake3

    assert stored.oid == blake3.blake3(data).hexdigest()
    with tmp_repo.objects.open(stored.oid) as f:
        assert f.read() == data
    assert tmp_repo.objects.stray_temps() == []


def test_concurrent_adds_from_two_processes_lose_nothing(tmp_repo):
    files = {f"a/{i}.txt": f"A{i}" for i in range(30)} | {f"b/{i}.txt": f"B{i}" for i in range(30)}
    repo = tmp_repo.gen(files)
    procs = [
        subprocess.Popen([sys.executable, "-m", "lattice", "add", d], cwd=repo.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for d in ("a", "b")
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert sorted(repo.index.names()) == sorted(files)
    assert fsck(repo).ok


def test_lock_names_live_holder_and_recovers_from_killed_one(tmp_repo):
    from lattice.errors import LockTimeout
    from lattice.lock import RepoLock

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time\nfrom lattice.lock import RepoLock\nl=RepoLock(sys.argv[1]); l.acquire(); print('held', flush=True); time.sleep(60)", str(tmp_repo.dir / "lock")],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LockTimeout, match=f"pid {holder.pid}"):
        RepoLock(tmp_repo.dir / "lock", timeout=0.2).acquire()
    holder.kill()
    holder.wait()
    lock = RepoLock(tmp_repo.dir / "lock", timeout=2)
    lock.acquire()
    lock.release()


# -- status ---------------------------------------------------------------------


def test_status_new_modified_missing(tmp_repo):
    repo = tmp_repo.gen({"a.png": b"\x89PNG fake a", "b.wav": b"RIFF fake b", "notes.txt": "not media"})
    assert states(repo) == {("a.png", "new"), ("b.wav", "new")}
    add(repo, ["a.png", "b.wav"], cwd=repo.root)
    assert states(repo) == set()
    (repo.root / "a.png").write_bytes(b"\x89PNG changed")
    os.unlink(repo.root / "b.wav")
    assert states(repo) == {("a.png", "modified"), ("b.wav", "missing")}


def test_status_in_nested_folders_gone_or_replaced(tmp_repo):
    """Status stats files relative to each open folder: a folder deleted, or
    replaced by a file, leaves its assets missing; new files beside tracked
    ones are still found."""
    import shutil

    repo = tmp_repo.gen({
        "top.png": b"t", "a/one.png": b"1", "a/b/two.png": b"2", "a/c.png": b"c",
        "gone/x.png": b"x", "swap/y.png": b"y",
    })
    add(repo, ["."], cwd=repo.root)
    (repo.root / "a" / "b" / "new.png").write_bytes(b"n")
    shutil.rmtree(repo.root / "gone")
    shutil.rmtree(repo.root / "swap")
    (repo.root / "swap").write_bytes(b"a file where the folder was")
    (repo.root / "a" / "c.png").write_bytes(b"changed")
    assert states(repo) == {("a/b/new.png", "new"), ("gone/x.png", "missing"), ("swap/y.png", "missing"), ("a/c.png", "modified")}


def test_status_untracked_cache_gives_what_a_walk_gives_after_each_change(tmp_repo):
    """The walk for new files is kept (.lattice/index.db-untracked) and used
    while no folder it listed changed: after each change, status with the
    cache the last status kept says what a fresh walk says."""
    import shutil

    from lattice.untracked import CACHE

    repo = tmp_repo.gen({"a/one.png": b"1", "a/b/two.png": b"2", "top.png": b"t", "loose.png": b"l", ".latticeignore": "# none\n"})
    add(repo, ["a", "top.png"], cwd=repo.root)
    cache = repo.dir / CACHE

    def check(expected: set) -> None:
        seen = states(repo)  # with the cache the last status kept
        cache.unlink(missing_ok=True)
        assert seen == states(repo) == expected
        time.sleep(0.15)  # past the racy window: this walk is kept
        assert states(repo) == expected and cache.exists()

    check({("loose.png", "new")})
    (repo.root / "a" / "b" / "new.png").write_bytes(b"n")  # a folder two down
    check({("loose.png", "new"), ("a/b/new.png", "new")})
    os.unlink(repo.root / "loose.png")
    check({("a/b/new.png", "new")})
    shutil.move(repo.root / "a" / "b", repo.root / "a" / "c")
    check({("a/b/two.png", "missing"), ("a/c/two.png", "new"), ("a/c/new.png", "new")})
    with open(repo.root / ".latticeignore", "r+") as f:  # in place: no folder changes
        f.write("a/c/\n")
    check({("a/b/two.png", "missing")})
    with open(repo.root / ".latticeignore", "r+") as f:
        f.write("#/c/\n")
    check({("a/b/two.png", "missing"), ("a/c/two.png", "new"), ("a/c/new.png", "new")})
    add(repo, ["a/c/new.png"], cwd=repo.root)  # the manifest moved on: tracked now
    check({("a/b/two.png", "missing"), ("a/c/two.png", "new")})
    cache.write_bytes(b"\x00garbage")  # damaged: walked again
    check({("a/b/two.png", "missing"), ("a/c/two.png", "new")})


def test_status_untracked_cache_is_not_kept_for_a_racy_folder_or_a_link_to_nothing(tmp_repo):
    """A folder changed within the racy window may change again unseen in
    the same clock tick; a link to nothing becomes a new file when its
    target appears, in a folder the walk never listed for it."""
    from lattice.untracked import CACHE

    repo = tmp_repo.gen({"a/one.png": b"1"})
    add(repo, ["a"], cwd=repo.root)
    cache = repo.dir / CACHE
    (repo.root / "a" / "fresh.png").write_bytes(b"f")
    assert states(repo) == {("a/fresh.png", "new")} and not cache.exists()
    time.sleep(0.15)
    assert states(repo) == {("a/fresh.png", "new")} and cache.exists()
    os.symlink("elsewhere/t.png", repo.root / "link.png")
    time.sleep(0.15)
    cache.unlink()
    assert states(repo) == {("a/fresh.png", "new")} and not cache.exists()
    (repo.root / "elsewhere").mkdir()
    (repo.root / "elsewhere" / "t.png").write_bytes(b"t")
    assert states(repo) == {("a/fresh.png", "new"), ("elsewhere/t.png", "new"), ("link.png", "new")}
    os.unlink(repo.root / "link.png")
    (repo.root / ".latticeignore").write_text("# none\n")
    time.sleep(0.15)
    assert states(repo) == {("a/fresh.png", "new"), ("elsewhere/t.png", "new")} and cache.exists()
    cache.unlink()
    with open(repo.root / ".latticeignore", "r+") as f:  # in place, as racy as a folder
        f.write("a/\n")
    assert states(repo) == {("elsewhere/t.png", "new")} and not cache.exists()


@pytest.mark.parametrize("ignored", [False, True])
def test_status_untracked_cache_sees_a_linked_folder_become_a_file(tmp_repo, ignored):
    """A linked folder is not entered, nor warned of (status warns of names
    `add` refuses, not of links), and an ignored one not even told: the
    walk is kept, the link's target stamped with it. If what it leads to
    becomes a file (in a folder the walk never listed, here a hidden one),
    the link is a new file: the kept walk is not used."""
    from lattice.untracked import CACHE

    repo = tmp_repo.gen({"a/one.png": b"1"} | ({".latticeignore": "x.png/\n"} if ignored else {}))
    add(repo, ["a"], cwd=repo.root)
    (repo.root / ".hid" / "t.png").mkdir(parents=True)
    os.symlink(".hid/t.png", repo.root / "x.png")
    os.symlink("a", repo.root / "alias")
    time.sleep(0.15)
    r = run_cli("status", "--porcelain", cwd=repo.root)
    assert (r.code, r.out, r.err) == (0, "", ""), r.err
    assert (repo.dir / CACHE).exists()
    (repo.root / ".hid" / "t.png").rmdir()
    (repo.root / ".hid" / "t.png").write_bytes(b"t")
    assert states(repo) == {("x.png", "new")}


def test_status_untracked_cache_damaged_in_any_way_is_walked_again(tmp_repo):
    """The cache is derived: one whose header still matches but whose body
    is the wrong shape, a FIFO (never waited on), a link to an endless
    device (never read without end): status walks, and keeps a sound one."""
    import marshal

    from lattice.untracked import CACHE

    repo = tmp_repo.gen({"a/one.png": b"1", "b/two.png": b"2"})
    add(repo, ["a"], cwd=repo.root)
    cache = repo.dir / CACHE
    time.sleep(0.15)
    assert states(repo) == {("b/two.png", "new")} and cache.exists()
    saved = marshal.loads(cache.read_bytes())
    head, listed, found = saved[:-2], saved[-2], saved[-1]
    bodies = [(5, found), (listed, None), (listed, [1]), (listed, "b/two.png"), ([("x",)], found),
              ([(listed[0][0], None)], found), (listed, ["a\x00b"]), ([(1, listed[0][1])], found)]
    for listing, answer in bodies:
        cache.write_bytes(marshal.dumps((*head, listing, answer)))
        assert states(repo) == {("b/two.png", "new")}, (listing, answer)
    cache.write_bytes(marshal.dumps({1: 2}))
    assert states(repo) == {("b/two.png", "new")}
    for odd in ("fifo", "link"):
        cache.unlink()
        os.mkfifo(cache) if odd == "fifo" else os.symlink("/dev/zero", cache)
        proc = run_proc("status", "--porcelain", cwd=repo.root, timeout=60)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "?? b/two.png\n", ""), odd
        assert cache.is_file() and not cache.is_symlink()  # a sound one kept in its place
    assert states(repo) == {("b/two.png", "new")}


def test_status_untracked_cache_of_another_lattice_release_is_not_used(tmp_repo):
    """What a walk offers (the media extensions, the names refused) may
    differ from one release to the next: a cache another release kept is
    walked again."""
    import marshal

    import lattice
    from lattice.untracked import CACHE

    repo = tmp_repo.gen({"a.png": b"a", "b.jxl": b"b"})
    cache = repo.dir / CACHE
    time.sleep(0.15)
    assert states(repo) == {("a.png", "new")} and cache.exists()
    saved = marshal.loads(cache.read_bytes())
    saved[-1].append("b.jxl")  # a release that counts .jxl as media
    cache.write_bytes(marshal.dumps(saved))
    assert states(repo) == {("a.png", "new"), ("b.jxl", "new")}  # the cache is used as it stands
    other = tuple("0.0.1" if part == lattice.__version__ else part for part in saved)
    cache.write_bytes(marshal.dumps(other))  # ... but that release kept it
    assert states(repo) == {("a.png", "new")}


@pytest.mark.parametrize("cut", ["interrupted", "disk full"])
def test_status_that_cannot_keep_its_walk_leaves_no_temp(tmp_repo, monkeypatch, cut):
    """Ctrl-C (or SIGTERM, which takes its way) while the walk is written
    to its temp file stops status; a full disk does not (the cache is
    derived: status answers as ever). Either way the temp goes, and fsck
    finds nothing stray later."""
    import errno

    import lattice.fsutil
    from lattice.untracked import CACHE

    repo = tmp_repo.gen({"a.png": b"a"})
    time.sleep(0.15)

    def failing(fd, data):
        if cut == "interrupted":
            raise KeyboardInterrupt
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lattice.fsutil, "write_all", failing)
    if cut == "interrupted":
        with pytest.raises(KeyboardInterrupt):
            status(repo)
    else:
        assert states(repo) == {("a.png", "new")}
    assert not (repo.dir / CACHE).exists()
    assert [p.name for p in repo.tmp.iterdir() if p.name.startswith(CACHE)] == []


def test_status_untracked_cache_of_one_who_may_read_more_is_not_used(tmp_repo):
    """A walk by root lists a folder (search but no read permission) that
    root without its capabilities may not list: that status says so and
    lists nothing in it, as it would with no cache."""
    prefix = unprivileged()
    if not prefix:
        pytest.skip("not root: no second identity with other access to compare")
    from lattice.untracked import CACHE

    repo = tmp_repo.gen({"a.png": b"a", "shut/in.png": b"i"})
    (repo.root / "shut").chmod(0o311)
    try:
        time.sleep(0.15)
        assert states(repo) == {("a.png", "new"), ("shut/in.png", "new")} and (repo.dir / CACHE).exists()
        proc = _lattice(prefix, "status", "--porcelain", cwd=repo.root)
        assert (proc.returncode, proc.stdout) == (0, "?? a.png\n"), proc.stdout
        assert proc.stderr.startswith("warning: skipped shut/: a folder lattice may not read"), proc.stderr
    finally:
        (repo.root / "shut").chmod(0o755)


def _whole_second_past_its_start() -> int:
    """This second, in ns without a fraction, once 0.2 s of it have gone: a
    stamp as a filesystem that keeps whole seconds gives it (ext3 with small
    inodes, HFS+, FAT, some network mounts), old enough for the racy
    window alone to trust it, and young enough to change again unseen."""
    now = time.time_ns()
    if now % 10**9 < 200_000_000:
        time.sleep((200_000_000 - now % 10**9) / 1e9)
    return time.time_ns() // 10**9 * 10**9


def test_a_stamp_of_whole_seconds_is_not_trusted_until_two_seconds_past(tmp_repo):
    """On a filesystem of whole-second stamps, a file written again within
    the same second keeps its stamp: status and add keep no stat cache for
    it then (so a same-size edit is still seen as one), and status keeps no
    walk whose folders may so change unseen."""
    from lattice.untracked import CACHE

    repo = tmp_repo.gen({"a.txt": "aaaa", "b.txt": "bbbb"})
    add(repo, ["b.txt"], cwd=repo.root)
    (repo.root / "d").mkdir()
    whole = _whole_second_past_its_start()
    for name in ("a.txt", "b.txt", "d"):
        os.utime(repo.root / name, ns=(whole, whole))
    add(repo, ["a.txt"], cwd=repo.root)  # its stat is not cached
    time.sleep(0.12)  # past the racy window, within the second's tick
    assert states(repo) == set()  # b.txt hashed, its stat not cached
    assert not (repo.dir / CACHE).exists()  # d may change again unseen
    for name in ("a.txt", "b.txt"):
        with open(repo.root / name, "r+b") as f:  # in place: same inode, same size, same second
            f.write(b"edit")
        os.utime(repo.root / name, ns=(whole, whole))
    assert states(repo) == {("a.txt", "modified"), ("b.txt", "modified")}
    assert time.time_ns() - whole < 2 * 10**9  # all within the tick


def test_status_walks_a_tree_deeper_than_the_recursion_limit(tmp_repo):
    """The walk keeps its own stack: a tree 1,100 folders deep (2,200
    characters of path, within PATH_MAX) is no RecursionError."""
    repo = tmp_repo.gen({"top/a.png": b"a"})
    top = folder = os.path.join(repo.root, "top")
    for _ in range(1100):
        folder = os.path.join(folder, "d")
        os.mkdir(folder)  # one at a time: Path.mkdir(parents=True) recurses
    with open(os.path.join(folder, "deep.png"), "wb") as f:
        f.write(b"d")
    deep = "top/" + "d/" * 1100 + "deep.png"
    try:
        assert states(repo) == {("top/a.png", "new"), (deep, "new")}
        add(repo, ["top/a.png"], cwd=repo.root)
        time.sleep(0.15)  # past the racy window: this walk is kept, and the next status uses it
        assert states(repo) == {(deep, "new")} == states(repo)
    finally:  # bottom up, a folder at a time: pytest's clean-up (shutil.rmtree) recurses
        os.unlink(os.path.join(folder, "deep.png"))
        while folder != top:
            os.rmdir(folder)
            folder = os.path.dirname(folder)


def test_a_name_is_never_both_an_asset_and_a_folder_of_assets(tmp_repo):
    repo = tmp_repo.gen({"d/a.txt": "1", "f.txt": "2"})
    add(repo, ["."], cwd=repo.root)
    import shutil

    shutil.rmtree(repo.root / "d")
    (repo.root / "d").write_text("a file where the folder was")
    r = run_cli("add", "d", cwd=repo.root)
    assert r.code == 4 and "d: is a folder of assets (d/a.txt" in r.err
    os.unlink(repo.root / "f.txt")
    (repo.root / "f.txt").mkdir()
    (repo.root / "f.txt" / "x.txt").write_text("3")
    r = run_cli("add", "f.txt/x.txt", cwd=repo.root)
    assert r.code == 4 and "f.txt is an asset (a file)" in r.err
    assert sorted(row.path for row in Repository.find(repo.root).index.rows()) == ["d/a.txt", "f.txt"]


def test_manifest_stamps_walk_folders_but_not_links_or_hidden_files(tmp_repo, tmp_path):
    repo = tmp_repo.gen({"a.png": b"a", "x/b.png": b"b", "d/e/f.png": b"f"})
    add(repo, ["."], cwd=repo.root)
    mdir = repo.manifest.dir
    (mdir / ".stray.toml").write_text("not a record")
    outside = tmp_path / "elsewhere"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "z.png.toml").write_text("")
    os.symlink(outside, mdir / "linked")
    assert set(repo.manifest.stamps()) == {"a.png", "x/b.png", "d/e/f.png"}


def test_status_cli_forms(tmp_repo):
    repo = tmp_repo.gen({"a.png": b"img"})
    assert run_cli("status", cwd=repo.root).out == "new:       a.png\n"
    assert run_cli("status", "--porcelain", cwd=repo.root).out == "?? a.png\n"
    assert run_cli("status", "--json", cwd=repo.root).json == [{"path": "a.png", "state": "new"}]
    run_cli("add", "a.png", cwd=repo.root)
    r = run_cli("status", cwd=repo.root)
    assert (r.code, r.out) == (0, "")


def test_quick_commands_print_the_same_without_typer(tmp_repo, monkeypatch):
    """Plain `status`/`ls`/`switch`/`hooks check` skip building the typer
    app; their output, exit code and errors must be what the typer path gives."""
    from lattice.cli import quick

    repo = tmp_repo.gen({"a.png": b"img", "sub/b.png": b"b", "sub/c.wav": b"c", "new.png": b"n"})
    add(repo, ["a.png", "sub"], cwd=repo.root)
    (repo.root / "sub" / "b.png").write_bytes(b"edited")
    forms = [
        ("status",), ("status", "--porcelain"), ("status", "--json"), ("-q", "status"), ("--debug", "status", "--json", "--porcelain"),
        ("ls",), ("ls", "--json"), ("ls", "sub"), ("-C", str(repo.root), "--no-color", "ls", "--json", "sub"), ("-C", "nowhere", "status"),
        ("switch", "main"), ("switch", "--json", "main"), ("switch", "mian"), ("switch", "main", "--force"),
        ("hooks", "check"), ("hooks", "check", "--json"), ("-q", "hooks", "check"), ("--version",),
    ]
    for form in forms:
        assert quick.parse(list(form)) is not None, form
        fast = run_cli(*form, cwd=repo.root)
        with monkeypatch.context() as m:
            m.setattr(quick, "parse", lambda args: None)
            slow = run_cli(*form, cwd=repo.root)
        assert (fast.code, fast.out, fast.err) == (slow.code, slow.out, slow.err), form
    assert run_cli("status", "--porcelain", cwd=repo.root).out == "?? new.png\n M sub/b.png\n"
    for unusual in (["status", "--help"], ["status", "-x"], ["-qC", ".", "status"], ["status", "extra"], ["ls", "a", "b"],
                    ["statu"], [], ["--version", "status"], ["-q", "--version"], ["-C"], ["-C", "--json", "status"], ["status", "--", "--json"],
                    ["switch"], ["switch", "a", "b"], ["switch", "--hard", "a"], ["switch", "--help"],
                    ["add"], ["add", "--tag"], ["add", "a.png", "--tag"], ["add", "--tag", "--json", "a.png"], ["add", "-t=x", "a.png"],
                    ["add", "--tag=", "a.png"], ["add", "-tx", "a.png"], ["add", "--", "-a.png"], ["add", "--help"],
                    ["hooks"], ["hooks", "check", "x"], ["hooks", "check", "--help"], ["hooks", "large-media", "a.png"]):
        assert quick.parse(unusual) is None, unusual


def test_quick_add_prints_and_records_what_typer_does(tmp_repo, monkeypatch):
    """`add` runs without typer too: each form records the same and prints
    the same as through typer (run on twin repositories)."""
    from lattice.cli import quick

    forms = [
        ("add", "a.png"), ("add", "a.png", "sub", "--json"), ("add", "--tag", "x", "-t", "y", "a.png"),
        ("add", "a.png", "--tag=z"), ("-q", "add", "sub"), ("add", "missing.png"), ("add", "../outside.png"),
    ]
    for n, form in enumerate(forms):
        assert quick.parse(list(form)) is not None, form
        outs = []
        for fast in (True, False):
            root = tmp_repo.root.parent / f"twin-{n}-{fast}"
            Repository.init(root)
            for name, data in {"a.png": b"img", "sub/b.png": b"b", "sub/c.wav": b"c"}.items():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(data)
            with monkeypatch.context() as m:
                if not fast:
                    m.setattr(quick, "parse", lambda args: None)
                r = run_cli(*form, cwd=root)
            rows = [(row.path, row.versions, row.object, row.tags) for row in Repository.find(root).index.rows()]
            outs.append((r.code, r.out, r.err.replace(str(root), "ROOT"), rows))
        assert outs[0] == outs[1], form
    assert outs[0][0] == 4 and "outside the project" in outs[0][2]  # the last form is refused either way


def test_status_uses_stat_cache_and_notices_same_size_edit(tmp_repo):
    repo = tmp_repo.gen({"a.png": b"aaaa"})
    add(repo, ["a.png"], cwd=repo.root)
    st = os.stat(repo.root / "a.png")
    (repo.root / "a.png").write_bytes(b"bbbb")
    os.utime(repo.root / "a.png", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert states(repo) == {("a.png", "modified")}


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "serial"])
def test_status_sees_a_manifest_moved_on_in_place_after_a_clean_check(tmp_repo, tmp_path, monkeypatch, fork):
    """status checks the working files against the index while the manifest
    is checked beside (forked, or after, where it cannot fork); a manifest
    file that moved on in place (same inode, folder untouched) must still
    change the answer: here a pulled v2 makes the working file, which holds
    v1, outdated."""
    import lattice.beside

    if not fork:
        monkeypatch.setattr(lattice.beside, "can_fork", lambda: False)
    repo = tmp_repo.gen({"a.txt": "one"})
    add(repo, ["a.txt"], cwd=repo.root)
    assert run_cli("status", "--porcelain", cwd=repo.root).out == ""  # a clean check: digest stored
    other = Repository.init(tmp_path / "other")
    (other.root / "a.txt").write_text("one")
    add(other, ["a.txt"], cwd=other.root)
    (other.root / "a.txt").write_text("three")
    add(other, ["a.txt"], cwd=other.root)
    mf = repo.manifest.file_of("a.txt")
    ino = os.stat(mf).st_ino
    with open(mf, "r+b") as f:
        f.write(other.manifest.file_of("a.txt").read_bytes())
        f.truncate()
    assert os.stat(mf).st_ino == ino
    assert run_cli("status", "--porcelain", cwd=repo.root).out == " O a.txt\n"


def snapshot_of(repo):
    """(generation, whether rows are kept) of the index's working snapshot."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(repo.dir / "index.db")) as db:
        row = db.execute("SELECT generation, rows IS NOT NULL FROM working_snapshot").fetchone()
    return row and (row[0], bool(row[1]))


def aged(repo, *names):
    """Past the racy window, so that status finds nothing to refresh (a
    refresh is a change: it drops the snapshot)."""
    for name in names:
        os.utime(repo.root / name, ns=(time.time_ns() - 10**10,) * 2)
    return list(names)


def test_status_snapshot_is_dropped_by_every_change_to_what_status_reads(tmp_repo):
    """status keeps its 10,000 rows as one blob between runs; any writer
    that changes them (lattice's own, an older lattice, a hand-run sqlite3)
    drops it, so status never answers from rows that moved on."""
    import sqlite3

    repo = tmp_repo.gen({"a.png": b"one", "b.png": b"two"})
    add(repo, aged(repo, "a.png", "b.png"), cwd=repo.root)
    assert states(repo) == set() and snapshot_of(repo)[1]
    assert states(repo) == set()  # answered from the snapshot
    kept = snapshot_of(repo)

    (repo.root / "a.png").write_bytes(b"edited")  # a new version, its stat recorded by add
    add(repo, aged(repo, "a.png"), cwd=repo.root)
    assert snapshot_of(repo)[0] > kept[0] and not snapshot_of(repo)[1]
    fresh = Repository.find(repo.root)
    assert states(fresh) == set() and snapshot_of(repo)[1]

    with contextlib.closing(sqlite3.connect(repo.dir / "index.db")) as db, db:  # not through lattice
        db.execute("UPDATE assets SET object = 'f' || substr(object, 2) WHERE path = 'b.png'")
    assert not snapshot_of(repo)[1]
    assert states(Repository.find(repo.root)) == {("b.png", "outdated")}  # the row's object is no longer the file's

    with contextlib.closing(sqlite3.connect(repo.dir / "index.db")) as db, db:
        db.execute("DELETE FROM assets WHERE path = 'b.png'")
    assert not snapshot_of(repo)[1]
    assert states(Repository.find(repo.root)) == set()  # the row that was outdated is gone


def test_status_snapshot_is_not_kept_when_the_rows_changed_after_reading(tmp_repo):
    """A writer between status's read and its save: the save keeps nothing,
    and never waits on a writer that holds the database."""
    import sqlite3

    repo = tmp_repo.gen({"a.png": b"one"})
    add(repo, aged(repo, "a.png"), cwd=repo.root)
    index = repo.index
    rows = index.working_rows(named=False)
    with contextlib.closing(sqlite3.connect(repo.dir / "index.db", isolation_level=None)) as other:
        other.execute("UPDATE assets SET wt_size = 1")
        index.save_working_rows()
        assert not snapshot_of(repo)[1]
        assert index.working_rows(named=False) != rows  # read from the table again

        other.execute("BEGIN IMMEDIATE")  # a writer holds the database
        index.save_working_rows()
        other.execute("ROLLBACK")
    assert not snapshot_of(repo)[1]
    assert index.db.execute("PRAGMA busy_timeout").fetchone()[0] == 60_000  # waits as before for real writes
    index.working_rows(named=False)
    index.save_working_rows()
    assert snapshot_of(repo)[1]
    [kept], [full] = index.working_rows(named=False), index.working_rows(named=True)
    # An import whose stat cache holds its object is kept without its ids.
    assert kept == (full.path, None, None, full.deterministic, full.wt_size, full.wt_mtime_ns, full.wt_ino, None)
    assert full.wt_object == full.object == index.object_of("a.png")


def test_status_from_a_snapshot_without_ids_still_sees_edits(tmp_repo):
    repo = tmp_repo.gen({"a.png": b"one", "b.png": b"two"})
    add(repo, aged(repo, "a.png", "b.png"), cwd=repo.root)
    for _ in range(2):
        assert states(Repository.find(repo.root)) == set()
    assert snapshot_of(repo)[1]
    (repo.root / "a.png").write_bytes(b"edited")
    st = os.stat(repo.root / "b.png")
    os.utime(repo.root / "b.png", ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))  # touched, same bytes
    assert states(Repository.find(repo.root)) == {("a.png", "modified")}
    assert states(Repository.find(repo.root)) == {("a.png", "modified")}


def test_status_snapshot_damaged_or_missing_falls_back_to_the_table(tmp_repo):
    import marshal
    import sqlite3

    repo = tmp_repo.gen({"a.png": b"one"})
    add(repo, aged(repo, "a.png"), cwd=repo.root)
    (repo.root / "b.png").write_bytes(b"new")
    with contextlib.closing(sqlite3.connect(repo.dir / "index.db")) as db, db:
        db.execute("UPDATE working_snapshot SET rows = x'00ff'")  # not marshal data
    assert states(Repository.find(repo.root)) == {("b.png", "new")}
    with contextlib.closing(sqlite3.connect(repo.dir / "index.db")) as db, db:
        db.execute("UPDATE working_snapshot SET rows = ?", (marshal.dumps(7),))  # not rows
    assert states(Repository.find(repo.root)) == {("b.png", "new")}
    with contextlib.closing(sqlite3.connect(repo.dir / "index.db")) as db, db:
        db.execute("DELETE FROM working_snapshot")  # as in an index made before snapshots
    assert states(Repository.find(repo.root)) == {("b.png", "new")}
    assert snapshot_of(repo) == (0, False)  # counting from now on
    assert states(Repository.find(repo.root)) == {("b.png", "new")}
    assert snapshot_of(repo) == (0, True)


def test_work_beside_gives_the_result_and_leaves_no_process_behind():
    from lattice.beside import Beside, can_fork

    parent = os.getpid()
    with Beside(lambda: (os.getpid() != parent, sum(range(1000)), ["a", "b"])) as work:
        forked, pid = work.forked, work.pid
        assert forked == can_fork()
        assert work.result() == (forked, 499500, ["a", "b"])  # from the child where there is one
    if pid is not None:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped
    # Left without its result: stopped and reaped.
    with Beside(lambda: time.sleep(30)) as work:
        pid = work.pid
    if pid is not None:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_work_beside_with_sigchld_ignored_still_gives_the_result():
    """A parent that ignores SIGCHLD (some service managers and CI runners
    pass that on) has its children reaped for it: waitpid then fails, and
    the result still comes from what the child wrote."""
    code = (
        "import os, signal\n"
        "signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n"
        "from lattice.beside import Beside\n"
        "parent = os.getpid()\n"
        "with Beside(lambda: os.getpid() != parent) as work:\n"
        "    print(work.forked, work.result())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    forked, from_child = out.stdout.split()
    assert from_child == forked


def test_work_beside_that_cannot_fork_is_done_here(monkeypatch):
    """Out of processes or memory: no child, nothing left open, the result
    computed here."""
    from lattice.beside import Beside

    def no_fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    fds = len(os.listdir("/proc/self/fd"))
    with Beside(lambda: "here") as work:
        assert not work.forked and work.result() == "here"
    assert len(os.listdir("/proc/self/fd")) == fds


def test_work_beside_that_fails_in_the_child_is_done_here():
    """A child that fails (here: only the child) gives no result; the
    function then runs in this process, whose own error, if any, is raised."""
    from lattice.beside import Beside

    parent = os.getpid()

    def only_here():
        if os.getpid() != parent:
            raise OSError("the child could not")
        return "done here"

    with Beside(only_here) as work:
        assert work.result() == "done here"

    def never():
        raise ValueError("nowhere")

    with Beside(never) as work, pytest.raises(ValueError, match="nowhere"):
        work.result()


# -- ls, show, cat, checkout ----------------------------------------------------


def test_ls_show_cat_checkout(tmp_repo):
    repo = tmp_repo.gen({"d/a.txt": "one"})
    add(repo, ["d/a.txt"], cwd=repo.root)
    (repo.root / "d/a.txt").write_text("two")
    add(repo, ["d/a.txt"], cwd=repo.root)

    ls = run_cli("ls", "--json", cwd=repo.root).json
    assert ls[0]["path"] == "d/a.txt" and ls[0]["version"] == 2

    show = run_cli("show", "d/a.txt", "--json", cwd=repo.root).json
    assert [v["number"] for v in show["versions"]] == [1, 2]
    assert show["versions"][0]["stored"] > 0 and show["versions"][0]["size"] == 3
    assert "v1  imported" in run_cli("show", "d/a.txt", cwd=repo.root).out

    assert run_cli("cat", "d/a.txt@v1", cwd=repo.root).out == "one"
    assert run_cli("cat", "a.txt", cwd=repo.root / "d").out == "two"
    r = run_cli("cat", "d/a.txt@v9", cwd=repo.root)
    assert r.code == 4 and "v1 to v2" in r.err

    (repo.root / "d/a.txt").write_text("scribble")
    assert run_cli("checkout", "d/a.txt", cwd=repo.root).code == 0
    assert (repo.root / "d/a.txt").read_text() == "two"
    os.unlink(repo.root / "d/a.txt")
    run_cli("checkout", "d/a.txt", cwd=repo.root)
    assert (repo.root / "d/a.txt").read_text() == "two"
    assert states(repo) == set()


def test_unknown_asset_names_closest(tmp_repo):
    repo = tmp_repo.gen({"sky.txt": "s"})
    add(repo, ["sky.txt"], cwd=repo.root)
    r = run_cli("show", "skyy.txt", cwd=repo.root)
    assert r.code == 4 and "did you mean: sky.txt" in r.err


def test_working_copy_edits_never_touch_store(tmp_repo):
    repo = tmp_repo.gen({"a.txt": "original"})
    add(repo, ["a.txt"], cwd=repo.root)
    os.unlink(repo.root / "a.txt")
    run_cli("checkout", "a.txt", cwd=repo.root)
    with open(repo.root / "a.txt", "r+") as f:  # in-place edit of the materialized copy
        f.write("XX")
    assert fsck(repo).ok
    assert run_cli("cat", "a.txt", cwd=repo.root).out == "original"


# -- the object store ---------------------------------------------------------------


def test_store_compresses_only_when_it_pays(tmp_repo):
    store = tmp_repo.objects
    text = store.put_bytes(b"lattice " * 10000)
    assert text.compressed and text.stored < text.size
    noise = store.put_bytes(os.urandom(100_000))
    assert not noise.compressed
    assert store.put_bytes(b"lattice " * 10000).new is False
    with store.open(text.oid) as f:
        assert f.read(1 << 20) == b"lattice " * 10000
    mode = store.locate(text.oid).stat().st_mode & 0o777
    assert mode == 0o444


def test_crafted_object_cannot_decompress_past_declared_size(tmp_repo):
    import zstandard

    store = tmp_repo.objects
    oid = "ab" * 32
    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * (4 << 20))
    (store.dir / "ab").mkdir(parents=True, exist_ok=True)
    (store.dir / "ab" / (oid[2:] + ".zst")).write_bytes(bomb)
    with pytest.raises(RepositoryCorrupt, match="declares no content size"):
        with store.open(oid):
            pass
    assert "declares" in store.verify(oid)


def test_bad_object_ids_never_become_paths(tmp_repo):
    from lattice.errors import InvalidInput

    with pytest.raises(InvalidInput):
        tmp_repo.objects.locate("../../etc/passwd")


# -- fsck ------------------------------------------------------------------------


def test_fsck_names_corrupted_object_and_quarantines_it(tmp_repo):
    repo = tmp_repo.gen({"a.txt": "precious words"})
    res = add(repo, ["a.txt"], cwd=repo.root)[0]
    path = repo.objects.locate(res.object)
    os.chmod(path, 0o644)
    path.write_bytes(b"bit rot")
    (repo.root / "a.txt").unlink()  # and no working file keeps the bytes
    r = run_cli("fsck", cwd=repo.root)
    assert r.code == 1 and res.object in r.out
    r = run_cli("fsck", "--repair", "--json", cwd=repo.root)
    data = r.json
    assert any(p["kind"] == "object" and p["repaired"].startswith("moved to") for p in data["problems"])
    assert (repo.dir / "quarantine" / res.object).exists()  # moved aside, never deleted
    # The reference to the lost import stays a problem: fsck never hides data loss.
    r = run_cli("fsck", cwd=repo.root)
    assert r.code == 1 and f"reference: a.txt@v1: object {res.object} is missing" in r.out
    assert "copy the file back to a.txt and run `lattice fsck --repair`" in r.out
    (repo.root / "a.txt").write_text("precious words")  # as the hint says
    r = run_cli("fsck", "--repair", cwd=repo.root)
    assert r.code == 0 and "[repaired: stored again from a.txt]" in r.out, r.out
    assert repo.objects.verify(res.object) is None and run_cli("fsck", cwd=repo.root).code == 0


def test_fsck_repair_stores_a_damaged_import_again_from_its_working_file(tmp_repo):
    """The working file still holds the bytes: nothing is lost, so repair
    sets the damaged copy aside and stores the file again, in one run."""
    repo = tmp_repo.gen({"a.txt": "precious words"})
    res = add(repo, ["a.txt"], cwd=repo.root)[0]
    path = repo.objects.locate(res.object)
    os.chmod(path, 0o644)
    path.write_bytes(b"bit rot")
    r = run_cli("fsck", cwd=repo.root)
    assert r.code == 1 and f"reference: a.txt@v1: object {res.object} is damaged; `lattice fsck --repair` sets it aside and stores it again from the working file of a.txt" in r.out
    r = run_cli("fsck", "--repair", "--json", cwd=repo.root)
    assert r.code == 0 and r.json["objects"] == 1
    assert [(n["kind"], n["subject"], n["repaired"]) for n in r.json["notes"]] == [("absent", "a.txt@v1", "stored again from a.txt")]
    assert (repo.dir / "quarantine" / res.object).exists() and repo.objects.verify(res.object) is None
    assert run_cli("fsck", cwd=repo.root).out == "ok: 1 assets, 1 objects\n"


def test_damaged_objects_never_reach_the_working_tree(tmp_repo):
    """cat and checkout hash what they copy: a damaged object (raw or zstd)
    is one exit-5 line naming it, and the working file is left as it was."""
    repo = tmp_repo.gen({"a.txt": "good", "c.txt": "c" * 100_000})
    raw, packed = add(repo, ["a.txt", "c.txt"], cwd=repo.root)
    path = repo.objects.locate(raw.object)
    os.chmod(path, 0o644)
    path.write_bytes(b"BADd")
    zst = repo.objects.locate(packed.object)
    assert zst.name.endswith(".zst")
    os.chmod(zst, 0o644)
    data = bytearray(zst.read_bytes())
    data[20:24] = b"XXXX"
    zst.write_bytes(bytes(data))
    (repo.root / "a.txt").write_text("edited")  # checkout would discard this, but not for garbage
    for args in (("cat", "a.txt"), ("checkout", "a.txt"), ("cat", "c.txt"), ("checkout", "c.txt")):
        r = run_cli(*args, cwd=repo.root)
        oid = raw.object if args[1] == "a.txt" else packed.object
        assert r.code == 5 and f"object {oid[:12]} is damaged" in r.err and "Traceback" not in r.err, (args, r.err)
        assert len(r.err.strip().splitlines()) == 2  # error and hint
    assert (repo.root / "a.txt").read_text() == "edited"
    assert (repo.root / "c.txt").read_text() == "c" * 100_000
    assert not [p for p in repo.root.iterdir() if p.name.startswith(".a.txt") or p.name.startswith(".c.txt")]


def test_truncated_manifest_named_with_line(tmp_repo):
    repo = tmp_repo.gen({"a.txt": "x"})
    add(repo, ["a.txt"], cwd=repo.root)
    mf = repo.manifest.file_of("a.txt")
    text = mf.read_text()
    mf.write_text(text[: text.index("object") + 12])
    r = run_cli("show", "a.txt", cwd=repo.root)
    assert r.code == 5 and "a.txt.toml" in r.err and "line" in r.err
    r = run_cli("fsck", cwd=repo.root)
    assert r.code == 1 and "a.txt.toml" in r.out


def test_fsck_repair_rebuilds_damaged_index(tmp_repo):
    repo = tmp_repo.gen({"a.txt": "x", "b.txt": "y"})
    add(repo, ["."], cwd=repo.root)
    with repo.index as ix:
        ix.db.execute("UPDATE assets SET object = ? WHERE path = 'b.txt'", ("0" * 64,))
    r = run_cli("fsck", cwd=repo.root)
    assert r.code == 1 and "b.txt: index entry does not match the manifest" in r.out
    assert run_cli("fsck", "--repair", cwd=repo.root).code == 0
    assert run_cli("fsck", cwd=repo.root).code == 0
    assert sorted(repo.index.names()) == ["a.txt", "b.txt"]


def test_fsck_repair_replaces_garbage_index_file(tmp_repo):
    repo = tmp_repo.gen({"a.txt": "x"})
    add(repo, ["."], cwd=repo.root)
    replace_index_file(repo, b"garbage" * 1000)
    r = run_proc("fsck", "--repair", cwd=repo.root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(run_proc("ls", "--json", cwd=repo.root).stdout)[0]["path"] == "a.txt"


@pytest.mark.parametrize("offset", [4096, 8192, 12288, 20000])
def test_fsck_repair_rebuilds_an_index_damaged_past_its_first_page(tmp_repo, offset):
    """A damaged page the first queries pass over still makes the file
    unusable: repair moves it to quarantine/ and starts afresh, keeping what
    of the recipe cache it can still read."""
    repo = tmp_repo.gen({"a.txt": "x"})
    add(repo, ["a.txt"], cwd=repo.root)
    r = run_proc("gen", "g.png", "--model", "ffmpeg.life", "--seed", "1", "--set", "width=32", "--set", "height=32", cwd=repo.root)
    assert r.returncode == 0, r.stderr
    cache = repo.index.cache_items()
    repo.index.close()
    import sqlite3

    with contextlib.closing(sqlite3.connect(repo.dir / "index.db")) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page into the file
    data = bytearray((repo.dir / "index.db").read_bytes())
    data[offset:offset + 4000] = os.urandom(4000)[: len(data[offset:offset + 4000])]
    replace_index_file(repo, bytes(data))
    if run_proc("fsck", cwd=repo.root).returncode == 0:
        pytest.skip("this damage landed where SQLite does not look")
    r = run_proc("fsck", "--repair", cwd=repo.root)
    assert r.returncode == 0 and "index rebuilt" in r.stdout, r.stdout + r.stderr
    assert [p.name.split("-")[0] for p in (repo.dir / "quarantine").iterdir()] == ["index.db"]
    assert run_proc("fsck", cwd=repo.root).returncode == 0
    assert run_proc("status", "--porcelain", cwd=repo.root).stdout == ""
    assert set(Repository.find(repo.root).index.cache_items()) <= set(cache)


def clone_as_git_would(repo, dest, files=()):
    """What a teammate's `git clone` holds: the manifest, config, format and
    history, and the working `files` committed beside them; no objects, index
    or other outputs."""
    import shutil

    for part in ("manifest", "history.git"):
        shutil.copytree(repo.dir / part, dest / ".lattice" / part)
    for part in ("config.toml", "format", "README"):
        shutil.copy(repo.dir / part, dest / ".lattice" / part)
    for name in files:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo.root / name, dest / name)
    return dest


def test_fsck_in_a_clone_notes_older_imports_it_never_got(tmp_repo, tmp_path):
    """A clone has only the current file of each import: older versions'
    bytes are absent, which is a note, not damage. A current output that
    nothing can re-make (its input's bytes are such an older version) is a
    problem until `render` makes a new version from the inputs as they are."""
    repo = tmp_repo.gen({"n.txt": "hello"})
    add(repo, ["n.txt"], cwd=repo.root)
    assert run_cli("gen", "c.txt", "--model", "test.join", "--input", "n.txt", cwd=repo.root).code == 0
    repo.gen({"n.txt": "hello2"})
    add(repo, ["n.txt"], cwd=repo.root)  # c.txt is stale: made from n.txt@v1
    n1, n2 = (v.object for v in repo.record("n.txt").versions)
    [c1] = [v.object for v in repo.record("c.txt").versions]
    clone = clone_as_git_would(repo, tmp_path / "clone", ["n.txt"])

    r = run_cli("fsck", "--json", cwd=clone)
    assert r.code == 1 and not r.json["ok"]
    assert [(p["kind"], p["subject"], p["message"]) for p in r.json["problems"]] == [
        ("reference", "c.txt@v1", f"object {c1} is missing; it cannot be re-made: its input n.txt@v1 is not in this store either; "
                                  "`lattice render c.txt` makes a new version from its inputs as they are now")]
    assert {(n["kind"], n["subject"], n["message"]) for n in r.json["notes"]} == {
        ("absent", "n.txt@v1", f"object {n1} is not in this store: an older version of an import, which a clone does not get "
                               "(git carries only the current file); nothing can re-make it"),
        ("absent", "n.txt@v2", f"object {n2} is not in the store, but the working file of n.txt holds it; "
                               "`lattice fsck --repair` stores it again"),
    }
    # -q keeps the problems and drops the notes, which are no failure; --json keeps both.
    r = run_cli("-q", "fsck", cwd=clone)
    assert r.code == 1 and r.out.splitlines() == [f"reference: c.txt@v1: object {c1} is missing; it cannot be re-made: "
                                                  "its input n.txt@v1 is not in this store either; "
                                                  "`lattice render c.txt` makes a new version from its inputs as they are now"], r.out
    assert len(run_cli("-q", "fsck", "--json", cwd=clone).json["notes"]) == 2
    assert run_cli("add", "n.txt", cwd=clone).code == 0  # as the teammate would: unchanged, and stored
    r = run_cli("render", cwd=clone)
    assert r.code == 0, r.err
    r = run_cli("fsck", cwd=clone)
    assert r.code == 0, r.out
    lines = r.out.splitlines()
    assert lines[-1] == "ok: 2 assets, 2 objects" and sorted(line.split(":")[1].strip() for line in lines[:-1]) == ["c.txt@v1", "n.txt@v1"]
    assert all(line.startswith("note: ") for line in lines[:-1])
    r = run_cli("--quiet", "fsck", cwd=clone)
    assert (r.code, r.out, r.err) == (0, "", "")
    assert run_cli("fsck", "--repair", cwd=clone).code == 0 and run_cli("fsck", cwd=clone).code == 0


def test_fsck_in_a_clone_fails_for_a_pinned_import_it_never_got(tmp_repo, tmp_path):
    """The pinned version is needed (dependents and exports use it): its
    bytes absent with no file holding them is damage, until it is unpinned
    or the file is put back."""
    repo = tmp_repo.gen({"n.txt": "hello"})
    add(repo, ["n.txt"], cwd=repo.root)
    repo.gen({"n.txt": "hello2"})
    add(repo, ["n.txt"], cwd=repo.root)
    assert run_cli("pin", "n.txt@v1", cwd=repo.root).code == 0
    n1 = repo.record("n.txt").versions[0].object
    clone = clone_as_git_would(repo, tmp_path / "clone", ["n.txt"])
    assert run_cli("fsck", "--repair", cwd=clone).code == 1  # stores v2 from the file, cannot give v1 back
    r = run_cli("fsck", cwd=clone)
    assert r.code == 1 and r.out.splitlines() == [
        f"reference: n.txt@v1: object {n1} is missing; it was imported, so nothing can re-make it; "
        "copy its file back to n.txt and run `lattice fsck --repair`, or `lattice unpin n.txt` (or pin another version)"]
    assert run_cli("unpin", "n.txt", cwd=clone).code == 0
    r = run_cli("fsck", cwd=clone)
    assert r.code == 0 and r.out.startswith(f"note: n.txt@v1: object {n1} is not in this store: an older version of an import")


def test_fsck_repair_leaves_the_index_row_of_a_conflicted_manifest_file(tmp_repo, tmp_path):
    """A git merge conflict in a manifest file is the user's to resolve:
    --repair neither restores the file from history nor drops its index row,
    so once resolved, the working file of the other side shows `outdated`
    (render rewrites it), not `modified` (which render would skip)."""
    import shutil

    def regen(root, seed):
        assert run_cli("regen", "a.txt", "--seed", seed, cwd=root).code == 0

    assert run_cli("gen", "a.txt", "--model", "test.text", "--seed", "1", cwd=tmp_repo.root).code == 0
    theirs_root = tmp_path / "theirs"
    shutil.copytree(tmp_repo.root, theirs_root)
    regen(theirs_root, "3")
    theirs = (theirs_root / ".lattice" / "manifest" / "a.txt.toml").read_text()
    regen(tmp_repo.root, "4")
    mf = tmp_repo.manifest.file_of("a.txt")
    ours = mf.read_text()
    mf.write_text(f"<<<<<<< HEAD\n{ours}=======\n{theirs}>>>>>>> origin/main\n")
    r = run_cli("fsck", "--repair", cwd=tmp_repo.root)
    assert r.code == 1 and r.out.splitlines()[0] == (
        f"manifest: {mf}: unresolved git merge conflict (<<<<<<< markers); resolve it in git (edit the file to keep one side, "
        "or `git checkout --ours/--theirs` it, then `git add` it); not repaired: the choice is yours, and its index entry stays as it was until then")
    assert "index" not in r.out.replace("index entry", "")  # and history waits for the manifest to be sound
    assert "<<<<<<<" in mf.read_text() and not (tmp_repo.dir / "quarantine").exists()
    row = Repository.find(tmp_repo.root).index.get("a.txt")
    assert row is not None and row.versions == 2 and row.wt_object == row.object
    mf.write_text(theirs)  # `git checkout --theirs`
    assert run_cli("status", "--porcelain", cwd=tmp_repo.root).out == " O a.txt\n"
    r = run_cli("render", cwd=tmp_repo.root)
    assert r.code == 0, r.err
    assert (tmp_repo.root / "a.txt").read_text() == "hello:3\n" and run_cli("fsck", cwd=tmp_repo.root).code == 0


def test_fsck_repair_of_a_damaged_index_keeps_the_row_of_a_conflicted_manifest_file(tmp_repo, monkeypatch):
    """Even where the index file itself is rebuilt, the rows of a manifest
    file it cannot read now are carried over from what can still be read."""
    from lattice.index import Index

    assert run_cli("gen", "a.txt", "--model", "test.text", cwd=tmp_repo.root).code == 0
    assert run_cli("gen", "b.txt", "--model", "test.text", cwd=tmp_repo.root).code == 0
    before = Repository.find(tmp_repo.root).index.get("a.txt")
    mf = tmp_repo.manifest.file_of("a.txt")
    text = mf.read_text()
    mf.write_text(f"<<<<<<< HEAD\n{text}=======\n{text}>>>>>>> other\n")
    monkeypatch.setattr(Index, "check", lambda self: ["page 7: damaged"])  # as PRAGMA integrity_check would say
    report = fsck(Repository.find(tmp_repo.root), repair=True)
    monkeypatch.undo()
    assert [p.kind for p in report.problems if not p.repaired] == ["manifest", "history"]
    assert any(p.kind == "index" and p.repaired == "index rebuilt" for p in report.problems)
    again = Repository.find(tmp_repo.root)
    assert len(list((tmp_repo.dir / "quarantine").glob("index.db-*"))) >= 1
    assert again.index.get("a.txt") == before and again.index.get("b.txt") is not None


def test_fsck_repair_counts_the_assets_it_restored(tmp_repo):
    for name in ("a.txt", "b.txt"):
        assert run_cli("gen", name, "--model", "test.text", cwd=tmp_repo.root).code == 0
    tmp_repo.manifest.file_of("a.txt").unlink()
    r = run_cli("fsck", "--repair", cwd=tmp_repo.root)
    assert r.code == 0 and r.out.splitlines()[-1] == "ok: 2 assets, 2 objects", r.out
    assert run_cli("fsck", "--json", cwd=tmp_repo.root).json["assets"] == 2


def test_fsck_repair_of_a_damaged_index_keeps_the_tables_it_can_read(tmp_repo, monkeypatch):
    """What the manifest cannot give back (the recipe cache, media facts,
    export records) is carried over from a damaged index where readable."""
    from lattice import fsck as fsck_module
    from lattice.index import Index

    repo = tmp_repo.gen({"a.txt": "x"})
    add(repo, ["a.txt"], cwd=repo.root)
    with repo.index as ix:
        ix.cache_put("k" * 64, "0" * 64, "ffmpeg.life")
    monkeypatch.setattr(Index, "check", lambda self: ["page 7: damaged"])  # as PRAGMA integrity_check would say
    fsck_module.rebuild_index(repo)
    monkeypatch.undo()
    again = Repository.find(repo.root)
    assert again.index.cache_items() == [("k" * 64, "0" * 64)] and again.index.names() == ["a.txt"]
    assert len(list((repo.dir / "quarantine").glob("index.db-*"))) >= 1


def test_errors_never_show_tracebacks_unless_debug(tmp_repo):
    (tmp_repo.dir / "format").write_text("7\n")
    plain = run_proc("status", cwd=tmp_repo.root)
    assert plain.returncode == 5 and "Traceback" not in plain.stderr
    debug = run_proc("--debug", "status", cwd=tmp_repo.root)
    assert "Traceback" in debug.stderr


def test_tracked_path_replaced_by_directory_is_modified_not_a_traceback(tmp_repo):
    repo = tmp_repo.gen({"a.png": b"img"})
    add(repo, ["a.png"], cwd=repo.root)
    os.unlink(repo.root / "a.png")
    (repo.root / "a.png").mkdir()
    assert states(repo) == {("a.png", "modified")}
    # Said, and refused with the code, as switch, merge, render and restore do.
    r = run_cli("checkout", "a.png", cwd=repo.root)
    assert r.code == 12 and r.err == ("error: a.png: a folder is in the way of its working file\n"
                                      "hint: move the folder aside, then run the command again\n"), r.err


def test_damaged_index_is_one_error_line_with_the_repair(tmp_repo):
    repo = tmp_repo.gen({"a.txt": "x"})
    add(repo, ["a.txt"], cwd=repo.root)
    repo.index.close()  # checkpoints the WAL into the file
    data = bytearray((repo.dir / "index.db").read_bytes())
    data[100:4100] = b"\xff" * 4000
    replace_index_file(repo, bytes(data))
    r = run_proc("ls", cwd=repo.root)
    assert r.returncode == 5 and "Traceback" not in r.stderr and "fsck --repair" in r.stderr
    assert run_proc("fsck", "--repair", cwd=repo.root).returncode == 0
    assert run_proc("ls", cwd=repo.root).returncode == 0


def test_index_follows_manifest_changed_behind_its_back(tmp_repo, tmp_path):
    """A git pull (or a crash between the manifest and index writes) changes
    manifest files the index has not seen: the next command re-indexes them."""
    repo = tmp_repo.gen({"a.txt": "one", "b.txt": "two"})
    add(repo, ["."], cwd=repo.root)
    # A teammate's copy of the project, one version ahead on a.txt.
    other = Repository.init(tmp_path / "other")
    (other.root / "a.txt").write_text("one")
    add(other, ["a.txt"], cwd=other.root)
    (other.root / "a.txt").write_text("three")
    add(other, ["a.txt"], cwd=other.root)
    # "git pull": their manifest of a.txt arrives, b.txt's is deleted.
    repo.manifest.file_of("a.txt").write_bytes(other.manifest.file_of("a.txt").read_bytes())
    os.unlink(repo.manifest.file_of("b.txt"))
    fresh = Repository.find(repo.root)
    assert [(r.path, r.versions) for r in fresh.index.rows()] == [("a.txt", 2)]
    # A zero-byte index is rebuilt the same way.
    fresh.index.close()
    replace_index_file(repo, b"")
    assert [r.path for r in Repository.find(repo.root).index.rows()] == ["a.txt"]


def test_in_place_manifest_edit_is_seen_after_a_clean_check(tmp_repo):
    """A clean check stores a digest of every manifest file's stamp; an edit
    in place (same inode, folder untouched) must still be noticed."""
    repo = tmp_repo.gen({"a.txt": "one", "b.txt": "two"})
    add(repo, ["."], cwd=repo.root)
    digest = Repository.find(repo.root).index.manifest_digest()  # opening the index checked
    assert digest is not None
    mf = repo.manifest.file_of("a.txt")
    text = mf.read_text()
    assert 'kind = "other"' in text
    with open(mf, "r+") as f:  # as an editor that writes in place does
        f.write(text.replace('kind = "other"', 'kind = "image"', 1))
    fresh = Repository.find(repo.root)
    assert fresh.index.get("a.txt").kind == "image"
    assert fresh.index.manifest_digest() is None  # forgotten until the next clean check
    assert Repository.find(repo.root).index.manifest_digest() not in (None, digest)


def test_a_write_stores_the_digest_of_what_it_wrote(tmp_repo, monkeypatch):
    """A command that changes assets keeps the stamps it found in step with
    its writes and stores their digest with its commit: the next command
    compares one value, and still notices a hand edit made after the write."""
    from lattice.index import Index
    from lattice.manifest import stamps_digest

    repo = tmp_repo.gen({"a.txt": "one", "b.txt": "two"})
    add(repo, ["."], cwd=repo.root)
    Repository.find(repo.root).index  # a clean check: the digest is stored
    (repo.root / "a.txt").write_text("one, edited")
    (repo.root / "c.txt").write_text("three")
    writer = Repository.find(repo.root)
    add(writer, ["a.txt", "c.txt"], cwd=repo.root)  # rewrites a.txt's manifest file, makes c.txt's
    assert writer.index.manifest_digest() == stamps_digest(repo.manifest.stamps(), sort=True)

    def no_full_comparison(self):
        raise AssertionError("the stored digest should have matched")

    with monkeypatch.context() as m:
        m.setattr(Index, "manifest_stamps", no_full_comparison)
        fresh = Repository.find(repo.root).index
        assert (fresh.get("a.txt").versions, fresh.get("c.txt").versions) == (2, 1)
    mf = repo.manifest.file_of("b.txt")
    text = mf.read_text()
    with open(mf, "r+") as f:  # in place, after the write
        f.write(text.replace('kind = "other"', 'kind = "image"', 1))
    assert Repository.find(repo.root).index.get("b.txt").kind == "image"


def test_a_rolled_back_write_stores_no_digest(tmp_repo):
    """The tracked stamps hold a transaction's changes before it commits: a
    rollback drops them, and the digest stored before stays as it was."""
    repo = tmp_repo.gen({"a.txt": "one"})
    add(repo, ["a.txt"], cwd=repo.root)
    fresh = Repository.find(repo.root)
    index = fresh.index
    before = index.manifest_digest()
    record = fresh.record("a.txt")
    with pytest.raises(RuntimeError):
        with index:
            index.put(record, os.stat(repo.manifest.file_of("a.txt")))
            index.remove("a.txt")
            raise RuntimeError("a failure midway")
    assert index.manifest_digest() == before
    with index:  # untracked now: a change forgets the digest, as before
        index.put(record, os.stat(repo.manifest.file_of("a.txt")))
    assert index.manifest_digest() is None
    assert Repository.find(repo.root).index.get("a.txt") is not None


def test_status_works_when_the_digest_cannot_be_stored(tmp_repo, monkeypatch):
    """Storing the stamps' digest is a write; an index that refuses writes
    (read-only media) leaves every check on the full comparison, nothing worse."""
    import sqlite3

    from lattice.index import Index

    repo = tmp_repo.gen({"a.png": b"img"})
    add(repo, ["a.png"], cwd=repo.root)
    with sqlite3.connect(repo.dir / "index.db") as db:  # as after a change no one tracked
        db.execute("DELETE FROM meta WHERE key = 'manifest_digest'")

    def refuse(self, digest):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(Index, "set_manifest_digest", refuse)
    for _ in range(2):
        r = run_cli("status", "--porcelain", cwd=repo.root)
        assert (r.code, r.out, r.err) == (0, "", "")
        assert Repository.find(repo.root).index.manifest_digest() is None


def test_damaged_manifest_stops_status_and_render_check(tmp_repo):
    repo = tmp_repo.gen({"a.txt": "one"})
    add(repo, ["a.txt"], cwd=repo.root)
    mf = repo.manifest.file_of("a.txt")
    mf.write_bytes(mf.read_bytes()[:60])
    for args in (("status",), ("render", "--check"), ("ls",)):
        r = run_cli(*args, cwd=repo.root)
        assert r.code == 5 and "a.txt.toml" in r.err, (args, r.err)


def test_nothing_is_tracked_under_a_file_asset(tmp_repo):
    repo = tmp_repo.gen({"sky.png": b"img"})
    add(repo, ["sky.png"], cwd=repo.root)
    os.unlink(repo.root / "sky.png")
    (repo.root / "sky.png").mkdir()
    (repo.root / "sky.png" / "inner.png").write_bytes(b"x")
    r = run_cli("add", "sky.png", cwd=repo.root)
    assert r.code == 4 and "is an asset" in r.err
    r = run_cli("gen", "sky.png/x.txt", "--model", "test.text", cwd=repo.root)
    assert r.code == 4


def test_hidden_and_overlong_names_are_refused(tmp_repo):
    repo = tmp_repo.gen({".hidden.png": b"x"})
    assert run_cli("add", ".hidden.png", cwd=repo.root).code == 4
    r = run_cli("gen", "x" * 300 + ".txt", "--model", "test.text", cwd=repo.root)
    assert r.code == 4 and "longer than" in r.err
    assert repo.index.count() == 0


def test_a_refused_name_is_shown_as_other_one_line_messages_show_names():
    """Not in Python's quoting: escapes only for what a line cannot hold (a
    control character, a byte that is not UTF-8), as `shown()` writes them."""
    from lattice.paths import check_name

    for bad, message in (("", "an empty asset name is not a relative path"),
                         ("a\nb.png", "asset name a\\nb.png contains a control character (newline, tab…)"),
                         ("bad\udcff.png", "asset name bad\\xff.png is not valid UTF-8"),
                         ("it's/../x.png", "asset name it's/../x.png contains an empty, '.' or '..' component"),
                         ("a/.h.png", "asset name a/.h.png has a hidden (dot) component; lattice does not track hidden files")):
        with pytest.raises(UnsafePath) as e:
            check_name(bad)
        assert e.value.message == message, (bad, e.value.message)


def test_names_are_checked_and_confined_one_folder_resolution_at_a_time(tmp_path):
    from lattice.paths import check_name, confine, confined

    for bad in ("", "/abs", "a\\b", "a\nb", "a//b", "a/./b", "a/../b", ".lattice/x", ".git/config", "a/.hidden", "x" * 251):
        with pytest.raises(UnsafePath):
            check_name(bad)
    assert check_name("shots/sky 1.png") == "shots/sky 1.png"
    root = tmp_path / "proj"
    (root / "in").mkdir(parents=True)
    (root / "in" / "a.png").write_bytes(b"a")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.png").write_bytes(b"b")
    (root / "away").symlink_to(tmp_path / "out")
    (root / "in" / "link.png").symlink_to(tmp_path / "out" / "b.png")
    (root / "in" / "inside.png").symlink_to(root / "in" / "a.png")
    (root / ".lattice").mkdir()
    (root / "meta").symlink_to(root / ".lattice")
    (tmp_path / "out2").mkdir()
    (tmp_path / "out2" / "back").symlink_to(root / "in" / "a.png")  # out through a folder, back in through a file
    (root / "ext").symlink_to(tmp_path / "out2")
    assert confine(root, "in/a.png") == root / "in" / "a.png"
    folders: dict = {}
    for cache in (None, folders):
        assert confined(root, "in/a.png", cache) == str(root / "in" / "a.png")
        assert confined(root, "in/inside.png", cache) == str(root / "in" / "inside.png")
        for escaping in ("away/b.png", "in/link.png", "meta/format", ".lattice", "ext/back"):
            with pytest.raises(UnsafePath):
                confined(root, escaping, cache)
            with pytest.raises(UnsafePath):
                confine(root, escaping)
    assert set(folders) == {"", "in"}  # folders are resolved once; those refused are not kept


def test_store_folders_removed_behind_a_long_running_process_are_made_again(tmp_repo):
    import shutil

    store = tmp_repo.objects
    first = store.put_bytes(b"first object " * 100)
    shutil.rmtree(store.dir / "tmp")  # e.g. a hand clean-up while a worker runs
    shard = store.dir / first.oid[:2]
    os.chmod(store.locate(first.oid), 0o644)
    shutil.rmtree(shard)
    again = store.put_bytes(b"first object " * 100)
    assert again.oid == first.oid and again.new
    with store.open(again.oid) as f:
        assert f.read() == b"first object " * 100
    (tmp_repo.root / "x.bin").write_bytes(os.urandom(5000))
    shutil.rmtree(store.dir / "tmp")
    assert store.has(store.put_file(tmp_repo.root / "x.bin").oid)


def test_large_objects_start_their_disk_writes_as_they_are_written(tmp_repo, tmp_path, monkeypatch):
    """A big add hands the kernel finished windows as it goes (sync_file_range)
    instead of leaving a gigabyte of dirty pages to the final fsync."""
    from lattice.fsutil import Writeback

    monkeypatch.setattr(Writeback, "WINDOW", 64 << 10)
    real = Writeback._call if Writeback._call is not None else Writeback._lookup()
    if not real:
        pytest.skip("no sync_file_range on this system")
    ranges = []

    def spy(fd, offset, length, flags):
        ranges.append((offset, length, flags))
        return real(fd, offset, length, flags)

    monkeypatch.setattr(Writeback, "_call", spy)
    data = os.urandom(3 << 20)
    src = tmp_path / "big.mp4"
    src.write_bytes(data)
    stored = tmp_repo.objects.put_file(src, compress=False)
    with tmp_repo.objects.open(stored.oid) as f:
        assert f.read() == data
    started = [(o, n) for o, n, f in ranges if f == 2]
    assert started[0][0] == 0 and sum(n for _, n in started) >= len(data) - (64 << 10) - (1 << 20)
    assert all(o + n <= len(data) for o, n, _ in ranges)
    assert any(f == 7 for _, _, f in ranges)  # and waits on older windows, bounding what stays dirty


def test_each_in_process_run_starts_from_fresh_global_options(tmp_path, monkeypatch, capsys):
    """A program (or plug-in) calling entry.run twice: the first call's -C
    and --quiet must not steer the second."""
    from lattice.cli.entry import run

    first, second = tmp_path / "first", tmp_path / "second"
    assert run(["-q", "-C", str(tmp_path), "init", "first"]) == 0
    assert run(["init", str(second)]) == 0
    monkeypatch.chdir(second)
    (second / "here.png").write_bytes(b"x")
    capsys.readouterr()
    assert run(["status", "--porcelain"]) == 0
    assert capsys.readouterr().out == "?? here.png\n"
    assert (first / ".lattice").is_dir() and not (first / "here.png").exists()


def test_without_sync_file_range_large_objects_are_stored_all_the_same(tmp_repo, tmp_path, monkeypatch):
    from lattice.fsutil import Writeback

    monkeypatch.setattr(Writeback, "WINDOW", 64 << 10)
    monkeypatch.setattr(Writeback, "_call", False)  # as on a system without it
    data = os.urandom(1 << 20)
    (tmp_path / "big.mp4").write_bytes(data)
    stored = tmp_repo.objects.put_file(tmp_path / "big.mp4", compress=False)
    with tmp_repo.objects.open(stored.oid) as f:
        assert f.read() == data


def test_a_write_error_during_writeback_stores_nothing(tmp_repo, tmp_path, monkeypatch):
    """sync_file_range reporting EIO (a failing disk) must fail the add: the
    wait marks the error seen, so the final fsync would not report it."""
    import ctypes
    import errno

    from lattice.fsutil import Writeback

    monkeypatch.setattr(Writeback, "WINDOW", 64 << 10)

    def failing_disk(fd, offset, length, flags):
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(Writeback, "_call", failing_disk)
    src = tmp_path / "big.mp4"
    src.write_bytes(os.urandom(3 << 20))
    with pytest.raises(OSError) as e:
        tmp_repo.objects.put_file(src, compress=False)
    assert e.value.errno == errno.EIO
    assert list(tmp_repo.objects) == [] and not tmp_repo.objects.stray_temps()


def test_a_deleted_current_directory_is_one_clear_error(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    r = subprocess.run(["sh", "-c", f"cd '{gone}' && rmdir '{gone}' && exec '{sys.executable}' -m lattice status"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: the current directory no longer exists\nhint:")


def test_latticeignore_hides_new_files_from_status_and_add_but_never_tracked_ones(tmp_repo):
    repo = tmp_repo.gen({
        "renders/r.png": b"r", "refs/a/b.jpg": b"b", "refs/c.png": b"c", "shots/s.png": b"s",
        "shots/x.tmp.png": b"x", "shots/keep.tmp.png": b"k", "top.png": b"t",
    })
    assert run_cli("add", "renders/r.png", cwd=repo.root).code == 0  # tracked before the ignore file
    (repo.root / ".latticeignore").write_text("renders/\n*.tmp.png\n!keep.tmp.png\nrefs/**/*.jpg\n")
    (repo.root / "renders" / "new.png").write_bytes(b"n")
    r = run_cli("status", "--porcelain", cwd=repo.root)
    assert r.out.splitlines() == ["?? refs/c.png", "?? shots/keep.tmp.png", "?? shots/s.png", "?? top.png"]
    (repo.root / "renders" / "r.png").write_bytes(b"edited")
    assert " M renders/r.png" in run_cli("status", "--porcelain", cwd=repo.root).out  # tracked: never ignored
    r = run_cli("add", ".", "--json", cwd=repo.root)
    assert r.code == 0
    assert sorted(a["path"] for a in r.json) == ["refs/c.png", "renders/r.png", "shots/keep.tmp.png", "shots/s.png", "top.png"]
    # Named on the command line, a file or a whole ignored folder is added anyway.
    assert run_cli("add", "shots/x.tmp.png", cwd=repo.root).code == 0
    assert run_cli("add", "renders", cwd=repo.root).code == 0
    assert {"renders/new.png", "shots/x.tmp.png"} <= {row.path for row in repo.index.rows()}
    assert run_cli("status", "--porcelain", cwd=repo.root).out == ""


def test_a_file_in_an_ignored_folder_stays_ignored_for_add_as_for_status(tmp_repo):
    """git's rule: a file cannot be re-included when its folder is excluded."""
    repo = tmp_repo.gen({"renders/keep.png": b"k", "a.png": b"a"})
    (repo.root / ".latticeignore").write_text("renders/\n!renders/keep.png\n")
    assert run_cli("status", "--porcelain", cwd=repo.root).out == "?? a.png\n"
    r = run_cli("add", ".", "--json", cwd=repo.root)
    assert [a["path"] for a in r.json] == ["a.png"]


def test_an_unreadable_latticeignore_is_one_clear_error(tmp_repo):
    repo = tmp_repo.gen({"a.png": b"a"})
    (repo.root / ".latticeignore").write_bytes(b"\xff\xfe\x00 not text")
    r = run_cli("status", cwd=repo.root)
    assert r.code == 4 and r.err.startswith("error: .latticeignore: cannot be read") and "Traceback" not in r.err


def test_edge_names_and_paths_work_as_typed(tmp_repo):
    """An empty path is refused, not the whole project; `-C ..` is the folder
    above; names with '@' and names near the 255-byte limit work end to end;
    a stray file among the object shards stops no command."""
    repo = tmp_repo.gen({"a.txt": "a", "b.txt": "b", "me@home.txt": "me", "take@v2.txt": "t", "sub/.keep": ""})
    r = run_cli("add", "", cwd=repo.root)
    assert r.code == 4 and "an empty path names no file" in r.err
    assert run_cli("ls", "--json", cwd=repo.root).json == []
    assert run_cli("-C", "..", "add", "a.txt", "me@home.txt", "take@v2.txt", cwd=repo.root / "sub").code == 0
    assert run_cli("-C", "..", "show", "a.txt", cwd=repo.root / "sub").code == 0
    assert run_cli("cat", "me@home.txt", cwd=repo.root).out == "me"
    assert run_cli("cat", "take@v2.txt", cwd=repo.root).out == "t"  # the asset, not version 2.txt of take
    assert run_cli("cat", "take@v2.txt@v1", cwd=repo.root).out == "t"
    r = run_cli("cat", "a.txt@v0", cwd=repo.root)
    assert r.code == 4 and "there is no version v0" in r.err
    long = "b" * 250  # the longest name a manifest file allows
    (repo.root / long).write_text("long")
    assert run_cli("add", long, cwd=repo.root).code == 0
    assert run_cli("checkout", long, cwd=repo.root).code == 0
    (repo.dir / "objects" / "zz").write_text("not a shard")
    r = run_cli("fsck", cwd=repo.root)
    assert r.code == 0, r.out + r.err


def test_a_name_ending_in_a_version_is_refused_for_new_assets(tmp_repo):
    """`b.txt@v1` would hide version 1 of b.txt from cat, log, restore: add,
    gen and export refuse it (one line and a hint); a walk of a folder passes
    over it. An asset so named in an older manifest is still read."""
    repo = tmp_repo.gen({"b.txt": "b", "b.txt@v1": "other", "d/c@3": "c"})
    assert run_cli("add", "b.txt", cwd=repo.root).code == 0
    r = run_cli("gen", "a.png", "--model", "ffmpeg.testsrc", "--set", "width=32", "--set", "height=24", "--seed", "1", cwd=repo.root)
    assert r.code == 0, r.err
    for args in (("add", "b.txt@v1"), ("add", "d/c@3"), ("gen", "x.png@V2", "--model", "ffmpeg.testsrc"),
                 ("export", "a.png", "-o", "e.png@v1", "--format", "png")):
        r = run_cli(*args, cwd=repo.root)
        assert r.code == 4 and len(r.err.splitlines()) == 2 and "reads as version" in r.err, (args, r.err)
    r = run_cli("add", "b.txt@v1", cwd=repo.root)
    assert r.err == ("error: asset name b.txt@v1 ends in @v1, which reads as version 1 of b.txt\n"
                     "hint: rename the file so that it does not end in @vN or @N, e.g. b-v1.txt\n")
    r = run_cli("add", ".", cwd=repo.root)
    assert r.code == 0 and "skipped b.txt@v1" in r.err and "skipped d/c@3" in r.err
    (repo.root / "b.txt").write_text("b2")
    assert run_cli("add", "b.txt", cwd=repo.root).code == 0
    assert run_cli("cat", "b.txt@v1", cwd=repo.root).out == "b"
    assert [a["path"] for a in run_cli("ls", "--json", cwd=repo.root).json] == ["a.png", "b.txt"]
    # An asset `b.txt@v1` an older manifest holds is that asset, as before:
    (repo.root / "b.txt@v1").unlink()
    mf = repo.manifest.file_of("b.txt")
    mf.with_name("b.txt@v1.toml").write_text(mf.read_text().replace('path = "b.txt"', 'path = "b.txt@v1"'))
    assert run_cli("cat", "b.txt@v1", cwd=repo.root).out == "b2"
    assert run_cli("cat", "b.txt@v1@v1", cwd=repo.root).out == "b"
    assert run_cli("checkout", "b.txt@v1", cwd=repo.root).code == 0 and (repo.root / "b.txt@v1").read_text() == "b2"
    assert run_cli("fsck", cwd=repo.root).code == 0


def test_ls_prefix_is_read_from_the_current_folder(tmp_repo):
    repo = tmp_repo.gen({"top.txt": "1", "sub/a.txt": "2", "sub/deep/b.txt": "3"})
    add(repo, ["."], cwd=repo.root)

    def listed(*args, cwd):
        return [a["path"] for a in run_cli("ls", "--json", *args, cwd=cwd).json]

    assert listed("./sub", cwd=repo.root) == listed("sub/", cwd=repo.root) == ["sub/a.txt", "sub/deep/b.txt"]
    assert listed(".", cwd=repo.root / "sub") == ["sub/a.txt", "sub/deep/b.txt"]
    assert listed("deep", cwd=repo.root / "sub") == ["sub/deep/b.txt"]
    assert listed("..", cwd=repo.root / "sub") == listed(cwd=repo.root / "sub") == ["sub/a.txt", "sub/deep/b.txt", "top.txt"]
    r = run_cli("ls", "../..", cwd=repo.root / "sub")
    assert r.code == 4 and "outside the project" in r.err


def test_reading_commands_end_without_teardown_but_with_all_said_and_closed(tmp_repo):
    """`status` and `ls` leave the process without the interpreter's
    teardown: their whole output, their exit code and closed databases
    (SQLite removes the -wal and -shm files only when the last connection
    closes) must survive that."""
    repo = tmp_repo.gen({f"d/{i:03}.txt": b"x%d" % i for i in range(300)})
    add(repo, ["d"], cwd=repo.root)
    repo.index.close()  # this process's own connection keeps the -wal
    (repo.root / "d" / "007.txt").write_bytes(b"edited")
    (repo.root / "new.png").write_bytes(b"new")
    index = repo.dir / "index.db"
    proc = run_proc("status", "--porcelain", cwd=repo.root)
    assert proc.returncode == 0 and proc.stdout == " M d/007.txt\n?? new.png\n", proc.stderr
    proc = run_proc("ls", cwd=repo.root)
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 300 and proc.stdout.rstrip().endswith("imported")
    assert not index.with_name("index.db-wal").exists() and not index.with_name("index.db-shm").exists()
    proc = run_proc("status", cwd=repo.root.parent)  # not a repository: exit 3 and its message
    assert proc.returncode == 3 and proc.stderr.startswith("error: "), proc.stderr


def test_output_into_a_non_blocking_pipe_is_written_whole(tmp_repo):
    """A pipe left non-blocking by whoever made it: Python's buffered writer
    drops what the full pipe will not take, and the command exited 0 with
    its listing cut."""
    import fcntl

    repo = tmp_repo.gen({f"d/{i:04}.txt": "x" for i in range(3000)})
    add(repo, ["d"], cwd=repo.root)
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETFL, fcntl.fcntl(w, fcntl.F_GETFL) | os.O_NONBLOCK)
    proc = subprocess.Popen([sys.executable, "-m", "lattice", "ls"], cwd=repo.root, stdout=w, stderr=subprocess.PIPE)
    os.close(w)
    time.sleep(1.5)  # the pipe fills while nobody reads
    with open(r, "rb") as f:
        out = f.read()
    assert proc.wait(timeout=120) == 0 and proc.stderr.read() == b""
    assert out.count(b"\n") == 3000


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_output_to_a_full_device_names_standard_output_not_the_project(tmp_repo):
    """`lattice ls > /dev/full`: the write that failed was the output's; the
    project's disk is fine, and `lattice gc` would not help."""
    repo = tmp_repo.gen({"a.txt": "a", "n.png": b"new"})
    add(repo, ["a.txt"], cwd=repo.root)
    for command in (["status"], ["status", "--json"], ["ls"], ["log", "a.txt"], ["show", "a.txt", "--json"], ["cat", "a.txt"]):
        with open("/dev/full", "w") as full:
            proc = subprocess.run([sys.executable, "-m", "lattice", *command], cwd=repo.root, stdout=full,
                                  stderr=subprocess.PIPE, text=True, timeout=120)
        assert proc.returncode == 13, (command, proc.stderr)
        assert proc.stderr.startswith("error: standard output: no space left on device\n"), (command, proc.stderr)
        assert "gc" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_reader_that_goes_away_or_a_closed_stdout_is_not_an_error(tmp_repo):
    """`lattice cat big | head` exits quietly with 141, as a Unix tool killed
    by SIGPIPE does, whichever path parsed it (typer's own EPIPE exit is 1),
    never 0 (a check cut short must not pass under pipefail); a closed
    stdout gets /dev/null, not a traceback or a file opened later in its place."""
    repo = tmp_repo.gen({"m.bin": os.urandom(4 << 20)})
    add(repo, ["m.bin"], cwd=repo.root)
    lattice = f"{sys.executable} -m lattice"
    for command in ("cat m.bin", "log", "ls"):
        proc = subprocess.run(["bash", "-c", f"{lattice} {command} | head -c 1 >/dev/null; echo ${{PIPESTATUS[0]}}"],
                              cwd=repo.root, capture_output=True, text=True, timeout=120)
        assert proc.stdout.strip() in ("141", "0") and proc.stderr == "", (command, proc.stderr)  # 0: it wrote all before head left
    proc = subprocess.run(["bash", "-c", f"{lattice} cat m.bin | true; echo ${{PIPESTATUS[0]}}"], cwd=repo.root, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "141" and proc.stderr == ""
    for command in ("status", "cat m.bin", "add m.bin"):
        proc = subprocess.run(["bash", "-c", f"{lattice} {command} >&-"], cwd=repo.root, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stderr == "", (command, proc.stderr)
    assert run_cli("fsck", cwd=repo.root).code == 0


def test_only_full_or_failing_disks_are_storage_failures():
    import sqlite3

    from lattice.sqlite import storage_failure

    def error(name):
        e = sqlite3.OperationalError("x")
        e.sqlite_errorname = name
        return e

    assert storage_failure(error("SQLITE_IOERR_WRITE"), "/p/index.db").exit_code == 1
    assert storage_failure(error("SQLITE_FULL")) is not None
    assert storage_failure(error("SQLITE_CORRUPT")) is None and storage_failure(sqlite3.DatabaseError("x")) is None


def test_a_full_disk_under_the_index_is_not_called_damage(tmp_repo, monkeypatch):
    """SQLite's "database or disk is full" (here: a page limit, a real
    SQLITE_FULL) is exit 13, the filesystem refusing a write, naming where
    and with a hint about space; not exit 5 "damaged"."""
    import lattice.sqlite

    repo = tmp_repo.gen({"a.txt": "a", **{f"b/{i:03d}.txt": str(i) * 50 for i in range(300)}})
    add(repo, ["a.txt"], cwd=repo.root)
    real = lattice.sqlite._connect

    def full(path, timeout, check_same_thread):
        conn = real(path, timeout, check_same_thread)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn

    with monkeypatch.context() as m:
        m.setattr(lattice.sqlite, "_connect", full)
        r = run_cli("add", "b", cwd=repo.root)
    assert r.code == 13 and f"error: {repo.dir}: could not write the database" in r.err and "free some space" in r.err, r.err
    assert "damaged" not in r.err
    run_cli("fsck", "--repair", cwd=repo.root)  # commits what the manifest got before the index failed
    assert run_cli("fsck", cwd=repo.root).code == 0


def test_an_io_error_on_a_full_disk_is_exit_13(tmp_repo, monkeypatch):
    """SQLite says "disk I/O error" (not "full") when its -shm file cannot
    grow: on a disk with no room left that is exit 13 with a hint about
    space, and on a disk with room the I/O error it is (exit 1)."""
    import sqlite3
    from types import SimpleNamespace

    from lattice.index import Index

    repo = tmp_repo.gen({"a.png": b"img"})
    add(repo, ["a.png"], cwd=repo.root)

    def io_error(self, named=True):
        e = sqlite3.OperationalError("disk I/O error")
        e.sqlite_errorname = "SQLITE_IOERR_SHMSIZE"
        raise e

    monkeypatch.setattr(Index, "working_rows", io_error)
    for free_blocks, code, said in ((3, 13, "no space left on the disk"), (10**6, 1, "could not read or write the database")):
        monkeypatch.setattr(os, "statvfs", lambda path, n=free_blocks: SimpleNamespace(f_bfree=n, f_bavail=n, f_frsize=4096))
        r = run_cli("status", cwd=repo.root)
        assert r.code == code and said in r.err and "damaged" not in r.err, r.err


def test_status_forms_agree_when_config_is_broken(tmp_repo):
    repo = tmp_repo.gen({"a.png": b"img"})
    (repo.dir / "queue.db").touch()  # as after any gen: status then looks for queued work
    with open(repo.dir / "config.toml", "a") as f:
        f.write("this is [ not toml\n")
    text, js = run_cli("status", cwd=repo.root), run_cli("status", "--json", cwd=repo.root)
    assert text.code == js.code == 0 and "new:" in text.out and js.json


def test_quiet_keeps_the_data_asked_for_and_drops_the_chatter(tmp_repo):
    repo = tmp_repo.gen({"a.png": b"img", "b.png": b"new"})
    assert run_cli("-q", "add", "a.png", cwd=repo.root).out == ""  # what it did: chatter
    assert run_cli("-q", "status", "--porcelain", cwd=repo.root).out == "?? b.png\n"
    assert run_cli("-q", "ls", cwd=repo.root).out.startswith("a.png  v1")
    assert run_cli("-q", "log", "a.png", cwd=repo.root).out.startswith("v1")
    assert run_cli("-q", "branch", cwd=repo.root).out == "* main\n"
    assert run_cli("-q", "branch", "feat", cwd=repo.root).out == ""
    assert run_cli("-q", "switch", "feat", cwd=repo.root).out == ""
    assert "would free" in run_cli("-q", "gc", "--dry-run", cwd=repo.root).out


def test_global_flags_may_follow_the_command(tmp_repo):
    """`lattice add FILE -q`, as git takes `git commit -q`: on the fast path
    (add, status) and through typer (tag, queue ls, gen) alike."""
    repo = tmp_repo.gen({"a.png": _PNG_1X1, "b.png": _PNG_1X1 + b"new"})  # pictures: add has nothing to warn of
    r = run_cli("add", "a.png", "-q", cwd=repo.root)
    assert r.code == 0 and r.out == "" and r.err == ""
    assert run_cli("add", "--quiet", "b.png", cwd=repo.root).out == ""
    assert run_cli("tag", "v1", "-q", cwd=repo.root).out == ""
    assert run_cli("tag", "--no-color", cwd=repo.root).out == "v1\n"
    assert run_cli("status", "--porcelain", "-q", cwd=repo.root).code == 0
    assert run_cli("queue", "ls", "-q", "--json", cwd=repo.root).json == []
    r = run_cli("log", "-n", "1", "--quiet", cwd=repo.root)
    assert r.code == 0 and "add b.png" in r.out
    assert run_cli("add", "-x", "a.png", cwd=repo.root).code == 2  # other unknown options stay usage errors


def test_init_resolves_dot_dot_before_looking_for_an_enclosing_repository(tmp_path):
    assert run_cli("init", "p1", cwd=tmp_path).code == 0
    assert run_cli("init", "p1/../p3", cwd=tmp_path).code == 0
    assert run_cli("init", "../p2", cwd=tmp_path / "p1").code == 0
    assert (tmp_path / "p2" / ".lattice").is_dir() and (tmp_path / "p3" / ".lattice").is_dir()
    assert run_cli("init", "p1/inner/..", cwd=tmp_path).code == 4  # that one is p1 itself


@pytest.mark.parametrize("args", [["ls", "--bogus"], ["log", "-n", "0"], ["diff", "a"], ["statu"]])
def test_usage_errors_take_the_error_and_hint_form(tmp_repo, args):
    r = run_cli(*args, cwd=tmp_repo.root)
    lines = r.err.strip().splitlines()
    assert r.code == 2 and len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: `lattice"), r.err


def test_fsck_and_gc_find_every_kind_of_stray_temp_file(tmp_repo):
    """What killed processes leave: a store temp (in the scratch folder or
    one of its per-thread lanes, where manifest batches write too), a view
    link whose object gc evicted since (dangling), a manifest temp, a partial
    working copy beside its asset. fsck names each (and no younger one),
    --repair removes them."""
    repo = tmp_repo.gen({"d/a.png": b"img"})
    add(repo, ["d/a.png"], cwd=repo.root)
    (repo.dir / "objects" / "tmp" / "3").mkdir(parents=True, exist_ok=True)
    stray = [
        repo.dir / "objects" / "tmp" / "obj.tmp-99999-1",
        repo.dir / "objects" / "tmp" / "3" / "obj.tmp-99999-6",
        repo.dir / "objects" / "tmp" / "3" / ".b.png.toml.tmp-99999-7",
        repo.dir / "objects" / "tmp" / "view.tmp-99999-2.mp4",
        repo.dir / "manifest" / "d" / ".a.png.toml.tmp-99999-3",
        repo.root / "d" / ".a.png.tmp-99999-4",
    ]
    young = repo.root / "d" / ".a.png.tmp-99999-5"
    view = repo.dir / "objects" / "tmp" / "view.tmp-99999-2.mp4"
    for p in stray + [young]:
        if p != view:
            p.write_bytes(b"partial")
    os.symlink(repo.dir / "objects" / "ab" / "gone", view)
    old = time.time() - 20 * 86400  # past fsck's hour and gc's 14-day grace
    for p in stray:
        os.utime(p, (old, old), follow_symlinks=False)
    r = run_cli("fsck", "--json", cwd=repo.root)
    assert r.code == 1
    assert sorted(p["subject"] for p in r.json["problems"] if p["kind"] == "temp") == sorted(map(str, stray))
    # gc names them too: each in a dry run, and how many it removes.
    dry = run_cli("gc", "--dry-run", cwd=repo.root).out
    assert all("temp file" in line for line in dry.splitlines() if "tmp-99999" in line) and str(stray[2]) in dry
    assert f"{len(stray)} stray temp file(s) left by interrupted commands" in dry and "would remove" in dry
    assert run_cli("gc", "--dry-run", "--json", cwd=repo.root).json["temp_bytes"] == 7 * (len(stray) - 1) + len(str(repo.dir / "objects" / "ab" / "gone"))
    assert run_cli("fsck", "--repair", cwd=repo.root).code == 0
    assert not any(os.path.lexists(p) for p in stray) and young.exists()
    assert run_cli("fsck", cwd=repo.root).code == 0


def test_names_that_would_clash_in_the_manifest_or_the_tree_are_refused(tmp_repo):
    """`x.toml/…` would need a manifest folder named like asset x's file;
    a folder replaced by a file is one clear error at checkout; '@' has no
    place in a branch name (it reads as PATH@vN)."""
    repo = tmp_repo.gen({"sky.png": b"s", "sky.png.toml/x.png": b"x", "d/a.png": b"a"})
    r = run_cli("add", ".", cwd=repo.root)
    assert r.code == 0 and "skipped sky.png.toml/x.png" in r.err and "cannot hold assets" in r.err
    r = run_cli("add", "sky.png.toml/x.png", cwd=repo.root)
    assert r.code == 4 and "a folder whose name ends in .toml cannot hold assets" in r.err
    import shutil

    shutil.rmtree(repo.root / "d")
    (repo.root / "d").write_text("a file where the folder was")
    r = run_cli("checkout", "d/a.png", cwd=repo.root)
    assert r.code == 4 and "d is a file, so nothing can be created under it" in r.err and "move d aside" in r.err
    r = run_cli("branch", "x@v2", cwd=repo.root)
    assert r.code == 4 and "not a valid branch name" in r.err
    assert run_cli("fsck", cwd=repo.root).code == 0


def test_a_file_is_tracked_by_its_real_path_not_through_a_linked_folder(tmp_repo):
    repo = tmp_repo.gen({"real/b.png": b"b"})
    (repo.root / "alias").symlink_to(repo.root / "real")
    r = run_cli("add", "alias/b.png", cwd=repo.root)
    assert r.code == 4 and "goes through, a symbolic link" in r.err and "name it real/b.png" in r.err
    r = run_cli("gen", "alias/a.txt", "--model", "test.text", cwd=repo.root)
    assert r.code == 4 and not (repo.root / "real" / "a.txt").exists()
    assert run_cli("add", ".", cwd=repo.root).code == 0
    assert [row.path for row in Repository.find(repo.root).index.rows()] == ["real/b.png"]
    # The project itself reached through a link: an absolute path typed that way is inside.
    linked = repo.root.parent / "linked-project"
    linked.symlink_to(repo.root)
    (repo.root / "c.png").write_bytes(b"c")
    assert run_cli("add", str(linked / "c.png"), cwd=repo.root).code == 0


@pytest.mark.parametrize("part", ["manifest", "objects", "objects/tmp", "tmp"])
def test_a_store_folder_that_is_a_link_is_refused(tmp_repo, tmp_path, part):
    """A clone or a hand could point a folder lattice writes into anywhere
    (another filesystem, where renames into the store fail): exit 5, named."""
    import shutil

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = tmp_repo.dir / part
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(elsewhere, target)
    (tmp_repo.root / "a.txt").write_text("a")
    r = run_cli("add", "a.txt", cwd=tmp_repo.root)
    assert r.code == 5 and f"{target} is a symbolic link" in r.err, r.err


@pytest.mark.parametrize("text", ['[["../../outside/payload", "../../outside/important.conf"]]',
                                  '[["/tmp/x", "/tmp/y"]]', "[1]", '{"x": 1}', '[["a", "b", "c"]]', "not json"])
def test_a_batch_journal_that_is_no_journal_is_refused_and_set_aside(tmp_repo, tmp_path, text):
    """The journal is read from disk: one naming paths outside the project
    (absolute, or climbing out) or of the wrong shape renames nothing; every
    command stops with exit 5 until `fsck --repair` sets it aside."""
    outside = tmp_repo.root.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "payload").write_text("evil")
    (outside / "important.conf").write_text("keep me")
    (tmp_repo.dir / "batch-journal").write_text(text)
    r = run_cli("status", cwd=tmp_repo.root)
    assert r.code == 5 and "batch-journal is damaged" in r.err and "fsck --repair" in r.err, r.err
    assert (outside / "important.conf").read_text() == "keep me" and (outside / "payload").exists()
    r = run_cli("fsck", "--json", cwd=tmp_repo.root)
    assert r.code == 1 and [p["kind"] for p in r.json["problems"]] == ["journal"]
    assert run_cli("fsck", "--repair", cwd=tmp_repo.root).code == 0
    assert not (tmp_repo.dir / "batch-journal").exists() and run_cli("status", cwd=tmp_repo.root).code == 0


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "serial"])
def test_the_first_status_after_a_killed_batch_sees_it_finished(tmp_repo, monkeypatch, fork):
    """status finishes the batch before it looks at the manifest (the
    forked check included): its files are tracked, none of them "new"."""
    import signal

    import lattice.beside
    from test_history import _STOPPED_ADD

    if not fork:
        monkeypatch.setattr(lattice.beside, "can_fork", lambda: False)
    repo = tmp_repo.gen({f"batch/f{i:02}.png": f"take {i}" for i in range(60)})
    proc = subprocess.run([sys.executable, "-c", _STOPPED_ADD, "0"], cwd=repo.root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL and (repo.dir / "batch-journal").exists()
    r = run_cli("status", "--porcelain", cwd=repo.root)
    assert (r.code, r.out) == (0, ""), r.out[:300]
    assert not (repo.dir / "batch-journal").exists()


def test_a_batch_killed_midway_is_finished_where_the_project_now_is(tmp_repo, tmp_path):
    """Its journal names paths inside .lattice: the project moved after the
    crash finishes its own batch, whole, and touches nothing where it was."""
    import shutil
    import signal

    from test_history import _STOPPED_ADD

    repo = tmp_repo.gen({f"batch/f{i:02}.txt": f"take {i}" for i in range(60)})
    proc = subprocess.run([sys.executable, "-c", _STOPPED_ADD, "0"], cwd=repo.root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL and (repo.dir / "batch-journal").exists()
    moved = tmp_path / "moved"
    shutil.move(repo.root, moved)
    r = run_cli("ls", cwd=moved)
    assert r.code == 0 and len(r.out.splitlines()) == 60
    assert not repo.root.exists() and run_cli("fsck", cwd=moved).code == 0


def test_a_manifest_batch_whose_scratch_is_on_another_filesystem_writes_beside_its_files(tmp_path):
    """A store mounted elsewhere: renames from its scratch folder would cross
    filesystems, so temp files go beside their targets instead."""
    from lattice.fsutil import AtomicBatch

    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs a second filesystem at /dev/shm")
    scratch = shm / f"lattice-scratch-{os.getpid()}"
    try:
        batch = AtomicBatch(tmp_path, scratch=scratch, journal=tmp_path / "journal")
        for i in range(40):
            batch.write(tmp_path / "m" / f"{i}.toml", f"{i}".encode())
        batch.commit()
        assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted(f"{i}.toml" for i in range(40))
        assert not (tmp_path / "journal").exists()
    finally:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)


def test_a_scratch_lane_that_is_a_link_is_refused(tmp_repo, tmp_path):
    import lattice.fsutil as fsutil

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    tmp = tmp_repo.dir / "objects" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    for n in range(fsutil.SCRATCH_LANES):
        lane = tmp / str(n)
        if lane.exists():
            lane.rmdir()
        lane.symlink_to(elsewhere)
    fsutil._lanes_made.clear()
    (tmp_repo.root / "a.txt").write_text("a")
    r = run_cli("add", "a.txt", cwd=tmp_repo.root)
    assert r.code == 5 and "is a symbolic link" in r.err, r.err
    assert list(elsewhere.iterdir()) == []


def test_a_new_batch_finishes_a_pending_journal_before_writing_its_own(tmp_path):
    """A batch that failed midway in this process left its journal: the next
    one rolls it forward first instead of writing over it."""
    import json

    from lattice.fsutil import AtomicBatch

    (tmp_path / "m").mkdir()
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "left").write_text("from the first batch")
    (tmp_path / "journal").write_text(json.dumps([["t/left", "m/b.toml"], ["t/gone", "m/a.toml"]]))
    batch = AtomicBatch(tmp_path, journal=tmp_path / "journal")
    batch.write(tmp_path / "m" / "c.toml", b"c")
    batch.write(tmp_path / "m" / "d.toml", b"d")
    batch.commit()
    assert (tmp_path / "m" / "b.toml").read_text() == "from the first batch"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["b.toml", "c.toml", "d.toml"]
    assert not (tmp_path / "journal").exists()


def test_checkout_of_a_folder_restores_every_asset_under_it(tmp_repo):
    """As `git checkout DIR`: a folder names its assets, `.` all of them; a
    name that is neither is still one clear unknown-asset error."""
    repo = tmp_repo.gen({"shots/a.png": b"a", "shots/deep/b.png": b"b", "shotsx.png": b"x", "top.png": b"t"})
    add(repo, ["."], cwd=repo.root)
    for name in ("shots/a.png", "shots/deep/b.png", "shotsx.png", "top.png"):
        (repo.root / name).write_bytes(b"edited")
    r = run_cli("checkout", "shots", "--json", cwd=repo.root)
    assert r.code == 0 and sorted(e["path"] for e in r.json) == ["shots/a.png", "shots/deep/b.png"]
    assert (repo.root / "shots/deep/b.png").read_bytes() == b"b" and (repo.root / "shotsx.png").read_bytes() == b"edited"
    r = run_cli("checkout", ".", "--json", cwd=repo.root / "shots")
    assert r.code == 0 and sorted(e["path"] for e in r.json) == ["shots/a.png", "shots/deep/b.png"]
    r = run_cli("checkout", ".", cwd=repo.root)
    assert r.code == 0 and (repo.root / "shotsx.png").read_bytes() == b"x" and (repo.root / "top.png").read_bytes() == b"t"
    r = run_cli("checkout", "shot", cwd=repo.root)
    assert r.code == 4 and "no asset named shot" in r.err


def test_a_roll_forward_that_cannot_place_a_file_says_which_and_goes_on(tmp_path):
    """A rename the journal asks for fails (a folder now stands there): the
    others are done, the journal removed, the failure named, its temp kept
    for fsck to report."""
    import json

    from lattice.fsutil import AtomicBatch

    (tmp_path / "m" / "b.toml").mkdir(parents=True)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "x").write_text("a")
    (tmp_path / "t" / "y").write_text("b")
    (tmp_path / "journal").write_text(json.dumps([["t/x", "m/a.toml"], ["t/y", "m/b.toml"]]))
    failed = AtomicBatch.roll_forward(tmp_path / "journal", tmp_path)
    assert len(failed) == 1 and failed[0].startswith("m/b.toml: ")
    assert (tmp_path / "m" / "a.toml").read_text() == "a" and (tmp_path / "t" / "y").exists()
    assert not (tmp_path / "journal").exists()


# -- the filesystem refusing writes (exit 13) ------------------------------------


def _lattice(prefix: list[str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "lattice", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _one_error(proc: subprocess.CompletedProcess, code: int, starts: str) -> None:
    lines = proc.stderr.splitlines()
    assert proc.returncode == code and len(lines) == 2, proc.stderr
    assert lines[0].startswith(f"error: {starts}") and lines[1].startswith("hint: "), proc.stderr


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_read_only_repository_exits_13_naming_the_path_and_changes_nothing(tmp_repo):
    """`chmod -R a-w .lattice`: every writing command exits 13 with one
    error line naming where it may not write and a hint, no traceback;
    nothing in .lattice changes."""
    prefix = unprivileged()
    repo = tmp_repo.gen({"a.txt": "a", "b.txt": "b"})
    assert run_cli("add", "a.txt", cwd=repo.root).code == 0
    assert run_cli("gen", "c.txt", "--model", "test.text", "--seed", "1", cwd=repo.root).code == 0
    assert run_cli("regen", "c.txt", "--seed", "2", cwd=repo.root).code == 0
    before = _files(repo.dir)
    folders = [repo.dir, *(p for p in repo.dir.rglob("*") if p.is_dir())]
    for p in repo.dir.rglob("*"):
        if p.is_file():
            p.chmod(0o444)
    for d in folders:
        d.chmod(0o555)
    try:
        for args in (["add", "b.txt"], ["gen", "d.txt", "--model", "test.text"], ["regen", "c.txt", "--seed", "9"],
                     ["tag", "v1"], ["restore", "c.txt@v1"], ["pin", "c.txt@v1"]):
            _one_error(_lattice(prefix, *args, cwd=repo.root), 13, str(repo.dir))
    finally:
        for d in folders:
            d.chmod(0o755)
    assert _files(repo.dir) == before
    assert run_cli("fsck", cwd=repo.root).code == 0


def test_a_file_lattice_may_not_read_is_named_as_one(tmp_repo):
    """A refused read is no refused write: the hint asks for read permission."""
    prefix = unprivileged()
    repo = tmp_repo.gen({"in.png": b"png"})
    (repo.root / "in.png").chmod(0o000)
    try:
        proc = _lattice(prefix, "add", "in.png", cwd=repo.root)
        _one_error(proc, 13, f"{repo.root / 'in.png'}: permission denied (lattice may not read it)")
        assert "read permission" in proc.stderr and repo.manifest.read("in.png") is None
    finally:
        (repo.root / "in.png").chmod(0o644)
    assert run_cli("add", "in.png", cwd=repo.root).code == 0
    (repo.root / "in.png").chmod(0o644)
    folder = repo.manifest.dir
    folder.chmod(0o000)
    try:
        proc = _lattice(prefix, "status", cwd=repo.root)
        _one_error(proc, 13, f"{folder}: permission denied (lattice may not read it)")
    finally:
        folder.chmod(0o755)


def test_a_folder_lattice_may_not_read_is_named_not_passed_over_in_silence(tmp_repo):
    """status and add say which folder they could not look into, as git
    does, and go on with the rest."""
    prefix = unprivileged()
    repo = tmp_repo.gen({"a.png": b"a", "hid/n.png": b"n", "shots/s.png": b"s"})
    (repo.root / "hid").chmod(0o000)
    try:
        proc = _lattice(prefix, "status", "--porcelain", cwd=repo.root)
        assert proc.returncode == 0 and proc.stdout == "?? a.png\n?? shots/s.png\n", proc.stdout
        assert proc.stderr == "warning: skipped hid/: a folder lattice may not read (give yourself read permission to see what is in it)\n"
        proc = _lattice(prefix, "add", ".", "-q", cwd=repo.root)
        assert proc.returncode == 0 and "warning: skipped hid/: a folder lattice may not read" in proc.stderr, proc.stderr
        assert sorted(repo.index.names()) == ["a.png", "shots/s.png"]
    finally:
        (repo.root / "hid").chmod(0o755)


def test_a_read_only_working_folder_exits_13_before_anything_is_recorded(tmp_repo):
    """A folder of the working tree that may not be written: gen, regen and
    restore refuse before they record or render anything; a render that
    finds out after recording says what it recorded. Always exit 13, the
    folder named, no temp file left."""
    prefix = unprivileged()
    repo = tmp_repo.gen({"s.txt": "source"})
    assert run_cli("add", "s.txt", cwd=repo.root).code == 0
    for args in (["d/x.txt", "--model", "test.join", "-i", "s.txt"], ["d/y.txt", "--model", "test.text", "--seed", "1"]):
        assert run_cli("gen", *args, cwd=repo.root).code == 0
    assert run_cli("regen", "d/y.txt", "--seed", "2", cwd=repo.root).code == 0
    (repo.root / "s.txt").write_text("new source")
    assert run_cli("add", "s.txt", cwd=repo.root).code == 0  # d/x.txt is stale now
    jobs = len(run_cli("queue", "ls", "--json", cwd=repo.root).json)
    folder = repo.root / "d"
    folder.chmod(0o555)
    try:
        for args in (["gen", "d/z.txt", "--model", "test.text"], ["gen", "d/new/z.txt", "--model", "test.text"],
                     ["regen", "d/y.txt", "--seed", "3"], ["restore", "d/y.txt@v1"]):
            _one_error(_lattice(prefix, *args, cwd=repo.root), 13, f"{folder}: permission denied")
        assert len(run_cli("queue", "ls", "--json", cwd=repo.root).json) == jobs  # nothing was queued
        assert [len(repo.record(n).versions) for n in ("d/x.txt", "d/y.txt")] == [1, 2]
        proc = _lattice(prefix, "render", cwd=repo.root)
        assert proc.returncode == 13 and "Traceback" not in proc.stderr, proc.stderr
        assert f"failed: d/x.txt: d/x.txt v2 was recorded, but its working file could not be written: {folder}: permission denied" in proc.stderr
    finally:
        folder.chmod(0o755)
    assert sorted(os.listdir(folder)) == ["x.txt", "y.txt"]
    assert [p.name for p in (repo.dir / "tmp").iterdir() if not p.name.startswith("key-")] == []
    assert run_cli("render", cwd=repo.root).code == 0 and run_cli("fsck", cwd=repo.root).code == 0


@pytest.mark.parametrize("what", ["project", "working tree"])
def test_a_read_only_filesystem_exits_13(tmp_repo, what):
    """The project on a read-only mount (or only its working tree, .lattice
    mounted writable): exit 13, "read-only filesystem" said, nothing
    recorded. Needs a private mount namespace (`unshare -rm`)."""
    import shutil

    repo = tmp_repo.gen({"a.txt": "a"})
    assert run_cli("gen", "c.txt", "--model", "test.text", cwd=repo.root).code == 0
    keep = 'mount --bind "$1/.lattice" "$1/.lattice" && ' if what == "working tree" else ""
    script = keep + 'mount --rbind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && cd "$1" && shift && exec "$@"'
    unshare = shutil.which("unshare")
    prefix = [unshare, "-rm", "sh", "-c", script, "sh", str(repo.root)] if unshare else []
    if not prefix or subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("no private mount namespace here (unshare -rm)")
    for args in (["gen", "d.txt", "--model", "test.text"], ["regen", "c.txt", "--seed", "5"]):
        proc = _lattice(prefix, *args, cwd=repo.root)
        _one_error(proc, 13, str(repo.root))
        assert "read-only" in proc.stderr
    assert repo.manifest.read("d.txt") is None and len(repo.record("c.txt").versions) == 1


def test_a_killed_workers_scratch_output_is_reported_by_fsck_and_swept(tmp_repo):
    """`lattice worker` SIGKILLed while its generator writes leaves the
    scratch output `.lattice/tmp/out-*`. fsck reports it once it is older
    than an hour (a younger one may be a live worker's), as it does other
    temps, and --repair removes it; gc removes one past its grace period."""
    import signal

    script = ("import os, sys, time\nopen('gen.pid', 'w').write(str(os.getpid()))\n"
              "f = open(sys.argv[1], 'w'); f.write('partial'); f.flush()\ntime.sleep(60)\n")
    (tmp_repo.root / "slow.py").write_text(script)
    cfg = tmp_repo.dir / "config.toml"
    cfg.write_text(cfg.read_text() + f"\n[generators.slow]\nargv = {json.dumps([sys.executable, 'slow.py', '{output}'])}\n"
                   'extensions = ["txt"]\n')
    assert run_cli("trust", cwd=tmp_repo.root).code == 0
    assert run_cli("gen", "a.txt", "--model", "slow", "--detach", cwd=tmp_repo.root).code == 0
    worker = subprocess.Popen([sys.executable, "-m", "lattice", "worker", "--slots", "1"], cwd=tmp_repo.root,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list((tmp_repo.dir / "tmp").glob("out-*")) or not (tmp_repo.root / "gen.pid").exists():
            assert time.monotonic() < deadline and worker.poll() is None, "the generator never started"
            time.sleep(0.05)
    finally:
        worker.kill()
        worker.wait()
    time.sleep(0.2)  # the pid file is written before the output: let it be complete
    with contextlib.suppress(ProcessLookupError, ValueError):
        os.kill(int((tmp_repo.root / "gen.pid").read_text()), signal.SIGKILL)  # its own session: not killed with the worker
    [out] = (tmp_repo.dir / "tmp").glob("out-*")
    second = out.with_name("out-0123456789abcdef.txt")
    second.write_text("partial")

    def temps() -> list[str]:
        r = run_cli("fsck", "--json", cwd=tmp_repo.root)
        return sorted(p["subject"] for p in r.json["problems"] if p["kind"] == "temp")

    assert temps() == []  # young: maybe a live worker's
    hours_ago, days_ago = time.time() - 2 * 3600, time.time() - 20 * 86400
    os.utime(out, (hours_ago, hours_ago))
    os.utime(second, (days_ago, days_ago))
    assert temps() == sorted([str(out), str(second)])
    dry = run_cli("gc", "--dry-run", cwd=tmp_repo.root).out
    assert str(second) in dry and str(out) not in dry  # gc waits for its grace period
    assert run_cli("gc", cwd=tmp_repo.root).code == 0
    assert not second.exists() and out.exists()
    assert run_cli("fsck", "--repair", cwd=tmp_repo.root).code == 0
    assert not out.exists() and temps() == []


@pytest.mark.parametrize("kind", ["zero", "fifo"])
def test_a_config_that_is_no_regular_file_is_refused_not_read_forever(tmp_repo, kind):
    """A cloned project's .lattice/config.toml may be a link to /dev/zero
    (read until memory runs out) or a FIFO (open blocks for ever)."""
    cfg = tmp_repo.dir / "config.toml"
    cfg.unlink()
    if kind == "zero":
        cfg.symlink_to("/dev/zero")
    else:
        os.mkfifo(cfg)
    r = run_proc("gen", "a.png", "--model", "ffmpeg.testsrc", cwd=tmp_repo.root, timeout=60)
    assert r.returncode == 5 and r.stderr == f"error: {cfg} is not a regular file\nhint: make it the project's config: a TOML file\n", r.stderr
