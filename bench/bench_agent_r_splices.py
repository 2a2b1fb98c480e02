"""Agent-R splices that replay: planned splices whose replay misses their good path's state and reward, with the
continuation's leading undos folded into the revision turn (Evolve) against the plan without folding (the
revision `undo 1`, then the whole good continuation: what Evolve did before), in the number-line toy, where an
undo is itself a step a later undo takes back.

Two settings, 200 seeds each: one search per seed (goal 3, 4 or 5; 8 rollouts, 4 children, depth 4: the
replayability test's search), and three Agent-R iterations per seed on goals 3, 4, 5 (`toy_iterations`' loop:
the tabular policy trained on each iteration's kept splices, so later searches differ between the planners).
Each planned splice is replayed from the start; a failure is counted under "leading undo" when the good
continuation (from the flagged step's parent) starts with an undo.

    .venv/bin/python bench/bench_agent_r_splices.py [--seeds 200]
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter

from rich.console import Console
from rich.table import Table

from evolve.agent_r.build import build_instance
from evolve.agent_r.config import AgentRConfig
from evolve.agent_r.splice import SplicePlan
from evolve.agent_r.toy import NumberLineWorld, TabularPolicy, action_of, oracle_ask, undo_count

GOALS = (3, 4, 5)


class UnfoldedWorld(NumberLineWorld):
    """The same world, planned as before: the revision undoes the bad step, the continuation follows whole."""

    def revision_steps(self, to_parent, continuation):
        return 1, 0


def count(world: NumberLineWorld, plans: list[SplicePlan], c: Counter) -> None:
    for plan in plans:
        c["planned"] += 1
        rep = world.replay(plan.responses)
        cont = plan.good.path()[plan.parent.depth + 1:]
        lead = bool(cont) and undo_count(action_of(cont[0].response.content)) is not None
        c["leading undo"] += lead
        if rep.state != plan.good.state or abs(rep.reward - (plan.good.reward or 0.0)) > 1e-9:
            c["replay fails"] += 1
            c["fails, leading undo"] += lead


def single_searches(world_cls, seeds: int) -> Counter:
    c: Counter = Counter()
    cfg = AgentRConfig(rollouts=8, n_gen=4, max_depth=4)
    for seed in range(seeds):
        goal = GOALS[seed % 3]
        world = world_cls(goal, TabularPolicy(), random.Random(seed), 4)
        res = build_instance(world, cfg, oracle_ask(), instance_id=f"line-{goal}", rng=random.Random(seed))
        count(world, res.plans, c)
    return c


def iterations(world_cls, seeds: int, rounds: int = 3) -> Counter:
    c: Counter = Counter()
    cfg = AgentRConfig(rollouts=8, n_gen=4, max_depth=4, splice="parent")
    for seed in range(seeds):
        policy, rng = TabularPolicy(), random.Random(seed)
        goal_of = {f"line-{g}": g for g in GOALS}
        for _ in range(rounds):
            data = []
            for g in GOALS:
                world = world_cls(g, policy, rng, 4)
                res = build_instance(world, cfg, oracle_ask(), instance_id=f"line-{g}", rng=rng)
                count(world, res.plans, c)
                data += res.splices + res.good
            policy.learn(data, goal_of)
    return c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=200)
    args = parser.parse_args()
    table = Table(title=f"Agent-R splices in the number-line toy, {args.seeds} seeds: replay failures")
    for col in ("setting", "measure", "Evolve (folded)", "unfolded plan", "ratio"):
        table.add_column(col, justify="right")
    started = time.time()
    for name, run in (("one search per seed", single_searches), ("3 iterations x 3 goals", iterations)):
        ours, base = run(NumberLineWorld, args.seeds), run(UnfoldedWorld, args.seeds)
        for key in ("planned", "leading undo", "replay fails", "fails, leading undo"):
            a, b = ours[key], base[key]
            if key == "planned":
                ratio = "—"
            else:
                ra, rb = a / max(ours["planned"], 1), b / max(base["planned"], 1)
                ratio = f"{ra / rb:.2f}" if rb else "—"
            table.add_row(name, key, f"{a} ({a / max(ours['planned'], 1):.1%})",
                          f"{b} ({b / max(base['planned'], 1):.1%})", ratio)
    Console().print(table)
    print(f"{time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
