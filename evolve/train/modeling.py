"""Loading a local policy for training (full weights or a LoRA adapter), and its per-token log-probs."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field
from torch import Tensor

from agent.policy.embedded import EMBEDDED, embedded_model_dir
from evolve.train.data import Batch
from evolve.train.errors import TrainError
from evolve.train.losses import token_entropy, token_logprobs

log = logging.getLogger(__name__)


class LoraSettings(BaseModel):
    """A LoRA adapter trained through PEFT."""

    r: int = Field(default=16, ge=1)
    """Rank of the update matrices."""
    alpha: int = Field(default=32, ge=1)
    """Scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout on the adapter's input."""
    target_modules: list[str] | str = "all-linear"
    """Modules that get an adapter (PEFT's names; `all-linear` is every linear layer but the head)."""


def resolve_device(device: str) -> torch.device:
    """`auto` -> cuda when available, else cpu; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device, full_finetune: bool = False) -> torch.dtype:
    """`auto` -> bfloat16 on a GPU that supports it (LoRA: the adapter itself stays float32), else float32;
    full fine-tuning stays float32 under `auto` (AdamW on bfloat16 weights loses small updates)."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported() and not full_finetune:
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def model_dir(spec: str) -> Path:
    """Directory of an `hf:` policy spec: a path, or an embedded model name (e.g. `hf:gemma3-270m`)."""
    if not spec.startswith("hf:"):
        raise TrainError(f"training needs a local model: give --policy hf:PATH or version:ID, not {spec!r}")
    name = spec[3:]
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if name in EMBEDDED:
        return embedded_model_dir(name)
    raise TrainError(f"no model directory {name!r} (policy spec {spec!r}); give hf:PATH to a transformers "
                     f"model directory, or an embedded model: {', '.join(sorted(EMBEDDED))}")


def check_model_spec(spec: str) -> None:
    """Raise `TrainError` unless ``spec`` names a local model directory or an embedded model (no loading)."""
    if not spec.startswith("hf:"):
        raise TrainError(f"training needs a local model: give --policy hf:PATH or version:ID, not {spec!r}")
    name = spec[3:]
    if not Path(name).expanduser().is_dir() and name not in EMBEDDED:
        raise TrainError(f"no model directory {name!r} (policy spec {spec!r}); give hf:PATH to a transformers "
                         f"model directory, or an embedded model: {', '.join(sorted(EMBEDDED))}")


def load_for_training(spec: str, *, adapter: str | None = None, lora: LoraSettings | None = None,
                      device: torch.device, dtype: torch.dtype, trainable: bool = True,
                      gradient_checkpointing: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) of ``spec`` (plus ``adapter``), on ``device``.

    With ``lora``: an existing adapter is loaded trainable, else a fresh one is added; the base stays
    frozen. Without: every weight trains (an existing adapter is merged into the base first).
    ``trainable=False`` gives a frozen copy in eval mode (a reference policy).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = model_dir(spec)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable and lora is not None)
        if lora is None or not trainable:
            model = model.merge_and_unload()
    elif lora is not None and trainable:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                 target_modules=lora.target_modules, task_type="CAUSAL_LM"))
    if trainable:
        if gradient_checkpointing:
            model.gradient_checkpointing_enable()
            if hasattr(model, "enable_input_require_grads"):
                model.enable_input_require_grads()
        model.train()
    else:
        model.eval()
        model.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def forward_logprobs(model: Any, batch: Batch, *, temperature: float = 1.0,
                     entropy: bool = False) -> tuple[Tensor, Tensor | None, Tensor]:
    """Log-probs of the batch's trained targets under ``model``.

    Only positions whose target is trained get logits (``logits_to_keep`` as a boolean mask), so
    prompts and observations cost a forward pass but no vocabulary projection. Returns flat tensors
    over those positions, in row-major order: ``(logp (N,), entropy (N,) or None, keep (R, L-1) bool)``;
    index any other (R, L-1) tensor of the batch with ``keep`` to align it.
    """
    keep = batch.mask > 0
    ids = batch.input_ids
    keep_full = torch.zeros_like(ids, dtype=torch.bool)
    keep_full[:, :-1] = keep
    out = model(input_ids=ids, position_ids=batch.position_ids, attention_mask=None, use_cache=False,
                logits_to_keep=keep_full)
    logits = out.logits
    if logits.dim() == 3:  # a model that ignores a boolean logits_to_keep returns every position
        logits = logits[keep_full] if logits.shape[1] == ids.shape[1] else logits.reshape(-1, logits.shape[-1])
    targets = batch.targets[keep]
    logp = token_logprobs(logits, targets, temperature)
    ent = token_entropy(logits, temperature) if entropy else None
    return logp, ent, keep


def optimizer_step(model: Any, opt: Any, sched: Any, max_grad_norm: float) -> tuple[float, float]:
    """Clip gradients, step the optimiser and the schedule, clear gradients; returns (grad_norm, lr)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm).item()
    lr = sched.get_last_lr()[0]
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return grad_norm, lr
