"""The held-out gate: the search's best-belief node against the champion, paired on instances the search never saw.

For every held-out instance both nodes were scored on, d_i = candidate_i - champion_i. The gate reports the mean
difference with its (1 - alpha) interval and two p-values: `p_worse` (one-sided: is the candidate worse?) and
`p_better` (one-sided: is it better?). Rule `not_worse` (the default): the candidate becomes the champion unless
p_worse < alpha; rule `better`: only when p_better < alpha. Fewer than `min_held_out` pairs keep the champion.

Tests (pure functions, no scipy):
- `t`: the paired t-test; its CDF from the regularised incomplete beta function
  (P(T <= t) = 1 - I_{v/(v+t^2)}(v/2, 1/2)/2 for t >= 0), the interval from its inverse by bisection.
- `sign`: the exact sign test on the non-zero differences (ties dropped); interval of the mean difference from
  the t distribution (reported, not used for the decision).
- `bootstrap`: `bootstrap` resamples of the pairs with a fixed seed; the percentile interval; p_worse is the share
  of resampled means at or above 0 (how often the data are compatible with 'not worse'), p_better its mirror.
`auto` uses the sign test when every score is 0 or 1 (resolved or not), else the t-test.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from evolve.hgm.policy import beta_cdf
from evolve.loop.config import GateConfig


@dataclass
class GateResult:
    """The gate's numbers and decision."""

    n: int
    """Instances scored for both nodes."""
    champion_mean: float
    candidate_mean: float
    diff: float
    """Mean of candidate - champion."""
    ci_low: float
    ci_high: float
    """(1 - alpha) interval of the mean difference."""
    p_worse: float
    """One-sided p-value of 'the candidate is worse'."""
    p_better: float
    """One-sided p-value of 'the candidate is better'."""
    test: str
    accepted: bool
    reason: str
    wins: int = 0
    losses: int = 0
    ties: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def t_cdf(t: float, dof: float) -> float:
    """P(T <= t) for Student's t with `dof` degrees of freedom."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * beta_cdf(dof / (dof + t * t), dof / 2, 0.5)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(q: float, dof: float) -> float:
    """Inverse of `t_cdf` by bisection."""
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, dof) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def binom_cdf(k: int, n: int, p: float = 0.5) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(0, k + 1))


def _mean_sd(d: list[float]) -> tuple[float, float]:
    m = sum(d) / len(d)
    var = sum((x - m) ** 2 for x in d) / (len(d) - 1) if len(d) > 1 else 0.0
    return m, math.sqrt(var)


def t_interval(d: list[float], alpha: float) -> tuple[float, float]:
    m, sd = _mean_sd(d)
    if len(d) < 2 or sd == 0:
        return m, m
    half = t_quantile(1 - alpha / 2, len(d) - 1) * sd / math.sqrt(len(d))
    return m - half, m + half


def paired_t(d: list[float]) -> tuple[float, float]:
    """(p_worse, p_better) of the paired t-test (a constant non-zero difference is certain; zero is a tie)."""
    m, sd = _mean_sd(d)
    if len(d) < 2 or sd == 0:
        return (0.0, 1.0) if m < 0 else (1.0, 0.0) if m > 0 else (1.0, 1.0)
    t = m / (sd / math.sqrt(len(d)))
    return t_cdf(t, len(d) - 1), 1.0 - t_cdf(t, len(d) - 1)


def sign_test(d: list[float]) -> tuple[float, float]:
    """(p_worse, p_better) of the exact sign test (zero differences dropped)."""
    wins, losses = sum(x > 0 for x in d), sum(x < 0 for x in d)
    n = wins + losses
    if n == 0:
        return 1.0, 1.0
    return binom_cdf(wins, n), binom_cdf(losses, n)


def bootstrap(d: list[float], alpha: float, resamples: int, seed: int = 0) -> tuple[float, float, float, float]:
    """(p_worse, p_better, low, high) from resampled means of the differences."""
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(d) for _ in d) / len(d) for _ in range(resamples))
    lo = means[int(math.floor(alpha / 2 * (resamples - 1)))]
    hi = means[int(math.ceil((1 - alpha / 2) * (resamples - 1)))]
    p_worse = (sum(m >= 0 for m in means) + 1) / (resamples + 1)
    p_better = (sum(m <= 0 for m in means) + 1) / (resamples + 1)
    return p_worse, p_better, lo, hi


def compare(champion: dict[str, float], candidate: dict[str, float], cfg: GateConfig) -> GateResult:
    """The paired comparison of two nodes' held-out scores (instance id -> score) and the decision."""
    ids = sorted(set(champion) & set(candidate))
    a, b = [champion[i] for i in ids], [candidate[i] for i in ids]
    d = [y - x for x, y in zip(a, b)]
    n = len(d)
    base = dict(n=n, champion_mean=sum(a) / n if n else 0.0, candidate_mean=sum(b) / n if n else 0.0,
                diff=sum(d) / n if n else 0.0, wins=sum(x > 0 for x in d), losses=sum(x < 0 for x in d),
                ties=sum(x == 0 for x in d))
    test = cfg.test
    if test == "auto":
        test = "sign" if all(x in (0.0, 1.0) for x in a + b) else "t"
    if n < cfg.min_held_out:
        return GateResult(**base, ci_low=base["diff"], ci_high=base["diff"], p_worse=1.0, p_better=1.0, test=test,
                          accepted=False, reason=f"only {n} held-out instance(s) scored for both "
                                                 f"(min_held_out {cfg.min_held_out}): the champion stays")
    if test == "bootstrap":
        p_worse, p_better, lo, hi = bootstrap(d, cfg.alpha, cfg.bootstrap)
    else:
        lo, hi = t_interval(d, cfg.alpha)
        p_worse, p_better = paired_t(d) if test == "t" else sign_test(d)
    if cfg.rule == "better":
        accepted = p_better < cfg.alpha
        reason = (f"significantly better (p = {p_better:.3g} < {cfg.alpha})" if accepted else
                  f"not significantly better (p = {p_better:.3g} >= {cfg.alpha}): the champion stays")
    else:
        accepted = not p_worse < cfg.alpha
        reason = (f"not significantly worse (p_worse = {p_worse:.3g} >= {cfg.alpha})" if accepted else
                  f"significantly worse (p_worse = {p_worse:.3g} < {cfg.alpha}): refused, the champion stays")
    return GateResult(**base, ci_low=lo, ci_high=hi, p_worse=p_worse, p_better=p_better, test=test,
                      accepted=accepted, reason=reason)


def mean_interval(scores: list[float], alpha: float = 0.05) -> dict[str, float]:
    """A node's held-out mean with its t interval (for the report's curve)."""
    if not scores:
        return {"n": 0, "mean": 0.0, "low": 0.0, "high": 0.0}
    lo, hi = t_interval(scores, alpha)
    return {"n": len(scores), "mean": sum(scores) / len(scores), "low": lo, "high": hi}
