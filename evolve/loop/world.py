"""The world the loop's search runs in: nodes are (agent variant, policy version) pairs.

- `evaluate(node, task)`: the node's variant with the node's policy on one search task. SWE suites: one episode
  through `DockerWorld.evaluate` (`run_episode`: a fresh sandbox, hidden-test grading); toolcall: one answer of
  the node's policy, passing when ToolRL's total rescaled to [0, 1] reaches `search.pass_threshold`.
- `expand(parent, child, kind)`: `code` runs HGM's self-modification (`DockerWorld.expand`: diagnosis, the
  meta-agent's edit, validation) with the parent's policy as the meta policy unless one is configured; the child
  keeps the parent's policy. `sft` / `grpo` train new weights from the parent's policy on the generation's data
  (`evolve.train`: `train_sft`, `train_grpo`); the child keeps the parent's variant. A training that learned
  nothing (GRPO groups all equal, no data) is a rejected child with its reason.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from agent.policy.base import SamplingParams
from evolve.agent_r.toolcall import unit_reward
from evolve.hgm.real import DockerWorld, RealWorldConfig
from evolve.hgm.world import Evaluation, Expansion, NodeView
from evolve.loop.context import LoopContext
from evolve.loop.data import GenerationData
from evolve.loop.state import gkey
from evolve.store import RunStore
from evolve.train.errors import TrainError, TrainingStopped
from records import Step, Trajectory, TrajectoryStatus
from rewards.toolrl import score
from sandbox import SandboxConfig
from tasks.toolcall.prompt import build_messages

log = logging.getLogger(__name__)


class LoopWorld:
    """Expansions of both kinds and evaluations on the search tasks, for generation `g`."""

    def __init__(self, ctx: LoopContext, g: int, champion: str, data: GenerationData):
        self.ctx, self.g, self.champion, self.data = ctx, g, champion, data
        self.search_id = ctx.search_id(g)
        self.instances = {i.instance_id: i for i in ctx.splits.search}
        self.task_ids = list(self.instances)
        self._docker = None
        self._lock = threading.Lock()

    # --- the interface ----------------------------------------------------------------------------------
    def root(self) -> NodeView:
        node = self.ctx.state.node(self.champion)
        return NodeView(self.champion, None, 0, variant_dir=node.variant_dir or self.ctx.start_variant,
                        info=dict(node.info))

    def spec(self, node: NodeView) -> str:
        return str(node.info.get("policy") or self.ctx.start_spec)

    def evaluate(self, node: NodeView, task_id: str) -> Evaluation:
        self.ctx.progress("search", "evaluate", {"node": node.id, "task": task_id})
        if self.ctx.kind == "toolcall":
            return self._evaluate_toolcall(node, task_id)
        return self.docker().evaluate(node, task_id)

    def expand(self, parent: NodeView, child_id: str, kind: str = "code") -> Expansion:
        self.ctx.progress("search", "expand", {"node": parent.id, "child": child_id, "kind": kind})
        started = time.time()
        base = {"node_kind": kind, "generation": self.g, "parent_policy": self.spec(parent)}
        if kind == "code":
            if self.ctx.kind == "toolcall":
                return Expansion(False, reason="toolcall has no agent variant to edit", info=base | {
                    "policy": self.spec(parent)})
            res = self.docker().expand(parent, child_id)
            res.info = dict(res.info) | base | {"policy": self.spec(parent), "label": _first_line(res.diagnosis)
                                                 or "code edit"}
            return res
        try:
            with self.ctx.train_lock:
                version, training = self._train(parent, child_id, kind)
        except Exception as e:  # noqa: BLE001 - a failed training is a rejected child, never the search's end

            if not isinstance(e, TrainError):
                log.exception("training %s of %s failed", kind, parent.id)
            why = " ".join(str(e).split()) or type(e).__name__
            return Expansion(False, variant_dir=parent.variant_dir, reason=f"{kind}: {why}",
                             info=base | {"label": f"{kind}: nothing learned"}, latency=time.time() - started)
        info = base | {"policy": f"version:{version.id}", "training": training,
                       "label": f"{kind} {training['steps']} steps on {training['items']} trajectories"}
        return Expansion(True, variant_dir=parent.variant_dir, reason="trained", info=info,
                         latency=time.time() - started)

    # --- toolcall evaluation ----------------------------------------------------------------------------
    def _evaluate_toolcall(self, node: NodeView, task_id: str) -> Evaluation:
        started = time.time()
        inst = self.instances[task_id]
        policy = self.ctx.policies.batched(self.spec(node), self.ctx.cfg.search.workers)
        prompt = build_messages(inst)
        cfg = self.ctx.cfg
        gen = policy.generate([prompt], SamplingParams(max_tokens=cfg.rollouts.max_tokens,
                                                       temperature=cfg.search.temperature, seed=cfg.seed))[0]
        s = score(gen.text, inst.extra["answer"])
        traj = Trajectory(run_id=self.search_id, instance_id=task_id, policy=policy.spec, prompt=prompt,
                          steps=[Step(index=0, response=gen.message(), prompt_tokens=gen.prompt_tokens,
                                      completion_tokens=gen.completion_tokens,
                                      policy_seconds=time.time() - started)],
                          status=TrajectoryStatus.submitted, answer=gen.text, origin="loop:search",
                          finished_at=time.time())
        self.ctx.store.put_trajectory(traj)
        self.ctx.store.put_reward(traj.id, s.to_reward())
        unit = unit_reward(gen.text, inst.extra["answer"])
        status = "pass" if unit >= cfg.search.pass_threshold else "fail"
        return Evaluation(status, traj.id, {"toolrl": s.total, "unit": unit}, time.time() - started,
                          gen.prompt_tokens + gen.completion_tokens)

    # --- weight children --------------------------------------------------------------------------------
    def _train(self, parent: NodeView, child_id: str, kind: str) -> tuple[Any, dict[str, Any]]:
        """Train `kind` from the parent's policy on the generation's data; (version, training summary)."""
        from evolve.train.grpo import GRPOConfig, train_grpo  # the trainer loads torch: only for weight children
        from evolve.train.modeling import LoraSettings
        from evolve.train.sft import SFTConfig, train_sft

        cfg, t = self.ctx.cfg, self.ctx.cfg.training
        out = self.ctx.out / "train" / f"{gkey(self.g)}-{child_id.rsplit(':', 1)[-1]}"
        common = dict(policy=self.spec(parent), runs_root=self.ctx.out,
                      lora=LoraSettings(r=t.lora_r, alpha=2 * t.lora_r) if t.lora else None,
                      max_len=t.max_len, batch_size=t.batch_size, micro_batch_size=t.micro_batch_size,
                      device=t.device, dtype=t.dtype, num_threads=t.num_threads, save_every=t.save_every,
                      seed=t.seed + self.g)
        started = time.time()
        if kind == "sft":
            items = self.data.sft_items()
            if not items:
                raise TrainError("no successes, splices or good paths in this generation's data to learn from")
            version = train_sft(SFTConfig(**common, lr=t.lr, max_steps=cfg.sft.steps, min_reward=None), [],
                                out, items=items)
        elif kind == "grpo":
            items = self.data.grpo_items()
            if not items:
                raise TrainError("no scored rollouts in this generation's data")
            version = train_grpo(GRPOConfig(**common, lr=cfg.grpo.lr, max_steps=cfg.grpo.steps, kl_coef=cfg.grpo.kl_coef,
                                            epochs=cfg.grpo.epochs,
                                            recompute_old_logprobs=parent.id != self.champion), [], out, items=items)
        else:
            raise ValueError(f"unknown expansion kind {kind!r}")
        if version is None:  # (Ctrl-C stops a training only in the main thread; the search trains in its workers)
            raise TrainingStopped(str(out))
        self.ctx.store.put_policy_version(version)  # the loop's store names every version it made
        with RunStore(out, readonly=True) as s:
            steps = s.train_steps(version.id)
        seconds = sum(st.metrics.get("tokens", 0.0) / st.metrics["tokens_per_s"] for st in steps
                      if st.metrics.get("tokens_per_s"))
        training = {"version": version.id, "kind": kind, "run_dir": str(out), "items": len(items),
                    "steps": len(steps), "train_seconds": round(seconds, 3),
                    "tokens": sum(st.metrics.get("tokens", 0.0) for st in steps),
                    "wall_seconds": round(time.time() - started, 3), "metrics": version.metrics,
                    "data": self.data.summary(kind)}
        return version, training

    # --- SWE: HGM's Docker world ------------------------------------------------------------------------
    def docker(self):
        """`DockerWorld` over the search tasks, acting with each node's policy."""
        with self._lock:
            if self._docker is None:
                cfg = self.ctx.cfg
                meta = cfg.policies.meta_policy
                world = DockerWorld(list(self.instances.values()), self.root().variant_dir, _Unused(),
                                    _Unused(), SandboxConfig(backend=cfg.sandbox, run_id=self.ctx.run_id),
                                    self.ctx.store, self.search_id, self.ctx.out,
                                    RealWorldConfig(privileged_diagnosis=cfg.code.privileged_diagnosis,
                                                    smoke=cfg.code.smoke, meta_max_steps=cfg.code.meta_max_steps),
                                    seed=cfg.seed + self.g)
                world.task_ids = list(self.task_ids)
                world.max_steps, world.max_tokens_per_step = cfg.rollouts.max_steps, cfg.rollouts.max_tokens
                workers = cfg.search.workers
                world.policy_of = lambda n: self.ctx.policies.batched(self.spec(n), workers)
                world.meta_policy_of = (lambda n: self.ctx.policies.batched(meta, workers)) if meta else world.policy_of
                world.outcome_runs = [self.ctx.search_id(k) for k in range(1, self.g + 1)]
                self._docker = world
            return self._docker

    def close(self) -> None:
        if self._docker is not None:
            self._docker.close()


class _Unused:
    """Stands where `DockerWorld` wants a fixed policy: the loop gives each node its own (`policy_of`)."""

    spec = "per-node"

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"the loop's DockerWorld has no fixed policy ({name}); use policy_of")


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:80]
