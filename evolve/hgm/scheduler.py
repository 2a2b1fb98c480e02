"""The one HGM scheduler: `decide()` returns the next action, `complete()` takes its result.

Event-driven and world-agnostic: it never runs anything itself. Two drivers call it (`drivers.py`): a thread
pool for real worlds and a discrete-event loop on a virtual clock for simulated ones, so the simulations test
exactly this code. Everything a decision depends on is counted when the decision is taken, under one lock:
budget reservation, tasks in flight (a node never gets a task twice), expansions in flight.

Determinism and resume: decision k draws its randomness from the stream (seed, k), never from a shared
generator, and results are applied to statistics in a fixed order; so replaying the stored decisions and
results (`restore`) rebuilds the same state, and in-flight decisions at a kill are re-issued unchanged.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from evolve.hgm import policy
from evolve.hgm.config import HGMConfig
from evolve.hgm.stats import COUNTED, CladeStats
from evolve.hgm.world import Evaluation, Expansion, NodeView


@dataclass(frozen=True)
class Action:
    """One decision. `kind` is `expand`, `evaluate`, `wait` (nothing to start until something finishes) or
    `done` (nothing more will be started)."""

    kind: str
    seq: int = -1
    node: str = ""
    """The parent to expand, or the node to evaluate."""
    task: str = ""
    child: str = ""
    """The id the child of an expansion will have."""
    charged: bool = False
    """Whether an evaluation counts against the budget."""
    reason: str = ""
    expansion: str = ""
    """Which kind of expansion (`evolve loop`: `code`, `sft`, `grpo`), chosen with the decision; empty for a
    world with one kind (plain HGM)."""

    def to_dict(self) -> dict[str, Any]:
        d = dict(kind=self.kind, seq=self.seq, node=self.node, task=self.task, child=self.child,
                 charged=self.charged, reason=self.reason)
        if self.expansion:
            d["expansion"] = self.expansion
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Action":
        return cls(**{k: d[k] for k in ("kind", "seq", "node", "task", "child", "charged", "reason", "expansion")
                      if k in d})


WAIT = Action("wait")


@dataclass
class NodeState:
    id: str
    parent_id: str | None
    depth: int
    status: str = "expanding"
    """expanding -> accepted | rejected (HGM); `invalid` for a DGM child whose evaluations all crashed."""
    variant_dir: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    """Expansions attempted from this node (accepted or not): DGM's per-attempt children count."""
    given: set[str] = field(default_factory=set)
    """Tasks taken: counted, or in flight (never given twice)."""
    dropped: set[str] = field(default_factory=set)
    """Tasks given up after repeated infrastructure errors."""
    infra: dict[str, int] = field(default_factory=dict)
    queue: list[int] = field(default_factory=list)
    """Seqs of this node's evaluations in the order they were decided (ordered release)."""
    held: dict[int, tuple[str, str]] = field(default_factory=dict)
    """Finished statuses waiting for an earlier evaluation of the node (ordered release)."""
    quota: int = 0
    """DGM: evaluations of the current stage still to give."""
    stage: int = -1
    """DGM: index of the stage being run (-1: none yet)."""


class Scheduler:
    """The search state and its decision rule; thread-safe."""

    def __init__(self, cfg: HGMConfig, task_ids: list[str], root: NodeView, *,
                 on_decision: Callable[[Action], None] | None = None, id_prefix: str = "",
                 root_id: str | None = None,
                 expansion_kind: Callable[["Scheduler", str, np.random.Generator], str] | None = None):
        """`root_id` names the root (default `<prefix>root`; `evolve loop` roots each generation's search at the
        champion's node id). `expansion_kind(scheduler, parent, rng)` chooses the kind of each expansion when
        the world has several (under the lock, with the decision's own random stream)."""
        if not task_ids:
            raise ValueError("the task set is empty")
        if len(set(task_ids)) != len(task_ids):
            raise ValueError("task ids repeat")
        self.cfg = cfg
        self.tasks = list(task_ids)
        order_rng = np.random.default_rng([cfg.seed, 0x7A5C])
        self.order = [self.tasks[i] for i in order_rng.permutation(len(self.tasks))] if cfg.shared_task_order \
            else list(self.tasks)
        self._pos = {t: i for i, t in enumerate(self.order)}
        self.prefix = id_prefix
        self.root_id = root_id or id_prefix + "root"
        self.expansion_kind = expansion_kind
        self.nodes: dict[str, NodeState] = {}
        self.stats = CladeStats()
        self.lock = threading.RLock()
        self.on_decision = on_decision or (lambda a: None)
        self.seq = 0
        self.reserved = 0
        """Charged evaluations decided so far (in flight included, refunded on infrastructure errors)."""
        self.evaluations_done = 0
        self.inflight: dict[int, Action] = {}
        self.expanding = 0
        self.expansions = 0
        self.rejected = 0
        self.tokens = 0
        self.infra_errors = 0
        self.started_at: float | None = None
        self.replay: list[Action] = []
        self.stopped = False
        self._accepted: list[str] = [self.root_id]
        self._widening_nodes = 0
        bits = np.random.PCG64(np.random.SeedSequence([cfg.seed, 0x5EED]))
        self._bits, self._bits_start, self._gen = bits, bits.state, np.random.Generator(bits)
        node = NodeState(self.root_id, None, 0, status="accepted", variant_dir=root.variant_dir, info=dict(root.info))
        self.nodes[self.root_id] = node
        self.stats.add_node(self.root_id, None)

    # --- views -------------------------------------------------------------------------------------
    def view(self, node_id: str) -> NodeView:
        with self.lock:
            n = self.nodes[node_id]
            own = self.stats.own(node_id) if n.status == "accepted" or node_id in self.stats.nodes() else (0, 0)
            return NodeView(n.id, n.parent_id, n.depth, n.variant_dir, dict(n.info), own)

    def accepted(self) -> list[str]:
        """Accepted nodes, oldest first (a fresh list)."""
        return list(self._accepted)

    def nonroot_count(self) -> int:
        """Nodes the widening rule counts: accepted children (and rejected ones when configured)."""
        return self._widening_nodes

    def _tasks_left(self, n: NodeState) -> bool:
        return len(n.given) + len(n.dropped) < len(self.tasks)  # disjoint: a dropped task leaves `given`

    def _next_task(self, n: NodeState, rng: np.random.Generator) -> str:
        """The first task of the shared order the node has not been given (or, with `random_task_prob`, a
        random one); in-flight tasks count as given."""
        if self.cfg.random_task_prob and rng.random() < self.cfg.random_task_prob:
            free = [t for t in self.order if t not in n.given and t not in n.dropped]
            return free[int(rng.integers(len(free)))]
        given, dropped = n.given, n.dropped
        return next(t for t in self.order if t not in given and t not in dropped)

    def _tau(self) -> float:
        return policy.tau(self.reserved, self.cfg.budget, self.cfg.tau_exponent, self.cfg.tau_schedule)

    # --- deciding ------------------------------------------------------------------------------------
    def decide(self, now: float = 0.0) -> Action:
        """The next action, already counted (budget reserved, task taken, expansion in flight)."""
        with self.lock:
            if self.started_at is None:
                self.started_at = now
            if self.replay:
                return self.replay.pop(0)
            if self._limits_hit(now):
                return self._finish()
            action = self._choose()
            if action.kind in ("expand", "evaluate"):
                self._register(action)
                self.on_decision(action)
            return action

    def _limits_hit(self, now: float) -> bool:
        c = self.cfg
        if self.stopped or self.infra_errors >= c.max_infra_errors:
            return True
        if c.max_seconds is not None and self.started_at is not None and now - self.started_at >= c.max_seconds:
            return True
        return c.max_tokens is not None and self.tokens >= c.max_tokens

    def _finish(self) -> Action:
        return Action("done", reason=self.stop_reason()) if not self.inflight else WAIT

    def stop_reason(self) -> str:
        c = self.cfg
        if self.stopped:
            return "stop requested"
        if self.infra_errors >= c.max_infra_errors:
            return f"{self.infra_errors} infrastructure errors (max_infra_errors)"
        if c.max_tokens is not None and self.tokens >= c.max_tokens:
            return "token limit"
        if self.reserved >= c.budget:
            return "budget spent"
        if self.expansions >= (c.max_expansions or c.budget):
            return "expansion attempts spent"
        return "time limit" if c.max_seconds is not None else "done"

    def _rng(self, seq: int) -> np.random.Generator:
        """The stream of decision `seq`: the seed's generator jumped ahead by seq * 2^32 draws (cheap, and the
        same whatever happened before, so a resumed run draws what an uninterrupted one would)."""
        self._bits.state = self._bits_start
        self._bits.advance(seq << 32)
        return self._gen

    def _choose(self) -> Action:
        c, root = self.cfg, self.nodes[self.root_id]
        seq = self.seq
        rng = self._rng(seq)
        if c.root_eval and self._tasks_left(root):
            if c.root_eval_charged and self.reserved >= c.budget:
                return self._finish()
            return self._evaluate(seq, root, self._next_task(root, rng), charged=c.root_eval_charged)
        if c.root_eval and any(a.kind == "evaluate" and a.node == self.root_id for a in self.inflight.values()):
            return WAIT  # children are made from the root's evaluation record: wait for all of it
        if self.reserved >= c.budget:
            return self._finish()
        if self.expansions < c.initial_expansions:
            return self._expand(seq, self.root_id, rng)
        if self.expansions >= (c.max_expansions or c.budget) and (c.loop == "dgm" or not self._evaluable()):
            return self._finish()  # rejected children never spend the budget: cap the attempts
        if c.loop == "dgm":
            return self._choose_dgm(seq, rng)
        if policy.should_expand(self.reserved, self.nonroot_count(), self.expanding, c.alpha):
            return self._expand(seq, self._pick_parent(rng), rng)
        nodes, ntasks = self.nodes, len(self.tasks)
        cands = [n for n in (nodes[i] for i in self._accepted) if len(n.given) + len(n.dropped) < ntasks]
        if not cands:
            if self.expanding:
                return WAIT
            return self._expand(seq, self._pick_parent(rng), rng)  # every node has seen every task: widen
        k = policy.thompson_pick(rng, [self.stats.own(n.id) for n in cands], self._tau()) if len(cands) > 1 else 0
        return self._evaluate(seq, cands[k], self._next_task(cands[k], rng), charged=True)

    def _evaluable(self) -> bool:
        ntasks = len(self.tasks)
        return any(len(n.given) + len(n.dropped) < ntasks for n in (self.nodes[i] for i in self._accepted))

    def _choose_dgm(self, seq: int, rng: np.random.Generator) -> Action:
        """DGM's loop: a child is evaluated stage by stage as soon as it exists; otherwise expand."""
        for n in self.nodes.values():
            if n.status == "accepted" and n.quota > 0 and self._tasks_left(n):
                return self._evaluate(seq, n, self._next_task(n, rng), charged=True)
        return self._expand(seq, self._pick_parent(rng), rng)

    def _pick_parent(self, rng: np.random.Generator) -> str:
        c = self.cfg
        ids = self.accepted()
        if c.expansion_rule == "dgm":
            ids = [i for i in ids if i == self.root_id or sum(self.stats.own(i)) > 0] or [self.root_id]
            acc = [self._mean(i) for i in ids]
            return ids[policy.dgm_choose(rng, acc, [self.nodes[i].attempts for i in ids], 1, c.dgm_method)[0]]
        if len(ids) == 1:
            return ids[0]
        if c.expansion_rule == "greedy":
            return ids[policy.greedy_pick(rng, [self.stats.own(i) for i in ids])]
        if c.expansion_rule == "pseudo":
            counts = policy.pseudo_count_counts([self.stats.own(i) for i in ids], [self.stats.clade(i) for i in ids],
                                                c.pseudo_count)
            return ids[policy.thompson_pick(rng, counts, self._tau())]
        return ids[policy.thompson_pick(rng, [self.stats.clade(i) for i in ids], self._tau())]

    def _mean(self, node_id: str) -> float:
        s, f = self.stats.own(node_id)
        return s / (s + f) if s + f else 0.0

    def _expand(self, seq: int, parent: str, rng: np.random.Generator) -> Action:
        kind = self.expansion_kind(self, parent, rng) if self.expansion_kind is not None else ""
        return Action("expand", seq, node=parent, child=f"{self.prefix}n{self.expansions + 1:04d}", expansion=kind)

    def _evaluate(self, seq: int, node: NodeState, task: str, charged: bool) -> Action:
        return Action("evaluate", seq, node=node.id, task=task, charged=charged)

    def _register(self, a: Action) -> None:
        """Count a decision: it is in flight from now on."""
        self.seq = max(self.seq, a.seq + 1)
        self.inflight[a.seq] = a
        if a.kind == "expand":
            self.expanding += 1
            self.expansions += 1
            parent = self.nodes[a.node]
            parent.attempts += 1
            self.nodes[a.child] = NodeState(a.child, a.node, parent.depth + 1,
                                            info={"expansion": a.expansion} if a.expansion else {})
        else:
            n = self.nodes[a.node]
            n.given.add(a.task)
            n.queue.append(a.seq)
            if a.charged:
                self.reserved += 1
            if n.quota > 0:
                n.quota -= 1

    # --- completing ----------------------------------------------------------------------------------
    def complete(self, action: Action, result: Expansion | Evaluation) -> None:
        """Apply the result of an action returned by `decide` (any order, any thread)."""
        with self.lock:
            if self.inflight.pop(action.seq, None) is None:
                raise KeyError(f"decision {action.seq} is not in flight")
            self.tokens += int(getattr(result, "tokens", 0) or 0)
            if action.kind == "expand":
                assert isinstance(result, Expansion)
                self._complete_expand(action, result)
            else:
                assert isinstance(result, Evaluation)
                self._complete_evaluate(action, result)

    def _complete_expand(self, a: Action, r: Expansion) -> None:
        self.expanding -= 1
        child = self.nodes[a.child]
        child.variant_dir, child.info = r.variant_dir, dict(r.info) | ({"expansion": a.expansion} if a.expansion else {})
        child.info.update(reason=r.reason, diagnosis=r.diagnosis, diff=r.diff)
        if r.accepted or self.cfg.count_rejected_in_widening:
            self._widening_nodes += 1
        if r.accepted:
            child.status = "accepted"
            self._accepted.append(child.id)
            self.stats.add_node(child.id, child.parent_id)
            if self.cfg.loop == "dgm" and self.cfg.dgm_stages:
                child.stage, child.quota = 0, self.cfg.dgm_stages[0]
        else:
            child.status = "rejected"
            self.rejected += 1

    def _complete_evaluate(self, a: Action, r: Evaluation) -> None:
        n = self.nodes[a.node]
        if r.status not in COUNTED:  # infrastructure error: not the agent's; the task goes back to the queue
            if a.charged:
                self.reserved -= 1
            self.infra_errors += 1
            n.infra[a.task] = n.infra.get(a.task, 0) + 1
            n.given.discard(a.task)
            if n.stage >= 0:
                n.quota += 1
            if n.infra[a.task] > self.cfg.max_infra_retries:
                n.dropped.add(a.task)
                if n.stage >= 0:
                    n.quota -= 1
        else:
            self.evaluations_done += 1
        n.held[a.seq] = (a.task, r.status)
        self._release(n)
        if self.cfg.loop == "dgm":
            self._advance_stage(n)

    def _release(self, n: NodeState) -> None:
        """Count finished outcomes; with ordered release, only those whose earlier evaluations finished too."""
        if not self.cfg.ordered_release:
            for seq in list(n.held):
                n.queue.remove(seq)
                self.stats.add_outcome(n.id, *n.held.pop(seq))
            return
        while n.queue and n.queue[0] in n.held:
            self.stats.add_outcome(n.id, *n.held.pop(n.queue.pop(0)))

    def _advance_stage(self, n: NodeState) -> None:
        if n.stage < 0 or n.quota > 0 or n.queue:
            return
        s, f = self.stats.own(n.id)
        if s + f == 0:
            self._accepted.remove(n.id)
            if not self.cfg.count_rejected_in_widening:
                self._widening_nodes += 1
            n.status, n.quota = "invalid", 0  # every evaluation crashed: recorded as invalid, never dropped
            n.info["reason"] = "every evaluation failed for infrastructure reasons"
            return
        nxt = n.stage + 1
        if nxt < len(self.cfg.dgm_stages) and s / (s + f) >= self.cfg.dgm_threshold:
            n.stage, n.quota = nxt, self.cfg.dgm_stages[nxt]
        else:
            n.stage = len(self.cfg.dgm_stages)

    # --- earlier evaluations ---------------------------------------------------------------------------
    def seed(self, node_id: str, outcomes: list[tuple[str, str]]) -> None:
        """Count (task, status) outcomes of `node_id` measured before this search (`evolve loop`: the champion's
        evaluations in earlier generations), uncharged; their tasks are never given to it again. Call before
        `restore`, with the same rows every time, so a resumed search rebuilds the same state."""
        with self.lock:
            n = self.nodes[node_id]
            for task, status in outcomes:
                if task in self._pos and task not in n.given:
                    n.given.add(task)
                    self.stats.add_outcome(node_id, task, status)

    # --- resume --------------------------------------------------------------------------------------
    def restore(self, history: list[tuple[Action, Expansion | Evaluation | None]]) -> None:
        """Rebuild the state from stored decisions (in seq order) and their results; decisions without a
        result were in flight at the kill and are re-issued first, unchanged."""
        with self.lock:
            for action, _ in history:
                self._register(action)
            for action, result in history:
                if result is not None:
                    self.complete(action, result)
            self.replay = sorted(self.inflight.values(), key=lambda a: a.seq)

    # --- the answer ----------------------------------------------------------------------------------
    def final_pick(self) -> str:
        """The final agent: best `quantile` of Beta(1+s,1+f) over own outcomes (or best mean for DGM)."""
        with self.lock:
            ids = [i for i in self.accepted() if sum(self.stats.own(i)) > 0] or [self.root_id]
            own = [self.stats.own(i) for i in ids]
            k = policy.best_belief(own, self.cfg.quantile) if self.cfg.final_pick == "quantile" else policy.best_mean(own)
            return ids[k]

    def ranking(self, k: int) -> list[str]:
        """The top-k nodes by the final-pick criterion (for the held-out re-evaluation)."""
        with self.lock:
            ids = [i for i in self.accepted() if sum(self.stats.own(i)) > 0] or [self.root_id]
            own = np.asarray([self.stats.own(i) for i in ids], dtype=float)
            if self.cfg.final_pick == "quantile":
                score = policy.beta_quantile(self.cfg.quantile, 1 + own[:, 0], 1 + own[:, 1])
            else:
                score = own[:, 0] / np.maximum(own.sum(axis=1), 1)
            return [ids[i] for i in np.argsort(-score, kind="stable")[:k]]

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return dict(evaluations=self.evaluations_done, reserved=self.reserved, budget=self.cfg.budget,
                        nodes=len(self.nodes), accepted=len(self.accepted()), rejected=self.rejected,
                        expanding=self.expanding, in_flight=len(self.inflight), tokens=self.tokens,
                        infra_errors=self.infra_errors)
