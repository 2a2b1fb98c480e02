"""The loop's curriculum: which training instances each generation's rollouts run on (`curriculum.mode`).

`off`: every training instance, every generation. `sec` / `uniform`: `curriculum.tasks` of them, drawn over their
categories by the Self-Evolving Curriculum (`tasks.synth.curriculum`). Before the rollouts of generation g the
bandit, as stored after generation g - 1, draws the instances (the draw is a pure function of that state, so a
resumed generation draws the same ones; they are also stored as the `loop:curriculum`/gNN document). After the
rollouts each drawn instance's attempts are one GRPO group: every category is fed the mean absolute advantage of
its groups, and the bandit's state is stored as a `curriculum` document of the loop's run, one per generation
(`evolve.curriculum_log`: the same records, and the same reader `history`, as `evolve train grpo --curriculum`).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from evolve.curriculum_log import history, record
from evolve.loop.context import LoopContext
from evolve.loop.state import gkey
from evolve.store import RunStore
from records import TaskInstance
from tasks.synth.curriculum import Curriculum, CurriculumConfig, category_of

DOC_PICK = "loop:curriculum"
"""Document `loop:curriculum`/gNN: the instances generation g's rollouts ran on, their categories, the weights."""


def categories(instances: list[TaskInstance]) -> dict[str, str]:
    """instance id -> category (a synthesised row's source x bug family; repository x bug kind; toolcall's kind)."""
    return {i.instance_id: category_of(i.instance_id, i.extra, i.repo) for i in instances}


def _config(ctx: LoopContext) -> CurriculumConfig:
    c = ctx.cfg.curriculum
    return CurriculumConfig(mode="uniform" if c.mode == "uniform" else "sec", alpha=c.alpha,
                            temperature=c.temperature)


def state_before(ctx: LoopContext, g: int) -> Curriculum:
    """The bandit as it was after generation g - 1 (a new one, stored as step 0, before the first)."""
    cats = sorted(set(categories(ctx.splits.train).values()))
    past = [d for d in history(ctx.store, ctx.run_id) if int(d.get("step", 0)) < g]
    if past:
        return Curriculum.from_state(past[-1], cats)
    cur = Curriculum(cats, _config(ctx), seed=ctx.cfg.seed)
    record(ctx.store, ctx.run_id, cur, 0)
    return cur


def tasks_per_generation(ctx: LoopContext) -> int:
    n = ctx.cfg.curriculum.tasks or max(1, (len(ctx.splits.train) + 1) // 2)
    return min(n, len(ctx.splits.train))


def draw(ctx: LoopContext, g: int) -> tuple[Curriculum | None, list[TaskInstance]]:
    """The bandit before generation g and the training instances its rollouts run on (every one when `off`)."""
    train = ctx.splits.train
    if ctx.cfg.curriculum.mode == "off":
        return None, list(train)
    cur = state_before(ctx, g)
    cats = categories(train)
    by_cat: dict[str, list[str]] = defaultdict(list)
    for i in train:
        by_cat[cats[i.instance_id]].append(i.instance_id)
    weights = cur.weights()
    picked = cur.pick(by_cat, tasks_per_generation(ctx))
    stored = ctx.store.document(DOC_PICK, gkey(g))
    if stored is None:
        ctx.store.put_document(DOC_PICK, gkey(g), {"generation": g, "instances": picked,
                                                   "categories": {i: cats[i] for i in picked},
                                                   "weights": weights}, run_id=ctx.run_id)
    else:
        picked = list(stored["instances"])  # (the same draw: it is a function of the stored state)
    chosen = set(picked)
    return cur, [i for i in train if i.instance_id in chosen]


def feed(ctx: LoopContext, g: int, cur: Curriculum, chosen: list[TaskInstance], run_dir: Path) -> dict[str, Any]:
    """Feed the bandit the rollouts' groups (each instance's scored attempts), by category; store its state as
    generation g's step. Returns the categories' rewards and the new weights."""
    from evolve.train.data import pick_reward  # loads torch (the trainer's data module)

    cats = categories(chosen)
    by_inst: dict[str, list[float]] = defaultdict(list)
    with RunStore(run_dir, readonly=True) as store:
        for row in store.trajectory_summaries():
            if row["status"] in ("running", "infra_error") or row["instance_id"] not in cats:
                continue
            r = pick_reward(row["rewards"], None)
            if r is not None:
                by_inst[row["instance_id"]].append(float(r))
    groups: dict[str, list[list[float]]] = defaultdict(list)
    for iid, rewards in sorted(by_inst.items()):
        groups[cats[iid]].append(rewards)
    rewards = cur.update(dict(groups))
    record(ctx.store, ctx.run_id, cur, g)
    return {"rewards": rewards, "weights": cur.weights()}
