"""`evolve serve` used by the official `openai` SDK (sync and async, streaming and not) against a real tiny
transformers model fine-tuned to emit tool calls (`scripted_model.py`): chat and text completions, log-probs
as OpenAI defines them, n > 1 from one prompt evaluation, tool calls, a client that leaves mid-stream."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
import torch
from openai import AsyncOpenAI, BadRequestError, OpenAI

from agent.policy import load_policy
from agent.policy.base import SamplingParams
from agent.policy.serve import serve_in_thread
from agent.policy.serve.schema import MAX_TOP_LOGPROBS
from records.trajectory import Message
from tests.scripted_model import train_to_say

torch.set_num_threads(1)  # the served model is tiny: one thread is faster on a loaded 2-core machine

BASH = {"type": "function", "function": {"name": "bash", "description": "Run a command", "parameters": {
    "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}}
TOOLS = [BASH]
CALL = '<tool_call>\n{"name": "bash", "arguments": {"command": "ls -la"}}\n</tool_call>'
BROKEN = 'Sure.\n<tool_call>\n{"name": "bash", "arguments": {"command": "ls}\n</tool_call>'
SCRIPT = [
    ([Message(role="user", content="List the files.")], TOOLS, CALL),
    ([Message(role="user", content="Break it.")], TOOLS, BROKEN),
    ([Message(role="user", content="Say hi.")], None, "Hello there!"),
]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    path = train_to_say(tmp_path_factory.getbasetemp() / "scripted-tools", SCRIPT)
    return load_policy(f"hf:{path}", device="cpu")


@pytest.fixture(scope="module")
def server(policy):
    s = serve_in_thread(policy, port=0, model_name="tiny")
    yield s
    s.stop()


@pytest.fixture
def client(server):
    c = OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
    yield c
    c.close()


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_chat_matches_the_policy_with_openai_logprobs(client, policy):
    r = client.chat.completions.create(model="tiny", messages=user("Say hi."), max_tokens=20, temperature=0,
                                       logprobs=True, top_logprobs=3, extra_body={"return_token_ids": True})
    local = policy.generate([[Message(role="user", content="Say hi.")]], SamplingParams(max_tokens=20, temperature=0))[0]
    choice = r.choices[0]
    assert choice.message.content == local.text == "Hello there!" and choice.finish_reason == "stop"
    assert choice.model_extra["token_ids"] == local.token_ids  # vLLM's `return_token_ids` extension
    assert r.model_extra["prompt_token_ids"] == policy.prompt_ids([Message(role="user", content="Say hi.")])
    entries = choice.logprobs.content
    assert [e.model_extra["token_id"] for e in entries] == local.token_ids
    # one KV-cached forward per token here, one batched generate there: float32 rounding only
    assert [e.logprob for e in entries] == pytest.approx(local.logprobs, abs=1e-4)
    assert "".join(e.token for e in entries[:-1]) == local.text  # the last one is <|im_end|>
    assert entries[-1].token == "<|im_end|>"
    for e in entries:
        assert bytes(e.bytes).decode() == e.token
        assert len(e.top_logprobs) == 3
        assert [t.logprob for t in e.top_logprobs] == sorted((t.logprob for t in e.top_logprobs), reverse=True)
        assert e.top_logprobs[0].token == e.token and e.top_logprobs[0].logprob == pytest.approx(e.logprob)
    assert r.usage.completion_tokens == len(local.token_ids) and r.usage.prompt_tokens == local.prompt_tokens
    with pytest.raises(BadRequestError, match="top_logprobs"):
        client.chat.completions.create(model="tiny", messages=user("x"), logprobs=True, top_logprobs=MAX_TOP_LOGPROBS + 1)


def test_stream_sync_and_async_with_usage_in_the_last_chunk(client, server):
    whole = client.chat.completions.create(model="tiny", messages=user("Say hi."), max_tokens=20, temperature=0)
    stream = client.chat.completions.create(model="tiny", messages=user("Say hi."), max_tokens=20, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3  # token by token

    async def run() -> tuple[str, object]:
        aclient = AsyncOpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
        try:
            s = await aclient.chat.completions.create(model="tiny", messages=user("Say hi."), max_tokens=20,
                                                      temperature=0, stream=True)
            streamed = "".join([c.choices[0].delta.content or "" async for c in s if c.choices])
            r = await aclient.chat.completions.create(model="tiny", messages=user("Say hi."), max_tokens=20,
                                                      temperature=0)
            return streamed, r
        finally:
            await aclient.close()

    streamed, r = asyncio.run(run())
    assert streamed == r.choices[0].message.content == whole.choices[0].message.content


def test_text_completions_with_text_or_ids_echo_and_logprobs(client, policy):
    prompt = "def add(a, b):"
    ids = policy.tokenizer(prompt)["input_ids"]
    a = client.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=0, logprobs=2, echo=True)
    b = client.completions.create(model="tiny", prompt=ids, max_tokens=8, temperature=0, logprobs=2)
    assert a.choices[0].text.startswith(prompt)
    assert a.choices[0].text[len(prompt):] == b.choices[0].text
    lp = a.choices[0].logprobs
    assert len(lp.tokens) == len(ids) + a.usage.completion_tokens
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # the first prompt token has no context
    assert all(isinstance(x, float) for x in lp.token_logprobs[1:])
    assert all(len(t) == 2 for t in lp.top_logprobs[1:])
    assert lp.text_offset[:2] == [0, len(lp.tokens[0])]
    assert b.choices[0].logprobs.token_logprobs == pytest.approx(lp.token_logprobs[len(ids):], abs=1e-4)
    # prompt log-probs equal a full forward pass of the prompt
    with torch.inference_mode():
        logits = policy.model(input_ids=torch.tensor([ids])).logits[0].float()
    want = torch.log_softmax(logits, -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].tolist()
    assert lp.token_logprobs[1: len(ids)] == pytest.approx(want, abs=1e-4)
    several = client.completions.create(model="tiny", prompt=[prompt, "import os"], max_tokens=4, temperature=0, n=2)
    assert [c.index for c in several.choices] == [0, 1, 2, 3]
    assert several.choices[0].text == several.choices[1].text == b.choices[0].text[: len(several.choices[0].text)]


def test_n_samples_share_one_prompt_evaluation_each_with_its_own_logprobs(client, server, policy):
    engine = server.engine
    messages = user("Write some code for me, please: a function that adds two numbers.")
    before = engine.prompt_tokens_evaluated
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=1.0, n=4, seed=7,
                                       logprobs=True, extra_body={"return_token_ids": True, "ignore_eos": True})
    prompt = r.model_extra["prompt_token_ids"]
    assert engine.prompt_tokens_evaluated - before <= len(prompt)  # evaluated once for 4 samples
    ids = [c.model_extra["token_ids"] for c in r.choices]
    assert len({tuple(i) for i in ids}) > 1  # 4 different samples
    assert r.usage.completion_tokens == 4 * 12
    for c, sample in zip(r.choices, ids):  # each sample's log-probs are its own: a full forward pass agrees
        with torch.inference_mode():
            logits = policy.model(input_ids=torch.tensor([prompt + sample])).logits[0].float()
        want = torch.log_softmax(logits, -1)[torch.arange(len(prompt) - 1, len(prompt) + len(sample) - 1),
                                             torch.tensor(sample)].tolist()
        assert [e.logprob for e in c.logprobs.content] == pytest.approx(want, abs=1e-4)
    again = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=1.0, n=4, seed=7,
                                           extra_body={"return_token_ids": True, "ignore_eos": True})
    assert [c.model_extra["token_ids"] for c in again.choices] == ids  # a seed repeats its samples


def test_tool_calls_parsed_with_the_agents_parser_for_each_tool_choice(client):
    auto = client.chat.completions.create(model="tiny", messages=user("List the files."), tools=TOOLS, temperature=0)
    msg = auto.choices[0].message
    assert auto.choices[0].finish_reason == "tool_calls" and msg.content is None
    assert msg.tool_calls[0].function.name == "bash"
    assert json.loads(msg.tool_calls[0].function.arguments) == {"command": "ls -la"}
    assert msg.tool_calls[0].id.startswith("call_") and msg.tool_calls[0].type == "function"
    required = client.chat.completions.create(model="tiny", messages=user("List the files."), tools=TOOLS,
                                              tool_choice="required", temperature=0)
    assert required.choices[0].finish_reason == "tool_calls"
    named = client.chat.completions.create(model="tiny", messages=user("List the files."), tools=TOOLS, temperature=0,
                                           tool_choice={"type": "function", "function": {"name": "bash"}})
    assert named.choices[0].finish_reason == "stop" and named.choices[0].message.tool_calls[0].function.name == "bash"
    none = client.chat.completions.create(model="tiny", messages=user("List the files."), tools=TOOLS,
                                          tool_choice="none", temperature=0)
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content == CALL
    broken = client.chat.completions.create(model="tiny", messages=user("Break it."), tools=TOOLS, temperature=0)
    call = broken.choices[0].message.tool_calls[0]
    assert broken.choices[0].finish_reason == "tool_calls" and broken.choices[0].message.content == "Sure."
    assert call.function.name == "bash" and call.function.arguments == '{"command": "ls}'  # as the model wrote it
    with pytest.raises(BadRequestError, match="tool_choice"):
        client.chat.completions.create(model="tiny", messages=user("x"), tools=TOOLS,
                                       tool_choice={"type": "function", "function": {"name": "nope"}})
    stream = client.chat.completions.create(model="tiny", messages=user("List the files."), tools=TOOLS,
                                            temperature=0, stream=True)
    chunks = [c for c in stream if c.choices]
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ""
    assert len(calls) == 1 and calls[0].function.name == "bash"
    assert json.loads(calls[0].function.arguments) == {"command": "ls -la"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_client_that_leaves_mid_stream_stops_its_generation(client, server):
    engine = server.engine
    idle = len(engine.idle)
    with client.chat.completions.create(model="tiny", messages=user("Say hi."), max_tokens=1500, temperature=1.0,
                                        stream=True, extra_body={"ignore_eos": True}) as stream:
        got = 0
        for chunk in stream:
            got += 1
            if got == 5:
                break
    deadline = time.monotonic() + 10
    while engine.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not engine.running and len(engine.idle) == idle  # its sequence is free again
    steps = engine.steps
    time.sleep(0.5)
    assert engine.steps == steps  # nothing is generating for nobody
    r = client.chat.completions.create(model="tiny", messages=user("Say hi."), max_tokens=20, temperature=0)
    assert r.choices[0].message.content == "Hello there!"


def test_sampling_matches_the_policys_token_distribution(server, policy):
    """Temperature-1 samples of the first token follow softmax(logits): a chi-square test over 400 samples."""
    c = OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
    prompt = policy.prompt_ids([Message(role="user", content="Hmm")])
    with torch.inference_mode():
        p = torch.softmax(policy.model(input_ids=torch.tensor([prompt])).logits[0, -1].float(), -1).numpy()
    counts: dict[int, int] = {}
    for k in range(25):
        r = c.completions.create(model="tiny", prompt=prompt, max_tokens=1, n=16, seed=k, temperature=1.0,
                                 extra_body={"return_token_ids": True})
        for ch in r.choices:
            t = ch.model_extra["token_ids"][0]
            counts[t] = counts.get(t, 0) + 1
    top = np.argsort(-p)[:5]
    expected = np.array([p[t] for t in top] + [1 - p[top].sum()]) * 400
    observed = np.array([counts.get(int(t), 0) for t in top] + [400 - sum(counts.get(int(t), 0) for t in top)])
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 20.5, (observed, expected)  # 5 degrees of freedom: p = 0.001
    c.close()


def test_separate_requests_for_one_prompt_share_its_evaluation(server, policy):
    """Four requests for the same new prompt that arrive together (a GRPO group sent without `n`): the prompt
    is evaluated once, the other three copy its cache, and each samples with its own seed."""
    from agent.policy.serve.engine import Done, Job, Token

    engine = server.engine
    busy = Job(params=SamplingParams(max_tokens=300, temperature=1.0, seed=1), ignore_eos=True,
               messages=[Message(role="user", content="Keep going.")])
    engine.prepare(busy)
    engine.submit(busy)
    while not isinstance(busy.events.get(timeout=60), Token):  # the loop is busy stepping
        pass
    messages = [Message(role="user", content="A brand new prompt that nobody has sent before, about otters.")]
    jobs = [Job(params=SamplingParams(max_tokens=8, temperature=1.0, seed=k), ignore_eos=True, messages=messages)
            for k in range(4)]
    for job in jobs:
        engine.prepare(job)
    before = engine.prompt_tokens_evaluated
    for job in jobs:  # all four land in the inbox while a step runs: admitted together
        engine.submit(job)
    samples = []
    for job in jobs:
        ids = []
        while not isinstance(event := job.events.get(timeout=60), Done):
            if isinstance(event, Token):
                ids.append(event.token_id)
        samples.append(ids)
    busy.cancel()
    assert engine.prompt_tokens_evaluated - before <= len(jobs[0].prompt_ids)  # once (less a cached prefix), not 4x
    assert all(len(s) == 8 for s in samples) and len({tuple(s) for s in samples}) > 1
    alone = client_free_sample(server, messages, seed=2)
    assert alone == samples[2]  # a follower samples exactly what the same request alone would


def client_free_sample(server, messages, seed: int) -> list[int]:
    from agent.policy.serve.engine import Done, Job, Token

    job = Job(params=SamplingParams(max_tokens=8, temperature=1.0, seed=seed), ignore_eos=True, messages=messages)
    server.engine.prepare(job)
    server.engine.submit(job)
    ids = []
    while not isinstance(event := job.events.get(timeout=60), Done):
        if isinstance(event, Token):
            ids.append(event.token_id)
    return ids
