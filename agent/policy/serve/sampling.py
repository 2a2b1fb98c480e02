"""Sampling from logits rows with numpy: the token, its RAW log-probability and the top alternatives.

Log-probabilities are those of `agent.policy.base`: `log_softmax(logits)` at temperature 1, before
temperature or top-p. Sampling itself is tempered nucleus sampling (greedy at temperature 0) by the
inverse CDF of one uniform number from the choice's own generator, so a seeded choice repeats its
sample on the same logits.
"""

from __future__ import annotations

import numpy as np

TOP_P_CANDIDATES = 2048
"""Nucleus sampling sorts only this many most likely tokens (all of them when their mass falls short)."""


def log_normaliser(logits: np.ndarray) -> float:
    """log(sum(exp(logits))) of one row, computed stably."""
    top = float(logits.max())
    return top + float(np.log(np.exp(logits - top).sum(dtype=np.float64)))


def sample_row(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> tuple[int, float, float]:
    """(token, its raw log-prob, the row's log normaliser) for one row of logits."""
    logz = log_normaliser(logits)
    if temperature == 0.0:
        token = int(logits.argmax())
        return token, float(logits[token]) - logz, logz
    scaled = logits if temperature == 1.0 else logits / np.float32(temperature)
    u = rng.random()
    if top_p < 1.0:
        k = min(TOP_P_CANDIDATES, scaled.size)
        cand = np.argpartition(scaled, -k)[-k:]
        top = scaled[cand].max()
        p = np.exp(scaled[cand] - top, dtype=np.float64)
        if p.sum() / np.exp(scaled - top, dtype=np.float64).sum() < top_p:  # the candidates fall short
            cand, p = np.arange(scaled.size), np.exp(scaled - top, dtype=np.float64)
        order = np.argsort(-p, kind="stable")
        cand, p = cand[order], p[order] / p.sum()
        cdf = np.cumsum(p)
        keep = int(np.searchsorted(cdf, top_p)) + 1
        cdf = cdf[:keep] / cdf[keep - 1]
        i = min(int(np.searchsorted(cdf, u, side="right")), keep - 1)
        token = int(cand[i])
    else:
        cdf = np.cumsum(np.exp(scaled - scaled.max(), dtype=np.float64))
        token = min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), scaled.size - 1)
    return token, float(logits[token]) - logz, logz


def top_logprobs(logits: np.ndarray, logz: float, k: int) -> list[tuple[int, float]]:
    """The `k` most likely tokens of a row with their raw log-probs, most likely first."""
    if k <= 0:
        return []
    k = min(k, logits.size)
    idx = np.argpartition(logits, -k)[-k:]
    idx = idx[np.argsort(-logits[idx], kind="stable")]
    return [(int(i), float(logits[i]) - logz) for i in idx]
