"""Log-probs of chosen tokens through the output layer, in chunks of rows: never the full [tokens, vocab] matrix.

Gemma 3 270M has a 262,144-token vocabulary: its output layer (hidden 640 -> 262k) costs more per token than
the whole transformer body, and one row of fp32 logits is 1 MiB. A trainer needs log p(target) only at the
positions it learns from (supervised tokens for SFT, sampled tokens for GRPO), so `forward_hidden` runs the
body over every token (context is still attended to) and `head_logprobs` projects only the selected hidden
states, ``chunk`` rows at a time. Autograd would keep every chunk's logits for the backward pass; the custom
function below keeps only the hidden states, the weight and one log-sum-exp per row, and recomputes a chunk's
logits when it needs them:

* frozen output weight (LoRA, the default): the gradient w.r.t. the hidden state of a row is
  ``(W[target] - softmax(z) @ W) / T`` times the upstream gradient, which is known up to that scalar
  already in the forward pass; it is computed there (2 matmuls per chunk in all, as plain autograd).
* trained output weight (full fine-tuning, tied embeddings): the backward pass recomputes each chunk's
  logits (one extra matmul) and accumulates ``dW += dz.T @ h``.

``compute_dtype`` is the matmul precision (bfloat16 on CPUs with native bf16 halves memory traffic); the
softmax, log-sum-exp and gradients of the logits are always float32.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from evolve.train.data import attention_masks

DEFAULT_CHUNK = 256
"""Rows per chunk: 256 x 262k fp32 logits is 256 MiB at most at once (measured in bench/bench_train.py)."""


class _HeadLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, targets: Tensor, temperature: float, chunk: int,
                compute_dtype: torch.dtype, entropy: bool) -> tuple[Tensor, Tensor]:
        n = hidden.shape[0]
        logp = hidden.new_empty(n, dtype=torch.float32)
        ent = hidden.new_full((n,), math.nan, dtype=torch.float32)
        lse = hidden.new_empty(n, dtype=torch.float32)
        w = weight.detach().to(compute_dtype)
        grad_unit = None
        if ctx.needs_input_grad[0] and not ctx.needs_input_grad[1]:
            grad_unit = hidden.new_empty(hidden.shape, dtype=torch.float32)
        for i in range(0, n, chunk):
            h = hidden[i:i + chunk].detach().to(compute_dtype)
            z = (h @ w.T).float()
            if temperature != 1.0:
                z.div_(temperature)
            lz = torch.logsumexp(z, dim=-1)
            t = targets[i:i + chunk]
            logp_all = z.sub_(lz[:, None])  # in place: one chunk of logits alive at a time
            logp[i:i + chunk] = logp_all.gather(-1, t[:, None]).squeeze(-1)
            if entropy:
                p = logp_all.exp()
                ent[i:i + chunk] = -(p * logp_all).sum(-1)
            elif grad_unit is not None:
                p = logp_all.exp_()
            lse[i:i + chunk] = lz
            if grad_unit is not None:  # d logp / d h = (W[t] - p @ W) / T
                p[torch.arange(p.shape[0], device=p.device), t] -= 1.0
                grad_unit[i:i + chunk] = (p.to(compute_dtype) @ w).float().mul_(-1.0 / temperature)
        ctx.temperature, ctx.chunk, ctx.compute_dtype = temperature, chunk, compute_dtype
        ctx.save_for_backward(hidden, weight, targets, lse, grad_unit if grad_unit is not None else lse.new_empty(0))
        ctx.mark_non_differentiable(ent)
        return logp, ent

    @staticmethod
    def backward(ctx: Any, g: Tensor, _g_ent: Tensor) -> tuple[Tensor | None, ...]:
        hidden, weight, targets, lse, grad_unit = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if need_h and not need_w:
            return (grad_unit * g[:, None]).to(hidden.dtype), None, None, None, None, None, None
        T, chunk, dt = ctx.temperature, ctx.chunk, ctx.compute_dtype
        w = weight.detach().to(dt)
        grad_h = torch.zeros_like(hidden, dtype=torch.float32) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        for i in range(0, hidden.shape[0], chunk):
            h = hidden[i:i + chunk].detach().to(dt)
            z = (h @ w.T).float()
            if T != 1.0:
                z = z / T
            dz = torch.exp(z - lse[i:i + chunk, None])  # d(-logp)/dz = p - onehot, times T^-1 and -g
            t = targets[i:i + chunk]
            dz[torch.arange(dz.shape[0], device=dz.device), t] -= 1.0
            dz = dz * (-g[i:i + chunk, None] / T)
            dz = dz.to(dt)
            if need_h:
                grad_h[i:i + chunk] = (dz @ w).float()
            if need_w:
                grad_w += (dz.T @ h).float()
        return (grad_h.to(hidden.dtype) if need_h else None, grad_w.to(weight.dtype) if need_w else None,
                None, None, None, None, None)


def head_logprobs(hidden: Tensor, weight: Tensor, targets: Tensor, *, temperature: float = 1.0,
                  chunk: int = DEFAULT_CHUNK, compute_dtype: torch.dtype | None = None,
                  entropy: bool = True) -> tuple[Tensor, Tensor]:
    """``(log p(targets), entropy)`` of ``softmax(hidden @ weight.T / temperature)``, rows (N, H) -> (N,), float32.

    Differentiable in ``hidden`` and ``weight`` (the entropy is not: it is a statistic; ``entropy=False`` skips
    it, NaN); peak memory is one chunk of ``chunk x vocab`` logits, never ``N x vocab``.
    """
    dt = compute_dtype or weight.dtype
    return _HeadLogprobs.apply(hidden, weight, targets, float(temperature), int(chunk), dt, bool(entropy))


def causal_lm(model: Any) -> Any:
    """The transformers causal LM inside ``model`` (a PEFT wrapper's base model, LoRA layers injected)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def plain_head(model: Any) -> torch.nn.Linear | None:
    """The output layer when the logits are exactly ``hidden @ W.T`` (no bias, no soft-capping), else None."""
    lm = causal_lm(model)
    head = lm.get_output_embeddings()
    config = getattr(lm, "config", None)
    text = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        return None
    if getattr(text, "final_logit_softcapping", None) or type(head).__module__.startswith("peft"):
        return None
    return head


def model_masks(model: Any, batch: Any) -> Any:
    """The attention masks of ``batch`` (`data.attention_masks`) in the form ``model`` takes: a dict per layer type
    for models with sliding-window layers (Gemma 3), else one (R, 1, L, L) boolean mask (a window applied
    when the model slides every layer)."""
    config = causal_lm(model).config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(text, "sliding_window", None) if getattr(text, "use_sliding_window", True) else None
    types = set(getattr(text, "layer_types", None) or [])
    full, sliding = attention_masks(batch, window)
    if types:
        return {kind: sliding if kind == "sliding_attention" and sliding is not None else full for kind in types}
    return sliding if sliding is not None else full


def forward_hidden(model: Any, batch: Any) -> Tensor:
    """Last hidden states (R, L, H) of the model's body (no output layer) over a `data.Batch`: packed rows and
    shared-prefix trees attend as `data.attention_masks` says."""
    body = causal_lm(model).get_decoder()
    out = body(input_ids=batch.input_ids, position_ids=batch.position_ids, attention_mask=model_masks(model, batch),
               use_cache=False)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
