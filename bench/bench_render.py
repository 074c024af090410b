"""Render benchmarks for the recipes issue (run by hand; never part of tests).

    python bench/bench_render.py [--assets 10000]

Prints, measured in one run on this machine:
  1. no-op `lattice render` on N up-to-date assets, start-up included (target < 0.5 s),
     next to `lattice status` and a bare `python -c pass` start-up floor;
  2. planning a render of an N-node DAG after its root changed (target < 1 s);
  3. a cache-hit `lattice gen` of one asset, start-up included (target < 0.25 s);
  4. rendering a 5 s 720p ffmpeg.mandelbrot clip through `lattice gen` vs running
     the very same ffmpeg argv directly (target ratio <= 1.1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from installed import install

LATTICE = [sys.executable, "-m", "lattice"]  # until main() installs a copy


def timed(argv, cwd, runs=5) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def synth_project(root: Path, n: int) -> None:
    """N generated assets in a chain of small DAGs, all up to date, written
    through the library (running N generators would measure ffmpeg, not us)."""
    from lattice.records import AssetRecord, Recipe, Version
    from lattice.recipe import recipe_key
    from lattice.repo import Repository
    from lattice.worktree import materialize

    repo = Repository.init(root)
    records = []
    prev = None
    for i in range(n):
        name = f"shots/s{i // 100:03d}/a{i:05d}.txt"
        data = f"asset {i}\n".encode()
        oid = repo.objects.put_bytes(data, compress=False).oid
        inputs, objs = ([prev[0]], [prev[1]]) if prev and i % 10 else ([], [])
        recipe = Recipe(generator="test.text", generator_version="1", seed=i, params={"word": "x"}, inputs=inputs, input_objects=objs)
        recipe.key = recipe_key(recipe)
        v = Version(number=1, change="initial", time="2026-11-22T00:00:00Z", author="bench", object=oid, size=len(data), recipe=recipe)
        records.append(AssetRecord(path=name, kind="other", versions=[v]))
        prev = (name, oid)
    with repo.transaction(f"bench: {n} assets") as tx:
        for r in records:
            tx.put(r)
    for r in records:
        materialize(repo, r.path, r.current.object, r.current.size)
    old = time.time() - 10  # outside the racy-stat window, as files are in real life
    for r in records:
        os.utime(root / r.path, (old, old))
    from lattice.status import status

    status(repo)  # fill the stat cache, as the first status after a checkout does


def bench_noop(n: int, work: Path) -> None:
    root = work / "noop"
    t = time.perf_counter()
    synth_project(root, n)
    print(f"  (built a {n}-asset project in {time.perf_counter() - t:.1f} s)")
    floor = timed([sys.executable, "-c", "pass"], root)
    render = timed([*LATTICE, "render"], root)
    status = timed([*LATTICE, "status"], root)
    check = timed([*LATTICE, "render", "--check"], root)
    print(f"1. no-op render, {n} assets: {render:.3f} s (target < 0.5 s); render --check {check:.3f} s; status {status:.3f} s; python start-up floor {floor:.3f} s")


def bench_plan(n: int, work: Path) -> None:
    from lattice.lineage import Graph

    # A DAG: each node depends on up to two earlier ones.
    edges, effective = [], {}
    for i in range(n):
        effective[f"n{i}"] = f"o{i}"
        for p in {i // 2, i - 1}:
            if 0 <= p < i:
                edges.append((f"n{i}", f"n{p}", f"o{p}"))
    effective["n0"] = "changed"
    t = time.perf_counter()
    g = Graph(edges, effective)
    stale = g.stale()
    order = g.order(stale)
    dt = time.perf_counter() - t
    print(f"2. planning a {n}-node DAG after its root changed: {dt:.3f} s for {len(order)} steps (target < 1 s)")


def bench_cache_hit(work: Path) -> None:
    root = work / "hit"
    subprocess.run([*LATTICE, "init", str(root)], check=True, stdout=subprocess.DEVNULL)
    args = ["--model", "ffmpeg.testsrc", "--set", "width=64", "--set", "height=48", "--seed", "1"]
    subprocess.run([*LATTICE, "gen", "a.png", *args], cwd=root, check=True, stdout=subprocess.DEVNULL)
    times = []
    for i in range(5):
        t = time.perf_counter()
        subprocess.run([*LATTICE, "gen", f"copy{i}.png", *args], cwd=root, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    floor = timed([sys.executable, "-c", "pass"], root)
    print(f"3. cache-hit gen of one asset: {statistics.median(times):.3f} s (target < 0.25 s; python start-up floor {floor:.3f} s)")


def bench_overhead(work: Path) -> None:
    import lattice.childproc as childproc
    from lattice.generators import load
    from lattice.generators.base import RunContext

    # Capture the exact ffmpeg argv the generator runs.
    seen = []
    real = childproc.run_child

    def spy(argv, **kw):
        seen.append(list(argv))
        return real(argv, **kw)

    childproc.run_child = spy
    import lattice.ffmpeg as ff

    if hasattr(ff, "run_child"):
        ff.run_child = spy
    gen = load(None).get("ffmpeg.mandelbrot")
    params = gen.normalize({"width": 1280, "height": 720, "duration": 5})
    out = work / "probe.mp4"
    gen.run(RunContext(params=params, seed=1, prompt="", negative_prompt="", inputs=[], output=out))
    childproc.run_child = real
    argv = seen[-1]
    direct_out = str(out)
    direct = timed(argv, work, runs=3)
    root = work / "overhead"
    subprocess.run([*LATTICE, "init", str(root)], check=True, stdout=subprocess.DEVNULL)
    times = []
    for i in range(3):
        t = time.perf_counter()
        subprocess.run([*LATTICE, "gen", f"clip{i}.mp4", "--model", "ffmpeg.mandelbrot", "--set", "width=1280",
                        "--set", "height=720", "--set", "duration=5", "--seed", str(100 + i)], cwd=root, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    via = statistics.median(times)
    print(f"4. 5 s 720p mandelbrot: through lattice {via:.2f} s, ffmpeg directly {direct:.2f} s, ratio {via / direct:.2f} (target <= 1.1)  [{direct_out}]")


def use_compiled_copy(work: Path) -> None:
    """Run lattice as a regular install does (bench/installed.py), here and
    in the processes started below."""
    argv, site = install(work)
    LATTICE[:] = argv
    os.environ["PYTHONPATH"] = str(site)
    sys.path.insert(0, str(site))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--assets", type=int, default=10_000)
    ap.add_argument("--skip-video", action="store_true")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lattice-bench-"))
    use_compiled_copy(work)
    try:
        bench_noop(a.assets, work)
        bench_plan(a.assets, work)
        bench_cache_hit(work)
        if not a.skip_video:
            bench_overhead(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
