"""Lineage: the DAG that recipes' inputs form between assets.

Built from the index's `inputs` table, so planning over 10,000 assets reads
one table. An asset is stale when an input's effective output differs from
the one its recipe was made from, or when an input is itself stale (it will
change once re-rendered).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable

from lattice.errors import InvalidInput


class Graph:
    def __init__(self, edges: Iterable[tuple[str, str, str]], effective: dict[str, str]):
        """edges: (child, parent, recorded parent object); effective: asset → effective object."""
        self.parents: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self.children: dict[str, list[str]] = defaultdict(list)
        for child, parent, obj in edges:
            self.parents[child].append((parent, obj))
            self.children[parent].append(child)
        self.effective = effective

    @classmethod
    def from_index(cls, index) -> "Graph":
        edges = index.edges()
        # Without a single input edge (a project of imports) nobody's effective output matters.
        eff = dict(index.db.execute("SELECT path, effective FROM assets")) if edges else {}
        return cls(edges, eff)

    def ancestors(self, name: str) -> list[str]:
        return self._walk(name, lambda n: [p for p, _ in self.parents.get(n, ())])

    def descendants(self, name: str) -> list[str]:
        return self._walk(name, lambda n: self.children.get(n, ()))

    @staticmethod
    def _walk(start: str, step) -> list[str]:
        seen: dict[str, None] = {}
        queue = deque(step(start))
        while queue:
            n = queue.popleft()
            if n not in seen and n != start:
                seen[n] = None
                queue.extend(step(n))
        return list(seen)

    def would_cycle(self, child: str, parents: Iterable[str]) -> list[str] | None:
        """The cycle that making `child` depend on `parents` would close, if any."""
        for p in parents:
            if p == child:
                return [child, child]
            path = self._path(child, p)
            if path:
                return [*path, child]
        return None

    def _path(self, src: str, dst: str) -> list[str] | None:
        """A path src → … → dst following parent→child edges."""
        prev: dict[str, str | None] = {src: None}
        queue = deque([src])
        while queue:
            n = queue.popleft()
            if n == dst:
                out = [n]
                while prev[out[-1]] is not None:
                    out.append(prev[out[-1]])
                return out[::-1]
            for c in self.children.get(n, ()):
                if c not in prev:
                    prev[c] = n
                    queue.append(c)
        return None

    def cycle(self) -> list[str] | None:
        """A cycle in the lineage (`a, b, a`), if there is one: recipes
        refuse to make one, but two branches can each add half of it."""
        indeg = {n: len(ps) for n, ps in self.parents.items()}
        ready = deque(n for n in self.children if not indeg.get(n))
        while ready:
            for c in self.children.get(ready.popleft(), ()):
                indeg[c] -= 1
                if indeg[c] == 0:
                    ready.append(c)
        left = sorted(n for n, d in indeg.items() if d > 0)
        if not left:
            return None
        # Every asset left has a parent left: walk parents until one repeats.
        path, at = [left[0]], {left[0]: 0}
        while True:
            nxt = next(p for p, _ in self.parents[path[-1]] if indeg.get(p, 0) > 0)
            if nxt in at:
                return [*path[at[nxt]:], nxt][::-1]
            at[nxt] = len(path)
            path.append(nxt)

    @staticmethod
    def breaking(cycle: list[str], generator: str) -> str:
        """How to break `cycle` (as cycle() gives it: each asset made from
        the one before): re-make its first asset, whose recipe's `generator`
        is given, from other inputs."""
        from lattice.errors import command

        name, made_from = cycle[0], cycle[-2]
        return (f"re-make {name} from inputs other than {made_from} "
                f"({command('lattice gen', name, options=f'--model {generator} --input …')}, with its --set options)")

    def stale(self) -> set[str]:
        """Every asset whose recipe no longer matches its inputs, transitively."""
        direct = {
            child
            for child, ins in self.parents.items()
            if any(self.effective.get(p) != obj for p, obj in ins)
        }
        out = set(direct)
        queue = deque(direct)
        while queue:
            for c in self.children.get(queue.popleft(), ()):
                if c not in out:
                    out.add(c)
                    queue.append(c)
        return out

    def order(self, names: Iterable[str]) -> list[str]:
        """`names` in dependency order (inputs first); Kahn's algorithm over
        the sub-graph, ties broken by name so plans are stable."""
        import heapq

        wanted = set(names)
        indeg = {n: 0 for n in wanted}
        for n in wanted:
            for p, _ in self.parents.get(n, ()):
                if p in wanted:
                    indeg[n] += 1
        ready = [n for n, d in indeg.items() if d == 0]
        heapq.heapify(ready)
        out = []
        while ready:
            n = heapq.heappop(ready)
            out.append(n)
            for c in self.children.get(n, ()):
                if c in indeg:
                    indeg[c] -= 1
                    if indeg[c] == 0:
                        heapq.heappush(ready, c)
        if len(out) != len(wanted):
            stuck = sorted(set(wanted) - set(out))
            raise InvalidInput(f"the lineage has a cycle through {', '.join(stuck[:5])}", hint="`lattice fsck` reports it")
        return out
