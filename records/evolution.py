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
    """Final training metrics (while it trains: the latest step's)."""
    status: str = "ready"
    """`training` while its training runs (stored when it starts, so its curves can be watched), `stopped` when a
    stop ended the training early (the same command resumes it), `failed` when it ended in an error, `no-updates`
    when it made no update (every group's rewards equal: the starting weights), `ready` once
    its weights are saved. Only a `ready` version loads."""
    created_at: float = Field(default_factory=time.time)
    """Unix time it was stored (for a ready version: when its training finished)."""


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
    """A node of a stored tree. One record type serves every tree of the evolution layer, so one TUI widget
    shows them all: the Huxley-Gödel Machine's tree of self-modified agents (`kind="hgm"`, a node is an agent
    variant), Agent-R's MCTS trees (`kind="mcts"`, a node is an agent step) and SE-Agent's lineage of
    iterations (`kind="se-agent"`, a node is a trajectory)."""

    id: str = Field(default_factory=_new_id)
    """Unique id."""
    parent_id: str | None = None
    """Parent node (None for a root)."""
    tree_id: str = ""
    """Which tree the node belongs to (an HGM run id, one MCTS tree per task instance, ...)."""
    kind: str = "hgm"
    """`hgm`, `mcts` or `se-agent`."""
    label: str = ""
    """Short text shown for the node (a diagnosis title, an action, an operator)."""
    status: str = ""
    """Lifecycle state, e.g. `expanding`, `evaluating`, `accepted`, `rejected`, `terminal`."""
    variant_dir: str = ""
    """Directory of the agent variant (prompts, tools, settings), for HGM nodes."""
    successes: int = 0
    """Resolved evaluations (HGM: own outcomes; MCTS: summed value)."""
    trials: int = 0
    """Evaluations run (HGM: own outcomes; MCTS: visits)."""
    trajectory_id: str | None = None
    """A trajectory the node stands for (MCTS, SE-Agent), if any."""
    info: dict[str, Any] = Field(default_factory=dict)
    """What the modification did, its diff, diagnosis, rejection reason, errors."""
    created_at: float = Field(default_factory=time.time)
    """Unix time it was stored."""
