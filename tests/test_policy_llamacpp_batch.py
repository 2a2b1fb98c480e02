"""Batched llama.cpp sampling from shared prefixes (`agent.policy.llamacpp_batch`) on the real embedded GGUF."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.policy import SamplingParams, load_policy
from agent.policy.llamacpp import LlamaCppPolicy
from records.trajectory import Message

SYSTEM = "You are a helpful assistant that can call tools. " * 12
A = [Message(role="system", content=SYSTEM), Message(role="user", content="What is the weather in Paris?")]
B = [Message(role="system", content=SYSTEM), Message(role="user", content="Book a table for two at noon.")]


@pytest.fixture(scope="module")
def policy() -> LlamaCppPolicy:
    policy = load_policy("llamacpp:gemma3-270m", n_ctx=1024, batch_n_ctx=2048, batch_sequences=8)
    assert isinstance(policy, LlamaCppPolicy)
    yield policy
    policy.close()


def _teacher_forced(policy: LlamaCppPolicy, prompt: list[int], ids: list[int]) -> list[float]:
    """Raw log-probs of ``ids`` after ``prompt``, evaluated one token at a time on a fresh slot."""
    policy.reset_caches()
    llm = policy._prefill(prompt)
    out = []
    for t in ids:
        z = policy._logits(llm).astype(np.float64)
        out.append(float(z[t] - (z.max() + math.log(np.exp(z - z.max()).sum()))))
        llm.eval([t])
    return out


def test_a_group_shares_one_prompt_evaluation_and_each_sample_has_its_own_tokens(policy: LlamaCppPolicy):
    prompt = policy.prompt_ids(A)
    decoder = policy._batched()
    before = decoder.prompt_tokens_evaluated
    decoder.held = []  # a cold start: nothing held from an earlier call
    gens = policy.generate([A] * 4, SamplingParams(max_tokens=10, temperature=1.0, seed=3))
    assert decoder.prompt_tokens_evaluated - before == len(prompt)  # once for the whole group
    assert len({tuple(g.token_ids) for g in gens}) > 1  # each row samples with its own seed
    for g in gens:
        assert g.prompt_tokens == len(prompt)
        assert len(g.token_ids) == len(g.logprobs) == g.completion_tokens <= 10
        # its recorded raw log-probs are the model's for its own tokens: a one-at-a-time evaluation agrees up
        # to llama.cpp's rounding of several-row against one-row decodes (other kernels on quantised
        # activations), the same tolerance as a cached against a cold prompt in test_policy_llamacpp
        again = _teacher_forced(policy, prompt, g.token_ids)
        gaps = [abs(a - b) for a, b in zip(again, g.logprobs)]
        assert sum(gaps) / len(gaps) < 0.1 and max(gaps) < 0.6, gaps
    decoder.held = []  # cold again (a held prompt's last token is re-evaluated alone: other rounding)
    again = policy.generate([A] * 4, SamplingParams(max_tokens=10, temperature=1.0, seed=3))
    assert [g.token_ids for g in again] == [g.token_ids for g in gens]  # a seed repeats its group


def test_a_row_never_sees_the_other_rows_tokens(policy: LlamaCppPolicy):
    """Rows share the prompt's KV cells but not each other's: row 1's logits after 4 decode steps are the same,
    bit for bit, whether its neighbours decode the same tokens as it or others."""
    prompt = policy.prompt_ids(A)
    decoder = policy._batched()
    mine, other = [3048, 659, 496, 11045], [100, 2000, 30000, 555]

    def row_one_logits(rows: list[list[int]]) -> np.ndarray:
        for s in range(decoder.n_seq + 1):
            decoder.ctx.kv_cache_seq_rm(s, -1, -1)
        decoder.held = []
        decoder._prefill(prompt)
        for k in range(len(rows)):
            decoder.ctx.kv_cache_seq_cp(0, k + 1, -1, -1)
        for t in range(4):
            decoder._decode([(r[t], len(prompt) + t, k + 1, True) for k, r in enumerate(rows)])
        return decoder._logits(0)

    assert np.array_equal(row_one_logits([mine, mine, mine]), row_one_logits([mine, other, other]))
    decoder.held = []


def test_prompts_sharing_a_system_prefix_evaluate_it_once(policy: LlamaCppPolicy):
    a, b = policy.prompt_ids(A), policy.prompt_ids(B)
    common = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    assert common > 100
    decoder = policy._batched()
    decoder.held = []
    before = decoder.prompt_tokens_evaluated
    gens = policy.generate([A, A, B, B], SamplingParams(max_tokens=4, temperature=0.0))
    assert decoder.prompt_tokens_evaluated - before == len(a) + len(b) - common
    assert gens[0].token_ids == gens[1].token_ids and gens[2].token_ids == gens[3].token_ids  # greedy


def test_stop_strings_length_and_one_at_a_time_switch(policy: LlamaCppPolicy):
    gens = policy.generate([A, B, B], SamplingParams(max_tokens=6, temperature=0.0))
    assert all(g.finish_reason in ("stop", "length") for g in gens)
    assert all(g.completion_tokens == 6 for g in gens if g.finish_reason == "length")
    text = gens[0].text
    if len(text) > 3:  # stop on a string the model is known to produce here
        stop = text[1:3]
        cut = policy.generate([A, A], SamplingParams(max_tokens=6, temperature=0.0, stop=[stop]))
        for g in cut:
            assert g.finish_reason == "stop" and g.text.endswith(stop) and stop not in g.text[:-len(stop)]
    fresh = load_policy("llamacpp:gemma3-270m", n_ctx=1024)
    single = load_policy("llamacpp:gemma3-270m", n_ctx=1024, batch_sequences=1)
    try:
        fresh.generate([A, B], SamplingParams(max_tokens=2, temperature=0.0))
        assert fresh._batch_decoder is None  # distinct conversations (episodes) keep their slots' caches
        single.generate([A, A], SamplingParams(max_tokens=2, temperature=0.0))
        assert single._batch_decoder is None  # batch_sequences=1: always one at a time
    finally:
        fresh.close()
        single.close()
