"""The loop's three instance sets, fixed for the whole run: training (rollouts become data), search (the
scheduler's evaluations) and held out (only the gate sees them; never trained on, never searched on)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from evolve.errors import ConfigError
from evolve.loop.config import Selection, SplitConfig
from records import TaskInstance


@dataclass
class Splits:
    train: list[TaskInstance]
    search: list[TaskInstance]
    held_out: list[TaskInstance]
    demonstrations: list[TaskInstance]
    """The warm start's pool: every instance of the training pool the search and the gate never see (the training
    instances first), so a warm start may learn from more instances than each generation's rollouts use."""

    def ids(self) -> dict[str, list[str]]:
        return {name: [i.instance_id for i in getattr(self, name)] for name in ("train", "search", "held_out")}


def _take(pool: list[TaskInstance], sel: Selection, default: Selection, what: str,
          groups: dict[str, str] | None = None) -> list[TaskInstance]:
    """`sel` applied to `pool` (ids: those, in that order; N: the first N; a fraction: that share); with `groups`
    (instance -> repository) a count or fraction takes whole groups."""
    sel = default if sel is None else sel
    if sel is None:
        return list(pool)
    if isinstance(sel, list):
        by_id = {i.instance_id: i for i in pool}
        missing = [i for i in sel if i not in by_id]
        if missing:
            raise ConfigError(f"splits.{what} names {missing[0]!r}, which is not in its pool (or is in another split)")
        return [by_id[i] for i in sel]
    if isinstance(sel, bool) or sel <= 0:
        raise ConfigError(f"splits.{what} must be ids, a count >= 1 or a fraction in (0, 1], not {sel!r}")
    if groups is None:
        n = int(sel) if isinstance(sel, int) else max(1, round(sel * len(pool)))
        return pool[:n]
    order = list(dict.fromkeys(groups[i.instance_id] for i in pool))
    n = int(sel) if isinstance(sel, int) else max(1, round(sel * len(order)))
    keep = set(order[:n])
    return [i for i in pool if groups[i.instance_id] in keep]


def resolve_splits(suite, cfg: SplitConfig) -> Splits:
    """The three sets of `suite` under `cfg`; a `ConfigError` when one is empty or they overlap."""
    if suite.kind == "toolcall":
        held = _take(suite.instances("test"), cfg.held_out, None, "held_out")
        pool = suite.instances("train")
        groups = None
    else:
        everything = sorted(suite.instances(), key=lambda i: i.instance_id)
        groups = {i.instance_id: (i.repo or i.instance_id) if cfg.by == "repository" else i.instance_id
                  for i in everything}
        keys = sorted(set(groups.values()))
        random.Random(cfg.seed).shuffle(keys)
        rank = {k: n for n, k in enumerate(keys)}
        everything.sort(key=lambda i: (rank[groups[i.instance_id]], i.instance_id))
        held = _take(everything, cfg.held_out, 0.25, "held_out", groups)
        held_ids = {i.instance_id for i in held}
        pool = [i for i in everything if i.instance_id not in held_ids]
    train = _take(pool, cfg.train, None, "train", groups)
    taken = {i.instance_id for i in train}
    rest = [i for i in pool if i.instance_id not in taken]
    search = list(train) if cfg.search is None else _take(rest, cfg.search, None, "search", groups)
    for name, part in (("train", train), ("search", search), ("held_out", held)):
        if not part:
            raise ConfigError(f"splits.{name} is empty: the suite {suite.name!r} leaves no instance for it")
    overlap = {i.instance_id for i in held} & {i.instance_id for i in train + search}
    if overlap:
        raise ConfigError(f"splits: {sorted(overlap)[0]!r} is both held out and trained or searched on")
    suite.validate(train + search + held)
    unseen = {i.instance_id for i in search + held}
    demos = train + [i for i in pool if i.instance_id not in unseen and i.instance_id not in taken]
    return Splits(train, search, held, demos)
