"""Simulated worlds: each node has a hidden pass probability, a child's is drawn by a heritable process, and
evaluating a node on a task is a Bernoulli draw. Every draw comes from a stream keyed by (seed, node id,
task), so a world is deterministic whatever order the scheduler asks in (and a resumed run sees the same
world). The hidden skill travels in the node's `info["p"]` (a simulation's ground truth, never read by the
scheduler).

- `MismatchWorld`: the anchors' "metaproductivity mismatch" world (§1.14.7): first-generation children are
  flashy (+0.10 once, then −0.04 per generation) or steady (−0.03 once, then +0.03 per generation), the type
  inherited with 10% mutation, noise σ = 0.02, p capped to [0.01, 0.95], 60 tasks. Greedy search is drawn to
  flashy children; the clade statistic sees that steady lineages improve.
- `HeritableWorld`: a child's p is its parent's plus Gaussian noise (no mismatch).
- `EasyFastWorld`: half the tasks are easy (p + 0.2) and return 10x sooner: the asynchronous-bias probe.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np

from evolve.hgm.world import Evaluation, Expansion, NodeView


def _key(text: str) -> int:
    return zlib.crc32(text.encode())


class SimWorld:
    """Shared machinery: deterministic streams, task offsets, latencies, optional rejected expansions."""

    def __init__(self, seed: int = 0, n_tasks: int = 60, root_skill: float = 0.40, lo: float = 0.01,
                 hi: float = 0.95, reject_prob: float = 0.0, eval_latency: float = 1.0, expand_latency: float = 5.0,
                 latency_jitter: float = 0.0, task_offsets: list[float] | None = None,
                 task_latency: list[float] | None = None):
        self.seed, self.lo, self.hi = seed, lo, hi
        self.task_ids = [f"t{i:03d}" for i in range(n_tasks)]
        self._index = {t: i for i, t in enumerate(self.task_ids)}
        self.root_skill = root_skill
        self.reject_prob = reject_prob
        self.eval_latency, self.expand_latency, self.latency_jitter = eval_latency, expand_latency, latency_jitter
        self.offsets = task_offsets or [0.0] * n_tasks
        self.task_latency = task_latency or [1.0] * n_tasks

    def rng(self, *parts: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, *(_key(p) for p in parts)])

    def _lat(self, base: float, rng: np.random.Generator) -> float:
        return base * (1.0 + self.latency_jitter * rng.exponential()) if self.latency_jitter else base

    def root(self) -> NodeView:
        return NodeView("root", None, 0, info={"p": self.root_skill})

    def child_info(self, parent: NodeView, rng: np.random.Generator) -> dict:
        raise NotImplementedError

    def expand(self, parent: NodeView, child_id: str) -> Expansion:
        rng = self.rng("expand", child_id)
        info = self.child_info(parent, rng)
        info["p"] = float(np.clip(info["p"], self.lo, self.hi))
        lat = self._lat(self.expand_latency, rng)
        diff = f"simulated change to {parent.id}"
        if self.reject_prob and rng.random() < self.reject_prob:
            return Expansion(accepted=False, reason="simulated validation failure", info=info, latency=lat, diff=diff)
        return Expansion(accepted=True, info=info, latency=lat, diff=diff)

    def pass_prob(self, node: NodeView, task_id: str) -> float:
        return float(np.clip(node.info["p"] + self.offsets[self._index[task_id]], 0.0, 1.0))

    def uniforms(self, *parts: str) -> tuple[float, float]:
        """Two uniforms from a hash of (seed, parts): cheaper than a generator for the hot evaluation path."""
        d = hashlib.blake2b(":".join((str(self.seed), *parts)).encode(), digest_size=16).digest()
        return int.from_bytes(d[:8], "little") / 2.0 ** 64, int.from_bytes(d[8:], "little") / 2.0 ** 64

    def evaluate(self, node: NodeView, task_id: str) -> Evaluation:
        u, v = self.uniforms("eval", node.id, task_id)
        ok = u < self.pass_prob(node, task_id)
        lat = self.eval_latency * self.task_latency[self._index[task_id]]
        if self.latency_jitter:
            lat *= 1.0 - self.latency_jitter * np.log1p(-v)  # (1 + jitter * Exp(1))
        return Evaluation(status="pass" if ok else "fail", latency=lat)


class MismatchWorld(SimWorld):
    """The metaproductivity-mismatch world of the anchors (§1.14.7)."""

    def __init__(self, seed: int = 0, flashy_jump: float = 0.10, flashy_drift: float = -0.04,
                 steady_jump: float = -0.03, steady_drift: float = 0.03, mutation: float = 0.10,
                 noise: float = 0.02, **kw):
        super().__init__(seed, **kw)
        self.jump = {"flashy": flashy_jump, "steady": steady_jump}
        self.drift = {"flashy": flashy_drift, "steady": steady_drift}
        self.mutation, self.noise = mutation, noise

    def child_info(self, parent: NodeView, rng: np.random.Generator) -> dict:
        if parent.depth == 0 or "type" not in parent.info:
            kind = "flashy" if rng.random() < 0.5 else "steady"
            delta = self.jump[kind]
        else:
            kind = parent.info["type"]
            if rng.random() < self.mutation:
                kind = "steady" if kind == "flashy" else "flashy"
            delta = self.drift[kind]
        return {"p": parent.info["p"] + delta + self.noise * rng.standard_normal(), "type": kind}


class HeritableWorld(SimWorld):
    """A child's skill is its parent's plus N(drift, sigma): no mismatch between own and clade quality."""

    def __init__(self, seed: int = 0, drift: float = 0.0, sigma: float = 0.05, **kw):
        super().__init__(seed, **kw)
        self.drift, self.sigma = drift, sigma

    def child_info(self, parent: NodeView, rng: np.random.Generator) -> dict:
        return {"p": parent.info["p"] + self.drift + self.sigma * rng.standard_normal()}


class EasyFastWorld(HeritableWorld):
    """Half the tasks are easy (+spread) and finish `speedup` times sooner, half hard (−spread): with
    asynchronous workers, young nodes' first results are mostly easy ones unless the scheduler corrects it."""

    def __init__(self, seed: int = 0, spread: float = 0.2, speedup: float = 10.0, n_tasks: int = 60, **kw):
        easy = [i % 2 == 0 for i in range(n_tasks)]
        kw.setdefault("root_skill", 0.5)
        super().__init__(seed, n_tasks=n_tasks, task_offsets=[spread if e else -spread for e in easy],
                         task_latency=[1.0 / speedup if e else 1.0 for e in easy], latency_jitter=0.5, **kw)
