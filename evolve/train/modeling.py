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
from evolve.train.attention import use_block_attention
from evolve.train.data import Batch
from evolve.train.errors import TrainError
from evolve.train.head import DEFAULT_CHUNK, forward_hidden, head_logprobs, model_masks, plain_head
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
    """`auto` -> bfloat16 for LoRA on a device that computes it natively (a GPU with bf16, a CPU with
    AVX512-BF16 or AMX): the frozen base is stored in bfloat16, the adapter itself stays float32; else float32.
    Full fine-tuning stays float32 under `auto` (AdamW on bfloat16 weights loses small updates)."""
    if dtype == "auto":
        if full_finetune:
            return torch.float32
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def cpu_has_bf16() -> bool:
    """The CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), so oneDNN's bf16 matmuls are fast."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """`auto` -> bfloat16 where the device computes it natively, else float32; else as given."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[precision]


def resolve_attention(attention: str, device: torch.device) -> str:
    """`auto` -> `blocks` on CPU (measured: half of an SFT step was SDPA computing masked pairs), `sdpa` elsewhere
    (GPU kernels not measured against it here); anything else as given."""
    if attention == "auto":
        return "blocks" if device.type == "cpu" else "sdpa"
    return attention


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
                      gradient_checkpointing: bool = False, attention: str = "auto") -> tuple[Any, Any]:
    """(model, tokenizer) of ``spec`` (plus ``adapter``), on ``device``, attending as ``attention`` says
    (`TrainConfig.attention`).

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
    if resolve_attention(attention, device) == "blocks":
        use_block_attention(model)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable and lora is not None)
        if lora is None or not trainable:
            model = model.merge_and_unload()
    elif lora is not None and trainable:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                 target_modules=lora.target_modules, task_type="CAUSAL_LM"))
    if lora is not None or adapter:
        keep_adapter_sums_float32(model)
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


def _float32_output(module: Any, args: Any, out: Tensor) -> Tensor | None:
    dev = out.device.type
    return out.float() if out.dtype != torch.float32 and torch.is_autocast_enabled(dev) else None


def keep_adapter_sums_float32(model: Any) -> None:
    """Under low-precision autocast, let each LoRA layer add its update to the frozen layer's output in float32.

    A frozen bfloat16 matmul's output lies on bfloat16's grid (8 significant bits); PEFT adds the adapter's
    update to it in that dtype, and an update smaller than half a grid step rounds back to exactly the frozen
    output: lost, not just rounded. Early in training every update is that small (after one AdamW step of
    lr 1e-4 on Gemma 3 270M, the bfloat16 forward saw a third less of the loss change than float32: 1.50
    against 1.43). Here the frozen output is widened to float32 before the addition (a hook on each adapter's
    base layer), so the sum keeps the update; the norms and residual additions that follow then run in float32
    (Gemma's norms compute in float32 anyway), and only the next matmul's inputs are rounded, which no longer
    cancels the update systematically (its sum is not on the grid)."""
    for module in model.modules():
        base = getattr(module, "base_layer", None)
        if base is not None and hasattr(module, "lora_A") and not getattr(base, "_evolve_float32_sum", False):
            base.register_forward_hook(_float32_output)
            base._evolve_float32_sum = True


def forward_logprobs(model: Any, batch: Batch, *, temperature: float = 1.0, entropy: bool = False,
                     compute_dtype: torch.dtype | None = None,
                     chunk: int = DEFAULT_CHUNK) -> tuple[Tensor, Tensor | None, Tensor]:
    """Log-probs of the batch's trained targets under ``model``.

    The body runs over every token; only positions whose target is trained go through the output layer,
    ``chunk`` rows at a time (`head.head_logprobs`), so prompts and observations cost no vocabulary
    projection and the full logits matrix never exists. ``compute_dtype`` (e.g. bfloat16) runs the
    matmuls of the body (autocast) and the head in that precision; softmax and losses stay float32.
    Returns flat tensors over those positions, in row-major order: ``(logp (N,), entropy (N,) or None,
    keep (R, L-1) bool)``; index any other (R, L-1) tensor of the batch with ``keep`` to align it.
    """
    keep = batch.mask > 0
    targets = batch.targets[keep]
    device = batch.input_ids.device
    dt = compute_dtype if compute_dtype is not None else next(model.parameters()).dtype
    autocast = torch.autocast(device.type, dtype=dt, enabled=dt in (torch.bfloat16, torch.float16))
    head = plain_head(model)
    if head is None:  # a head that is not a plain linear map (soft-capping, bias): transformers' own logits
        keep_full = torch.zeros_like(batch.input_ids, dtype=torch.bool)
        keep_full[:, :-1] = keep
        with autocast:
            logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids,
                           attention_mask=model_masks(model, batch), use_cache=False, logits_to_keep=keep_full).logits
        if logits.dim() == 3:  # a model that ignores a boolean logits_to_keep returns every position
            logits = logits[keep_full] if logits.shape[1] == batch.input_ids.shape[1] else logits.reshape(
                -1, logits.shape[-1])
        logp = token_logprobs(logits, targets, temperature)
        return logp, token_entropy(logits, temperature) if entropy else None, keep
    with autocast:
        hidden = forward_hidden(model, batch)
    logp, ent = head_logprobs(hidden[:, :-1][keep], head.weight, targets, temperature=temperature, chunk=chunk,
                              compute_dtype=dt, entropy=entropy)
    return logp, ent if entropy else None, keep


def compute_settings(cfg: Any, device: torch.device) -> dict[str, Any]:
    """`forward_logprobs` keywords of a `TrainConfig`: matmul precision and head chunk."""
    return {"compute_dtype": resolve_precision(cfg.precision, device), "chunk": cfg.head_chunk}


def optimizer_step(model: Any, opt: Any, sched: Any, max_grad_norm: float) -> tuple[float, float]:
    """Clip gradients, step the optimiser and the schedule, clear gradients; returns (grad_norm, lr)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm).item()
    lr = sched.get_last_lr()[0]
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return grad_norm, lr
