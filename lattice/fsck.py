"""`lattice fsck`: verify the repository and, with `repair`, fix what is derivable.

Checks every manifest file, every object's hash, every reference from a
version to an object, the index against the manifest, the queue database and
the history repository. Repair rebuilds the index, quarantines damaged
objects, stores again the bytes a working file still holds and removes stale
temporary files; it never deletes user data.

A version whose object this store lacks is damage only when nothing can give
its bytes back (neither the store, nor a working file, nor a deterministic
recipe whose inputs can be had) and something needs them: it is the current
or the pinned version. An older version's bytes may be absent for good
reasons: a clone gets only the current file of each import, and
`gc --include-nondeterministic` evicts outputs that cannot be re-made. Those
are notes (kind "absent"), not problems; so is a needed version that gc
evicted at the user's request, or that a working file still holds.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from lattice.errors import InvalidInput, LatticeError
from lattice.paths import shown
from lattice.repo import Repository

TEMP_GRACE_S = 3600


@dataclass
class Problem:
    kind: str  # manifest, object, reference, index, temp, queue, history, journal; notes: absent
    subject: str  # the file, object or asset concerned
    message: str
    repaired: str = ""


def _finish_interrupted_change(repo: Repository, repair: bool, problems: list) -> bool:
    """Re-do a switch, merge or manifest batch a crash interrupted (its
    journal is there); one that cannot be re-done is reported, and set aside
    by repair. False when it is still in the way."""
    from lattice.switch import recover
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
    notes: list[Problem] = field(default_factory=list)  # absences that are no damage: never fail
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


# What can give the bytes of an object back, best first.
_RANK = {"present": 0, "working": 1, "remake": 2, "evicted": 3, "lost": 4}
NONDETERMINISTIC_GC = "`lattice gc --include-nondeterministic`"


class _Sources:
    """Where the bytes of an object could come from: the store, the working
    file of an asset that records it, a deterministic recipe whose inputs
    can be had; else nowhere, because gc evicted them at the user's request
    (its run log says so) or because they are lost. Asked about the few
    objects the store lacks; working files are hashed once each."""

    def __init__(self, repo: Repository, records: dict, damaged: set[str]):
        self.repo, self.damaged = repo, damaged
        self.recorded: dict[str, list[tuple[str, object]]] = {}  # object -> (asset, version) recording it
        for name, record in records.items():
            for v in record.versions:
                self.recorded.setdefault(v.object, []).append((name, v))
        self._states: dict[str, tuple[str, str]] = {}
        self._hashes: dict[str, str] = {}
        self._for_good: set[str] | None = None

    def state(self, oid: str) -> tuple[str, str]:
        """(how its bytes can be had: a key of _RANK, and a detail): for
        "working" the asset whose file holds them, for "evicted" and "lost"
        why nothing can re-make them (a phrase)."""
        known = self._states.get(oid)
        if known is None:
            self._states[oid] = ("lost", "its recipe's inputs lead back to it")  # guards bad data: hashes form no cycles
            known = self._states[oid] = self._find(oid)
        return known

    def stored(self, oid: str) -> None:
        """The object was just stored (again)."""
        self._states[oid] = ("present", "")

    def spec(self, name: str, oid: str) -> str:
        """"name@vN" of the version of `name` that records `oid`, else "name (oid)"."""
        for n, v in self.recorded.get(oid, ()):
            if n == name:
                return f"{name}@v{v.number}"
        return f"{name} ({oid})"

    def _find(self, oid: str) -> tuple[str, str]:
        if oid not in self.damaged and self.repo.objects.has(oid):
            return "present", ""
        holder = self._holder(oid)
        if holder is not None:
            return "working", holder
        best: tuple[str, str] | None = None
        for _, v in self.recorded.get(oid, ()):
            r = v.recipe
            if r is None or not r.deterministic:
                continue
            outcome = ("remake", "")
            gap = generator_gap(self.repo, r)
            if gap:
                outcome = ("lost", f"it cannot be re-made: {gap}")
            for inp, ioid in zip(r.inputs, r.input_objects) if not gap else ():
                got, _ = self.state(ioid)
                if _RANK[got] <= _RANK["remake"] or _RANK[got] <= _RANK[outcome[0]]:
                    continue
                gone = f"was evicted by {NONDETERMINISTIC_GC} at your request" if got == "evicted" else "is not in this store either"
                outcome = (got, f"it cannot be re-made: its input {self.spec(inp, ioid)} {gone}")
            if best is None or _RANK[outcome[0]] < _RANK[best[0]]:
                best = outcome
        if best is not None:  # a deterministic recipe: its inputs tell
            return best
        if oid in self.for_good:
            return "evicted", f"evicted by {NONDETERMINISTIC_GC} at your request; nothing can re-make it"
        if oid not in self.recorded:  # an input no version here records (deleted by hand from the manifest?)
            return "lost", "no version in the manifest records it"
        made = [v.recipe.generator for _, v in self.recorded[oid] if v.recipe is not None]
        if made:
            return "lost", f"its generator {made[0]} is not deterministic, so nothing can re-make it"
        return "lost", "it was imported, so nothing can re-make it"

    @property
    def for_good(self) -> set[str]:
        if self._for_good is None:
            from lattice.gc import evicted_for_good

            self._for_good = evicted_for_good(self.repo)
        return self._for_good

    def _holder(self, oid: str) -> str | None:
        """An asset recording `oid` whose working file holds those bytes."""
        from lattice.status import hash_file

        for name, _ in self.recorded.get(oid, ()):
            if name not in self._hashes:
                try:
                    self._hashes[name] = hash_file(self.repo.working_path(name))
                except (LatticeError, OSError):  # a path that leaves the project, or one it may not read
                    self._hashes[name] = ""
            if self._hashes[name] == oid:
                return name
        return None


def _check_references(repo: Repository, records: dict, damaged: set[str], repair: bool, report: Report) -> int:
    """Check every version's object; return how many objects repair stored
    again from working files. Damage (a problem): a damaged object, or the
    current or pinned version's bytes that nothing can give back. Absence
    (a note): an older version's bytes this store lacks, a needed version's
    that gc evicted at the user's request, or that a working file holds
    (repair stores those again)."""
    from lattice.remake import adopt_working_file

    sources = _Sources(repo, records, damaged)
    adopted = 0
    for name, record in records.items():
        needed = {record.current.number, record.effective.number}
        for v in record.versions:
            spec = f"{name}@v{v.number}"
            if v.object not in damaged and repo.objects.has(v.object):
                continue
            how, detail = sources.state(v.object)
            if v.object in damaged and not repair:  # still there, and still to be set aside
                if how == "working":
                    fix = f"`lattice fsck --repair` sets it aside and stores it again from the working file of {detail}"
                elif how == "remake":
                    fix = "`lattice fsck --repair` sets it aside; its recipe re-makes it (`lattice render`)"
                elif v.number in needed:
                    fix = "re-add the file if you still have it"
                else:
                    fix = f"`lattice fsck --repair` sets it aside; {detail}"
                report.problems.append(Problem("reference", spec, f"object {v.object} is damaged; {fix}"))
                continue
            if how in ("present", "remake"):  # a cache gc evicted (or a copy another asset stored again)
                continue
            if how == "working":
                note = Problem("absent", spec, f"object {v.object} is not in the store, but the working file of {detail} holds it"
                               + ("" if repair else "; `lattice fsck --repair` stores it again"))
                if repair and adopt_working_file(repo, detail, v.object):
                    sources.stored(v.object)
                    adopted += 1
                    note.repaired = f"stored again from {detail}"
                report.notes.append(note)
            elif how == "evicted" or v.number not in needed:
                why = _absence(v, v.number not in needed, how, detail)
                report.notes.append(Problem("absent", spec, f"object {v.object} is not in this store: {why}"))
            else:
                report.problems.append(Problem("reference", spec, f"object {v.object} is missing; {detail}; {_remedy(repo, record, v, records)}"))
    return adopted


def generator_gap(repo: Repository, recipe) -> str | None:
    """Why the generator installed here cannot re-make what `recipe` made
    (render would refuse it), or None when it can: none of that id, or
    another version of it (a clone made where an older release ran)."""
    from lattice.generators import registry

    try:
        gen = registry(repo).get(recipe.generator)
    except InvalidInput as e:  # not installed here, or its plug-in did not load
        return e.message
    except LatticeError:  # a broken config.toml: reported on its own
        return None
    if str(gen.version) != recipe.generator_version:
        return f"it was made by {gen.id} version {recipe.generator_version}, and version {gen.version} is installed"
    return None


def _absence(v, older: bool, how: str, detail: str) -> str:
    """Why the bytes of an older version, or of one gc evicted at the
    user's request, are not here (after "not in this store: ")."""
    if how == "lost" and v.recipe is None:
        return "an older version of an import, which a clone does not get (git carries only the current file); nothing can re-make it"
    if how == "lost" and not v.recipe.deterministic:
        detail = f"never made in this clone, or evicted; {detail}"
    return f"an older version, {detail}" if older else detail


def _remedy(repo: Repository, record, v, records: dict) -> str:
    """What the user can do about a needed version whose bytes are gone."""
    from lattice.errors import command
    from lattice.paths import here

    name = record.path
    if v.number != len(record.versions):  # pinned
        what = f"copy its file back to {here(name)} and run `lattice fsck --repair`, or " if v.recipe is None else ""
        return f"{what}{command('lattice unpin', name)} (or pin another version)"
    if v.recipe is None:
        return f"copy the file back to {here(name)} and run `lattice fsck --repair` (its bytes are stored again when they match)"
    moved = any(i in records and records[i].effective.object != o for i, o in zip(v.recipe.inputs, v.recipe.input_objects))
    if v.recipe.deterministic and generator_gap(repo, v.recipe):
        return f"{command('lattice regen', name)} records a new version with the generator installed here"
    if v.recipe.deterministic and moved:
        return f"{command('lattice render', name)} makes a new version from its inputs as they are now"
    if v.recipe.deterministic:
        return "bring that input back first"
    return f"{command('lattice regen', name)} records a new output"


def fsck(repo: Repository, repair: bool = False) -> Report:
    from lattice.records import conflicted, decode

    report = Report()
    problems = report.problems
    if not _finish_interrupted_change(repo, repair, problems):
        return report  # the index cannot be opened until the journal is dealt with
    try:
        # As any command does first: a change a killed process left out of
        # history is committed now, before history is compared with the manifest.
        repo.index
    except Exception:  # noqa: BLE001 - a damaged index is reported (and rebuilt) below
        pass
    records = {}
    try:
        repo.config
    except LatticeError as e:  # every command that runs jobs refuses until it is fixed
        problems.append(Problem("config", str(repo.dir / "config.toml"), e.message.removeprefix(f"{repo.dir / 'config.toml'}: ")))
    with repo.lock:
        unreadable = set()  # manifest files that stay unreadable: their index rows are left as they are
        for name in repo.manifest.names():
            path = repo.manifest.file_of(name)
            try:
                data = path.read_bytes()
                records[name] = decode(data, path)
            except LatticeError as e:
                p = Problem("manifest", str(path), e.message.removeprefix(f"{path}: "))
                if conflicted(data):
                    # Only the user can choose a side; history's copy would undo their merge.
                    p.message += ("; resolve it in git (edit the file to keep one side, or `git checkout --ours/--theirs` it, "
                                  "then `git add` it)")
                    if repair:
                        p.message += "; not repaired: the choice is yours, and its index entry stays as it was until then"
                elif repair:
                    restored = _restore_manifest(repo, name, path)
                    if restored is not None:
                        records[name], p.repaired = restored
                    else:
                        p.message += "; not repaired: history holds no sound copy, and its index entry stays as it was"
                if not p.repaired:
                    unreadable.add(name)
                problems.append(p)
            else:
                if records[name].path != name:
                    problems.append(Problem("manifest", str(path), f"records path {shown(records[name].path)} but is stored as {shown(name)}"))
        # Restored here, so that what follows checks the repaired manifest.
        problems.extend(_compare_with_history(repo, records, repair))

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
                    report.objects -= dest is not None
                problems.append(p)

        report.objects += _check_references(repo, records, damaged, repair, report)

        for name, inside in _files_that_are_folders(records):
            problems.append(Problem("manifest", name, f"is an asset, and so is {inside}: a name cannot be both a file and a folder, "
                                    "and no working tree can hold both (a merge of branches that each had one let them in)"))

        cycle = _lineage_cycle(records)
        if cycle:
            from lattice.lineage import Graph

            fix = Graph.breaking(cycle, records[cycle[0]].current.recipe.generator)
            problems.append(Problem("lineage", " -> ".join(cycle), f"recipes make a cycle, which no render can finish; {fix}"))

        index_problems = _check_index(repo, records, unreadable)
        if index_problems and repair:
            rebuild_index(repo, records, keep=unreadable)
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
        report.assets = len(records)  # as repaired

    # Never let history commit a manifest file that is still damaged.
    manifests_sound = all(p.repaired for p in problems if p.kind == "manifest")
    for extra in _extra_checks(repo, repair and manifests_sound):
        problems.extend(extra)
    return report


def _compare_with_history(repo: Repository, records: dict, repair: bool) -> list[Problem]:
    """Versions are only ever appended, and assets never deleted: a manifest
    file with fewer versions than history HEAD, or gone, is damage (a file
    cut at a line boundary still parses), never a change to commit."""
    from lattice import history, history_fsck
    from lattice.records import decode

    try:
        g = history.open_git(repo, create=False)
        head = history.head_commit(g)
        recorded = history.manifest_blobs(g, head.tree) if head is not None else {}
    except Exception:
        return []  # history's own checks report an unreadable history
    problems = []
    for name in history_fsck.drift(repo, g, recorded):
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


def _check_index(repo: Repository, records: dict, unreadable: set[str] = frozenset()) -> list[Problem]:
    """The index against the manifest records; the rows of `unreadable`
    manifest files (a merge conflict) are neither compared nor missed."""
    try:
        index = repo.index
        problems = [Problem("index", str(index.path), p) for p in index.check()]
        rows = {r.path: r for r in index.rows() if r.path not in unreadable}
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


def rebuild_index(repo: Repository, records: dict | None = None, keep: set[str] = frozenset()) -> None:
    """Re-derive the index from the manifest, keeping the recipe cache (and
    the rest that is not derivable) in place, or, from a damaged file, what
    of it can still be read; the damaged file goes to quarantine/. The rows
    of the assets in `keep` (manifest files that cannot be read now, such as
    one with a merge conflict) stay as they are: once the file is mended,
    the usual sync takes it from there, working-file stat cache and all."""
    from lattice.index import Index

    path = repo.dir / "index.db"
    index = repo.__dict__.get("index")
    try:
        index = repo.index
        sound = not index.check()
    except Exception:  # noqa: BLE001 - unopenable or unreadable: damaged
        sound = False
    if not sound:
        salvaged = _salvage(index, keep)
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
        index.clear_assets(keep=keep)
        for name, record in records.items():
            index.put(record, repo.manifest.file_of(name).stat())


# What a damaged index holds that the manifest cannot give back: the recipe
# cache, probed media facts, and the files exports wrote outside the project.
SALVAGED_TABLES = ("cache", "media", "exports")


def _salvage(index, keep: set[str] = frozenset()) -> dict[str, list[tuple]]:
    """The rows of SALVAGED_TABLES that a damaged index still gives, table by
    table, and those of the assets in `keep` (see rebuild_index)."""
    import json

    out: dict[str, list[tuple]] = {}
    queries = [(t, f"SELECT * FROM {t}", ()) for t in SALVAGED_TABLES]
    if keep:
        queries += [(t, f"SELECT * FROM {t} WHERE {col} IN (SELECT value FROM json_each(?))", (json.dumps(sorted(keep)),))
                    for t, col in (("assets", "path"), ("records", "path"), ("inputs", "child"))]
    for table, query, args in queries if index is not None else ():
        try:
            out[table] = index.db.execute(query, args).fetchall()
        except Exception:  # noqa: BLE001 - that part is lost: the cache refills, exports ask for --force
            pass
    return out


def _extra_checks(repo: Repository, repair: bool = False):
    """Checks of parts other modules own (queue, history), when present."""
    from lattice import history, history_fsck

    yield [Problem("history", str(history.git_dir(repo)), m, fixed) for m, fixed in history_fsck.fsck(repo, repair)]
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
