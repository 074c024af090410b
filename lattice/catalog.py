"""The storage catalog: every version of every asset on every ref, with the
facts gc and du need (kind, size, object, recipe inputs, determinism), kept
in `.lattice/storage.db` keyed by manifest file stamp or git blob id, so that
planning over 100,000 objects reads SQLite rather than parsing TOML. The same
database records when an object was last used (lattice.storage_db.touch) and
logs gc runs."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from lattice.repo import Repository
from lattice.storage_db import storage_db

# -- the catalog: every version of every asset on every ref --------------------------


class Fact(msgspec.Struct, array_like=True):
    number: int
    object: str
    size: int
    generator: str | None  # None: imported
    generator_version: str
    deterministic: bool
    inputs: list[str]
    input_objects: list[str]
    key: str


class AssetFacts(msgspec.Struct, array_like=True):
    name: str
    kind: str
    tags: list[str]
    pinned: int | None
    versions: list[Fact]


_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder(AssetFacts)


def facts_of(record) -> AssetFacts:
    vs = []
    for v in record.versions:
        r = v.recipe
        if r is None:
            vs.append(Fact(v.number, v.object, v.size, None, "", False, [], [], ""))
        else:
            vs.append(Fact(v.number, v.object, v.size, r.generator, r.generator_version, r.deterministic,
                           list(r.inputs), list(r.input_objects), r.key))
    return AssetFacts(record.path, record.kind, list(record.tags), record.pinned, vs)


@dataclass
class Catalog:
    """The states gc must respect: "" is the working manifest, then
    "branch:NAME" and "tag:NAME" read from history at each ref's tip."""

    states: dict[str, dict[str, AssetFacts]]
    present: dict[str, tuple[int, float]]  # object -> (stored bytes, mtime)
    used: dict[str, float]
    cache: set[str]  # objects the recipe cache names
    generators: dict[str, str]  # installed generator id -> version
    manifest_bytes: int = 0
    nondeterministic: bool = False  # count non-deterministic recipes as re-making (gc --include-nondeterministic)
    producers: dict[str, list[tuple[str, AssetFacts, Fact]]] = field(default_factory=dict)
    imported: set[str] = field(default_factory=set)  # objects some import holds: never evicted
    _makeable: dict[str, bool] = field(default_factory=dict)
    _referenced: set[str] | None = None  # lattice.gc.referenced_objects, once per catalog: it reads all of history

    def __post_init__(self) -> None:
        seen: set[int] = set()
        for state, assets in self.states.items():
            for facts in assets.values():
                if id(facts) in seen:  # refs sharing a manifest file share its facts
                    continue
                seen.add(id(facts))
                for f in facts.versions:
                    self.producers.setdefault(f.object, []).append((state, facts, f))
                    if f.generator is None:
                        self.imported.add(f.object)

    def last_used(self, oid: str) -> float:
        return max(self.present.get(oid, (0, 0.0))[1], self.used.get(oid, 0.0))

    def remakes(self, f: Fact) -> bool:
        """Whether this version's recipe can make its output again here."""
        return bool(f.generator and (f.deterministic or self.nondeterministic)
                    and self.generators.get(f.generator) == f.generator_version)

    def makeable(self, oid: str) -> bool:
        """Re-creatable from recipes alone: some deterministic recipe makes it
        and each of its inputs is present or itself makeable."""
        known = self._makeable.get(oid)
        if known is not None:
            return known
        self._makeable[oid] = False  # content hashes form no cycles; this only guards bad data
        ok = any(
            self.remakes(f) and all(i in self.present or self.makeable(i) for i in f.input_objects)
            for _, _, f in self.producers.get(oid, ())
        )
        self._makeable[oid] = ok
        return ok


def load_catalog(repo: Repository) -> Catalog:
    db = storage_db(repo)
    try:
        working, manifest_bytes = _working_state(repo, db)
        states = {"": working, **_ref_states(repo, db)}
        used = dict(db.execute("SELECT object, time FROM used"))
    finally:
        db.close()
    return Catalog(states, store_listing(repo), used, {o for _, o in repo.index.cache_items()},
                   installed_generators(repo), manifest_bytes)


def _working_state(repo: Repository, db: sqlite3.Connection) -> tuple[dict[str, AssetFacts], int]:
    from lattice.manifest import SUFFIX

    cached = {n: (s, d) for n, s, d in db.execute("SELECT name, stamp, data FROM wtfacts")}
    out: dict[str, AssetFacts] = {}
    fresh = []
    total = 0
    base = str(repo.manifest.dir) + "/"  # strings, not Paths: 10,000 joins add up
    for name in repo.index.names():  # names in the index were checked when recorded
        path = base + name + SUFFIX
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        total += st.st_size
        stamp = f"{st.st_mtime_ns}:{st.st_size}"
        hit = cached.pop(name, None)
        if hit and hit[0] == stamp:
            out[name] = _DEC.decode(hit[1])
            continue
        facts = facts_of(repo.record(name))  # the index's decoded copy when current
        out[name] = facts
        fresh.append((name, stamp, _ENC.encode(facts)))
    if fresh or cached:
        with db:
            db.executemany("INSERT OR REPLACE INTO wtfacts(name, stamp, data) VALUES (?, ?, ?)", fresh)
            db.executemany("DELETE FROM wtfacts WHERE name = ?", [(n,) for n in cached])
    return out, total


def _ref_states(repo: Repository, db: sqlite3.Connection) -> dict[str, dict[str, AssetFacts]]:
    """The manifest at the tip of every branch and tag. History is optional:
    a repository without it has only its working manifest to protect."""
    from lattice import history

    if not history.exists(repo):
        return {}
    import pygit2

    from lattice.records import decode

    g = history.open_git(repo, create=False)
    by_tree: dict[str, dict[str, AssetFacts]] = {}
    facts_by_blob: dict[str, AssetFacts] = {}
    out = {}
    for ref in g.references:
        if ref.startswith("refs/heads/"):
            label = "branch:" + ref.removeprefix("refs/heads/")
        elif ref.startswith("refs/tags/"):
            label = "tag:" + ref.removeprefix("refs/tags/")
        else:
            continue
        tree = g.references[ref].peel(pygit2.Commit).tree
        if str(tree.id) not in by_tree:
            blobs = {n: str(b) for n, b in history.manifest_blobs(g, tree).items()}
            missing = [b for b in set(blobs.values()) if b not in facts_by_blob]
            for i in range(0, len(missing), 500):
                chunk = missing[i : i + 500]
                q = f"SELECT blob, data FROM gitfacts WHERE blob IN ({','.join('?' * len(chunk))})"
                for b, data in db.execute(q, chunk):
                    facts_by_blob[b] = _DEC.decode(data)
            fresh = []
            for name, b in blobs.items():
                if b not in facts_by_blob:
                    facts_by_blob[b] = facts_of(decode(g[b].data, Path(f"{label}:{name}")))
                    fresh.append((b, _ENC.encode(facts_by_blob[b])))
            if fresh:
                with db:
                    db.executemany("INSERT OR IGNORE INTO gitfacts(blob, data) VALUES (?, ?)", fresh)
            by_tree[str(tree.id)] = {n: facts_by_blob[b] for n, b in blobs.items()}
        out[label] = by_tree[str(tree.id)]
    return out


def store_listing(repo: Repository) -> dict[str, tuple[int, float]]:
    """Every object present: id -> (bytes on disk, mtime). One scandir per shard."""
    from lattice.objects import OID_RE

    out = {}
    root = repo.objects.dir
    if not root.exists():
        return out
    for shard in os.scandir(root):
        if len(shard.name) != 2 or not shard.is_dir():
            continue
        for e in os.scandir(shard.path):
            oid = shard.name + e.name.removesuffix(".zst")
            if OID_RE.fullmatch(oid):
                st = e.stat()
                out[oid] = (st.st_size, st.st_mtime)
    return out


def installed_generators(repo: Repository) -> dict[str, str]:
    from lattice.generators import registry

    gens = {g.id: str(g.version) for g in registry(repo).all()}
    from lattice.export import ExportGenerator  # exports re-make through lattice.export

    gens.setdefault(ExportGenerator.id, str(ExportGenerator.version))
    return gens
