"""Numbers the tree screen shows for HGM nodes: own and clade counts from outcome rows, the CMP estimate,
and the lower quantile of Beta(1+s, 1+f) that picks the best-belief agent."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable

from records import TreeNode


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def beta_cdf(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


@lru_cache(maxsize=65536)
def beta_quantile(q: float, a: float, b: float) -> float:
    """x with I_x(a, b) = q: Newton steps on the CDF, kept inside a shrinking bisection bracket."""
    lo, hi = 0.0, 1.0
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    x = a / (a + b)
    for _ in range(200):
        f = beta_cdf(x, a, b) - q
        if f < 0:
            lo = x
        else:
            hi = x
        if hi - lo < 1e-15:
            break
        pdf = math.exp(log_norm + (a - 1) * math.log(x) + (b - 1) * math.log1p(-x)) if 0 < x < 1 else 0.0
        step = f / pdf if pdf > 0 else 0.0
        new = x - step
        if not lo < new < hi or pdf <= 0:
            new = (lo + hi) / 2
        if abs(new - x) < 1e-15 * max(x, 1e-300):
            return new
        x = new
    return x


@dataclass
class NodeStats:
    """Counts of one HGM node: its own evaluations and its clade's (itself and every descendant)."""

    own_s: int = 0
    own_f: int = 0
    own_other: int = 0
    """Evaluations not judged (infrastructure errors): counted neither way."""
    clade_s: int = 0
    clade_f: int = 0

    @property
    def cmp(self) -> float | None:
        """CMP estimate: the clade's pooled pass rate (None before any judged evaluation)."""
        n = self.clade_s + self.clade_f
        return self.clade_s / n if n else None

    @property
    def quantile(self) -> float:
        """The 1% quantile of Beta(1+s, 1+f) over the node's own counts (HGM's best-belief score)."""
        return beta_quantile(0.01, 1.0 + self.own_s, 1.0 + self.own_f)


def hgm_stats(nodes: Iterable[TreeNode], outcomes: Iterable[dict[str, Any]]) -> dict[str, NodeStats]:
    """Own counts from outcome rows (resolved True/False; None is not judged), clade counts summed up the tree."""
    nodes = list(nodes)
    stats = {n.id: NodeStats() for n in nodes}
    for row in outcomes:
        st = stats.get(row["node_id"])
        if st is None:
            continue
        if row.get("resolved") is True:
            st.own_s += 1
        elif row.get("resolved") is False:
            st.own_f += 1
        else:
            st.own_other += 1
    parent = {n.id: n.parent_id for n in nodes}
    for nid, st in stats.items():
        seen, cur = set(), nid
        while cur is not None and cur in stats and cur not in seen:  # a cycle in bad data never loops forever
            seen.add(cur)
            stats[cur].clade_s += st.own_s
            stats[cur].clade_f += st.own_f
            cur = parent.get(cur)
    return stats


def best_belief(stats: dict[str, NodeStats]) -> str | None:
    """The node with the highest 1% quantile among nodes with at least one judged evaluation."""
    judged = [(st.quantile, nid) for nid, st in stats.items() if st.own_s + st.own_f > 0]
    return max(judged)[1] if judged else None
