"""(high, low) path pairs: every ordered pair of scored root-to-leaf paths with value(high) - value(low) > beta
and value(high) > alpha, shuffled with a seed (upstream's rule, with the thresholds as floats)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from evolve.agent_r.config import parse_threshold
from evolve.agent_r.node import Node
from evolve.agent_r.tree import leaves


@dataclass(frozen=True)
class Pair:
    high: Node
    low: Node

    @property
    def gap(self) -> float:
        return self.high.mean - self.low.mean


def make_pairs(root: Node, alpha: float | str, beta: float | str, seed: int = 123) -> list[Pair]:
    """The qualifying pairs (empty when no path succeeded: the root's value is 0). A leaf's value is its mean."""
    a, b = parse_threshold(alpha, "alpha"), parse_threshold(beta, "beta")
    if root.value <= 0:
        return []
    ends = [(n, n.mean) for n in sorted(leaves(root), key=lambda n: -n.mean)]
    out = [Pair(h, l) for h, vh in ends if vh > a for l, vl in ends if vh - vl > b]
    random.Random(seed).shuffle(out)
    return out
