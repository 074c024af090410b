"""`lattice fsck`: verify the repository and, with `repair`, fix what is derivable.

Checks every manifest file, every object's hash, every reference from a
version to an object, the index against the manifest, the queue database and
the history repository. Repair rebuilds the index, quarantines damaged
objects and removes stale temporary files; it never deletes user data.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from lattice.errors import LatticeError
from lattice.repo import Repository

TEMP_GRACE_S = 3600


@dataclass
class Problem:
    kind: str  # manifest, object, reference, index, temp, queue, history, journal
    subject: str  # the file, object or asset concerned
    message: str
    repaired: str = ""


def _finish_interrupted_change(repo: Repository, repair: bool, problems: list) -> bool:
    """Re-do a switch, merge or manifest batch a crash interrupted (its
    journal is there); one that cannot be re-done is reported, and set aside
    by repair. False when it is still in the way."""
    from lattice.branches import recover
    from lattice.errors import RepositoryCorrupt
    from lattice.repo import BATCH_JOURNAL, JOURNAL

    for journal, finish in ((repo.dir / BATCH_JOURNAL, Repository.finish_batch), (repo.dir / JOURNAL, recover)):
        if not journal.exists():
            continue
        try:
            finish(repo)
        except RepositoryCorrupt as e:
            p = Problem("journal", str(journal), e.message)
            problems.append(p)
            if not repair:
                return False
            aside = repo.dir / "quarantine" / f"{journal.name}-{int(time.time())}"
            aside.parent.mkdir(exist_ok=True)
            os.replace(journal, aside)
            p.repaired = f"moved to {aside}; the manifest is as the interrupted change left it (history has the rest)"
    return True


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    objects: int = 0
    assets: int = 0

    @property
    def ok(self) -> bool:
        return all(p.repaired for p in self.problems)


def _lineage_cycle(records: dict) -> list[str] | None:
    """A cycle the current recipes' inputs make (a merge of two branches could)."""
    from lattice.lineage import Graph

    edges = [(name, p, o) for name, r in records.items() if r.current.recipe
             for p, o in zip(r.current.recipe.inputs, r.current.recipe.input_objects)]
    return Graph(edges, {}).cycle()


def _files_that_are_folders(names) -> list[tuple[str, str]]:
    """(asset, the first asset under it as a folder) for each asset whose
    name is also a folder of assets (`x.png` and `x.png/a.png`)."""
    names = set(names)
    out: dict[str, str] = {}
    for name in sorted(names):
        parts = name.split("/")
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            if folder in names:
                out.setdefault(folder, name)
    return sorted(out.items())


def fsck(repo: Repository, repair: bool = False) -> Report:
    from lattice.records import decode

    report = Report()
    problems = report.problems
    if not _finish_interrupted_change(repo, repair, problems):
        return report  # the index cannot be opened until the journal is dealt with
    records = {}
    try:
        repo.config
    except LatticeError as e:  # every command that runs jobs refuses until it is fixed
        problems.append(Problem("config", str(repo.dir / "config.toml"), e.message.removeprefix(f"{repo.dir / 'config.toml'}: ")))
    with repo.lock:
        for name in repo.manifest.names():
            path = repo.manifest.file_of(name)
            try:
                records[name] = decode(path.read_bytes(), path)
            except LatticeError as e:
                p = Problem("manifest", str(path), e.message.removeprefix(f"{path}: "))
                if repair:
                    restored = _restore_manifest(repo, name, path)
                    if restored is not None:
                        records[name], p.repaired = restored
                problems.append(p)
            else:
                if records[name].path != name:
                    problems.append(Problem("manifest", str(path), f"records path {records[name].path!r} but is stored as {name!r}"))
        report.assets = len(records)

        damaged = set()
        for oid in repo.objects:
            report.objects += 1
            why = repo.objects.verify(oid)
            if why:
                damaged.add(oid)
                p = Problem("object", oid, why)
                if repair:
                    dest = repo.objects.quarantine(oid, repo.dir / "quarantine")
                    p.repaired = f"moved to {dest}"
                problems.append(p)

        for name, record in records.items():
            for v in record.versions:
                if v.object in damaged or not repo.objects.has(v.object):
                    regenerable = v.recipe is not None and v.recipe.deterministic
                    if v.object in damaged or not regenerable:
                        what = "damaged" if v.object in damaged else "missing"
                        hint = "re-make it with `lattice render`" if regenerable else "re-add the file if you still have it"
                        problems.append(Problem("reference", f"{name}@v{v.number}", f"object {v.object} is {what}; {hint}"))

        for name, inside in _files_that_are_folders(records):
            problems.append(Problem("manifest", name, f"is an asset, and so is {inside}: a name cannot be both a file and a folder, "
                                    "and no working tree can hold both (a merge of branches that each had one let them in)"))

        cycle = _lineage_cycle(records)
        if cycle:
            from lattice.lineage import Graph

            fix = Graph.breaking(cycle, records[cycle[0]].current.recipe.generator)
            problems.append(Problem("lineage", " -> ".join(cycle), f"recipes make a cycle, which no render can finish; {fix}"))

        index_problems = _check_index(repo, records)
        if index_problems and repair:
            rebuild_index(repo, records)
            for p in index_problems:
                p.repaired = "index rebuilt"
        problems.extend(index_problems)

        cutoff = time.time() - TEMP_GRACE_S
        for tmp in repo.stray_temps():
            if tmp.lstat().st_mtime < cutoff:
                p = Problem("temp", str(tmp), "stray temporary file from an interrupted write")
                if repair:
                    os.unlink(tmp)
                    p.repaired = "removed"
                problems.append(p)

        problems.extend(_compare_with_history(repo, records, repair))

    # Never let history commit a manifest file that is still damaged.
    manifests_sound = all(p.repaired for p in problems if p.kind == "manifest")
    for extra in _extra_checks(repo, repair and manifests_sound):
        problems.extend(extra)
    return report


def _compare_with_history(repo: Repository, records: dict, repair: bool) -> list[Problem]:
    """Versions are only ever appended, and assets never deleted: a manifest
    file with fewer versions than history HEAD, or gone, is damage (a file
    cut at a line boundary still parses), never a change to commit."""
    from lattice import history
    from lattice.records import decode

    try:
        g = history.open_git(repo, create=False)
        head = history.head_commit(g)
        recorded = history.manifest_blobs(g, head.tree) if head is not None else {}
    except Exception:
        return []  # history's own checks report an unreadable history
    problems = []
    for name in history.drift(repo, g, recorded):
        if name not in recorded:
            continue  # new since the last commit: history catches up
        path = repo.manifest.file_of(name)
        try:
            committed = len(decode(g[recorded[name]].data, path).versions)
        except Exception:
            continue
        have = len(records[name].versions) if name in records else None
        if have is not None and have >= committed:
            continue
        what = "is missing" if have is None and not path.exists() else f"holds {have} version(s), history HEAD has {committed}"
        if have is None and path.exists():
            continue  # unparseable: reported above
        p = Problem("manifest", str(path), f"{what}: truncated or deleted")
        if repair:
            restored = _restore_manifest(repo, name, path)
            if restored is not None:
                records[name], p.repaired = restored
        problems.append(p)
    return problems


def _restore_manifest(repo: Repository, name: str, path):
    """Replace a damaged manifest file by its last committed copy (the
    damaged one goes to quarantine/). Returns (record, what was done) or None
    when history holds no sound copy."""
    from lattice import history
    from lattice.fsutil import atomic_write
    from lattice.records import decode

    try:
        g = history.open_git(repo, create=False)
        head = history.head_commit(g)
        blob = history.manifest_blobs(g, head.tree).get(name) if head is not None else None
        if blob is None:
            return None
        data = g[blob].data
        record = decode(data, path)
    except Exception:  # no history, damaged history, damaged copy: nothing to restore from
        return None
    if not os.path.lexists(path):
        atomic_write(path, data)
        return record, "restored from history HEAD"
    aside = repo.dir / "quarantine" / f"manifest-{name.replace('/', '__')}-{int(time.time())}.toml"
    aside.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, aside)
    atomic_write(path, data)
    return record, f"restored from history HEAD; the damaged copy is {aside}"


def _check_index(repo: Repository, records: dict) -> list[Problem]:
    try:
        index = repo.index
        problems = [Problem("index", str(index.path), p) for p in index.check()]
        rows = {r.path: r for r in index.rows()}
    except Exception as e:  # a damaged index file is derivable: report, rebuild
        return [Problem("index", str(repo.dir / "index.db"), f"unreadable ({e})")]
    for name in sorted(set(records) - set(rows)):
        problems.append(Problem("index", name, "asset is in the manifest but not in the index"))
    for name in sorted(set(rows) - set(records)):
        problems.append(Problem("index", name, "asset is in the index but not in the manifest"))
    for name in sorted(set(rows) & set(records)):
        r, rec = rows[name], records[name]
        if (r.versions, r.object, r.effective) != (len(rec.versions), rec.current.object, rec.effective.object):
            problems.append(Problem("index", name, "index entry does not match the manifest"))
    return problems


def rebuild_index(repo: Repository, records: dict | None = None) -> None:
    """Re-derive the index from the manifest, keeping the recipe cache (and
    the rest that is not derivable) in place, or, from a damaged file, what
    of it can still be read; the damaged file goes to quarantine/."""
    from lattice.index import Index

    path = repo.dir / "index.db"
    index = repo.__dict__.get("index")
    try:
        index = repo.index
        sound = not index.check()
    except Exception:  # noqa: BLE001 - unopenable or unreadable: damaged
        sound = False
    if not sound:
        salvaged = _salvage(index)
        if index is not None:
            index.close()
        stamp = int(time.time())
        for suffix in ("", "-wal", "-shm"):
            src = repo.dir / f"index.db{suffix}"
            if src.exists():
                (repo.dir / "quarantine").mkdir(exist_ok=True)
                os.replace(src, repo.dir / "quarantine" / f"index.db-{stamp}{suffix}")
        repo.__dict__["index"] = index = Index(path)
        with index:
            for table, rows in salvaged.items():
                if rows:
                    index.db.executemany(f"INSERT OR IGNORE INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
    if records is None:
        records = {n: repo.manifest.read(n) for n in repo.manifest.names()}
    with index:
        index.clear_assets()
        for name, record in records.items():
            index.put(record, repo.manifest.file_of(name).stat())


# What a damaged index holds that the manifest cannot give back: the recipe
# cache, probed media facts, and the files exports wrote outside the project.
SALVAGED_TABLES = ("cache", "media", "exports")


def _salvage(index) -> dict[str, list[tuple]]:
    """The rows of SALVAGED_TABLES that a damaged index still gives, table by table."""
    out: dict[str, list[tuple]] = {}
    for table in SALVAGED_TABLES if index is not None else ():
        try:
            out[table] = index.db.execute(f"SELECT * FROM {table}").fetchall()
        except Exception:  # noqa: BLE001 - that part is lost: the cache refills, exports ask for --force
            pass
    return out


def _extra_checks(repo: Repository, repair: bool = False):
    """Checks of parts other modules own (queue, history), when present."""
    from lattice import history

    yield [Problem("history", str(history.git_dir(repo)), m, fixed) for m, fixed in history.fsck(repo, repair)]
    queue_db = repo.dir / "queue.db"
    if queue_db.exists():
        from lattice.queue import check_file

        found = [Problem("queue", str(queue_db), m) for m in check_file(queue_db, reading=repo.reading)]
        if found and repair:
            # The queue is not derivable; keep the damaged file for inspection
            # and start a new, empty one (jobs can be submitted again).
            stamp = int(time.time())
            for suffix in ("", "-wal", "-shm"):
                src = repo.dir / f"queue.db{suffix}"
                if src.exists():
                    (repo.dir / "quarantine").mkdir(exist_ok=True)
                    os.replace(src, repo.dir / "quarantine" / f"queue.db-{stamp}{suffix}")
            for p in found:
                p.repaired = f"moved to quarantine/queue.db-{stamp}; a new empty queue starts (re-run the commands whose jobs were queued)"
        yield found
