"""The loop's one scheduler over both kinds of child: the kind of each expansion is learned from the clades'
results (Thompson sampling over kinds), on HGM's own scheduler and its discrete-event driver.

The world: a child's skill is its parent's plus a kind-dependent step (one kind pays, the other costs), evaluations
are Bernoulli draws on deterministic streams. A fixed alternation would give each kind half of the expansions; the
learned choice gives most of them to the kind that pays, whichever it is."""

from __future__ import annotations

import numpy as np
import pytest

from evolve.hgm.config import HGMConfig
from evolve.hgm.drivers import run_simulated
from evolve.hgm.scheduler import Action, Scheduler
from evolve.hgm.sim import SimWorld
from evolve.hgm.world import Evaluation, Expansion, NodeView
from evolve.loop.scheduler import KindChooser, kind_counts


class TwoKindWorld(SimWorld):
    """Children of kind `good` gain `step` in skill, of any other kind lose it; `reject` kinds never validate."""

    def __init__(self, good: str, step: float = 0.12, seed: int = 0, reject: tuple[str, ...] = ()):
        super().__init__(seed=seed, n_tasks=40, root_skill=0.35)
        self.good, self.step, self.reject = good, step, reject
        self.kinds: list[str] = []

    def expand(self, parent: NodeView, child_id: str, kind: str = "") -> Expansion:
        self.kinds.append(kind)
        if kind in self.reject:
            return Expansion(False, reason="never validates", info={"p": parent.info["p"]}, latency=5.0)
        rng = self.rng("expand", child_id)
        p = parent.info["p"] + (self.step if kind == self.good else -self.step) + rng.normal(0, 0.02)
        return Expansion(True, info={"p": float(np.clip(p, 0.01, 0.95))}, latency=5.0)


def _run(good: str, seed: int, kinds=("code", "sft"), reject=()) -> TwoKindWorld:
    world = TwoKindWorld(good, seed=seed, reject=reject)
    chooser = KindChooser(list(kinds))
    cfg = HGMConfig(budget=150, seed=seed, initial_expansions=2, root_eval=True)
    sched = Scheduler(cfg, world.task_ids, world.root(), expansion_kind=chooser)
    run_simulated(sched, world, workers=2)
    return world


@pytest.mark.parametrize("good", ["code", "sft"])
def test_the_scheduler_learns_which_kind_of_expansion_pays(good):
    shares = []
    for seed in range(12):
        world = _run(good, seed)
        late = world.kinds[len(world.kinds) // 2:]  # after the first half of the expansions
        shares.append(sum(k == good for k in late) / len(late))
    mean = float(np.mean(shares))
    print(f"{good} pays: share of {good} expansions in the second half {mean:.2f} ({len(world.kinds)} expansions)")
    # a fixed alternation (or a coin) gives 0.5; the learned choice gives the paying kind most of them
    assert mean > 0.7, shares


def test_a_kind_that_never_validates_is_left_alone():
    kinds = []
    for seed in range(6):
        kinds += _run("sft", seed, kinds=("code", "sft", "grpo"), reject=("grpo",)).kinds[10:]
    assert sum(k == "grpo" for k in kinds) / len(kinds) < 0.15


def test_kind_counts_pool_the_clade_and_count_a_rejection_as_a_failure():
    world = SimWorld(n_tasks=4)
    sched = Scheduler(HGMConfig(budget=50, root_eval=False, initial_expansions=0), world.task_ids, world.root())

    def expand(parent: str, kind: str, accepted: bool) -> str:
        a = Action("expand", sched.seq, node=parent, child=f"n{sched.expansions + 1:04d}", expansion=kind)
        sched._register(a)
        sched.complete(a, Expansion(accepted))
        return a.child

    def evaluate(node: str, task: str, status: str) -> None:
        a = Action("evaluate", sched.seq, node=node, task=task, charged=True)
        sched._register(a)
        sched.complete(a, Evaluation(status))

    a = expand("root", "sft", True)
    b = expand(a, "code", True)
    expand(a, "code", False)
    c = expand("root", "code", True)
    for t, st in zip(world.task_ids, ("pass", "pass", "fail", "pass")):
        evaluate(a, t, st)
    evaluate(b, world.task_ids[0], "fail")
    evaluate(c, world.task_ids[0], "pass")
    assert kind_counts(sched, "root", ["code", "sft"]) == {"sft": (3, 1), "code": (1, 2)}
    assert kind_counts(sched, a, ["code", "sft"]) == {"sft": (0, 0), "code": (0, 2)}  # a's clade only
    # the chooser adds the weighted prior of earlier generations, and the draw is the scheduler's own stream
    chooser = KindChooser(["code", "sft"], prior={"code": (10, 0)}, prior_weight=0.5)
    # nested clades: a's clade, then the root's (a's own children count twice, the root's other children once)
    assert chooser.counts(sched, a) == {"code": (5.0 + 0 + 1, 0.0 + 2 + 2), "sft": (0.0 + 0 + 3, 0.0 + 0 + 1)}
    assert chooser(sched, a, np.random.default_rng(0)) in ("code", "sft") and len(chooser.draws) == 1


def test_decisions_carry_their_kind_through_the_journal_and_resume(tmp_path):
    """The expansion kind is part of the stored decision: a resumed search re-issues an in-flight expansion with
    the same kind, and the journal's nodes say their kind."""
    from evolve.hgm.journal import StoreJournal
    from evolve.store import RunStore

    world = TwoKindWorld("sft", seed=3)
    cfg = HGMConfig(budget=30, seed=3, initial_expansions=2, root_eval=False)
    with RunStore(tmp_path / "run") as store:
        journal = StoreJournal(store, "s1", kind="loop", tree_id="t")
        sched = Scheduler(cfg, world.task_ids, world.root(), on_decision=lambda a: journal.decided(sched, a),
                          expansion_kind=KindChooser(["code", "sft"]))
        journal.root(sched)
        decided = [sched.decide(), sched.decide()]  # two expansions, in flight at the "kill"
        assert [a.kind for a in decided] == ["expand", "expand"]
        assert all(a.expansion in ("code", "sft") for a in decided)
        stored = {n.id: n for n in store.tree(tree_id="t", kind="loop")}
        assert [stored[a.child].info["expansion"] for a in decided] == [a.expansion for a in decided]
        again = Scheduler(cfg, world.task_ids, world.root(), expansion_kind=KindChooser(["code", "sft"]))
        again.restore(StoreJournal(store, "s1", kind="loop", tree_id="t").load_history())
        assert [again.decide(), again.decide()] == decided  # re-issued unchanged, kinds included
