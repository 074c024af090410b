#!/usr/bin/env python3
"""Foundation benchmark: `lattice add`, `lattice status` and add's memory,
each against a peer or a physical floor measured in the same run.

    python bench/bench_foundation.py [--repeat 3] [--skip-dvc] [--keep]

Run by hand (never by the tests). Everything it writes lives in one temp
directory under /tmp, removed at the end (unless --keep). Figures are medians
of --repeat runs; compare the ratios, not the absolute times, between machines.

(a) add 1,000 x 64 KiB files and one 1 GiB file vs the floor `b3sum` + `cp`
    of the same data (target: >= 0.5x the floor's throughput).
(b) no-op `lattice status` on 10,000 assets, start-up included, from a
    byte-compiled copy of the package (PYTHONDONTWRITEBYTECODE=1 would
    otherwise make every start recompile) in a virtualenv like a regular
    install's (no editable-install hook), vs `dvc status` on the same files
    (target: < 0.3 s and >= 10x faster). DVC comes from PyPI into
    /tmp/bench-dvc-venv; it is skipped with a message when it cannot be had.
(c) peak RSS of `lattice add` of the 1 GiB file (target: < 150 MiB).
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

ROOT = Path(__file__).resolve().parent.parent
DVC_VENV = Path("/tmp/bench-dvc-venv")
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30


# -- running things ---------------------------------------------------------


def run(argv: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[float, int]:
    """Run to completion and return (wall seconds, peak RSS in KiB of the
    child and the children it waited for); fail loudly on a non-zero exit."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()  # small for these commands; read before reaping
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if code != 0:
        raise SystemExit(f"bench: {' '.join(map(str, argv))} exited {code}:\n{err.decode(errors='replace')[-2000:]}")
    return wall, usage.ru_maxrss  # KiB on Linux


def median_of(repeat: int, fn) -> float:
    return statistics.median(fn() for _ in range(repeat))


def drop(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# -- set-up -----------------------------------------------------------------


class Bench:
    def __init__(self, work: Path, repeat: int):
        self.work, self.repeat = work, repeat
        self.env = dict(os.environ, NO_COLOR="1", LATTICE_AUTHOR="bench", XDG_CONFIG_HOME=str(work / "xdg"))
        self.env.pop("PYTHONPATH", None)
        self.lattice = self._install()

    def _install(self) -> list[str]:
        argv, site = install(self.work)
        self.env["PYTHONPATH"] = str(site)
        return argv

    def lat(self, *args: str, cwd: Path) -> list[str]:
        return [*self.lattice, "-C", str(cwd), *args]

    def new_repo(self, name: str) -> Path:
        repo = self.work / name
        drop(repo)
        repo.mkdir()
        run(self.lat("init", cwd=repo), env=self.env)
        return repo


def make_files(directory: Path, count: int, size: int, ext: str) -> list[Path]:
    """`count` files of about `size` bytes; .png ones are real PNGs (noise
    pixels, so they do not compress), as a generator would write them."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        p = directory / f"f{i:05d}.{ext}"
        p.write_bytes(noise_png(size) if ext == "png" else os.urandom(size))
        paths.append(p)
    return paths


def noise_png(size: int) -> bytes:
    import struct
    import zlib

    side = max(1, int((size / 3) ** 0.5))
    rows = b"".join(b"\0" + os.urandom(side * 3) for _ in range(side))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b"")


def make_big(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for _ in range(size // (64 * MIB)):
            f.write(os.urandom(64 * MIB))


def hasher() -> tuple[list[str], str]:
    """argv prefix hashing files, and its name: `b3sum`, else the blake3
    package hashing the same way (1 MiB reads, all cores)."""
    if shutil.which("b3sum"):
        return ["b3sum", "--no-names"], "b3sum"
    code = (
        "import sys, blake3\n"
        "for p in sys.argv[1:]:\n"
        "    h = blake3.blake3(max_threads=blake3.blake3.AUTO)\n"
        "    h.update_mmap(p)\n"
        "    print(h.hexdigest())\n"
    )
    return [sys.executable, "-c", code], "python blake3 (b3sum not installed)"


# -- (a) add vs b3sum + cp ----------------------------------------------------


def bench_add(b: Bench, label: str, source: Path, files: list[Path]) -> dict:
    hash_argv, hash_name = hasher()
    total = sum(p.stat().st_size for p in files)
    # Many small files: every run writes into folders of its own, and none is
    # removed until the series is done. On ext4 without a journal (this kind
    # of VM), the allocator steps over each inode freed in the last minute
    # or more, one lookup apiece, so a run that follows the removal of the
    # last run's 2,000 files pays for them: the cost of creating a file here
    # then varied fourfold, and with it the floor and the ratio. One big
    # file frees a handful of inodes: those runs are removed at once.
    keep_until_done = len(files) > 1
    made: list[Path] = []

    def done_with(path: Path) -> None:
        if keep_until_done:
            made.append(path)
        else:
            drop(path)

    def floor(durable: bool = False) -> float:
        """`b3sum` then `cp`; `durable`: the copy then synced, as lattice syncs its writes."""
        dest = b.work / f"floor-copy-{len(made)}-{time.monotonic_ns()}"
        run(["sync"])  # every run starts from a clean page cache
        t_hash, _ = run([*hash_argv, *map(str, files)])
        t_cp, _ = run(["sh", "-c", f"cp -r '{source}' '{dest}'" + (" && sync" if durable else "")])
        done_with(dest)
        return t_hash + t_cp

    def lattice() -> float:
        wall, _, repo = add_inside(b, source, f"repo-add-{len(made)}-{time.monotonic_ns()}")
        done_with(repo)
        return wall

    # Interleaved, so that all three see the same disk: on a shared VM the
    # cost of creating a file varies tenfold from one minute to the next.
    try:
        runs = [(floor(), floor(durable=True), lattice()) for _ in range(b.repeat)]
    finally:
        for path in made:
            drop(path)
    t_floor, t_durable, t_lat = (statistics.median(r[i] for r in runs) for i in range(3))
    ratio = t_floor / t_lat
    print(
        f"add {label:<24} lattice {t_lat:7.3f} s ({total / MIB / t_lat:7.1f} MiB/s)   "
        f"floor {hash_name} + cp {t_floor:7.3f} s ({total / MIB / t_floor:7.1f} MiB/s)   "
        f"throughput {ratio:.2f}x floor  [target >= 0.5x: {'ok' if ratio >= 0.5 else 'MISSED'}]"
    )
    print(f"    (with the copy made durable, `cp` + `sync`: floor {t_durable:.3f} s, lattice {t_durable / t_lat:.2f}x of it)")
    return {"lattice": t_lat, "floor": t_floor, "durable_floor": t_durable, "ratio": ratio}


def add_inside(b: Bench, source: Path, name: str) -> tuple[float, int, Path]:
    """`lattice add` of `source` in a new repository `name`, from a clean page
    cache: (wall seconds, peak RSS in KiB, the repository, which the caller
    removes). The data is moved into the working tree and back (renames: no
    bytes copied)."""
    repo = b.new_repo(name)
    run(["sync"])
    inside = repo / source.name
    os.rename(source, inside)
    try:
        return (*run(b.lat("add", source.name, cwd=repo), env=b.env), repo)
    finally:
        os.rename(inside, source)


def bench_add_rss(b: Bench, source: Path) -> int:
    _, rss, repo = add_inside(b, source, "repo-rss")
    drop(repo)
    mib = rss / 1024
    print(f"peak RSS of `lattice add` of the 1 GiB file: {mib:.1f} MiB  [target < 150 MiB: {'ok' if mib < 150 else 'MISSED'}]")
    return rss


# -- (b) status vs dvc status -------------------------------------------------


def dvc_available(skip: bool) -> Path | None:
    if skip:
        print("dvc: skipped (--skip-dvc)")
        return None
    dvc = DVC_VENV / "bin" / "dvc"
    if dvc.exists():
        return dvc
    print(f"dvc: installing from PyPI into {DVC_VENV} ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(DVC_VENV)], check=True, capture_output=True)
        subprocess.run([str(DVC_VENV / "bin" / "pip"), "install", "-q", "dvc"], check=True, capture_output=True, timeout=900)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        print(f"dvc: could not be installed ({e.__class__.__name__}); the dvc comparison is skipped")
        return None
    return dvc if dvc.exists() else None


def bench_status(b: Bench, count: int, skip_dvc: bool) -> dict:
    repo = b.new_repo("repo-status")
    # SVG: a media type lattice tracks and walks, with no ffmpeg probe on add.
    make_files(repo / "assets", count, 4 * KIB, "svg")
    run(b.lat("add", "assets", cwd=repo), env=b.env)
    # Let the racy-mtime window pass, then one status refreshes the stat cache
    # and the next keeps its snapshot.
    time.sleep(0.2)
    run(b.lat("status", cwd=repo), env=b.env)
    run(b.lat("status", cwd=repo), env=b.env)

    def lat_status() -> float:
        return run(b.lat("status", cwd=repo), env=b.env)[0]

    dvc = dvc_available(skip_dvc)
    peer = None
    if dvc is not None:
        dvc_dir = b.work / "dvc-status"
        drop(dvc_dir)
        dvc_dir.mkdir()
        shutil.copytree(repo / "assets", dvc_dir / "assets")
        denv = dict(os.environ, DVC_NO_ANALYTICS="1")
        denv.pop("PYTHONPATH", None)
        run([str(dvc), "init", "--no-scm", "-q"], cwd=dvc_dir, env=denv)
        run([str(dvc), "config", "core.analytics", "false"], cwd=dvc_dir, env=denv)
        run([str(dvc), "add", "-q", "assets"], cwd=dvc_dir, env=denv)
        run([str(dvc), "status", "-q"], cwd=dvc_dir, env=denv)  # warm its caches too

        def dvc_status() -> float:
            return run([str(dvc), "status"], cwd=dvc_dir, env=denv)[0]

        peer = dvc_status

    # What the earlier benchmarks (and dvc's copy) wrote is written out
    # first: its writeback would slow whichever tool runs next.
    os.sync()
    # The two tools take turns, so a slow minute on this shared machine
    # slows both alike and the ratio holds.
    t_lats, t_dvcs = [], []
    for _ in range(max(b.repeat, 5)):
        t_lats.append(lat_status())
        if peer is not None:
            t_dvcs.append(peer())
    t_lat = statistics.median(t_lats)
    t_start = median_of(max(b.repeat, 5), lambda: run([*b.lattice, "--version"], env=b.env)[0])
    t_py = median_of(max(b.repeat, 5), lambda: run([b.lattice[0], "-c", "pass"])[0])
    ok = t_lat < 0.3
    print(
        f"status, {count} assets, nothing changed: {t_lat:.3f} s  [target < 0.3 s: {'ok' if ok else 'MISSED'}]   "
        f"(`lattice --version` {t_start:.3f} s, `python -c pass` {t_py:.3f} s)"
    )
    result = {"lattice": t_lat, "startup": t_start}
    if peer is not None:
        t_dvc = statistics.median(t_dvcs)
        ratio = t_dvc / t_lat
        print(f"dvc status on the same {count} files: {t_dvc:.3f} s; lattice is {ratio:.1f}x faster  [target >= 10x: {'ok' if ratio >= 10 else 'MISSED'}]")
        result.update(dvc=t_dvc, ratio=ratio)
        drop(dvc_dir)
    drop(repo)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is printed")
    parser.add_argument("--skip-dvc", action="store_true", help="do not install or run DVC")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    parser.add_argument("--status-assets", type=int, default=10_000)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="lattice-bench-", dir="/tmp"))
    print(f"lattice foundation benchmark; {os.cpu_count()} cores; data in {work}; medians of {args.repeat}")
    try:
        b = Bench(work, args.repeat)
        many = work / "many"
        make_files(many, 1000, 64 * KIB, "png")
        bench_add(b, "1,000 x 64 KiB .png", many, sorted(many.iterdir()))
        for p in sorted(many.iterdir()):
            p.rename(p.with_suffix(".bin"))
        bench_add(b, "1,000 x 64 KiB .bin", many, sorted(many.iterdir()))
        drop(many)
        big = work / "big"
        make_big(big / "take.mp4", GIB)
        bench_add(b, "1 x 1 GiB .mp4", big, [big / "take.mp4"])
        bench_add_rss(b, big)
        drop(big)
        bench_status(b, args.status_assets, args.skip_dvc)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            drop(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
