"""The transformers policy, on a real tiny model (no mocks): batching, log-probs, stop strings, LoRA."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from agent.policy import PolicyError, SamplingParams, load_policy
from agent.policy.hf import HFPolicy
from records.trajectory import Message, ToolCall
from tests.tiny_model import build_tiny_model

CONVERSATIONS = [
    [Message(role="user", content="hi")],
    [Message(role="system", content="You are a helpful assistant."), Message(role="user", content="What is the weather in Paris?")],
    [Message(role="user", content="def add(a, b):")],
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # init_std 0.2: peaked, context-dependent greedy outputs, so batch invariance means something
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", init_std=0.2)


@pytest.fixture(scope="module")
def policy(model_dir: Path) -> HFPolicy:
    policy = load_policy(f"hf:{model_dir}")
    assert isinstance(policy, HFPolicy)
    return policy


def recompute_logprobs(policy: HFPolicy, messages: list[Message], token_ids: list[int], model=None) -> torch.Tensor:
    """What a trainer does: one forward pass over prompt + completion, log-softmax of each sampled token."""
    prompt = policy.prompt_ids(messages)
    ids = torch.tensor([prompt + token_ids])
    with torch.no_grad():
        logits = (model or policy.model)(ids).logits[0].float()
    logp = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
    return logp.gather(1, torch.tensor(token_ids)[:, None]).squeeze(1)


def test_batched_generation_returns_one_generation_per_conversation(policy: HFPolicy) -> None:
    gens = policy.generate(CONVERSATIONS, SamplingParams(max_tokens=12, temperature=1.0, seed=1))
    assert len(gens) == len(CONVERSATIONS)
    for conv, gen in zip(CONVERSATIONS, gens):
        assert gen.token_ids and len(gen.token_ids) == len(gen.logprobs) == gen.completion_tokens <= 12
        assert policy.tokenizer.decode(gen.token_ids, skip_special_tokens=True) == gen.text
        assert all(lp <= 0.0 for lp in gen.logprobs)
        assert gen.prompt_tokens == policy.count_tokens(conv)
        assert gen.finish_reason in ("stop", "length")
        assert gen.message().token_ids == gen.token_ids


def test_logprobs_match_a_separate_forward_pass(policy: HFPolicy) -> None:
    # tempered top-p sampling, but logprobs are of the RAW distribution (what a trainer recomputes)
    gens = policy.generate(CONVERSATIONS, SamplingParams(max_tokens=16, temperature=0.7, top_p=0.9, seed=3))
    for conv, gen in zip(CONVERSATIONS, gens):
        expected = recompute_logprobs(policy, conv, gen.token_ids)
        torch.testing.assert_close(torch.tensor(gen.logprobs), expected, atol=1e-4, rtol=0)


def test_greedy_is_deterministic_and_batch_invariant(policy: HFPolicy) -> None:
    params = SamplingParams(max_tokens=10, temperature=0.0)
    batched = policy.generate(CONVERSATIONS, params)
    again = policy.generate(CONVERSATIONS, params)
    single = [policy.generate([c], params)[0] for c in CONVERSATIONS]
    assert [g.token_ids for g in batched] == [g.token_ids for g in again] == [g.token_ids for g in single]
    assert len({tuple(g.token_ids) for g in batched}) == len(CONVERSATIONS)  # outputs depend on the prompt
    for a, b in zip(batched, single):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_seed_makes_sampling_reproducible(policy: HFPolicy) -> None:
    params = SamplingParams(max_tokens=8, temperature=1.0, seed=7)
    first = policy.generate(CONVERSATIONS, params)
    second = policy.generate(CONVERSATIONS, params)
    assert [g.token_ids for g in first] == [g.token_ids for g in second]
    other = policy.generate(CONVERSATIONS, params.model_copy(update={"seed": 8}))
    assert [g.token_ids for g in other] != [g.token_ids for g in first]


def test_stop_string_truncates_text_and_tokens_consistently(policy: HFPolicy) -> None:
    params = SamplingParams(max_tokens=20, temperature=0.0)
    conv = CONVERSATIONS[1]
    full = policy.generate([conv], params)[0]
    stop = full.text[6:8]  # a string the greedy continuation is known to produce
    assert stop and len(full.text) > 8
    cut = policy.generate([conv], params.model_copy(update={"stop": [stop, "never-produced"]}))[0]
    end = full.text.index(stop) + len(stop)
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[:end] and cut.text.endswith(stop)
    assert cut.token_ids == full.token_ids[: len(cut.token_ids)]
    assert cut.logprobs == pytest.approx(full.logprobs[: len(cut.token_ids)], abs=1e-5)
    decoded = policy.tokenizer.decode(cut.token_ids, skip_special_tokens=True)
    assert decoded.startswith(cut.text) and stop not in policy.tokenizer.decode(cut.token_ids[:-1])
    assert cut.completion_tokens == len(cut.token_ids)


def test_max_tokens_gives_finish_reason_length(policy: HFPolicy) -> None:
    gens = policy.generate(CONVERSATIONS, SamplingParams(max_tokens=3, temperature=0.0))
    for gen in gens:
        assert gen.finish_reason == "length"
        assert gen.completion_tokens == len(gen.token_ids) == 3


def test_end_of_sequence_token_is_kept_with_its_logprob(policy: HFPolicy) -> None:
    eos = policy.tokenizer.eos_token_id
    bias = torch.zeros(policy.model.config.vocab_size)
    bias[eos] = 4.0  # make ending the turn likely: an output-layer bias toward <|im_end|>
    hook = policy.model.lm_head.register_forward_hook(lambda module, args, out: out + bias)
    try:
        gens = policy.generate(CONVERSATIONS * 4, SamplingParams(max_tokens=12, temperature=1.0, seed=0))
        ended = [g for g in gens if g.token_ids[-1] == eos]
        assert ended, "the biased model never ended its turn"
        for gen, conv in zip(gens, CONVERSATIONS * 4):
            assert eos not in gen.token_ids[:-1]  # cut right after the first eos
            assert len(gen.logprobs) == len(gen.token_ids) == gen.completion_tokens
            assert gen.finish_reason == ("stop" if gen in ended else "length")
            assert "<|im_end|>" not in gen.text
            torch.testing.assert_close(
                torch.tensor(gen.logprobs), recompute_logprobs(policy, conv, gen.token_ids), atol=1e-4, rtol=0
            )
    finally:
        hook.remove()


def test_tools_and_tool_messages_render(policy: HFPolicy) -> None:
    tools = [{"type": "function", "function": {"name": "bash", "description": "run a command",
                                               "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}}]
    conv = [
        Message(role="user", content="list files"),
        Message(role="assistant", content="", tool_calls=[ToolCall(name="bash", arguments={"command": "ls"}, id="c1")]),
        Message(role="tool", content="a.py b.py", name="bash"),
    ]
    assert '"name": "bash"' in policy.render(conv, tools)
    gen = policy.generate([conv], SamplingParams(max_tokens=4), tools=tools)[0]
    assert gen.prompt_tokens > policy.count_tokens(conv)  # the tool schema is in the prompt
    assert policy.context_length == 2048


def test_prompt_beyond_the_context_gets_an_empty_length_generation(policy: HFPolicy) -> None:
    too_long = [Message(role="user", content="weather " * 3000)]
    assert policy.count_tokens(too_long) > policy.context_length
    gens = policy.generate([too_long, CONVERSATIONS[0]], SamplingParams(max_tokens=4, temperature=0.0))
    assert gens[0].finish_reason == "length" and gens[0].token_ids == [] and gens[0].text == ""
    assert gens[1].completion_tokens == 4


def test_lora_adapter_changes_outputs_and_loads(policy: HFPolicy, model_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, config)
    peft_model.save_pretrained(tmp_path / "adapter")

    params = SamplingParams(max_tokens=10, temperature=0.0)
    plain = policy.generate(CONVERSATIONS, params)
    adapted = load_policy(f"hf:{model_dir}@{tmp_path / 'adapter'}")
    with_lora = adapted.generate(CONVERSATIONS, params)
    assert [g.token_ids for g in with_lora] != [g.token_ids for g in plain]
    for conv, gen in zip(CONVERSATIONS, with_lora):  # log-probs are those of the adapted model
        expected = recompute_logprobs(adapted, conv, gen.token_ids, model=peft_model.eval())
        torch.testing.assert_close(torch.tensor(gen.logprobs), expected, atol=1e-4, rtol=0)

    # swapping adapters in place (what the evolve loop does after a training round)
    second = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), config)
    second.save_pretrained(tmp_path / "adapter2")
    adapted.load_adapter(tmp_path / "adapter2")
    swapped = adapted.generate(CONVERSATIONS, params)
    for conv, gen in zip(CONVERSATIONS, swapped):
        expected = recompute_logprobs(adapted, conv, gen.token_ids, model=second.eval())
        torch.testing.assert_close(torch.tensor(gen.logprobs), expected, atol=1e-4, rtol=0)
    with pytest.raises(PolicyError, match="adapter_config.json"):
        adapted.load_adapter(tmp_path)


def test_missing_model_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy(f"hf:{tmp_path / 'nope'}")
    with pytest.raises(PolicyError, match="cannot load model"):
        load_policy("hf:no-such-org/no-such-model")


@pytest.mark.slow
def test_embedded_default_gemma3_270m_end_to_end(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The embedded model on transformers from scratch: GGUF in the PyPI package -> dense transformers
    cache (about 100-200 s on 2 cores), generation, then a reload from the cache (seconds)."""
    monkeypatch.setenv("EVOLVE_CACHE", str(tmp_path))  # a fresh cache: really convert
    started = time.monotonic()
    policy = load_policy("hf:gemma3-270m")
    first_load = time.monotonic() - started
    assert policy.spec == "hf:gemma3-270m" and (tmp_path / "models" / "gemma3-270m" / "model.safetensors").exists()
    assert policy.context_length == 32768 and policy.tokenizer.convert_tokens_to_ids("<end_of_turn>") in policy.eos_ids
    conv = [Message(role="system", content="Answer briefly."), Message(role="user", content="What is the capital of France?")]
    assert policy.render(conv).startswith("<bos><start_of_turn>user\nAnswer briefly.")
    gens = policy.generate([conv, conv], SamplingParams(max_tokens=8, temperature=0.0))
    assert len(gens) == 2 and gens[0].token_ids == gens[1].token_ids and gens[0].completion_tokens > 0
    assert gens[0].text.strip()
    expected = recompute_logprobs(policy, conv, gens[0].token_ids)
    torch.testing.assert_close(torch.tensor(gens[0].logprobs), expected, atol=1e-3, rtol=0)
    policy.close()

    started = time.monotonic()
    again = load_policy("hf:gemma3-270m")  # from the converted cache now
    reload = time.monotonic() - started
    assert again.generate([conv], SamplingParams(max_tokens=8, temperature=0.0))[0].token_ids == gens[0].token_ids
    assert reload < 60 and reload < first_load / 2, f"reload {reload:.0f} s vs first load {first_load:.0f} s"
