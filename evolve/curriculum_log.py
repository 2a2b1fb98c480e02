"""The curriculum in the run store: its state after every update (documents of kind `curriculum`, keyed by run
and update number, so the TUI can draw the category weights over time and a resumed run continues the bandit),
the categories of stored instances, and the picker `evolve train grpo --curriculum` draws its groups with."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from evolve.store import RunStore
from tasks.synth.curriculum import Curriculum, CurriculumConfig, category_of

KIND = "curriculum"


def record(store: RunStore, run_id: str, cur: Curriculum, step: int) -> None:
    """Store the curriculum's state after an update (one document per update: the weights' history)."""
    store.put_document(KIND, f"{run_id}:{cur.updates:08d}", {**cur.state(), "step": step}, run_id=run_id)


def history(store: RunStore, run_id: str) -> list[dict]:
    """Every stored state of the run's curriculum, oldest first."""
    return [d for _, d in store.documents(KIND, run_id=run_id, key_prefix=f"{run_id}:")]


def resume(store: RunStore, run_id: str, categories: list[str], config: CurriculumConfig,
           seed: int = 0) -> Curriculum:
    """The run's curriculum as last stored, or a new one."""
    past = history(store, run_id)
    if past:
        return Curriculum.from_state(past[-1], categories)
    return Curriculum(categories, config, seed=seed)


def categories_from_runs(run_dirs: list[Path]) -> dict[str, str]:
    """instance id -> category, from the instances the runs stored."""
    out: dict[str, str] = {}
    for d in run_dirs:
        with RunStore(d, readonly=True) as store:
            for run in store.runs():
                for inst in store.instances(run["id"]):
                    out[inst.instance_id] = category_of(inst.instance_id, inst.extra, inst.repo)
    return out


class GroupPicker:
    """Draws GRPO groups (instances) for each step from a curriculum; each group is used once per epoch. The
    bandit is fed each drawn group's rewards at once (so a category whose groups teach nothing falls behind)."""

    def __init__(self, cur: Curriculum, groups: dict[str, list[int]], rewards: dict[str, list[float]],
                 category: dict[str, str], trainable: set[int]):
        self.cur, self.groups, self.rewards, self.trainable = cur, groups, rewards, trainable
        self.category = {g: category.get(g, category_of(g)) for g in groups}
        self.used: set[str] = set()

    def _left(self) -> dict[str, list[str]]:
        left: dict[str, list[str]] = defaultdict(list)
        for g in sorted(self.groups):
            if g not in self.used:
                left[self.category[g]].append(g)
        return left

    def next_batch(self, batch_size: int, scale: bool = True) -> list[int]:
        """Sequence indices of the next step (whole groups, at least ``batch_size`` trainable sequences where the
        epoch has them); a new epoch starts when every group was used."""
        idx: list[int] = []
        fed: dict[str, list[list[float]]] = defaultdict(list)
        cleared = False
        while len(idx) < batch_size:
            left = self._left()
            if not left:
                if idx or cleared:
                    break
                self.used.clear()  # a new epoch
                cleared = True
                continue
            g = self.cur.pick(left, 1)[0]
            self.used.add(g)
            fed[self.category[g]].append(self.rewards[g])
            idx += [i for i in self.groups[g] if i in self.trainable]
        self.cur.update(dict(fed), scale=scale)
        return idx
