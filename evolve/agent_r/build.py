"""One instance end to end: MCTS, pairs, the verifier's first errors, splices, and the replay check that
keeps only splices reaching their good path's final state and reward. Everything is stored as it is made:
the tree (`TreeNode(kind="mcts")`), pairs, verdicts and splices (documents `agent-r:pair`, `agent-r:verdict`,
`agent-r:splice`), the kept revision trajectories (`origin="agent-r:splice"`) and a summary
(`agent-r:instance`, which also marks the instance done for a resumed run)."""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from evolve.agent_r.config import AgentRConfig
from evolve.agent_r.node import Node
from evolve.agent_r.pairs import make_pairs
from evolve.agent_r.splice import SplicePlan, plan_splice
from evolve.agent_r.tree import SearchStats, leaves, search, tree_nodes
from evolve.agent_r.verifier import Ask, StepVerdict, first_error
from evolve.agent_r.world import World
from records import Message, Step, Trajectory, TrajectoryStatus

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    """What one instance produced."""

    root: Node
    stats: SearchStats
    pairs: int = 0
    splices: list[Trajectory] = field(default_factory=list)
    """Revision trajectories that replayed to their good path's final state and reward (train flags set)."""
    good: list[Trajectory] = field(default_factory=list)
    """Root-to-leaf paths with value > alpha, every turn learned."""
    dropped: Counter = field(default_factory=Counter)
    """Pairs that gave no kept splice, by reason (e.g. `replay mismatch`)."""
    verdicts: Counter = field(default_factory=Counter)
    """Verifier verdicts given, by kind (good, bad, uncertain, invalid)."""
    plans: list[SplicePlan] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"policy_calls": self.stats.policy_calls, "children": self.stats.children,
                "expansions": self.stats.expansions, "rollouts": self.stats.iterations,
                "nodes": len(self.root.walk()), "leaves": len(leaves(self.root)),
                "root_value": self.root.value, "root_visits": self.root.visits, "pairs": self.pairs,
                "splices_kept": len(self.splices), "good": len(self.good), "dropped": dict(self.dropped),
                "verdicts": dict(self.verdicts), "seconds": round(self.seconds, 2),
                "splice_ids": [t.id for t in self.splices], "good_ids": [t.id for t in self.good]}


def path_steps(leaf: Node) -> list[tuple[str, str]]:
    """(action, result) texts of a root-to-leaf path, for the verifier."""
    return [(n.response.content if n.response else "", n.observation.content if n.observation else "")
            for n in leaf.path()[1:]]


def logged_trajectory(world: World, nodes: list[Node], instance_id: str) -> Trajectory:
    """A path as the tree logged it (responses and observations of its nodes), every turn learned."""
    traj = Trajectory(instance_id=instance_id, prompt=world.prompt(), status=TrajectoryStatus.submitted)
    for i, n in enumerate(nodes):
        traj.steps.append(Step(index=i, response=n.response.model_copy(), observation=n.observation))
    return traj


def logged_splice(plan: SplicePlan, world: World, instance_id: str) -> Trajectory:
    """A splice with the observations the tree logged and `ok.` after the revision turn, as upstream writes its
    samples (no replay; the controls use it)."""
    low = plan.low.path()[1:]
    obs: list[Message | None] = [n.observation for n in low[:plan.bad_steps]] + [Message(role="user", content="ok.")]
    rest = plan.responses[plan.bad_steps + 1:]
    tail = plan.good.path()[1:][-len(rest):] if rest else []
    obs += [n.observation for n in tail]
    traj = Trajectory(instance_id=instance_id, prompt=world.prompt(), status=TrajectoryStatus.submitted,
                      origin=f"agent-r:{plan.mode}")
    traj.steps = [Step(index=i, response=r, observation=o) for i, (r, o) in enumerate(zip(plan.responses, obs))]
    return traj


def build_instance(world: World, cfg: AgentRConfig, ask: Ask, *, instance_id: str, store=None, run_id: str = "",
                   tree_id: str | None = None, rng: random.Random | None = None,
                   path_trajectory=None) -> BuildResult:
    """Search, pair, verify, splice and replay-check one instance (see the module docstring).
    `path_trajectory(node)` gives the stored trajectory of a root-to-node path (default: the logged path)."""
    t0 = time.time()
    rng = rng or random.Random(cfg.seed)
    tree_id = tree_id or f"{run_id}/{instance_id}"
    path_trajectory = path_trajectory or (lambda node: logged_trajectory(world, node.path()[1:], instance_id))

    def put_tree(node: Node) -> None:
        if store is not None:
            for rec in tree_nodes(node.path()[0], tree_id):
                store.put_tree_node(rec)

    root, stats = search(world, cfg, rng, on_change=put_tree)
    put_tree(root)
    res = BuildResult(root, stats)
    pairs = make_pairs(root, cfg.alpha, cfg.beta, cfg.seed)
    res.pairs = len(pairs)
    first: dict[str, tuple[int | None, list[StepVerdict]]] = {}
    seen: set[tuple[str, str]] = set()
    attempts = 0
    for idx, pair in enumerate(pairs):
        if attempts >= cfg.max_pairs:
            break
        key = f"{tree_id}/{idx}"
        if pair.low.id not in first and pair.low.depth == 1:  # a failed one-step path errs at its only step
            first[pair.low.id] = (1, [StepVerdict(1, "bad", ["(one-step path: no verifier call needed)"])])
            res.verdicts["bad"] += 1
            if store is not None:
                store.put_document("agent-r:verdict", f"{tree_id}/{pair.low.id}/1",
                                   {"tree_id": tree_id, "low": pair.low.id, "step": 1, "verdict": "bad",
                                    "replies": [], "k": 0, "note": "one-step path"}, run_id=run_id)
        if pair.low.id not in first:
            flagged, verdicts = first_error(world.task, path_steps(pair.low), ask, cfg.verifier_k)
            first[pair.low.id] = (flagged, verdicts)
            for v in verdicts:
                res.verdicts[v.verdict] += 1
                if store is not None:
                    store.put_document("agent-r:verdict", f"{tree_id}/{pair.low.id}/{v.step}",
                                       {"tree_id": tree_id, "low": pair.low.id, "step": v.step, "verdict": v.verdict,
                                        "replies": v.replies, "k": cfg.verifier_k}, run_id=run_id)
        flagged, _ = first[pair.low.id]
        doc: dict[str, Any] = {"tree_id": tree_id, "high": pair.high.id, "low": pair.low.id,
                               "high_value": pair.high.mean, "low_value": pair.low.mean, "gap": pair.gap,
                               "high_trajectory": pair.high.trajectory_id, "low_trajectory": pair.low.trajectory_id,
                               "flagged": flagged}
        if store is not None:
            store.put_document("agent-r:pair", key, doc, run_id=run_id)
        if flagged is None:
            res.dropped["verifier found no bad step"] += 1
            continue
        plan, why = plan_splice(world, pair.low, pair.high, flagged, cfg.alpha, cfg.splice, thought_index=idx)
        if plan is None:
            res.dropped[why] += 1
            continue
        if (pair.low.id, plan.good.id) in seen:
            res.dropped["same splice as an earlier pair"] += 1
            continue
        seen.add((pair.low.id, plan.good.id))
        attempts += 1
        res.plans.append(plan)
        replayed = world.replay(plan.responses)
        traj = replayed.trajectory
        for step, msg in zip(traj.steps, plan.responses):
            step.response.train = msg.train
        ok = (len(traj.steps) == len(plan.responses) and replayed.state == plan.good.state
              and abs(replayed.reward - (plan.good.reward or 0.0)) <= 1e-9)
        traj.run_id, traj.instance_id, traj.origin = run_id, instance_id, "agent-r:splice"
        traj.parent_id, traj.branch_step = pair.low.trajectory_id, plan.bad_steps
        sdoc = {"tree_id": tree_id, "pair": key, "mode": plan.mode, "low": pair.low.id, "parent": plan.parent.id,
                "good": plan.good.id, "good_trajectory": plan.good.trajectory_id, "bad_steps": plan.bad_steps,
                "replay_steps": len(traj.steps), "expected_state": plan.good.state[:2000],
                "replayed_state": replayed.state[:2000], "expected_reward": plan.good.reward,
                "replayed_reward": replayed.reward, "kept": ok, "trajectory_id": traj.id if ok else None, **plan.info}
        if ok:
            res.splices.append(traj)
            if store is not None:
                store.put_trajectory(traj)
        else:
            res.dropped["replay did not reach the good path's state and reward"] += 1
            sdoc["reason"] = "replay mismatch"
        if store is not None:
            store.put_document("agent-r:splice", key, sdoc, run_id=run_id)
    for leaf in leaves(root):
        if leaf.mean > cfg.alpha:
            traj = path_trajectory(leaf)  # a fresh record (built or loaded), safe to flag
            for s in traj.steps:
                s.response.train = True
            res.good.append(traj)
    res.seconds = time.time() - t0
    if store is not None:
        store.put_document("agent-r:instance", tree_id, {"instance_id": instance_id, **res.summary()}, run_id=run_id)
    return res
