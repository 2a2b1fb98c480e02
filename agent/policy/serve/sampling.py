"""Sampling from logits rows with numpy: the token, its RAW log-probability and the top alternatives.

Log-probabilities are those of `agent.policy.base`: `log_softmax(logits)` at temperature 1, before
temperature or top-p. Sampling itself is tempered nucleus sampling (greedy at temperature 0) by the
inverse CDF of one uniform number from the choice's own generator, so a seeded choice repeats its
sample on the same logits. The CDF is searched in blocks (block sums, then one block's running sum), which
costs about one pass over the vocabulary: a 262k-token row takes a millisecond or two.
"""

from __future__ import annotations

import threading

import numpy as np

TOP_P_CANDIDATES = 2048
"""Nucleus sampling sorts only this many most likely tokens (all of them when their mass falls short)."""
BLOCK = 1024
"""Tokens per block of the blocked CDF search."""


_local = threading.local()


def _buffer(n: int) -> np.ndarray:
    """A float32 scratch row reused by this thread (a fresh megabyte per token costs page faults)."""
    buf = getattr(_local, "buf", None)
    if buf is None or buf.size < n:
        buf = _local.buf = np.empty(n, dtype=np.float32)
    return buf[:n]


def log_normaliser(logits: np.ndarray) -> float:
    """log(sum(exp(logits))) of one row, computed stably."""
    top = float(logits.max())
    return top + float(np.log(np.exp(logits - top).sum(dtype=np.float64)))


def inverse_cdf(weights: np.ndarray, u: float) -> int:
    """The index i where the running sum of non-negative `weights` first passes u * their total."""
    starts = np.arange(0, weights.size, BLOCK)
    blocks = np.cumsum(np.add.reduceat(weights, starts), dtype=np.float64)
    target = u * blocks[-1]
    b = min(int(np.searchsorted(blocks, target, side="right")), len(blocks) - 1)
    inner = np.cumsum(weights[starts[b]: starts[b] + BLOCK], dtype=np.float64)
    j = min(int(np.searchsorted(inner, target - (blocks[b - 1] if b else 0.0), side="right")), inner.size - 1)
    i = int(starts[b]) + j
    while weights[i] == 0 and i > 0:  # rounding at a block edge: step back to a token that has mass
        i -= 1
    return i


def sample_row(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> tuple[int, float, float]:
    """(token, its raw log-prob, the row's log normaliser) for one row of logits."""
    top = logits.max()
    raw = _buffer(logits.size)
    np.subtract(logits, top, out=raw)
    if temperature not in (0.0, 1.0):
        shifted = raw.copy()
    np.exp(raw, out=raw)
    logz = float(top) + float(np.log(raw.sum(dtype=np.float64)))
    if temperature == 0.0:
        token = int(logits.argmax())
        return token, float(logits[token]) - logz, logz
    u = rng.random()
    weights = raw if temperature == 1.0 else np.exp(shifted / np.float32(temperature))
    if top_p < 1.0:
        k = min(TOP_P_CANDIDATES, weights.size)
        cand = np.argpartition(weights, -k)[-k:]
        w = weights[cand].astype(np.float64)
        total = float(weights.sum(dtype=np.float64))
        if w.sum() < top_p * total:  # the candidates fall short: take them all
            cand, w = np.arange(weights.size), weights.astype(np.float64)
        order = np.argsort(-w, kind="stable")
        cand, w = cand[order], w[order]
        cdf = np.cumsum(w)
        keep = int(np.searchsorted(cdf, top_p * total)) + 1
        keep = min(keep, cdf.size)
        i = min(int(np.searchsorted(cdf[:keep], u * cdf[keep - 1], side="right")), keep - 1)
        token = int(cand[i])
    else:
        token = inverse_cdf(weights, u)
    return token, float(logits[token]) - logz, logz


def top_logprobs(logits: np.ndarray, logz: float, k: int) -> list[tuple[int, float]]:
    """The `k` most likely tokens of a row with their raw log-probs, most likely first."""
    if k <= 0:
        return []
    k = min(k, logits.size)
    idx = np.argpartition(logits, -k)[-k:]
    idx = idx[np.argsort(-logits[idx], kind="stable")]
    return [(int(i), float(logits[i]) - logz) for i in idx]
