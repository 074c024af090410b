"""Storage benchmarks, run by hand: `.venv/bin/python bench/bench_storage.py`.

  gc planning over 100,000 objects (10,000 assets x 10 versions)   target < 5 s
  du on 10,000 assets                                              target < 0.5 s
  export --format mp4 of a 10 s 720p clip vs ffmpeg directly       target within 1.2x

The synthetic repository is written directly (manifest files, index rows,
tiny objects) rather than through 100,000 renders.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ASSETS, VERSIONS = 10_000, 10


def synthetic(root: Path):
    import blake3

    from lattice.records import AssetRecord, Recipe, Version
    from lattice.recipe import recipe_key
    from lattice.repo import Repository

    repo = Repository.init(root)
    objdir = repo.objects.dir
    with repo.index as index:
        for a in range(ASSETS):
            name = f"shots/s{a // 100:03d}/a{a:05d}.png"
            versions = []
            for n in range(1, VERSIONS + 1):
                data = f"{name} v{n}".encode()
                oid = blake3.blake3(data).hexdigest()
                (objdir / oid[:2]).mkdir(exist_ok=True)
                (objdir / oid[:2] / oid[2:]).write_bytes(data)
                r = Recipe("ffmpeg.testsrc", "1", n, {"width": 64, "height": 48})
                r.key = recipe_key(r)
                versions.append(Version(n, "initial" if n == 1 else "regenerated", "2020-01-01T00:00:00Z", "bench", oid, len(data), recipe=r))
            record = AssetRecord(name, "image", versions=versions)
            path = repo.manifest.file_of(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(repo.manifest.encode(record))
            index.put(record, path.stat())
    old = time.time() - 30 * 86400  # everything last used a month ago
    for shard in os.scandir(objdir):
        if shard.is_dir() and len(shard.name) == 2:
            for e in os.scandir(shard.path):
                os.utime(e.path, (old, old))
    return repo


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def bench_gc_and_du(tmp: Path) -> None:
    from lattice.du import disk_usage
    from lattice.gc import GcOptions, plan_gc

    t, repo = timed(lambda: synthetic(tmp / "big"))
    print(f"setup: {ASSETS} assets x {VERSIONS} versions written in {t:.1f} s")
    opts = GcOptions(keep_versions=3)  # ten versions each: the newest three stay
    cold, plan = timed(lambda: plan_gc(repo, opts))
    warm, plan = timed(lambda: plan_gc(repo, opts))
    print(f"gc plan over {plan.objects} objects: cold {cold:.2f} s (parses manifests once), warm {warm:.2f} s "
          f"-> {len(plan.evictions)} evictions  [target < 5 s]")
    t, report = timed(lambda: disk_usage(repo))
    print(f"du on {report.total.assets} assets x {VERSIONS} versions: {t:.2f} s")
    single = synthetic_one_version(tmp / "flat")
    disk_usage(single)  # first run fills the facts cache
    t, report = timed(lambda: disk_usage(single))
    print(f"du on {report.total.assets} assets (one version each): {t:.2f} s  [target < 0.5 s]")


def synthetic_one_version(root: Path):
    global VERSIONS
    saved, VERSIONS = VERSIONS, 1
    try:
        return synthetic(root)
    finally:
        VERSIONS = saved


def bench_export(tmp: Path) -> None:
    from lattice.cli.entry import run
    from lattice.export import ExportOptions, export
    from lattice.export_encode import ffmpeg_args
    from lattice.ffmpeg import ffmpeg_exe
    from lattice.repo import Repository

    root = tmp / "clip"
    Repository.init(root)
    t, code = timed(lambda: run(["-q", "-C", str(root), "gen", "clip.mp4", "--model", "ffmpeg.testsrc", "--seed", "1", "--set", "width=1280",
                              "--set", "height=720", "--set", "duration=10", "--set", "pattern=testsrc2"]))
    assert code == 0, "generating the clip failed"
    print(f"setup: 10 s 720p clip generated in {t:.1f} s")
    repo = Repository(root)
    opts = ExportOptions("mp4", "production")
    lat, res = timed(lambda: export(repo, "clip.mp4", opts, str(tmp / "lattice.mp4"), root))
    src = repo.objects.locate(repo.record("clip.mp4").current.object)
    params = opts.params("video")
    params["embed"] = "x"
    args, _ = ffmpeg_args(src, tmp / "direct.mp4", params)
    argv = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-y", "-loglevel", "error", *args]
    direct, _ = timed(lambda: subprocess.run(argv, check=True))
    print(f"export mp4 (production): lattice {lat:.2f} s, ffmpeg directly {direct:.2f} s, ratio {lat / direct:.2f}x  [target <= 1.2x]")


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    with tempfile.TemporaryDirectory() as d:
        which = sys.argv[1:] or ["gc", "export"]
        if "gc" in which:
            bench_gc_and_du(Path(d))
        if "export" in which:
            bench_export(Path(d))


if __name__ == "__main__":
    main()
