"""Self-Evolving Curriculum (SEC): which tasks to train on next, learnt from the training signal itself.

After Chen et al., "Self-Evolving Curriculum for LLM Reasoning" (2025): the task categories (here source x bug
family, a row's `extra.category`) are the arms of a non-stationary bandit. An arm's reward is the mean
absolute advantage of its category's last GRPO groups: a group whose rollouts all succeed or all fail has
zero advantage and teaches nothing, one split down the middle teaches most. Each arm keeps
Q <- alpha * reward + (1 - alpha) * Q, and categories are drawn from softmax(Q / temperature). `uniform`
draws categories uniformly (the baseline). The state is a plain dict (`state` / `from_state`) so the loop and
`evolve train grpo` can store it in the run store after each update, where the TUI reads the weights over time.
"""

from __future__ import annotations

import math
import random
from typing import Iterable, Literal

from pydantic import BaseModel, Field

Mode = Literal["sec", "uniform"]


class CurriculumConfig(BaseModel):
    """Settings of the curriculum."""

    mode: Mode = "sec"
    """`sec` (the bandit) or `uniform` (every category alike)."""
    alpha: float = Field(default=0.5, gt=0, le=1)
    """Learning rate of the arms' values (SEC's TD(0) step)."""
    temperature: float = Field(default=0.2, gt=0)
    """Boltzmann temperature: lower concentrates on the best arms."""
    initial: float = 0.0
    """Value of an arm never updated (0: as if it had no signal; all arms start equal)."""


def category_of(instance_id: str, extra: dict | None = None, repo: str = "") -> str:
    """A task's category: its row's `extra.category` (synthesised suites), else repo and kind of bug."""
    extra = extra or {}
    if extra.get("category"):
        return str(extra["category"])
    kind = extra.get("bug_kind") or extra.get("family") or "task"
    return f"{repo or instance_id.split('__')[0]}/{kind}"


def advantages(rewards: list[float], scale: bool = True) -> list[float]:
    """GRPO's advantages of one group: reward minus the group's mean (over its std with ``scale``)."""
    if not rewards:
        return []
    mean = sum(rewards) / len(rewards)
    centred = [r - mean for r in rewards]
    if not scale:
        return centred
    std = math.sqrt(sum(c * c for c in centred) / max(1, len(rewards) - 1)) if len(rewards) > 1 else 0.0
    return [c / (std + 1e-6) for c in centred] if std > 0 else [0.0] * len(rewards)


def mean_abs_advantage(groups: Iterable[list[float]], scale: bool = True) -> float:
    """The arm's reward: the mean over groups (each a list of rewards) of their mean absolute advantage."""
    values = [sum(abs(a) for a in adv) / len(adv) for g in groups if (adv := advantages(g, scale))]
    return sum(values) / len(values) if values else 0.0


class Curriculum:
    """The bandit over categories."""

    def __init__(self, categories: Iterable[str], config: CurriculumConfig | None = None, seed: int = 0):
        self.config = config or CurriculumConfig()
        self.q: dict[str, float] = {c: self.config.initial for c in sorted(set(categories))}
        if not self.q:
            raise ValueError("a curriculum needs at least one category")
        self.updates = 0
        self.rng = random.Random(seed)
        self.last_rewards: dict[str, float] = {}

    def weights(self, among: Iterable[str] | None = None) -> dict[str, float]:
        """Probability of drawing each category (restricted to ``among`` when given)."""
        cats = [c for c in (among if among is not None else self.q) if c in self.q]
        if not cats:
            return {}
        if self.config.mode == "uniform":
            return {c: 1.0 / len(cats) for c in cats}
        top = max(self.q[c] for c in cats)
        exp = {c: math.exp((self.q[c] - top) / self.config.temperature) for c in cats}
        total = sum(exp.values())
        return {c: v / total for c, v in exp.items()}

    def sample(self, k: int = 1, among: Iterable[str] | None = None) -> list[str]:
        """``k`` categories drawn (with replacement) from the weights."""
        w = self.weights(among)
        if not w:
            return []
        cats = list(w)
        return self.rng.choices(cats, weights=[w[c] for c in cats], k=k)

    def pick(self, tasks: dict[str, list[str]], k: int) -> list[str]:
        """Up to ``k`` distinct tasks: a category drawn from the weights among those with tasks left, then one of
        its tasks at random. ``tasks``: category -> task ids (not changed)."""
        left = {c: list(ids) for c, ids in tasks.items() if ids and c in self.q}
        out: list[str] = []
        while len(out) < k and left:
            cat = self.sample(1, among=left)[0]
            out.append(left[cat].pop(self.rng.randrange(len(left[cat]))))
            if not left[cat]:
                del left[cat]
        return out

    def update(self, groups: dict[str, list[list[float]]], scale: bool = True) -> dict[str, float]:
        """Feed the rewards of the GRPO groups just trained on, by category (each group a list of rewards);
        returns the arms' rewards (mean absolute advantage)."""
        rewards = {c: mean_abs_advantage(g, scale) for c, g in groups.items() if c in self.q and g}
        a = self.config.alpha
        for c, r in rewards.items():
            self.q[c] = a * r + (1 - a) * self.q[c]
        self.updates += 1
        self.last_rewards = rewards
        return rewards

    def state(self) -> dict:
        """Everything to resume it, and what the TUI shows: values, weights, the last rewards."""
        return {"mode": self.config.mode, "config": self.config.model_dump(), "q": dict(self.q),
                "weights": self.weights(), "updates": self.updates, "last_rewards": dict(self.last_rewards),
                "rng": list(self.rng.getstate()[1])}

    @classmethod
    def from_state(cls, state: dict, categories: Iterable[str] | None = None) -> "Curriculum":
        cur = cls(list(state["q"]) + list(categories or []), CurriculumConfig(**state["config"]))
        cur.q.update(state["q"])
        cur.updates = state.get("updates", 0)
        cur.last_rewards = dict(state.get("last_rewards", {}))
        if state.get("rng"):
            cur.rng.setstate((3, tuple(state["rng"]), None))
        return cur
