"""Records of the evolution layer: policy versions, training steps, nodes of the self-modification tree."""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, Field


def _new_id() -> str:
    return uuid.uuid4().hex[:12]


class PolicyVersion(BaseModel):
    """A set of policy weights: the base model or the result of one training run."""

    id: str = Field(default_factory=_new_id)
    """Unique id; `--policy version:ID` selects it."""
    parent_id: str | None = None
    """Version it was trained from (None for a base model)."""
    base: str
    """Policy spec of the base model (e.g. `hf:gemma3-270m`)."""
    kind: str = "base"
    """`base`, `sft` or `grpo`."""
    path: str = ""
    """Directory holding the adapter (LoRA) or full weights."""
    adapter: bool = False
    """True when `path` holds a PEFT adapter on top of `base`."""
    data: list[str] = Field(default_factory=list)
    """Run ids (or trajectory ids) it was trained on."""
    metrics: dict[str, float] = Field(default_factory=dict)
    """Final training metrics."""
    created_at: float = Field(default_factory=time.time)
    """Unix time it was stored."""


class TrainStep(BaseModel):
    """Metrics of one optimiser step, stored for the TUI."""

    policy_version_id: str
    """Version being trained (the one this training produces)."""
    step: int
    """Optimiser step number, from 0."""
    metrics: dict[str, float] = Field(default_factory=dict)
    """loss, reward, kl, clip_fraction, entropy, tokens_per_s, ..."""
    created_at: float = Field(default_factory=time.time)


class TreeNode(BaseModel):
    """A node of the Huxley-Gödel Machine tree: one agent variant and how it has done."""

    id: str = Field(default_factory=_new_id)
    """Unique id."""
    parent_id: str | None = None
    """Variant it was derived from by self-modification."""
    variant_dir: str
    """Directory of the agent variant (prompts, tools, settings)."""
    successes: int = 0
    """Resolved evaluations."""
    trials: int = 0
    """Evaluations run."""
    info: dict[str, Any] = Field(default_factory=dict)
    """What the modification did, its diff summary, errors."""
    created_at: float = Field(default_factory=time.time)
