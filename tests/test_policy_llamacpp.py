"""The llama.cpp policy on the real embedded Gemma 3 270M GGUF: tokens, raw log-probs, cache reuse, stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.policy import PolicyError, SamplingParams, load_policy, message_dicts
from agent.policy.embedded import GEMMA3_CHAT_TEMPLATE, embedded_gguf
from agent.policy.llamacpp import LlamaCppPolicy
from records.trajectory import Message

A = [Message(role="system", content="You are a coding agent."), Message(role="user", content="List files in /testbed.")]
B = [Message(role="user", content="Write a Python function that adds two numbers.")]
GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


@pytest.fixture(scope="module")
def policy() -> LlamaCppPolicy:
    policy = load_policy("llamacpp:gemma3-270m", n_ctx=2048)
    assert isinstance(policy, LlamaCppPolicy)
    yield policy
    policy.close()


def test_generation_carries_its_tokens_and_raw_logprobs(policy: LlamaCppPolicy):
    """Each completion has aligned token ids and log-probs; the text is its tokens without special tokens."""
    gens = policy.generate([A, B], SamplingParams(max_tokens=16, temperature=1.0, seed=0))
    for conv, g in zip((A, B), gens):
        assert g.token_ids and len(g.token_ids) == len(g.logprobs) == g.completion_tokens <= 16
        assert all(lp <= 0 for lp in g.logprobs) and any(lp < 0 for lp in g.logprobs)
        body = g.token_ids[:-1] if g.token_ids[-1] in policy.eos_ids else g.token_ids
        assert policy.llm.detokenize(body).decode() == g.text
        assert g.prompt_tokens == policy.count_tokens(conv)
        assert g.finish_reason in ("stop", "length")


def test_greedy_is_the_same_with_and_without_the_cached_prefix(policy: LlamaCppPolicy):
    """Reusing the KV cache of an earlier prompt gives the tokens and log-probs of a cold start."""
    first = policy.generate([A], GREEDY)[0]
    policy.generate([B], GREEDY)  # another prompt in between
    longer = A + [first.message(), Message(role="tool", content="README.md\nsetup.py")]
    warm = policy.generate([longer], GREEDY)[0]  # shares A's prefix with the cache
    policy.reset_caches()
    cold = policy.generate([longer], GREEDY)[0]
    assert warm.token_ids == cold.token_ids
    # llama.cpp's one-token and batched kernels round differently (quantised activations), so a cached
    # completion's log-probs differ from a cold batch evaluation by a few hundredths on average
    gaps = [abs(a - b) for a, b in zip(warm.logprobs, cold.logprobs)]
    assert sum(gaps) / len(gaps) < 0.1 and max(gaps) < 0.6, gaps
    assert policy.generate([A], GREEDY)[0].token_ids == first.token_ids


def test_parallel_conversations_keep_their_own_caches():
    """Interleaved episodes each continue their own KV cache: only their new turn is evaluated."""
    first = [[Message(role="user", content=f"Task {k}: " + "fix the failing test in the parser module. " * 20)]
             for k in (1, 2)]

    def next_prompts(policy):
        firsts = policy.generate(first, GREEDY)
        grown = [conv + [g.message(), Message(role="tool", content="ok")] for conv, g in zip(first, firsts)]
        before = policy.prompt_tokens_evaluated
        policy.generate(grown, GREEDY)
        return policy.prompt_tokens_evaluated - before, sum(policy.count_tokens(c) for c in grown)

    with load_policy("llamacpp:gemma3-270m", n_ctx=1024, slots=2) as two, \
            load_policy("llamacpp:gemma3-270m", n_ctx=1024, slots=1) as one:
        evaluated_two, total = next_prompts(two)
        evaluated_one, _ = next_prompts(one)
        assert len(two.slots) == 2 and len(one.slots) == 1
    assert evaluated_two < 0.25 * total  # just the new turns
    assert evaluated_one > 0.5 * total  # one cache: each prompt evicts the other's


def test_seeded_sampling_repeats_and_a_tiny_top_p_is_greedy(policy: LlamaCppPolicy):
    """Without prompt caching a seed repeats its sample; top_p small enough keeps only the most likely token."""
    params = SamplingParams(max_tokens=12, temperature=1.5, seed=7)
    with load_policy("llamacpp:gemma3-270m", n_ctx=1024, cache_prompt=False) as cold:
        again = [cold.generate([B], params)[0].token_ids for _ in range(2)]
        cold.generate([A], params)
        again.append(cold.generate([B], params)[0].token_ids)
        others = {tuple(cold.generate([B], params.model_copy(update={"seed": s}))[0].token_ids) for s in range(4)}
    assert again[0] == again[1] == again[2]
    assert len(others) > 1
    nucleus = policy.generate([B], SamplingParams(max_tokens=12, temperature=1.0, top_p=1e-6, seed=1))[0]
    assert nucleus.token_ids == policy.generate([B], GREEDY)[0].token_ids


def test_stop_strings_and_length_limits(policy: LlamaCppPolicy):
    """A stop string ends the text (kept); max_tokens ends with `length`; no room in the context is `length`."""
    g = policy.generate([B], SamplingParams(max_tokens=40, temperature=0.0))[0]
    assert len(g.text) > 3
    stop = g.text[1:3]
    cut = policy.generate([B], SamplingParams(max_tokens=40, temperature=0.0, stop=[stop]))[0]
    assert cut.text.endswith(stop) and cut.finish_reason == "stop" and len(cut.token_ids) < len(g.token_ids)
    assert policy.llm.detokenize(cut.token_ids).decode().startswith(cut.text)
    short = policy.generate([B], SamplingParams(max_tokens=2, temperature=0.0))[0]
    assert short.finish_reason == "length" and len(short.token_ids) == 2
    huge = [Message(role="user", content="word " * 3000)]
    full = policy.generate([huge], GREEDY)[0]
    assert full.finish_reason == "length" and full.token_ids == [] and full.prompt_tokens >= policy.context_length


def test_prompt_tokens_are_the_ones_the_trainer_tokenizes(policy: LlamaCppPolicy):
    """The transformers tokenizer of the same GGUF, with the same template, gives the same prompt ids."""
    from transformers import AutoTokenizer

    gguf = embedded_gguf("gemma3-270m")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE
    for conv in (A, B, A + [Message(role="assistant", content="ls"), Message(role="tool", content="a.py")]):
        text = tokenizer.apply_chat_template(message_dicts(conv), add_generation_prompt=True,
                                             tokenize=False)
        assert text == policy.render(conv)
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == policy.prompt_ids(conv)


def test_missing_or_broken_gguf_is_a_clear_error(tmp_path: Path):
    """A path that is not there, or not a GGUF, is a PolicyError naming it."""
    with pytest.raises(PolicyError, match="no GGUF file"):
        load_policy(f"llamacpp:{tmp_path / 'nope.gguf'}")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all" * 100)
    with pytest.raises(PolicyError, match="cannot load"):
        load_policy(f"llamacpp:{bad}")
