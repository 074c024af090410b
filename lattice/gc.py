"""Regeneration-aware garbage collection: outputs that can be re-made are a cache.

What may go (every rule is applied by `plan_gc`, the one planning function
that both `--dry-run` and the real run call):

  1. Only an output that can be re-made: a deterministic recipe whose
     generator is installed at the recorded version and whose inputs are
     present or themselves re-makable (`Catalog.makeable`).
  2. Never imported content, never outputs of non-deterministic generators
     (unless `--include-nondeterministic`), never the pinned version of any
     asset and never the current version (unless `--include-current` or a
     kind's `include_current = true`) — on every branch and tag, read from
     history, as well as in the working manifest.
  3. Never the newest `keep_versions` versions of an asset (the kind limits of
     `[versions]` in config, see lattice.versions; `--keep-versions N`).
  4. The rest goes once unused for longer than its kind's `unused_for`
     (`[gc.policy.<kind>]`; `--older-than AGE` overrides every kind);
     thumbnails are kept forever.
  5. A size cap (`--max-size`, or a kind's `max_size`) then evicts the least
     recently used of whatever rule 1-2 allows, ignoring ages and rule 3.
  6. Objects referenced by nothing (no version on any ref or in any manifest
     file history holds, no recipe input, no cache entry, no queued or
     running job) go after the grace period
     (default two weeks); objects just written by a running add or job are
     young, so the grace period protects them.
  7. Stray temps interrupted writes left go after the grace period too;
     beside the files `lattice export` wrote outside the project (the
     index records them), only temps export itself names for that file,
     once their process is gone and they sat an hour (export's own rule,
     lattice.export_target.stale_temps). The records of such files that are gone
     or changed since are forgotten.

"Last used" is the later of the object's mtime (written) and the time it was
last materialized or read (lattice.storage_db.touch), because atime is
unreliable. The catalog (lattice.catalog) caches per-manifest facts, so
planning over 100,000 objects reads SQLite rather than parsing TOML; every
run is logged there for `lattice du`.

Restoring what gc evicted is its inverse, so it runs as a "gc" job too
(op "restore"): lattice.remake.ensure_present submits one per missing output.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import msgspec

from lattice.catalog import AssetFacts, Catalog, Fact, load_catalog
from lattice.storage_db import storage_db
from lattice.errors import InvalidInput
from lattice.repo import Repository

DAY = 86400.0
GRACE = 14 * DAY


# -- policies -------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    forever: bool = False
    unused_for: float = 7 * DAY  # seconds unused before an output may go
    max_size: int | None = None  # bytes this class may hold
    keep_versions: int | None = None  # None: the [versions] limit of the kind
    include_current: bool = False


# The product's table (render-pipeline spec 4.2 cache_policies).
DEFAULT_POLICIES: dict[str, Policy] = {
    "thumbnail": Policy(forever=True),
    "image": Policy(unused_for=7 * DAY),
    "video": Policy(unused_for=3 * DAY),
    "intermediate": Policy(unused_for=1 * DAY),
    "audio": Policy(unused_for=7 * DAY),
    "vector": Policy(unused_for=7 * DAY),
    "other": Policy(unused_for=7 * DAY),
}
_INTERMEDIATE = re.compile(r"(?:^|[/_.-])(pose|depth|mask)s?(?:[/_.-]|$)", re.I)


def policy_class(name: str, kind: str, tags: list[str], generator: str | None) -> str:
    """Which policy an asset follows: a tag naming a class wins, then
    thumbnails by generator or name, intermediates (pose, depth, mask) by name."""
    return _policy_class(name, kind, tuple(tags), generator)


@functools.lru_cache(maxsize=1 << 16)  # asked once per version; the answer is per asset
def _policy_class(name: str, kind: str, tags: tuple[str, ...], generator: str | None) -> str:
    for t in tags:
        if t in DEFAULT_POLICIES:
            return t
    if generator == "ffmpeg.thumbnail" or "thumb" in name.lower():
        return "thumbnail"
    if _INTERMEDIATE.search(name):
        return "intermediate"
    return kind if kind in DEFAULT_POLICIES else "other"


def gc_config(config: dict, key: str | None = None) -> dict:
    """The `[gc]` table of config (or its `[gc.KEY]` table); {} when absent.
    A value of another type there (`gc = 3`) is refused in words."""
    table = config.get("gc", {})
    where = "[gc]"
    if isinstance(table, dict) and key is not None:
        table, where = table.get(key, {}), f"[gc.{key}]"
    if not isinstance(table, dict):
        raise InvalidInput(f"config {where} = {table!r} is not a table",
                           hint=f"write it as a {where} table in .lattice/config.toml (see the README, \"Storage\")")
    return table


def policies(config: dict) -> dict[str, Policy]:
    """DEFAULT_POLICIES overlaid with `[gc.policy.<class>]` from config."""
    out = dict(DEFAULT_POLICIES)
    table = gc_config(config, "policy")
    for cls, spec in table.items():
        if cls not in DEFAULT_POLICIES or not isinstance(spec, dict):
            raise InvalidInput(f"config [gc.policy.{cls}] is not a known policy class",
                               hint=f"classes are: {', '.join(DEFAULT_POLICIES)}")
        p = asdict(out[cls])
        for key, value in spec.items():
            where = f"config [gc.policy.{cls}] {key}"
            if key == "keep":
                if value not in ("forever", "policy"):
                    raise InvalidInput(f"{where} = {value!r}: expected \"forever\" or \"policy\"")
                p["forever"] = value == "forever"
            elif key == "unused_for":
                p["unused_for"] = parse_age(value, where)
            elif key == "max_size":
                p["max_size"] = parse_size(value, where)
            elif key == "keep_versions":
                p["keep_versions"] = _count(value, where)
            elif key == "include_current":
                if not isinstance(value, bool):
                    raise InvalidInput(f"{where} = {value!r}: expected true or false")
                p["include_current"] = value
            else:
                raise InvalidInput(f"{where}: unknown key",
                                   hint="keys are keep, unused_for, max_size, keep_versions, include_current")
        out[cls] = Policy(**p)
    return out


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)?\s*$", re.I)
_AGE_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": DAY, "w": 7 * DAY, None: 1}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.I)


def parse_age(value: Any, what: str = "age") -> float:
    """'90s', '30m', '24h', '7d', '2w' or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    m = _AGE.match(str(value))
    if not m:
        raise InvalidInput(f"{what}: {value!r} is not an age", hint="write it like 90s, 30m, 24h, 7d or 2w")
    return float(m[1]) * _AGE_UNITS[(m[2] or "").lower() or None]


def parse_size(value: Any, what: str = "size") -> int:
    """'500MB', '10GB', '1.5GiB' or a number of bytes (KB/MB/GB are powers of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise InvalidInput(f"{what}: {value!r} is not a size", hint="write it like 500MB, 10GB or 2048")
    unit = (m[2] or "b").lower()[:1]
    return int(float(m[1]) * 1024 ** "bkmgt".index(unit))


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"{what} = {value!r}: expected a whole number from 0")
    return value


# -- planning ---------------------------------------------------------------------


@dataclass
class GcOptions:
    keep_versions: int | None = None
    older_than: float | None = None  # seconds; overrides every policy's unused_for
    max_size: int | None = None
    include_nondeterministic: bool = False
    include_current: bool = False
    grace: float | None = None  # None: [gc] grace in config, else two weeks


@dataclass
class Eviction:
    object: str
    bytes: int  # on disk, freed by removing it
    reason: str  # "policy", "size cap" or "unreferenced"
    assets: list[str]  # "name@vN" of the versions it is the output of
    last_used: float


@dataclass
class GcPlan:
    evictions: list[Eviction]
    temps: list[str]  # stray temp files (and old key locks) older than the grace period; stale export temps
    bytes: int
    objects: int  # objects present before
    present_bytes: int
    temp_bytes: int = 0  # what the temps hold
    # Records of files exports wrote that are gone or changed since
    # (path, size, mtime_ns, ino; lattice.export_target.stale_export_records): forgotten.
    stale_exports: list[tuple[str, int, int, int]] = field(default_factory=list)


def plan_gc(repo: Repository, options: GcOptions | None = None, now: float | None = None,
            catalog: Catalog | None = None) -> GcPlan:
    """What gc would remove now. `--dry-run` prints it; the gc job removes
    exactly it (planned again under the repository lock)."""
    opts = options or GcOptions()
    now = time.time() if now is None else now
    cat = catalog or load_catalog(repo)
    if cat.nondeterministic != opts.include_nondeterministic:
        cat.nondeterministic, cat._makeable = opts.include_nondeterministic, {}
    pols = policies(repo.config)
    limits = _version_limits(repo)
    grace = opts.grace if opts.grace is not None else _grace(repo)
    protected, referenced = _protected(repo, cat, opts, pols)

    chosen: dict[str, Eviction] = {}
    pool: list[tuple[float, str, str]] = []  # (last used, object, class): may go under a size cap
    held: dict[str, str] = {}  # every present object some version names → its class (what a cap counts)
    for oid, prods in cat.producers.items():
        if oid not in cat.present:
            continue
        classes = {policy_class(a.name, a.kind, a.tags, f.generator) for _, a, f in prods}
        cls = max(classes, key=lambda c: pols[c].unused_for)
        held[oid] = cls
        if oid in protected or not cat.makeable(oid) or any(pols[c].forever for c in classes):
            continue
        used = cat.last_used(oid)
        pool.append((used, oid, cls))
        min_age = opts.older_than if opts.older_than is not None else max(pols[c].unused_for for c in classes)
        kept_as_recent = any(_within_limit(a, f, pols, limits, opts) for _, a, f in prods)
        if not kept_as_recent and now - used >= min_age:
            chosen[oid] = _eviction(cat, oid, "policy", prods)
    _size_caps(cat, pols, opts, pool, held, chosen)
    for oid, (size, mtime) in cat.present.items():
        if oid not in referenced and oid not in cat.producers and now - mtime >= grace:
            chosen[oid] = Eviction(oid, size, "unreferenced", [], mtime)
    temps = [str(p) for p in repo.stray_temps(key_locks=True) if now - _mtime(p) >= grace]
    from lattice.export_target import stale_export_records, stale_temps

    # Beside the files exports wrote outside the project, by export's own rule.
    exported = repo.index.export_rows()
    temps += map(str, stale_temps((Path(row[0]) for row in exported), now))
    evictions = sorted(chosen.values(), key=lambda e: (e.reason, e.last_used, e.object))
    return GcPlan(evictions, temps, sum(e.bytes for e in evictions), len(cat.present),
                  sum(s for s, _ in cat.present.values()), sum(map(file_size, temps)), stale_export_records(exported))


def _grace(repo: Repository) -> float:
    return parse_age(gc_config(repo.config).get("grace", GRACE), "config [gc] grace")


def check_config(repo: Repository) -> None:
    """Refuse a config gc cannot plan with (a policy, a version limit, the
    grace period), in its own words, before a gc job is queued to fail on it."""
    policies(repo.config)
    _version_limits(repo)
    _grace(repo)


def file_size(path: str) -> int:
    """Bytes of a temp file (lstat: some are links), or of the files in a
    temp folder (a killed frames export's); 0 when gone already."""
    try:
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            return sum(e.stat(follow_symlinks=False).st_size for e in os.scandir(path))
        return st.st_size
    except OSError:
        return 0


def _eviction(cat: Catalog, oid: str, reason: str, prods) -> Eviction:
    names = sorted({f"{a.name}@v{f.number}" for _, a, f in prods})
    return Eviction(oid, cat.present[oid][0], reason, names, cat.last_used(oid))


def _version_limits(repo: Repository) -> dict[str, int]:
    from lattice.versions import limits

    return limits(repo.config)


def _within_limit(a: AssetFacts, f: Fact, pols, limits, opts: GcOptions) -> bool:
    """Whether `f` is among the newest versions its asset keeps present."""
    n = len(a.versions)
    if f.number == n:
        # The current output is only here when include_current lifted its
        # protection: then its age alone decides.
        return False
    cls = policy_class(a.name, a.kind, a.tags, f.generator)
    keep = opts.keep_versions if opts.keep_versions is not None else pols[cls].keep_versions
    if keep is None:
        keep = limits.get(a.kind, limits.get("other", 1))
    return f.number > n - keep


def referenced_objects(repo: Repository, cat: Catalog) -> set[str]:
    """Objects something names: a version or recipe input on any branch or
    tag, the recipe cache, or any manifest file in history (what rule 6
    never sweeps; `lattice du` counts the rest as unreferenced)."""
    from lattice import history

    if cat._referenced is not None:  # `du` asks, then plans gc on the same catalog
        return cat._referenced
    referenced = set(cat.cache) | history.objects_named(repo)
    for assets in cat.states.values():
        for a in assets.values():
            for f in a.versions:
                referenced.add(f.object)
                referenced.update(f.input_objects)
    cat._referenced = referenced
    return referenced


def _protected(repo: Repository, cat: Catalog, opts: GcOptions, pols) -> tuple[set[str], set[str]]:
    """(objects that must stay, objects something references)."""
    protected: set[str] = set()
    for assets in cat.states.values():
        for a in assets.values():
            n = len(a.versions)
            for f in a.versions:
                if f.generator is None or (not f.deterministic and not opts.include_nondeterministic):
                    protected.add(f.object)
                elif f.number == a.pinned:
                    protected.add(f.object)
                elif f.number == n:
                    cls = policy_class(a.name, a.kind, a.tags, f.generator)
                    if not (opts.include_current or pols[cls].include_current) or a.pinned:
                        protected.add(f.object)
    jobs = _active_job_objects(repo, cat)
    return protected | jobs, referenced_objects(repo, cat) | jobs


_HEX64 = re.compile(r"\b[0-9a-f]{64}\b")


def _active_job_objects(repo: Repository, cat: Catalog) -> set[str]:
    """Objects a queued or running job may read or write: every id in its
    payload, the cached output of its recipe, and the current and pinned
    outputs of the asset it works on and of everything upstream of it."""
    from lattice.pipeline import queue_of

    out: set[str] = set()
    working = cat.states.get("", {})
    index = repo.index
    for job in queue_of(repo).list(states=("queued", "running"), limit=None):
        text = json.dumps(job.payload)
        out.update(_HEX64.findall(text))
        step = job.payload.get("step") if isinstance(job.payload, dict) else None
        if isinstance(step, dict):
            recipe = step.get("recipe") or {}
            if recipe.get("key"):
                cached = index.cache_get(recipe["key"])
                if cached:
                    out.add(cached)
            todo = [step.get("name", ""), *recipe.get("inputs", [])]
        else:
            todo = [job.payload.get("name", "")] if isinstance(job.payload, dict) else []
        seen: set[str] = set()
        while todo:
            name = todo.pop()
            a = working.get(name)
            if a is None or name in seen:
                continue
            seen.add(name)
            cur = a.versions[-1]
            out.add(cur.object)
            if a.pinned:
                out.add(a.versions[a.pinned - 1].object)
            todo.extend(cur.inputs)
    return out


def _size_caps(cat: Catalog, pols, opts: GcOptions, pool, held: dict[str, str], chosen: dict[str, Eviction]) -> None:
    """Evict least recently used first until each cap holds. A cap counts
    every byte its class holds, protected ones too (the global one: every
    object present); only what the pool offers can go."""
    pool.sort()
    caps: list[tuple[int, Callable[[str], bool]]] = []
    if opts.max_size is not None:
        caps.append((opts.max_size, lambda c: True))
    for cls, p in pols.items():
        if p.max_size is not None:
            caps.append((p.max_size, lambda c, cls=cls: c == cls))
    for cap, member in caps:
        if member("*"):  # the global cap counts every object present
            total = sum(s for o, (s, _) in cat.present.items() if o not in chosen)
        else:
            total = sum(cat.present[o][0] for o, c in held.items() if member(c) and o not in chosen)
        for _, oid, cls in pool:
            if total <= cap:
                break
            if oid in chosen or not member(cls):
                continue
            chosen[oid] = _eviction(cat, oid, "size cap", cat.producers[oid])
            total -= cat.present[oid][0]


def _mtime(p: Path) -> float:
    try:
        return p.lstat().st_mtime  # a link's own age: what it points at may be gone
    except FileNotFoundError:
        return time.time()


# -- running ------------------------------------------------------------------------


@dataclass
class GcResult:
    plan: GcPlan
    removed: int  # objects removed
    freed: int  # bytes freed
    dry_run: bool
    history_packed: int = 0  # history objects packed into one pack (0: not needed)
    exports_forgotten: int = 0  # of plan.stale_exports


def collect(repo: Repository, options: GcOptions | None = None, progress: Callable[[float, str], None] | None = None) -> GcResult:
    """Plan and evict under the repository lock, then log the run. Renders and
    adds record versions under the same lock, so none lands half-seen."""
    progress = progress or (lambda f, s: None)
    with repo.lock:
        progress(0.0, "planning")
        cat = load_catalog(repo)
        plan = plan_gc(repo, options, catalog=cat)
        removed = freed = 0
        total = max(1, len(plan.evictions))
        for i, e in enumerate(plan.evictions):
            gone = repo.objects.remove(e.object)
            removed += gone > 0
            freed += gone
            if i % 100 == 0:
                progress(0.05 + 0.9 * i / total, "evicting")
        for t in plan.temps:
            try:
                if stat.S_ISDIR(os.lstat(t).st_mode):  # a killed frames export's frames so far
                    shutil.rmtree(t)
                else:
                    os.unlink(t)
            except OSError:  # gone, or a folder we may no longer write: never worth failing gc before its log
                pass
        _log_run(repo, plan, removed, freed, cat)
        forgotten = repo.index.drop_exports(plan.stale_exports) if plan.stale_exports else 0
        progress(0.97, "packing history")
        from lattice import history

        packed = history.repack(repo)
    progress(1.0, "done")
    return GcResult(plan, removed, freed, False, packed, forgotten)


def _log_run(repo: Repository, plan: GcPlan, removed: int, freed: int, cat: Catalog) -> None:
    """Log the run. Besides the first objects evicted, every one that no
    deterministic recipe makes (`--include-nondeterministic`) is listed in
    full: its bytes are gone for good, at the user's request, and fsck
    tells that from damage by this list (`evicted_for_good`)."""
    reasons: dict[str, int] = {}
    for e in plan.evictions:
        reasons[e.reason] = reasons.get(e.reason, 0) + e.bytes
    for_good = [e.object for e in plan.evictions if e.reason != "unreferenced"
                and not any(f.generator and f.deterministic for _, _, f in cat.producers.get(e.object, ()))]
    detail = json.dumps({"reasons": reasons, "objects": [e.object for e in plan.evictions][:10000], "for_good": for_good})
    db = storage_db(repo)
    try:
        with db:
            db.execute("INSERT INTO runs(time, objects, bytes, detail) VALUES (?, ?, ?, ?)",
                       (time.time(), removed, freed, detail))
    finally:
        db.close()


def runs(repo: Repository) -> list[dict]:
    db = storage_db(repo)
    try:
        return [{"time": t, "objects": n, "bytes": b} for t, n, b in
                db.execute("SELECT time, objects, bytes FROM runs ORDER BY id")]
    finally:
        db.close()


def evicted_for_good(repo: Repository) -> set[str]:
    """Objects gc runs evicted that no deterministic recipe makes again (the
    run log lists them all; a run logged before it did gives its first
    10,000 objects, of any kind). Empty where nothing was logged or the log
    is unreadable."""
    import sqlite3

    if not (repo.dir / "storage.db").exists():
        return set()
    out: set[str] = set()
    try:
        db = storage_db(repo)
        try:
            for (detail,) in db.execute("SELECT detail FROM runs"):
                d = json.loads(detail)
                # A run logged before for_good was kept lists its objects of any kind.
                out.update(d["for_good"] if "for_good" in d else d.get("objects", []))
        finally:
            db.close()
    except (sqlite3.Error, ValueError, AttributeError, TypeError):
        pass  # the log is a convenience: without it, fsck reports such a version as lost
    return out


def run_gc(repo: Repository, options: GcOptions, on_poll: Callable[[list], None] | None = None) -> GcResult:
    """Submit a gc job and run it to the end with an inline worker."""
    from lattice.pipeline import run_job

    check_config(repo)
    # No dedup key: two gc runs with different options must not share one result.
    done = run_job(repo, "gc", {"op": "collect", "root": str(repo.root), "options": asdict(options)}, "lattice gc", on_poll)
    return msgspec.convert(done.result, GcResult)


def gc_job(ctx) -> dict:
    """Handler of "gc" jobs: op "collect" runs gc, op "restore" re-makes one output."""
    from lattice.jobs import _repo
    from lattice.produce import Hooks

    payload = ctx.job.payload
    repo = _repo(payload["root"])
    if payload.get("op") == "restore":
        from lattice.remake import restore_object

        hooks = Hooks(progress=ctx.progress, env=ctx.env, on_process=ctx.on_process, timeout=ctx.timeout)
        return restore_object(repo, payload["name"], int(payload["version"]), hooks)
    options = msgspec.convert(payload.get("options") or {}, GcOptions)
    return msgspec.to_builtins(collect(repo, options, ctx.progress))
