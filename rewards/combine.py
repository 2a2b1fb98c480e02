"""Composition of rewards: a weighted sum that keeps every component visible."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, Field, field_validator

from records import Reward

log = logging.getLogger(__name__)

KNOWN_REWARDS = frozenset({"swe", "toolrl", "judge"})
"""Names of the rewards Evolve computes (`combined` is their weighted sum)."""


class RewardWeights(BaseModel):
    """Weights of the rewards combined into one scalar."""

    weights: dict[str, float] = Field(default_factory=lambda: {"swe": 1.0})
    """Reward name (`swe`, `toolrl`, `judge`, ...) -> weight. Every name with a non-zero weight must be
    present when combining; rewards not named here are left out of the total (listed in `info`). Every
    weight must be a finite number: an infinite or NaN weight would make every total non-finite."""

    @field_validator("weights")
    @classmethod
    def _finite(cls, weights: dict[str, float]) -> dict[str, float]:
        bad = [f"{n}={x}" for n, x in weights.items() if not math.isfinite(x)]
        if bad:
            raise ValueError(f"reward weights must be finite numbers, not {', '.join(bad)}")
        empty = [n for n in weights if not n.strip()]
        if empty:
            raise ValueError("a reward weight needs a name (NAME=NUMBER)")
        return weights

    def check_available(self, available: Iterable[str]) -> None:
        """Raise ValueError unless every name with a non-zero weight is among the rewards a run produces
        (`available`), so a bad weight fails before any episode runs instead of after each one."""
        have = sorted(set(available))
        unknown = sorted(n for n in self.weights if n not in KNOWN_REWARDS and n not in have)
        if unknown:
            raise ValueError(f"unknown reward name(s) {', '.join(unknown)}: the rewards are "
                             f"{', '.join(sorted(KNOWN_REWARDS))}")
        absent = sorted(n for n, x in self.weights.items() if x != 0 and n not in have)
        if absent:
            raise ValueError(f"a weight for {', '.join(absent)}, which this run does not produce (it produces: "
                             f"{', '.join(have) or 'none'}; the judge reward needs --judge)")


def combine(rewards: Mapping[str, Reward] | list[Reward], weights: RewardWeights | Mapping[str, float]) -> Reward:
    """Reward `combined`: total = Σ weight·total; parts `<name>` (weighted contribution) and `<name>.<part>`.

    `rewards` is keyed by reward name (a list is keyed by each `Reward.name`; duplicate names are an error).
    Raises ValueError naming the missing rewards when a reward with a non-zero weight is absent.
    """
    w = weights.weights if isinstance(weights, RewardWeights) else dict(weights)
    if isinstance(rewards, Mapping):
        by_name = dict(rewards)
    else:
        by_name = {}
        for r in rewards:
            if r.name in by_name:
                raise ValueError(f"two rewards named {r.name!r}; give a dict keyed by distinct names")
            by_name[r.name] = r
    missing = sorted(n for n, x in w.items() if x != 0 and n not in by_name)
    if missing:
        have = ", ".join(sorted(by_name)) or "none"
        raise ValueError(f"weighted reward(s) missing: {', '.join(missing)} (have: {have})")
    if not all(math.isfinite(x) for x in w.values()):
        raise ValueError(f"reward weights must be finite: {w}")
    total = 0.0
    parts: dict[str, float] = {}
    info: dict[str, object] = {"weights": {n: x for n, x in w.items() if n in by_name}}
    for name, r in by_name.items():
        if name not in w:
            continue
        contribution = w[name] * r.total
        total += contribution
        parts[name] = contribution
        for k, v in r.parts.items():
            parts[f"{name}.{k}"] = v
        if r.info:
            info[name] = r.info
    bad = sorted(name for name, r in by_name.items() if name in w and not math.isfinite(r.total))
    if bad or not math.isfinite(total):
        raise ValueError(f"non-finite reward total ({', '.join(bad) or 'combined'}): {total}")
    unweighted = sorted(set(by_name) - set(w))
    if unweighted:
        log.debug("rewards without a weight left out: %s", unweighted)
        info["unweighted"] = unweighted
    return Reward(name="combined", total=total, parts=parts, info=info)
