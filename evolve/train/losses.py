"""Pure loss functions of SFT and GRPO, on tensors: no model, no data loading, testable by hand.

Every function takes token-level tensors of one shape (``(B, T)`` rows, or any shape with the same
layout) where ``mask`` is 1 on the tokens a trainer learns from and 0 elsewhere (prompts, tool
observations, padding, turns marked ``train=False``). Masked-out positions never reach the loss:
values there are replaced (not multiplied) before use, so a NaN or inf at a masked position (e.g. a
missing old log-prob) cannot leak a NaN into the loss or its gradient.

Normalisations of the policy-gradient loss (``norm``):

* ``"sequence"`` (GRPO): mean over the tokens of each sequence, then mean over sequences.
* ``"token"`` (DAPO): sum over every trained token of the batch / number of trained tokens.
* ``"constant"`` (Dr. GRPO): sum over every trained token / (number of sequences * ``max_len``),
  a constant that does not depend on response lengths.

With gradient accumulation, pass the *global* denominators of the whole optimiser step
(``num_seqs``, ``num_tokens``) so that the micro-batch losses add up to exactly the full-batch loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Normalisation = Literal["sequence", "token", "constant"]


def token_logprobs(logits: Tensor, targets: Tensor, temperature: float = 1.0, chunk: int = 4096) -> Tensor:
    """log p(target) for every position: ``logits`` (..., V), ``targets`` (...) -> (...), in float32.

    Computed as ``logit[target] - logsumexp(logits)`` in chunks of rows, so the full log-softmax
    (rows x vocabulary) is never materialised at once.
    """
    flat = logits.reshape(-1, logits.shape[-1])
    tgt = targets.reshape(-1)
    out = []
    for i in range(0, flat.shape[0], chunk):
        x = flat[i:i + chunk].float()
        if temperature != 1.0:
            x = x / temperature
        out.append(x.gather(-1, tgt[i:i + chunk, None]).squeeze(-1) - torch.logsumexp(x, dim=-1))
    return torch.cat(out).reshape(targets.shape) if out else flat.new_zeros(targets.shape, dtype=torch.float32)


@torch.no_grad()
def token_entropy(logits: Tensor, temperature: float = 1.0, chunk: int = 4096) -> Tensor:
    """Entropy of the next-token distribution at every position (no gradient): (..., V) -> (...)."""
    flat = logits.reshape(-1, logits.shape[-1])
    out = []
    for i in range(0, flat.shape[0], chunk):
        x = flat[i:i + chunk].float() / temperature
        logp = x.log_softmax(-1)
        out.append(-(logp.exp() * logp).sum(-1))
    return torch.cat(out).reshape(logits.shape[:-1]) if out else flat.new_zeros(logits.shape[:-1])


def masked_nll(logp: Tensor, mask: Tensor, num_tokens: float | None = None) -> Tensor:
    """SFT loss: mean negative log-likelihood of the masked-in tokens.

    ``num_tokens`` is the number of trained tokens of the whole optimiser step (default: this batch's).
    """
    m = mask.to(logp.dtype)
    denom = float(num_tokens) if num_tokens is not None else m.sum().clamp(min=1.0)
    return -(torch.where(m > 0, logp, torch.zeros_like(logp)) * m).sum() / denom


def group_advantages(rewards: Tensor, groups: Tensor, scale_by_std: bool = True,
                     eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """GRPO advantages: ``r - mean(group)``, divided by the group's std when ``scale_by_std``.

    ``rewards`` (N,) float; ``groups`` (N,) int, equal for trajectories of the same task instance.
    Returns ``(advantages, keep)``: ``keep`` is False for every member of a group whose rewards are
    all equal (within ``eps``) or that has a single member; their advantage is 0 and they carry no
    learning signal, so a trainer skips them. The std is the unbiased (n-1) one, as in TRL.
    """
    rewards = rewards.float()
    adv = torch.zeros_like(rewards)
    keep = torch.zeros_like(rewards, dtype=torch.bool)
    for g in torch.unique(groups):
        idx = (groups == g).nonzero(as_tuple=True)[0]
        r = rewards[idx]
        if r.numel() < 2 or (r.max() - r.min()).item() <= eps:
            continue
        a = r - r.mean()
        if scale_by_std:
            a = a / (r.std() + eps)
        adv[idx] = a
        keep[idx] = True
    return adv, keep


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token KL(policy || reference) estimate k3 = exp(ref - logp) - (ref - logp) - 1 (>= 0)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


@dataclass
class PolicyLossStats:
    """Detached statistics of one call of `policy_loss`, summed (not averaged) so micro-batches add up."""

    tokens: float
    """Masked-in tokens."""
    clipped_low: float
    """Tokens whose ratio fell below 1 - clip_low with a negative advantage (the clip was active)."""
    clipped_high: float
    """Tokens whose ratio rose above 1 + clip_high with a positive advantage (the clip was active)."""
    kl_sum: float
    """Sum of the per-token k3 KL over masked-in tokens (0 without a reference)."""
    ratio_sum: float
    """Sum of the importance ratios over masked-in tokens."""


def policy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *,
                clip_low: float = 0.2, clip_high: float = 0.28, norm: Normalisation = "sequence",
                seq_ids: Tensor | None = None, ref_logp: Tensor | None = None, kl_coef: float = 0.0,
                num_seqs: float | None = None, num_tokens: float | None = None,
                max_len: int | None = None) -> tuple[Tensor, PolicyLossStats]:
    """Token-level clipped policy-gradient loss with separate low/high clip ranges (DAPO clip-higher).

    Per token: ``max(-A * r, -A * clip(r, 1 - clip_low, 1 + clip_high)) + kl_coef * k3``,
    with ``r = exp(logp - old_logp)``; then reduced with ``norm`` (see the module docstring).

    ``advantages`` has the shape of ``logp`` (each token carries its sequence's advantage).
    ``seq_ids`` (same shape, int) says which sequence each token belongs to, for ``norm="sequence"``
    on packed rows; by default each row is one sequence. ``num_seqs``/``num_tokens`` are the global
    denominators of an accumulated step (default: this batch's); ``max_len`` is Dr. GRPO's constant.
    """
    m = mask > 0
    mf = m.to(logp.dtype)
    zero = torch.zeros_like(logp)
    # Replace masked-out positions before any arithmetic, so NaN/inf there cannot reach the gradient.
    delta = torch.where(m, logp - torch.where(m, old_logp.to(logp.dtype), zero), zero)
    ratio = torch.exp(delta)
    adv = torch.where(m, advantages.to(logp.dtype), zero)
    per_tok = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high))
    kl = None
    if ref_logp is not None:
        kl = torch.where(m, kl_k3(logp, torch.where(m, ref_logp.to(logp.dtype), logp.detach())), zero)
        if kl_coef:
            per_tok = per_tok + kl_coef * kl
    per_tok = torch.where(m, per_tok, zero)

    if seq_ids is None:
        seq_ids = torch.arange(logp.shape[0], device=logp.device).unsqueeze(-1).expand_as(logp) \
            if logp.dim() > 1 else torch.zeros_like(logp, dtype=torch.long)
    if norm == "token":
        denom = float(num_tokens) if num_tokens is not None else mf.sum().clamp(min=1.0)
        loss = per_tok.sum() / denom
    else:
        ids = seq_ids[m]
        uniq, inv = torch.unique(ids, return_inverse=True)
        n_seqs = float(num_seqs) if num_seqs is not None else max(int(uniq.numel()), 1)
        if norm == "sequence":
            sums = torch.zeros(uniq.numel(), dtype=logp.dtype, device=logp.device).index_add(0, inv, per_tok[m])
            counts = torch.bincount(inv, minlength=uniq.numel()).to(sums.dtype)
            loss = (sums / counts.clamp(min=1.0)).sum() / n_seqs
        elif norm == "constant":
            if max_len is None:
                raise ValueError("norm='constant' (Dr. GRPO) needs max_len")
            loss = per_tok.sum() / (n_seqs * max_len)
        else:
            raise ValueError(f"unknown normalisation {norm!r}: use 'sequence', 'token' or 'constant'")

    with torch.no_grad():
        low = (ratio < 1.0 - clip_low) & (adv < 0) & m
        high = (ratio > 1.0 + clip_high) & (adv > 0) & m
        stats = PolicyLossStats(tokens=float(mf.sum()), clipped_low=float(low.sum()), clipped_high=float(high.sum()),
                                kl_sum=float(kl.sum()) if kl is not None else 0.0,
                                ratio_sum=float((ratio * mf).sum()))
    return loss, stats
