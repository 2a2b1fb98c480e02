"""Composition of rewards: a weighted sum that keeps every component visible."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pydantic import BaseModel, Field

from records import Reward

log = logging.getLogger(__name__)


class RewardWeights(BaseModel):
    """Weights of the rewards combined into one scalar."""

    weights: dict[str, float] = Field(default_factory=lambda: {"swe": 1.0})
    """Reward name (`swe`, `toolrl`, `judge`, ...) -> weight. Every name with a non-zero weight must be
    present when combining; rewards not named here are left out of the total (listed in `info`)."""


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
    unweighted = sorted(set(by_name) - set(w))
    if unweighted:
        log.debug("rewards without a weight left out: %s", unweighted)
        info["unweighted"] = unweighted
    return Reward(name="combined", total=total, parts=parts, info=info)
