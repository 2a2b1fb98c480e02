"""Warm start for tool calling: SFT on the tool-calling suite's reference answers (`evolve train sft-toolcall`).

A 270M model cannot discover ToolRL's output format by GRPO alone (every sample of a group scores the
same, so there is no signal); a few hundred supervised examples of the format fix that. Each training
instance becomes one gold trajectory: the suite's own prompt (`tasks.toolcall.prompt.build_messages`:
system message with the tool schemas, then the request) and its reference answer as the assistant turn,
trained through the end-of-turn marker. Everything else is `sft.train_sft` (masking, packing, checkpoints,
resume, the stored policy version), so the loop calls `train_sft_toolcall` as its warm-start stage and a
user runs the same thing as a command.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field

from records import Message, PolicyVersion, Step, TaskInstance, Trajectory, TrajectoryStatus
from tasks.toolcall.prompt import build_messages

from evolve.train.errors import TrainError
from evolve.train.rollout import toolcall_instances
from evolve.train.sft import SFTConfig, train_sft

log = logging.getLogger(__name__)

GOLD_RUN_ID = "toolcall-gold"
"""`Trajectory.run_id` of the reference-answer trajectories (the version's `data`)."""


class ToolcallSFTConfig(SFTConfig):
    """Settings of `evolve train sft-toolcall` (SFT on the tool-calling suite's reference answers)."""

    limit: int | None = Field(default=None, ge=1)
    """Use only the first `limit` training instances (default: the whole training split)."""
    max_len: int = Field(default=1024, ge=8)
    """Most tokens of one prompt + answer (the suite's prompts are 300-900 Gemma tokens)."""
    batch_size: int = Field(default=8, ge=1)
    """Examples per optimiser step."""
    lr: float = Field(default=2e-4, gt=0)
    """Peak learning rate (AdamW; LoRA by default)."""
    warmup_steps: int = Field(default=5, ge=0)
    """Optimiser steps of linear warm-up."""
    schedule: Literal["constant", "cosine", "linear"] = "cosine"
    """Learning-rate decay after warm-up (`constant`, `cosine`, `linear`)."""
    save_every: int = Field(default=10, ge=1)
    """Checkpoint every this many steps (a killed warm start resumes from the last one)."""


def gold_trajectories(instances: list[TaskInstance]) -> list[tuple[Trajectory, float | None]]:
    """One (trajectory, reward) per instance: the suite's prompt and the reference answer as the reply."""
    return [(Trajectory(run_id=GOLD_RUN_ID, instance_id=inst.instance_id, status=TrajectoryStatus.submitted,
                        prompt=build_messages(inst), origin="reference",
                        steps=[Step(index=0, response=Message(role="assistant", content=inst.extra["answer"]))]),
             None) for inst in instances]


def train_sft_toolcall(cfg: ToolcallSFTConfig, out: Path, *,
                       instances: list[TaskInstance] | None = None) -> PolicyVersion:
    """SFT on the reference answers of the tool-calling training split (or ``instances``); resumable; returns
    the stored policy version."""
    instances = instances if instances is not None else toolcall_instances("train", cfg.limit)
    if not instances:
        raise TrainError("the tool-calling suite has no training instances")
    log.info("warm start: SFT on %d reference answers of the tool-calling training split", len(instances))
    version = train_sft(cfg, [], Path(out), items=gold_trajectories(instances))
    if version is None:  # only with stop_after, which is not passed here
        raise TrainError(f"the warm start in {out} stopped before its last step")
    return version
