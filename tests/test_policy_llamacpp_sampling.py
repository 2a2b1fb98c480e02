"""llama.cpp's sampler picks the Gumbel-max token computing the noise only where it can win: the same token as the
noise over the whole vocabulary, for any scores and uniforms (ties, a zero uniform, near-equal scores)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.policy.llamacpp import _gumbel_argmax


def _full(scores: np.ndarray, u: np.ndarray) -> int:
    with np.errstate(divide="ignore"):
        return int(np.argmax(scores - np.log(-np.log(u))))


@pytest.mark.parametrize("seed", range(40))
def test_gumbel_argmax_on_candidates_equals_the_full_formula(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 5000))
    scale = float(rng.choice([0.01, 1.0, 5.0, 30.0]))
    scores = (rng.standard_normal(n) * scale).astype(np.float32)
    if seed % 4 == 0:
        scores[rng.integers(0, n, 20)] = scores.max()  # ties at the top
    if seed % 5 == 0:
        scores = np.round(scores).astype(np.float32)  # many equal scores
    u = rng.random(n, dtype=np.float32)
    if seed % 3 == 0:
        u[int(np.argmax(scores))] = 0.0  # the top score draws -inf noise
    assert _gumbel_argmax(scores, u) == _full(scores, u)


def test_gumbel_argmax_follows_the_softmax():
    """Frequencies of 20,000 draws match softmax([0, 1, 2]) within 4 standard errors."""
    scores = np.array([0.0, 1.0, 2.0], dtype=np.float32)
    p = np.exp(scores) / np.exp(scores).sum()
    rng = np.random.default_rng(0)
    counts = np.bincount([_gumbel_argmax(scores, rng.random(3, dtype=np.float32)) for _ in range(20000)], minlength=3)
    se = np.sqrt(p * (1 - p) / 20000)
    assert (np.abs(counts / 20000 - p) <= 4 * se).all()
