"""Own and clade pass/fail counts of the tree's nodes, derived from immutable outcome rows.

A node's own counts are its evaluations; its clade counts pool the node and every descendant (the paper's
CMP estimate is `s_clade / (s_clade + f_clade)`). Counts are kept incrementally: an outcome is added to its
node and to each ancestor (O(depth)), and `recompute` rebuilds everything from the rows to check it. Getters
return fresh tuples, never live containers, so no caller can alias and grow a node's record (the defect of
the released HGM code, whose estimator extended a node's own list with its descendants' results).

Which outcome statuses count: `pass` is a success; `fail` and `timeout` (the agent ran out of its own time)
are failures; `infra_error` (the sandbox or harness failed, not the agent) is never counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

COUNTED = {"pass": True, "fail": False, "timeout": False}
"""Outcome status -> success? Statuses missing here (infra_error) are not the agent's result."""


@dataclass(frozen=True)
class Outcome:
    """One immutable evaluation row, as the scheduler sees it."""

    node_id: str
    task_id: str
    status: str


class CladeStats:
    """Own and clade (successes, failures) per node. Not thread-safe: the scheduler holds its lock."""

    def __init__(self) -> None:
        self._parent: dict[str, str | None] = {}
        self._own: dict[str, tuple[int, int]] = {}
        self._clade: dict[str, tuple[int, int]] = {}
        self._rows: list[Outcome] = []

    # --- building ---------------------------------------------------------------------------------
    def add_node(self, node_id: str, parent_id: str | None) -> None:
        if node_id in self._parent:
            raise ValueError(f"node {node_id!r} is already in the tree")
        if parent_id is not None and parent_id not in self._parent:
            raise ValueError(f"parent {parent_id!r} of {node_id!r} is not in the tree")
        self._parent[node_id] = parent_id
        self._own[node_id] = (0, 0)
        self._clade[node_id] = (0, 0)

    def add_outcome(self, node_id: str, task_id: str, status: str) -> None:
        """Record one evaluation row; counted statuses update the node and all its ancestors."""
        if node_id not in self._parent:
            raise KeyError(f"outcome for unknown node {node_id!r}")
        self._rows.append(Outcome(node_id, task_id, status))
        if status not in COUNTED:
            return
        ds, df = (1, 0) if COUNTED[status] else (0, 1)
        s, f = self._own[node_id]
        self._own[node_id] = (s + ds, f + df)
        cur: str | None = node_id
        while cur is not None:
            s, f = self._clade[cur]
            self._clade[cur] = (s + ds, f + df)
            cur = self._parent[cur]

    # --- reading (fresh values only) --------------------------------------------------------------
    def own(self, node_id: str) -> tuple[int, int]:
        return self._own[node_id]

    def clade(self, node_id: str) -> tuple[int, int]:
        return self._clade[node_id]

    def parent(self, node_id: str) -> str | None:
        return self._parent[node_id]

    def nodes(self) -> list[str]:
        return list(self._parent)

    def children(self, node_id: str) -> list[str]:
        return [n for n, p in self._parent.items() if p == node_id]

    def depth(self, node_id: str) -> int:
        d, cur = 0, self._parent[node_id]
        while cur is not None:
            d, cur = d + 1, self._parent[cur]
        return d

    def rows(self) -> tuple[Outcome, ...]:
        return tuple(self._rows)

    def cmp_estimate(self, node_id: str) -> float | None:
        """Pooled clade pass rate, None before any counted outcome in the clade."""
        s, f = self._clade[node_id]
        return s / (s + f) if s + f else None

    # --- checking -----------------------------------------------------------------------------------
    def recompute(self) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
        """Own and clade counts rebuilt from the rows alone (sum over each subtree)."""
        own = {n: (0, 0) for n in self._parent}
        for r in self._rows:
            if r.status in COUNTED:
                s, f = own[r.node_id]
                own[r.node_id] = (s + 1, f) if COUNTED[r.status] else (s, f + 1)
        clade = dict(own)
        kids: dict[str, list[str]] = {n: [] for n in self._parent}
        for n, p in self._parent.items():
            if p is not None:
                kids[p].append(n)

        def total(n: str) -> tuple[int, int]:
            s, f = own[n]
            for k in kids[n]:
                ks, kf = total(k)
                s, f = s + ks, f + kf
            clade[n] = (s, f)
            return s, f

        for n, p in self._parent.items():
            if p is None:
                total(n)
        return own, clade

    def check(self) -> None:
        """Raise AssertionError when the incremental counts differ from a full recomputation."""
        own, clade = self.recompute()
        if own != self._own or clade != self._clade:
            bad = [n for n in self._parent if own[n] != self._own[n] or clade[n] != self._clade[n]]
            raise AssertionError(f"clade counts drifted from the outcome rows at nodes {bad[:5]}")

    @classmethod
    def from_rows(cls, nodes: Iterable[tuple[str, str | None]], rows: Iterable[Outcome]) -> "CladeStats":
        """Rebuild from stored nodes (parents before children) and outcome rows."""
        stats = cls()
        for node_id, parent_id in nodes:
            stats.add_node(node_id, parent_id)
        for r in rows:
            stats.add_outcome(r.node_id, r.task_id, r.status)
        return stats
