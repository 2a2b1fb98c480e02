"""Settings shared by SFT and GRPO (each extends `TrainConfig` with its own), and YAML loading."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evolve.train.modeling import LoraSettings, TrainError


class TrainConfig(BaseModel):
    """What every training run needs: the policy, the optimiser, batching, checkpoints, the device."""

    model_config = ConfigDict(extra="forbid")

    policy: str = "hf:gemma3-270m"
    """Policy to train: `hf:PATH` (a transformers model directory or embedded name) or `version:ID` /
    `version:latest` (a stored policy version, found under `runs_root`)."""
    runs_root: Path | None = None
    """Directory holding run directories, searched for `version:` specs (default: the parent of --out)."""
    lora: LoraSettings | None = Field(default_factory=LoraSettings)
    """LoRA adapter settings; null for full fine-tuning of every weight."""
    lr: float = Field(default=1e-4, gt=0)
    """Peak learning rate (AdamW)."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    warmup_steps: int = Field(default=0, ge=0)
    """Optimiser steps of linear warm-up from 0 to `lr`."""
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    """Learning-rate decay after warm-up (to 0 at the last step for cosine/linear)."""
    max_grad_norm: float = Field(default=1.0, gt=0)
    """Gradients are clipped to this global L2 norm."""
    batch_size: int = Field(default=8, ge=1)
    """Sequences per optimiser step (GRPO: trajectories, i.e. groups x group size)."""
    micro_batch_size: int = Field(default=8, ge=1)
    """Sequences per forward/backward pass; gradients of `batch_size / micro_batch_size` passes accumulate."""
    max_len: int = Field(default=2048, ge=8)
    """Most tokens of one sequence (longer ones are cut at a turn boundary or dropped, see `overflow`)."""
    overflow: Literal["cut", "drop"] = "cut"
    """Too-long sequences: `cut` after the last whole assistant turn that fits, or `drop`; always counted."""
    token_mismatch: Literal["retokenize", "refuse"] = "retokenize"
    """Recorded token ids that the trained model's tokenizer did not produce (the sampler was another model):
    `retokenize` trains on the turn's text instead (logged, log-probs dropped), `refuse` stops with an error."""
    pack: bool = True
    """Pack several short sequences into one row of `max_len` tokens (no attention across them)."""
    share_prefix: bool = True
    """Compute a context that several sequences of a micro-batch start with (a GRPO group's prompt, a shared
    system prompt) once: they are laid out as a tree (`data.plan_trees`); same losses, fewer tokens."""
    reward: str | None = None
    """Name of the stored reward to use (default: `combined` if present, else the only one)."""
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimiser steps (default: `epochs` passes over the data)."""
    save_every: int = Field(default=50, ge=1)
    """Write a checkpoint (weights, optimiser, scheduler, step, RNG) every this many steps."""
    keep_checkpoints: int = Field(default=2, ge=1)
    """Checkpoints kept on disk (older ones are deleted)."""
    resume: bool = True
    """Continue from the latest checkpoint in the output directory when there is one."""
    seed: int = 0
    """Seed of data order, adapter initialisation and sampling."""
    device: str = "auto"
    """`auto` (cuda when available, else cpu), `cpu`, `cuda`, `cuda:1`, ..."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights' dtype: `auto` is bfloat16 for LoRA's frozen base where the device computes bf16 natively (a GPU, a
    CPU with AVX512-BF16 or AMX; the adapter stays float32), else float32."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, slower)."""
    num_threads: int | None = Field(default=None, ge=1)
    """CPU threads for torch; default: the cores other processes leave free, measured when training starts
    (`agent.policy.threads`: on a busy machine fewer threads train faster)."""
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Precision of the forward/backward matmuls (autocast; weights and optimiser stay in `dtype`): `auto` is
    bfloat16 where the device computes it natively (a CUDA GPU with bf16, a CPU with AVX512-BF16 or AMX),
    else float32. Softmax, log-probs and losses are always float32."""
    attention: Literal["auto", "blocks", "sdpa"] = "auto"
    """How the trainer's forward passes attend: `blocks` computes only the (query, key) pairs the masks allow, block
    by block (`evolve.train.attention`: causal, sliding windows, packed rows and trees skip the rest); `sdpa` is
    transformers' SDPA, which computes every pair under an explicit mask; `auto` is `blocks` on CPU, `sdpa` on GPUs."""
    head_chunk: int = Field(default=256, ge=1)
    """Trained positions projected through the output layer at once (peak memory: this many rows of logits)."""


C = TypeVar("C", bound=BaseModel)


def load_config(cls: type[C], path: Path | None, **overrides: object) -> C:
    """``cls`` from a YAML file (optional) with command-line ``overrides`` (None values ignored)."""
    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise TrainError(f"config file {path} does not exist") from None
        except yaml.YAMLError as e:
            raise TrainError(f"config file {path} is not valid YAML: {e}".splitlines()[0]) from None
        if not isinstance(data, dict):
            raise TrainError(f"config file {path} must hold a mapping of settings")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "config"
        raise TrainError(f"bad {cls.__name__} setting {where}: {err['msg']}") from None
