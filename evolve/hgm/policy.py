"""Pure decision rules of the search: no state, no I/O; the scheduler calls them under its lock.

HGM (paper, arXiv 2510.21614, §3.2 and Algorithm 1):
- expansion: Thompson sampling over `Beta(τ(1+s_clade), τ(1+f_clade))`, the argmax is self-modified;
- evaluation: Thompson sampling over `Beta(τ(1+s_own), τ(1+f_own))` among nodes with tasks left;
- τ = (B / (B − n))^exponent, n = evaluations reserved so far (on by default; the released code has it off);
- widening: expand when N^α ≥ non-root nodes + expansions in flight (α = 0.6);
- final pick ("best-belief"): the node with the highest 1st percentile of `Beta(1+s_own, 1+f_own)`. The paper
  writes it as `I_ε` with ε = 1, which read literally is 1 for every node; we read it as the inverse CDF at
  0.01, a lower confidence bound that does not crown a node with few lucky evaluations (winner's curse).

Baselines, for the bench and the ablations: greedy (expand the node with the best own mean), DGM's parent
rule (sigmoid(10(acc − 0.5)) / (1 + children), children counted per attempt), and the released code's first
estimator (10,000 pseudo-observations at the node's own mean, plus its clade's outcomes).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Counts = Sequence[tuple[float, float]]


def tau(reserved: int, budget: int, exponent: float = 1.0, enabled: bool = True) -> float:
    """The cooling schedule: 1 at the start, B at the last evaluation; mean-preserving, variance-shrinking."""
    if not enabled or budget <= 0:
        return 1.0
    left = max(budget - reserved, 1)
    return (budget / left) ** exponent


def thompson_pick(rng: np.random.Generator, counts: Counts, t: float = 1.0) -> int:
    """Index of the argmax of one draw from `Beta(t(1+s), t(1+f))` per arm."""
    if not counts:
        raise ValueError("Thompson sampling over no arms")
    a = np.fromiter((t * (1.0 + c[0]) for c in counts), float, len(counts))
    b = np.fromiter((t * (1.0 + c[1]) for c in counts), float, len(counts))
    return int(np.argmax(rng.beta(a, b)))


def should_expand(evaluations: int, nonroot_nodes: int, expanding: int, alpha: float = 0.6) -> bool:
    """The widening rule of UCB-Air as HGM uses it: N^α ≥ |T| (root not counted, in-flight expansions are)."""
    return evaluations ** alpha >= nonroot_nodes + expanding


try:
    from scipy.stats import beta as _scipy_beta
except ImportError:  # scipy is not a dependency: the exact fallback below serves
    _scipy_beta = None


def beta_quantile(q: float, a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> np.ndarray:
    """Inverse CDF of Beta(a, b) at `q`, elementwise. scipy's `beta.ppf` when it is installed; otherwise, for
    integer parameters (every final pick: a = 1+s, b = 1+f), bisection on the exact binomial identity
    I_x(a, b) = P(Binomial(a+b−1, x) ≥ a), vectorised over nodes; other parameters use a continued fraction."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if _scipy_beta is not None:
        return np.asarray(_scipy_beta.ppf(q, a, b), dtype=float)
    if a.size and np.all(a == np.round(a)) and np.all(b == np.round(b)):
        return _integer_quantiles(q, a.astype(int).ravel(), b.astype(int).ravel()).reshape(a.shape)
    return np.array([_beta_ppf_bisect(q, x, y) for x, y in zip(a.ravel(), b.ravel())]).reshape(a.shape)


_QCACHE: dict[tuple[float, int, int], float] = {}


def _integer_quantiles(q: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cached per (q, a, b): a search asks for the same few thousand pairs again and again."""
    missing = sorted({(int(x), int(y)) for x, y in zip(a, b) if (q, int(x), int(y)) not in _QCACHE})
    if missing:
        ma, mb = np.array([m[0] for m in missing]), np.array([m[1] for m in missing])
        for (x, y), v in zip(missing, _beta_ppf_integer(q, ma, mb)):
            _QCACHE[(q, x, y)] = float(v)
    return np.array([_QCACHE[(q, int(x), int(y))] for x, y in zip(a, b)])


def _beta_ppf_integer(q: float, a: np.ndarray, b: np.ndarray, iters: int = 60) -> np.ndarray:
    n = a + b - 1
    kmax = int(n.max())
    logfact = np.array([math.lgamma(i + 1) for i in range(kmax + 1)])
    k = np.arange(kmax + 1)[None, :]
    valid = (k >= a[:, None]) & (k <= n[:, None])
    kk = np.minimum(k, n[:, None])
    logc = logfact[n][:, None] - logfact[kk] - logfact[n[:, None] - kk]
    lo, hi = np.zeros(len(a)), np.ones(len(a))
    for _ in range(iters):
        x = (lo + hi) / 2
        logpmf = logc + kk * np.log(x)[:, None] + (n[:, None] - kk) * np.log1p(-x)[:, None]
        cdf = np.where(valid, np.exp(logpmf), 0.0).sum(axis=1)  # I_x(a, b) = P(Bin(n, x) >= a)
        below = cdf < q
        lo, hi = np.where(below, x, lo), np.where(below, hi, x)
    return (lo + hi) / 2


def _beta_cdf(x: float, a: float, b: float) -> float:
    """Regularised incomplete beta I_x(a, b) by its continued fraction (Numerical Recipes' Lentz form)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _beta_cdf(1.0 - x, b, a)
    front = math.exp(a * math.log(x) + b * math.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))) / a
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return front * h


def beta_cdf(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function I_x(a, b) (the Beta(a, b) CDF at x), for any positive a, b."""
    return _beta_cdf(x, a, b)


def _beta_ppf_bisect(q: float, a: float, b: float) -> float:
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if _beta_cdf(mid, a, b) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def best_belief(own: Counts, q: float = 0.01) -> int:
    """Index of the node with the best `q`-quantile of `Beta(1+s, 1+f)` over its own outcomes."""
    arr = np.asarray(own, dtype=float).reshape(-1, 2)
    return int(np.argmax(beta_quantile(q, 1.0 + arr[:, 0], 1.0 + arr[:, 1])))


def best_mean(own: Counts) -> int:
    """Index of the node with the best empirical mean (DGM's final pick); unevaluated nodes never win, ties go
    to the node with more evaluations."""
    best, key = 0, (-1.0, -1.0)
    for i, (s, f) in enumerate(own):
        k = (s / (s + f) if s + f else -1.0, s + f)
        if k > key:
            best, key = i, k
    return best


def greedy_pick(rng: np.random.Generator, own: Counts) -> int:
    """Greedy expansion: the best own posterior mean (1+s)/(2+s+f); ties broken at random."""
    arr = np.asarray(own, dtype=float).reshape(-1, 2)
    means = (1.0 + arr[:, 0]) / (2.0 + arr.sum(axis=1))
    top = np.flatnonzero(means >= means.max() - 1e-12)
    return int(top[rng.integers(len(top))]) if len(top) > 1 else int(top[0])


def pseudo_count_counts(own: Counts, clade: Counts, pseudo: float = 10_000.0) -> list[tuple[float, float]]:
    """The released code's first CMP estimator: `pseudo` observations at the node's own mean plus its clade's
    outcomes. With 10,000 the clade is drowned and the expansion rule is a noisy greedy by own mean."""
    out = []
    for (s, f), (cs, cf) in zip(own, clade):
        mean = s / (s + f) if s + f else 0.5
        out.append((pseudo * mean + cs, pseudo * (1.0 - mean) + cf))
    return out


# --- DGM's parent choice (jennyzzt/dgm DGM_outer.py, with its defects fixed) -------------------------------
DGM_METHODS = ("random", "score_prop", "score_child_prop", "best")
"""Every documented parent-choice method (the released CLI's choice list dropped a comma and merged two)."""


def dgm_weights(accuracies: Sequence[float], children: Sequence[int], method: str = "score_child_prop") -> np.ndarray:
    """Normalised parent weights: sigmoid(10(acc − 0.5)), divided by (1 + children) for `score_child_prop`."""
    if method not in DGM_METHODS:
        raise ValueError(f"unknown DGM method {method!r}; choose one of {', '.join(DGM_METHODS)}")
    acc = np.asarray(accuracies, dtype=float)
    if method == "random":
        w = np.ones_like(acc)
    else:
        w = 1.0 / (1.0 + np.exp(-10.0 * (acc - 0.5)))
        if method == "score_child_prop":
            w = w / (1.0 + np.asarray(children, dtype=float))
    return w / w.sum()


def dgm_choose(rng: np.random.Generator, accuracies: Sequence[float], children: Sequence[int], k: int = 1,
               method: str = "score_child_prop") -> list[int]:
    """`k` parent indices: drawn with replacement by the weights, or for `best` the top-k by accuracy
    (descending; the released code sorted ascending and so took the worst)."""
    if method == "best":
        order = sorted(range(len(accuracies)), key=lambda i: -accuracies[i])
        return [order[i % len(order)] for i in range(k)]
    w = dgm_weights(accuracies, children, method)
    return [int(i) for i in rng.choice(len(w), size=k, replace=True, p=w)]
