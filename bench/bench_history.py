"""Benchmark of version history (run by hand: `.venv/bin/python bench/bench_history.py`).

1. Cost a history commit adds to one operation on a project of 10,000 assets
   (a transaction recording one version, with and without history), for
   assets spread over 100 folders and for one flat folder.
2. `lattice log PATH` on an asset with 1,000 versions, start-up included.
3. `lattice switch` between branches differing in 1,000 assets (manifest,
   index and working files) vs `git switch` on an equal tree of files.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lattice import history, history_pending  # noqa: E402
from lattice.records import AssetRecord, Recipe, Version  # noqa: E402
from lattice.repo import Repository  # noqa: E402
from installed import install  # noqa: E402

OID = "ab" * 32
ENV = {**os.environ, "LATTICE_AUTHOR": "bench", "NO_COLOR": "1"}
LATTICE = [sys.executable, "-m", "lattice"]  # until main() installs a copy


def version(n: int, oid: str = OID, size: int = 1024) -> Version:
    recipe = Recipe(generator="ffmpeg.testsrc", generator_version="1", seed=n, params={"width": 64, "height": 64}, key="cd" * 32)
    return Version(number=n, change="initial" if n == 1 else "regenerated", time="2025-01-01T00:00:00Z", author="bench", object=oid, size=size, recipe=recipe)


def make_repo(root: Path, names: list[str], objects: dict[str, str] | None = None) -> Repository:
    repo = Repository.init(root)
    with repo.transaction(f"add {len(names)} assets") as tx:
        for name in names:
            tx.put(AssetRecord(path=name, kind="image", versions=[version(1, (objects or {}).get(name, OID))]))
    return repo


def bump(repo: Repository, name: str) -> None:
    with repo.transaction(f"regen {name}") as tx:
        record = tx.read(name)
        record.versions.append(version(len(record.versions) + 1))
        tx.put(record)


def per_op(repo: Repository, names: list[str], ops: int = 60) -> float:
    """Median seconds of one transaction recording one version."""
    times = []
    for i in range(ops):
        t = time.perf_counter()
        bump(repo, names[(i * 97) % len(names)])
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_commit(tmp: Path) -> None:
    import pygit2  # noqa: F401  (imported once per process; measured separately below)

    layouts = {
        "100 folders": [f"shots/s{i // 100:03d}/a{i:05d}.png" for i in range(10_000)],
        "one folder": [f"a{i:05d}.png" for i in range(10_000)],
    }
    for label, names in layouts.items():
        repo = make_repo(tmp / label.replace(" ", "-"), names)
        with_history = per_op(repo, names)
        real_begin, real_finish = history_pending.begin, history_pending.finish
        history_pending.begin = lambda repo, *a, **k: None
        history_pending.finish = lambda *a, **k: None
        try:
            without = per_op(repo, names)
        finally:
            history_pending.begin, history_pending.finish = real_begin, real_finish
        history.commit(repo, "catch up")
        print(f"commit on 10,000 assets ({label}): {without * 1000:.1f} ms without history, "
              f"{with_history * 1000:.1f} ms with: +{(with_history - without) * 1000:.1f} ms per operation "
              f"(ratio {with_history / without:.2f}x)")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import pygit2"], check=True)
    t1 = time.perf_counter() - t
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    t0 = time.perf_counter() - t
    print(f"  (one-off per process: importing pygit2 {(t1 - t0) * 1000:.0f} ms)")


def cli(root: Path, *args: str) -> float:
    t = time.perf_counter()
    subprocess.run([*LATTICE, *args], cwd=root, env=ENV, check=True, capture_output=True)
    return time.perf_counter() - t


def bench_log(tmp: Path) -> None:
    repo = Repository.init(tmp / "log")
    record = AssetRecord(path="sky.png", kind="image", versions=[version(n) for n in range(1, 1001)])
    with repo.transaction("1,000 versions") as tx:
        tx.put(record)
    text = statistics.median(cli(repo.root, "log", "sky.png") for _ in range(5))
    js = statistics.median(cli(repo.root, "log", "sky.png", "--json") for _ in range(5))
    base = statistics.median(cli(repo.root, "--version") for _ in range(5))
    print(f"lattice log PATH, 1,000 versions: {text * 1000:.0f} ms text, {js * 1000:.0f} ms --json "
          f"(start-up alone {base * 1000:.0f} ms; ratio to start-up {text / base:.2f}x; budget 300 ms)")


def bench_switch(tmp: Path, total: int = 5000, differ: int = 1000) -> None:
    from lattice.worktree import materialize

    names = [f"shots/s{i // 100:03d}/a{i:05d}.png" for i in range(total)]
    root = tmp / "switch"
    root.mkdir()
    repo = Repository.init(root)
    objects = {n: repo.objects.put_bytes(f"{n} main".encode() * 40, compress=False).oid for n in names}
    with repo.transaction(f"add {total} assets") as tx:
        for n in names:
            tx.put(AssetRecord(path=n, kind="image", versions=[version(1, objects[n], 1024)]))
    for n in names:
        materialize(repo, n, objects[n])
    run = lambda *a: subprocess.run([*LATTICE, *a], cwd=root, env=ENV, check=True, capture_output=True)  # noqa: E731
    run("branch", "feat")
    run("switch", "feat")
    changed = names[::total // differ][:differ]
    with repo.transaction(f"regen {differ} assets") as tx:
        for n in changed:
            oid = repo.objects.put_bytes(f"{n} feat".encode() * 40, compress=False).oid
            record = tx.read(n)
            record.versions.append(Version(number=2, change="regenerated", time="2025-01-02T00:00:00Z", author="bench", object=oid, size=len(f"{n} feat") * 40))
            tx.put(record)
            objects[n] = oid
    for n in changed:
        materialize(repo, n, objects[n])
    assert cli(root, "switch", "main") and (root / changed[0]).read_bytes().endswith(b" main")

    groot = tmp / "git"
    groot.mkdir()
    g = lambda *a: subprocess.run(["git", *a], cwd=groot, check=True, capture_output=True)  # noqa: E731
    g("init", "-q", "-b", "main")
    g("config", "user.email", "b@x")
    g("config", "user.name", "b")
    for n in names:
        p = groot / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(f"{n} main".encode() * 40)
    g("add", "-A")
    g("commit", "-qm", "main")
    g("switch", "-qc", "feat")
    for n in changed:
        (groot / n).write_bytes(f"{n} feat".encode() * 40)
    g("commit", "-qam", "feat")
    g("switch", "-q", "main")
    # Interleaved, so that both see the same disk: this VM's metadata
    # operations vary several-fold from one minute to the next.
    lat, gt = [], []
    for target in ("feat", "main") * 4:
        lat.append(cli(root, "switch", target))
        t = time.perf_counter()
        g("switch", "-q", target)
        gt.append(time.perf_counter() - t)
    assert (root / changed[0]).read_bytes().endswith(b" main")
    a, b = statistics.median(lat), statistics.median(gt)
    print(f"switch, {total} assets, {differ} differ: lattice {a * 1000:.0f} ms, git {b * 1000:.0f} ms (ratio {a / b:.1f}x)")


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="lattice-bench-history-"))
    try:
        argv, site = install(tmp)  # run as a regular install runs (bench/installed.py)
        LATTICE[:] = argv
        ENV["PYTHONPATH"] = str(site)
        bench_commit(tmp)
        bench_log(tmp)
        if shutil.which("git"):
            bench_switch(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
