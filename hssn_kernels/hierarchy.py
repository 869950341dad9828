"""The class tree of a hierarchical segmentation problem and the lookup tables derived from it.

Conventions (see README "Conventions"):

* Every node except the virtual root owns one output channel; ``parents[c]`` is the parent channel
  of ``c`` or ``-1`` when ``c`` hangs from the root.
* ``level(c)`` = edges from the root (children of the root are level 1); ``height`` (D) = deepest level.
* ``ancestors(c)`` is A(c): ``c`` first, then its parent, ... up to level 1 (root excluded).
* ``descendants(c)`` is Dsc(c): ``c`` and everything below it, sorted by channel.
* ``tree_distance[i, j]`` = edges between leaves ``leaves[i]`` and ``leaves[j]`` (through the root when
  they share no ancestor).

Limits: at most :data:`MAX_DEPTH` levels and :data:`MAX_CHANNELS` channels (the fused kernels keep a
per-pixel path of at most 16 nodes and index channels with 16-bit integers).
"""
from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

MAX_DEPTH = 16
MAX_CHANNELS = 4096


@dataclass(frozen=True)
class HierarchyTables:
    """Packed lookup tables on one device; all integer tables are int32 unless stated.

    parent      (C,)     parent channel or -1.
    level       (C,)     level of each channel (1 = child of the root).
    bottom_up   (C,)     channels ordered children-before-parents (level descending, then channel).
    ancestors   (C, D)   A(c), self first, padded with -1.
    path        (C, D)   root-first path of c: ``path[c, l-1]`` = ancestor of c at level l, -1 past c.
    desc_ptr    (C+1,)   CSR offsets into ``desc_idx``.
    desc_idx    (sum|Dsc|,) descendants of each channel (self included), ascending.
    is_leaf     (C,)     bool.
    leaves      (L,)     leaf channels, ascending.
    leaf_index  (C,)     position of a channel in ``leaves`` or -1.
    level_map   (D, C)   int64; ``level_map[l-1, c]`` = ancestor of c at level l, or c if c is shallower.
    is_ancestor (C, C)   bool; ``is_ancestor[y, v]`` = v in A(y) (the per-node labels of target y).
    tree_distance (L, L) int32 leaf-to-leaf tree distance.
    dfs         (4, C)   the DFS pre-order tables (roots and children in channel order), rows also named:
                         ``dfs_perm`` the channel at position j, so ``Dsc(v)`` is the position range
                         ``[j, j + dfs_size[j])``; ``dfs_size`` |Dsc| of the channel at position j;
                         ``dfs_depth`` its depth (0 = a root; its level - 1); ``dfs_pos`` the position of
                         channel c. The native ops take the whole table, the Triton kernels its rows.
    dfs_path    (C, D+1) root-first path of channel c in positions, -1 past c, then 1 for a leaf, 0 otherwise.
    """

    parent: torch.Tensor
    level: torch.Tensor
    bottom_up: torch.Tensor
    ancestors: torch.Tensor
    path: torch.Tensor
    desc_ptr: torch.Tensor
    desc_idx: torch.Tensor
    is_leaf: torch.Tensor
    leaves: torch.Tensor
    leaf_index: torch.Tensor
    level_map: torch.Tensor
    is_ancestor: torch.Tensor
    tree_distance: torch.Tensor
    dfs: torch.Tensor
    dfs_path: torch.Tensor

    dfs_perm = property(lambda self: self.dfs[0])
    dfs_size = property(lambda self: self.dfs[1])
    dfs_depth = property(lambda self: self.dfs[2])
    dfs_pos = property(lambda self: self.dfs[3])


def _path_distance(path: torch.Tensor, level: torch.Tensor, rows, cols) -> torch.Tensor:
    """(len(rows), len(cols)) int32 tree distance ``psi(u, v) = level(u) + level(v) - 2 level(lca)`` between the
    channels ``rows`` and ``cols``: the lca's level is how many root-first ``path`` entries (-1 padded) the two
    share (vectorised; a pairwise Python loop took 30 s at 4096 channels)."""
    pr, pc = path[list(rows)].long(), path[list(cols)].long()
    common = torch.zeros((pr.shape[0], pc.shape[0]), dtype=torch.int32)
    for k in range(path.shape[1]):
        common += ((pr[:, k, None] == pc[None, :, k]) & (pr[:, k] >= 0)[:, None]).to(torch.int32)
    return level[list(rows)][:, None] + level[list(cols)][None, :] - 2 * common


class ClassHierarchy:
    """A class tree with one channel per non-root node.

    Build it with :meth:`from_parents`, :meth:`from_nested`, :meth:`from_dict` or
    :meth:`from_json` (JSON or YAML). Instances are immutable and hashable.
    """

    def __init__(self, parents: Sequence[int], names: Sequence[str] | None = None):
        if isinstance(parents, (str, bytes)) or not isinstance(parents, Iterable):
            raise TypeError(f"parents must be a sequence of ints, got {type(parents).__name__}")
        parents = list(parents)
        for c, p in enumerate(parents):
            if isinstance(p, bool) or not isinstance(p, numbers.Integral):
                raise TypeError(f"parent of channel {c} must be an int, got {p!r} ({type(p).__name__})")
        parents = [int(p) for p in parents]
        num = len(parents)
        if num == 0:
            raise ValueError("hierarchy has no channels")
        if num > MAX_CHANNELS:
            raise ValueError(f"hierarchy has {num} channels; the limit is {MAX_CHANNELS}")
        for c, p in enumerate(parents):
            if p == c:
                raise ValueError(f"channel {c} is its own parent")
            if p < -1 or p >= num:
                raise ValueError(f"parent of channel {c} is {p}, out of range [-1, {num - 1}]")
        if names is None:
            names = [str(c) for c in range(num)]
        names = [str(n) for n in names]
        if len(names) != num:
            raise ValueError(f"{len(names)} names for {num} channels")
        seen: dict[str, int] = {}
        for c, n in enumerate(names):
            if n in seen:
                raise ValueError(f"duplicate class name {n!r} (channels {seen[n]} and {c})")
            seen[n] = c

        levels = [0] * num
        for c in range(num):
            chain, v = [], c
            while v != -1 and levels[v] == 0:
                if v in chain:
                    cycle = chain[chain.index(v):] + [v]
                    raise ValueError("cycle in hierarchy: " + " -> ".join(map(str, cycle)))
                chain.append(v)
                v = parents[v]
            base = 0 if v == -1 else levels[v]
            for depth, u in enumerate(reversed(chain), start=1):
                levels[u] = base + depth
        height = max(levels)
        if height > MAX_DEPTH:
            raise ValueError(f"hierarchy is {height} levels deep; the limit is {MAX_DEPTH}")

        self._parents = tuple(parents)
        self._names = tuple(names)
        self._levels = tuple(levels)
        children: list[list[int]] = [[] for _ in range(num)]
        for c, p in enumerate(parents):
            if p >= 0:
                children[p].append(c)
        self._children: tuple[tuple[int, ...], ...] = tuple(tuple(ch) for ch in children)
        self._leaves = tuple(c for c in range(num) if not self._children[c])
        self._tables: dict[torch.device, HierarchyTables] = {torch.device("cpu"): self._build_tables()}
        # built now, so torch.compile never traces the build (its sorts and numpy); other devices copy these

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_parents(cls, parents: Sequence[int], names: Sequence[str] | None = None) -> "ClassHierarchy":
        """``parents[c]`` = parent channel of ``c`` or -1 (child of the virtual root)."""
        return cls(parents, names)

    @classmethod
    def from_nested(cls, tree: Mapping[str, Mapping]) -> "ClassHierarchy":
        """``{name: {child: {...}}}`` with leaves as empty dicts.

        Leaves take the first channels in depth-first order; inner nodes follow, deepest level
        first and the coarsest level last (the dataset convention: a post-order).
        """
        if not isinstance(tree, Mapping) or not tree:
            raise ValueError("nested hierarchy must be a non-empty dict of dicts")
        nodes: list[tuple[str, str | None, int, bool]] = []  # name, parent name, level, is_leaf

        def walk(sub: Mapping, parent: str | None, level: int) -> None:
            for name, kids in sub.items():
                if kids is None:
                    kids = {}
                if not isinstance(kids, Mapping):
                    raise ValueError(f"children of {name!r} must be a dict, got {type(kids).__name__}")
                nodes.append((str(name), parent, level, not kids))
                walk(kids, str(name), level + 1)

        walk(tree, None, 1)
        leaves = [n for n in nodes if n[3]]
        inner = sorted((n for n in nodes if not n[3]), key=lambda n: -n[2])  # stable: DFS within a level
        ordered = leaves + inner
        names = [n[0] for n in ordered]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ValueError(f"duplicate class name {dup!r}")
        index = {n: i for i, n in enumerate(names)}
        parents = [-1 if n[1] is None else index[n[1]] for n in ordered]
        return cls(parents, names)

    @classmethod
    def from_dict(cls, data: Mapping) -> "ClassHierarchy":
        """``{"names": [...], "parents": [...]}`` or ``{"tree": nested}``."""
        if "tree" in data:
            return cls.from_nested(data["tree"])
        if "parents" not in data:
            raise ValueError("hierarchy dict needs 'parents' (and optionally 'names') or 'tree'")
        return cls(data["parents"], data.get("names"))

    def to_dict(self) -> dict:
        return {"names": list(self._names), "parents": list(self._parents)}

    @classmethod
    def from_json(cls, path: str | Path) -> "ClassHierarchy":
        """Read a ``.json`` / ``.yaml`` / ``.yml`` file written by :meth:`to_json` or as a nested tree."""
        path = Path(path)
        text = path.read_text()
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as err:  # json.JSONDecodeError / yaml.YAMLError: name the file, one ValueError
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"{path}: not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'}"
                             f" ({first})") from None
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a mapping at the top level")
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    from_yaml = from_json

    def to_json(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    # ------------------------------------------------------------------ queries
    @property
    def num_channels(self) -> int:
        return len(self._parents)

    @property
    def num_leaves(self) -> int:
        return len(self._leaves)

    @property
    def leaves(self) -> tuple[int, ...]:
        return self._leaves

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @property
    def parents(self) -> tuple[int, ...]:
        return self._parents

    @property
    def height(self) -> int:
        return max(self._levels)

    def level(self, c: int) -> int:
        return self._levels[c]

    def is_leaf(self, c: int) -> bool:
        return not self._children[c]

    def children(self, c: int) -> tuple[int, ...]:
        return self._children[c]

    @property
    def roots(self) -> tuple[int, ...]:
        """Channels hanging from the virtual root (level 1)."""
        return tuple(c for c, p in enumerate(self._parents) if p == -1)

    def ancestors(self, c: int) -> tuple[int, ...]:
        """A(c): ``c`` first, then its parent, up to level 1."""
        out = []
        while c != -1:
            out.append(c)
            c = self._parents[c]
        return tuple(out)

    def descendants(self, c: int) -> tuple[int, ...]:
        """Dsc(c): ``c`` and all nodes below it, ascending."""
        out, stack = [], [c]
        while stack:
            v = stack.pop()
            out.append(v)
            stack.extend(self._children[v])
        return tuple(sorted(out))

    def nodes_at_level(self, level: int) -> tuple[int, ...]:
        return tuple(c for c in range(self.num_channels) if self._levels[c] == level)

    def ancestor_at_level(self, c: int, level: int) -> int:
        """Ancestor of ``c`` at ``level``; ``c`` itself when ``c`` is at or above ``level``."""
        while self._levels[c] > level:
            c = self._parents[c]
        return c

    def distance(self, u: int, v: int) -> int:
        """psi(u, v): edges on the tree path between channels u and v (through the root if needed)."""
        au, av = self.ancestors(u), self.ancestors(v)
        common = set(au) & set(av)
        if not common:
            return len(au) + len(av)
        lca = max(common, key=lambda n: self._levels[n])
        return self._levels[u] + self._levels[v] - 2 * self._levels[lca]

    @property
    def tree_distance(self) -> torch.Tensor:
        """(L, L) int64 tree distances between leaves in ``leaves`` order."""
        return self.tables("cpu").tree_distance.long()

    def distance_table(self, rows, cols) -> torch.Tensor:
        """(len(rows), len(cols)) int32 :meth:`distance` between the channels ``rows`` and ``cols``, vectorised
        (``tables().tree_distance`` is its leaf-by-leaf table)."""
        tabs = self.tables("cpu")
        return _path_distance(tabs.path, tabs.level, rows, cols)

    def leaf_to_level(self, level: int) -> torch.Tensor:
        """(C,) int64 lookup table: channel -> its ancestor at ``level`` (itself if shallower)."""
        if not 1 <= level <= self.height:
            raise ValueError(f"level {level} out of range [1, {self.height}]")
        return self.tables("cpu").level_map[level - 1].clone()

    def tables(self, device: torch.device | str = "cpu") -> HierarchyTables:
        """Packed tables on ``device`` (cached per device)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        cached = self._tables.get(device)
        if cached is None:
            cpu = self._tables[torch.device("cpu")]
            cached = HierarchyTables(*(getattr(cpu, f.name).to(device) for f in fields(cpu)))
            self._tables[device] = cached
        return cached

    def _build_tables(self) -> HierarchyTables:
        """The tables on the CPU."""
        num, depth = self.num_channels, self.height
        i32 = dict(dtype=torch.int32)
        bottom_up = sorted(range(num), key=lambda c: (-self._levels[c], c))
        anc = np.full((num, depth), -1, dtype=np.int32)
        path = np.full((num, depth), -1, dtype=np.int32)
        level_map = np.empty((depth, num), dtype=np.int64)
        is_anc = np.zeros((num, num), dtype=bool)
        desc_ptr, desc_idx = [0], []
        for c in range(num):
            a = self.ancestors(c)
            anc[c, : len(a)] = a
            path[c, : len(a)] = a[::-1]
            is_anc[c, list(a)] = True
            for lvl in range(1, depth + 1):
                level_map[lvl - 1, c] = self.ancestor_at_level(c, lvl)
            d = self.descendants(c)
            desc_idx.extend(d)
            desc_ptr.append(len(desc_idx))
        anc, path, level_map, is_anc = (torch.from_numpy(x) for x in (anc, path, level_map, is_anc))
        leaves = list(self._leaves)
        leaf_index = torch.full((num,), -1, **i32)
        leaf_index[leaves] = torch.arange(len(leaves), **i32)
        level = torch.tensor(self._levels, **i32)
        dist = _path_distance(path, level, leaves, leaves)
        order: list[int] = []
        stack = list(reversed(self.roots))
        while stack:
            v = stack.pop()
            order.append(v)
            stack.extend(reversed(self.children(v)))
        pos = {c: j for j, c in enumerate(order)}
        dfs_path = [[pos[a] for a in reversed(self.ancestors(c))] for c in range(num)]
        dfs_path = [p + [-1] * (depth - len(p)) + [int(self.is_leaf(c))] for c, p in enumerate(dfs_path)]
        return HierarchyTables(
            parent=torch.tensor(self._parents, **i32),
            level=level,
            bottom_up=torch.tensor(bottom_up, **i32),
            ancestors=anc,
            path=path,
            desc_ptr=torch.tensor(desc_ptr, **i32),
            desc_idx=torch.tensor(desc_idx, **i32),
            is_leaf=torch.tensor([self.is_leaf(c) for c in range(num)], dtype=torch.bool),
            leaves=torch.tensor(leaves, **i32),
            leaf_index=leaf_index,
            level_map=level_map,
            is_ancestor=is_anc,
            tree_distance=dist,
            dfs=torch.tensor([order, [len(self.descendants(c)) for c in order], [self._levels[c] - 1 for c in order],
                              [pos[c] for c in range(num)]], **i32),
            dfs_path=torch.tensor(dfs_path, **i32),
        )

    # ------------------------------------------------------------------ dunder
    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClassHierarchy) and (self._parents, self._names) == (
            other._parents,
            other._names,
        )

    def __hash__(self) -> int:
        return hash((self._parents, self._names))

    def __len__(self) -> int:
        return self.num_channels

    def __repr__(self) -> str:
        counts = [len(self.nodes_at_level(lvl)) for lvl in range(1, self.height + 1)]
        return (
            f"ClassHierarchy(channels={self.num_channels}, leaves={self.num_leaves}, "
            f"height={self.height}, nodes_per_level={counts})"
        )

    def __getstate__(self):
        return self.to_dict()

    def __setstate__(self, state):
        self.__init__(state["parents"], state["names"])
