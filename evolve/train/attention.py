"""Attention for training that computes only the (query, key) pairs its mask allows, block by block.

The trainer passes explicit boolean masks (packed rows, shared-prefix trees, sliding windows: `data.attention_masks`).
Given a mask, the CPU kernels of ``scaled_dot_product_attention`` compute every pair of a row and mask them
afterwards: twice the work of causal attention on a full-attention layer, and about ``L / window`` times too much
on a sliding-window layer (Gemma 3: 15 of its 18 layers slide over 512 tokens; agent trajectories run 1-2k tokens).
Measured on one step of SFT of Gemma 3 270M on a 1,605-token agent trajectory, attention was half of the step.

`block_attention` cuts the queries into blocks of ``block`` rows; a block multiplies only the key range
``[lo, hi)`` spanned by the keys its mask allows (causal: nothing after the block; sliding: nothing more than a
window before it; packed rows and trees: nothing before the block's first segment). Keys outside the range are
exactly the ones the mask removes, so the result is the same attention: masked pairs contribute exact zeros in
both. Grouped-query heads share their key/value head without copies (a group's query heads are stacked as rows).

Memory: the forward keeps one log-sum-exp per (query, head), not the probabilities; the backward recomputes each
block's scores (flash attention's recurrence, written with plain matmuls). Precision, as SDPA's CPU kernel: the
scores q.k are computed in float32 (a bfloat16 product rounds each score to 8 significant bits; at scores of
~10 that moves probabilities by several percent: measured 4x SDPA's error on Gemma-sized heads), softmax and
gradient accumulation are float32, and the other matmuls (probabilities x values and the backward's products) run
in the compute dtype (bfloat16 under autocast, else the inputs' dtype).

Registered with transformers under `NAME` (`use_block_attention`); any call it does not cover (a KV cache,
dropout, soft-capping, an additive float mask) goes to transformers' own SDPA path unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

NAME = "evolve_blocks"
"""The attention implementation's name in transformers' registry."""
BLOCK = 128
"""Queries per block: smaller blocks skip more masked pairs (a causal block wastes half a block's keys), larger
ones run fewer, bigger matmuls; 64-256 measured within 15% of each other on 1.6k-token rows, 128 the best."""


def plan_blocks(mask: Tensor, block: int = BLOCK) -> list[tuple[int, int, int, int]]:
    """``(start, end, lo, hi)`` per block of queries of a (R, 1, Lq, Lk) boolean mask: the queries
    ``[start, end)`` attend only to keys in ``[lo, hi)`` in every row (``lo == hi``: to none)."""
    allowed = mask.any(dim=0)[0]  # (Lq, Lk): allowed in any row
    out = []
    for s in range(0, allowed.shape[0], block):
        e = min(allowed.shape[0], s + block)
        cols = allowed[s:e].any(0).nonzero()
        out.append((s, e, int(cols[0]), int(cols[-1]) + 1) if cols.numel() else (s, e, 0, 0))
    return out


def _scores(qb: Tensor, kb: Tensor, mb: Tensor, scale: float, shape: tuple[int, ...]) -> Tensor:
    """Scaled scores of a block from float32 ``qb``, ``kb``, -inf where the mask forbids: (R, Hk, G, nq, nk)."""
    s = (qb @ kb.transpose(-1, -2)).view(shape)
    s.mul_(scale)
    return s.masked_fill_(~mb[:, :, None], -math.inf)


class _BlockAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float, block: int,
                cdt: torch.dtype) -> Tensor:
        R, H, L, D = q.shape
        Hk = k.shape[1]
        G = H // Hk
        plan = plan_blocks(mask, block)
        with torch.autocast(q.device.type, enabled=False):
            qf, kf = q.float().view(R, Hk, G, L, D), k.float()
            vc = v.to(cdt)
            out = q.new_zeros((R, Hk, G, L, v.shape[-1]), dtype=cdt)
            lse = q.new_full((R, Hk, G, L), -math.inf, dtype=torch.float32)
            for s, e, lo, hi in plan:
                if hi <= lo:
                    continue
                nq, nk = e - s, hi - lo
                qb = qf[:, :, :, s:e].reshape(R, Hk, G * nq, D)
                sc = _scores(qb, kf[:, :, lo:hi], mask[:, :, s:e, lo:hi], scale, (R, Hk, G, nq, nk))
                m = torch.logsumexp(sc, dim=-1)
                p = sc.sub_(torch.where(torch.isinf(m), 0.0, m)[..., None]).exp_()  # a row with no key: all 0
                out[:, :, :, s:e] = (p.to(cdt).view(R, Hk, G * nq, nk) @ vc[:, :, lo:hi]).view(R, Hk, G, nq, -1)
                lse[..., s:e] = m
        ctx.save_for_backward(q, k, v, mask, lse)
        ctx.scale, ctx.cdt, ctx.plan = scale, cdt, plan
        return out.view(R, H, L, -1)

    @staticmethod
    def backward(ctx: Any, dout: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, mask, lse = ctx.saved_tensors
        scale, cdt = ctx.scale, ctx.cdt
        R, H, L, D = q.shape
        Hk = k.shape[1]
        G = H // Hk
        with torch.autocast(q.device.type, enabled=False):
            qf, kf = q.float().view(R, Hk, G, L, D), k.float()
            qg = q.to(cdt).view(R, Hk, G, L, D)
            kc, vc = k.to(cdt), v.to(cdt)
            do = dout.to(cdt).reshape(R, Hk, G, L, -1)
            dq = q.new_zeros((R, Hk, G, L, D), dtype=cdt)
            dk = torch.zeros(k.shape, dtype=torch.float32, device=k.device)
            dv = torch.zeros(v.shape, dtype=torch.float32, device=v.device)
            safe = torch.where(torch.isinf(lse), 0.0, lse)
            for s, e, lo, hi in ctx.plan:
                if hi <= lo:
                    continue
                nq, nk = e - s, hi - lo
                qb = qg[:, :, :, s:e].reshape(R, Hk, G * nq, D)
                kb, vb = kc[:, :, lo:hi], vc[:, :, lo:hi]
                p = _scores(qf[:, :, :, s:e].reshape(R, Hk, G * nq, D), kf[:, :, lo:hi], mask[:, :, s:e, lo:hi],
                            scale, (R, Hk, G, nq, nk))
                p.sub_(safe[..., s:e, None]).exp_()
                dob = do[:, :, :, s:e].reshape(R, Hk, G * nq, -1)
                dv[:, :, lo:hi] += (p.to(cdt).view(R, Hk, G * nq, nk).transpose(-1, -2) @ dob).float()
                dp = (dob @ vb.transpose(-1, -2)).float().view(R, Hk, G, nq, nk)
                # softmax backward: the block holds every key its queries attend to, so the row sums are whole
                ds = dp.sub_((dp * p).sum(-1, keepdim=True)).mul_(p).mul_(scale).to(cdt).view(R, Hk, G * nq, nk)
                dq[:, :, :, s:e] = (ds @ kb).view(R, Hk, G, nq, D)
                dk[:, :, lo:hi] += (ds.transpose(-1, -2) @ qb).float()
        return dq.view(R, H, L, D).to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None


def causal_mask(length: int, window: int | None, device: torch.device) -> Tensor:
    """(1, 1, L, L) causal mask, limited to keys fewer than ``window`` positions back when given."""
    pos = torch.arange(length, device=device)
    m = pos[None, :] <= pos[:, None]
    if window:
        m &= pos[:, None] - pos[None, :] < window
    return m[None, None]


def block_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, *, scale: float | None = None,
                    block: int = BLOCK) -> Tensor:
    """Attention of ``q`` (R, H, L, D) over ``k``, ``v`` (R, Hk, L, D) (H a multiple of Hk: grouped heads)
    where the boolean ``mask`` (R or 1, 1, L, L) allows; returns (R, H, L, Dv). Differentiable in q, k, v."""
    scale = scale if scale is not None else q.shape[-1] ** -0.5
    dev = q.device.type
    cdt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else q.dtype
    mask = mask.expand(q.shape[0], 1, q.shape[2], k.shape[2])
    return _BlockAttention.apply(q, k, v, mask, float(scale), int(block), cdt)


def transformers_block_attention(module: Any, query: Tensor, key: Tensor, value: Tensor,
                                 attention_mask: Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                                 sliding_window: int | None = None, **kwargs: Any) -> tuple[Tensor, None]:
    """transformers' attention-function signature over `block_attention` (output (R, L, H, D)); any case it
    does not cover goes to transformers' SDPA function."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward  # only reached from a loaded model

    plain = (query.shape[2] == key.shape[2] > 1 and not (dropout and module.training)
             and kwargs.get("softcap") is None and not kwargs.get("output_attentions")
             and (attention_mask is None or attention_mask.dtype == torch.bool))
    if not plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      sliding_window=sliding_window, **kwargs)
    if attention_mask is None:
        if not getattr(module, "is_causal", True):
            return sdpa_attention_forward(module, query, key, value, None, dropout=dropout, scaling=scaling, **kwargs)
        attention_mask = causal_mask(query.shape[2], sliding_window, query.device)
    out = block_attention(query, key, value, attention_mask, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def use_block_attention(model: Any) -> None:
    """Make ``model`` (a transformers model, or a PEFT model around one) attend with `block_attention`."""
    from transformers import AttentionInterface  # only reached with a loaded transformers model
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, transformers_block_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # masks built by transformers: SDPA's boolean ones
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    lm.set_attn_implementation(NAME)
