"""Online GRPO on the tool-calling suite: sample a group per prompt, score with ToolRL, store, update.

Each step takes `prompts_per_step` training instances, samples `group_size` completions of each with
the Policy in one batch, scores each with `rewards.toolrl.score` against the instance's answer, stores
one single-turn `Trajectory` per completion (with its sampled `token_ids`, raw `logprobs` and the weights
that sampled them, `sampled_by`) and its `Reward` in the output run, and updates on them
(`grpo.grpo_step`, one optimiser step per `batch_size` samples; with several, the later ones are off-policy and clipped against the recorded
log-probs): the same data and loss code as offline GRPO on stored multi-turn trajectories.
A resumed run repeats the prompts and sampling seeds of the steps after its checkpoint; rollouts
stored by the killed attempt of those steps stay in the store next to the new ones.

Sampling backends (`rollout_policy`):

* `live` (default): the transformers Policy (`agent.policy.hf.HFPolicy`) sampling with the very model
  being trained (its `model` is the training model), so every step samples from the current weights
  with no copy or reload.
* any other spec (e.g. `vllm:MODEL`): that Policy samples; after each update the trained LoRA adapter
  is saved and reloaded into it with `load_adapter` (LoRA training only).
"""

from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Callable

import torch
from pydantic import Field

from agent.policy import SamplingParams, load_policy
from agent.policy.hf import HFPolicy
from evolve.train.data import build_sequences, micro_batches
from evolve.train.grpo import GRPOConfig, advantages_for, grpo_step, prepare_old_and_ref
from evolve.train.errors import NothingLearned, TrainError
from evolve.train.modeling import model_dir
from evolve.train.session import RUN_ID, TrainSession
from records import Message, PolicyVersion, Step, TaskInstance, Trajectory, TrajectoryStatus
from rewards.toolrl import score
from tasks.toolcall import ToolCallSuite
from tasks.toolcall.prompt import build_messages

log = logging.getLogger(__name__)


class ToolcallGRPOConfig(GRPOConfig):
    """Settings of `evolve train grpo-toolcall` (online GRPO on the tool-calling suite)."""

    steps: int = Field(default=100, ge=1)
    """Optimiser steps (each on freshly sampled groups)."""
    prompts_per_step: int = Field(default=4, ge=1)
    """Training instances sampled per step."""
    group_size: int = Field(default=8, ge=2)
    """Completions sampled per instance (the GRPO group)."""
    batch_size: int = Field(default=32, ge=1)
    """Samples per optimiser step; `prompts_per_step * group_size` samples make ceil(that / batch_size) steps."""
    max_new_tokens: int = Field(default=256, ge=1)
    """Most tokens per completion; longer ones end with status `budget_exhausted` (truncated)."""
    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature."""
    top_p: float = Field(default=1.0, gt=0, le=1)
    """Nucleus sampling."""
    limit: int | None = Field(default=None, ge=1)
    """Use only the first `limit` training instances."""
    rollout_policy: str = "live"
    """`live`: sample with the model being trained (transformers); else a policy spec (e.g. `vllm:MODEL`)
    that samples and gets the adapter reloaded after every update."""
    rollout_batch_size: int = Field(default=64, ge=1)
    """Most completions sampled together by the live policy."""


def toolcall_instances(split: str, limit: int | None = None) -> list[TaskInstance]:
    """Instances of the bundled tool-calling suite (`train` or `test` split)."""
    items = ToolCallSuite().instances(split=split)
    return items[:limit] if limit else items


def prompt_messages(instance: TaskInstance) -> list[Message]:
    """The prompt the suite shows the policy for an instance."""
    return build_messages(instance)


def score_text(text: str, instance: TaskInstance) -> Any:
    """ToolRL score (`format`, `correctness`, `total`) of a response to an instance."""
    return score(text, instance.extra["answer"])


def sampled_by(version_id: str, step: int) -> str:
    """`Trajectory.policy` of a rollout sampled at online step ``step`` of training ``version_id``: the weights
    after ``step`` online steps (step 0: the starting policy's). Rollouts of different steps come from
    different weights: their recorded log-probs are on-policy only for the weights of their own step."""
    return f"version:{version_id}@step-{step}"


def make_trajectory(instance: TaskInstance, prompt: list[Message], gen: Any, *, run_id: str,
                    policy: str) -> Trajectory:
    """A single-turn trajectory of one sampled completion (tokens and log-probs kept)."""
    now = time.time()
    status = TrajectoryStatus.budget_exhausted if gen.finish_reason == "length" else TrajectoryStatus.submitted
    return Trajectory(run_id=run_id, instance_id=instance.instance_id, policy=policy, prompt=list(prompt),
                      steps=[Step(index=0, response=gen.message(), prompt_tokens=gen.prompt_tokens,
                                  completion_tokens=gen.completion_tokens)],
                      status=status, answer=gen.text, origin="rollout", created_at=now, finished_at=now)


def live_policy(model: Any, tokenizer: Any, base: str, device: torch.device, batch_size: int) -> Any:
    """The transformers Policy sampling with ``model`` (the training model) itself: no second copy, and
    sampling always sees the current weights."""
    return HFPolicy(str(model_dir(base)), loaded=(model, tokenizer), device=str(device), max_batch_size=batch_size)


def evaluate_toolcall(policy: Any, instances: list[TaskInstance], *, max_new_tokens: int,
                      temperature: float = 0.0, seed: int = 0,
                      prompt: Callable[[TaskInstance], list[Message]] = prompt_messages) -> dict[str, float]:
    """Mean ToolRL format / correctness / total of one completion per instance (greedy by default)."""
    gens = policy.generate([prompt(i) for i in instances],
                           SamplingParams(max_tokens=max_new_tokens, temperature=temperature, seed=seed))
    scores = [score_text(g.text, i) for g, i in zip(gens, instances)]
    n = max(len(scores), 1)
    return {"format": sum(s.format for s in scores) / n, "correctness": sum(s.correctness for s in scores) / n,
            "total": sum(s.total for s in scores) / n}


def train_grpo_toolcall(cfg: ToolcallGRPOConfig, out: Path, *, instances: list[TaskInstance] | None = None,
                        prompt: Callable[[TaskInstance], list[Message]] = prompt_messages) -> PolicyVersion:
    """Online GRPO on the tool-calling suite's training split (or ``instances``); store and return the new
    policy version. ``prompt`` builds the chat prompt of an instance (default: the suite's own)."""
    instances = instances if instances is not None else toolcall_instances("train", cfg.limit)
    if not instances:
        raise TrainError("the tool-calling suite has no training instances")
    session = TrainSession(out, "grpo", cfg, data_ids=[RUN_ID])
    error: BaseException | None = None
    try:
        if session.finished is not None:
            return session.finished
        store = session.store
        ckpt = session.latest_checkpoint()
        torch.manual_seed(cfg.seed)
        model, tok = session.load_model(ckpt)
        per_rollout = math.ceil(cfg.prompts_per_step * cfg.group_size / cfg.batch_size)
        opt, sched = session.optimizer(model, cfg.steps * per_rollout)
        step = session.restore(ckpt, opt, sched)["step"] if ckpt else 0
        ref_model = session.load_reference() if cfg.kl_coef else None
        if cfg.rollout_policy == "live":
            policy = live_policy(model, tok, session.base, session.device, cfg.rollout_batch_size)
        else:
            if cfg.lora is None:
                raise TrainError("an external rollout policy needs LoRA training (its adapter is reloaded)")
            policy = load_policy(cfg.rollout_policy)
        rng = random.Random(cfg.seed)
        for _ in range(step):  # the same prompt order after a resume
            rng.sample(range(len(instances)), min(cfg.prompts_per_step, len(instances)))
        metrics: dict[str, float] = {}
        while step < cfg.steps:
            t0 = time.perf_counter()
            picked = [instances[k] for k in rng.sample(range(len(instances)), min(cfg.prompts_per_step,
                                                                                  len(instances)))]
            prompts = [prompt(i) for i in picked]
            model.eval()
            gens = policy.generate([p for p in prompts for _ in range(cfg.group_size)],
                                   SamplingParams(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                                  top_p=cfg.top_p, seed=cfg.seed * 1_000_003 + step))
            model.train()
            sample_s = time.perf_counter() - t0
            items, fmt, cor = [], [], []
            for k, gen in enumerate(gens):
                inst = picked[k // cfg.group_size]
                traj = make_trajectory(inst, prompts[k // cfg.group_size], gen, run_id=RUN_ID,
                                       policy=sampled_by(session.version_id, step))
                s = score_text(gen.text, inst)
                store.put_trajectory(traj)
                store.put_reward(traj.id, s.to_reward())
                items.append((traj, s.total))
                fmt.append(s.format)
                cor.append(s.correctness)
            seqs, _ = build_sequences(items, tok, max_len=cfg.max_len, overflow=cfg.overflow,
                                 on_mismatch=cfg.token_mismatch)
            adv, train, gstats = advantages_for(seqs, cfg)
            idx = [i for i, t in enumerate(train) if t]
            metrics = {"reward": sum(r for _, r in items) / len(items), "format": sum(fmt) / len(fmt),
                       "correctness": sum(cor) / len(cor), "sample_s": sample_s, **gstats}
            if idx:  # else every group had equal rewards: nothing to learn from this rollout
                prepare_old_and_ref(model, ref_model, seqs, idx, cfg, tok.pad_token_id)
                updates = []
                for k in range(0, len(idx), cfg.batch_size):  # batch_size samples per optimiser step
                    batches = micro_batches(seqs, idx[k:k + cfg.batch_size], micro_batch_size=cfg.micro_batch_size,
                                            max_len=cfg.max_len, pack=cfg.pack, share_prefix=cfg.share_prefix,
                                            pad_id=tok.pad_token_id, advantages=adv, train=train)
                    updates.append(grpo_step(model, opt, sched, batches, cfg))
                metrics |= {key: sum(u[key] for u in updates) / len(updates) for key in updates[0]}
                metrics["updates"] = float(len(updates))
            session.log_step(step, metrics)
            step += 1
            if cfg.rollout_policy != "live":
                adapter = out / "rollout-adapter"
                model.save_pretrained(adapter)
                policy.load_adapter(adapter)
            if step % cfg.save_every == 0 or step == cfg.steps:
                session.save_checkpoint(step, model, tok, opt, sched)
        updates = sum(int(s.metrics.get("updates", 0)) for s in store.train_steps(session.version_id))
        if updates == 0:  # every group of every step had equal rewards: these are the starting weights
            store.set_run_status(RUN_ID, "no-updates")
            raise NothingLearned(f"GRPO made no update in {cfg.steps} step(s): every group's rewards were equal, so "
                                 "no policy version is stored (raise the temperature or group size, or warm-start "
                                 "the policy with SFT so that some answers score better than others)")
        final = {k: metrics[k] for k in ("reward", "format", "correctness") if k in metrics}
        return session.finish(model, tok, final | {"steps": float(cfg.steps), "updates": float(updates)})
    except BaseException as e:
        error = e
        raise
    finally:
        session.close(error)
