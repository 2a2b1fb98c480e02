"""`evolve serve` on its default model (Gemma 3 270M, llama.cpp) through the `openai` SDK: continuous
batching of concurrent clients in one llama.cpp context, streaming, n > 1 from one prompt evaluation, raw
completions, and a client that leaves mid-stream."""

from __future__ import annotations

import threading
import time

import pytest
from openai import OpenAI

from agent.policy import DEFAULT_POLICY, load_policy
from agent.policy.base import SamplingParams
from agent.policy.serve import serve_in_thread
from records.trajectory import Message


@pytest.fixture(scope="module")
def policy():
    p = load_policy(DEFAULT_POLICY, n_ctx=2048, slots=1)
    yield p
    p.close()


@pytest.fixture(scope="module")
def server(policy):
    s = serve_in_thread(policy, port=0)
    yield s
    s.stop()


@pytest.fixture
def client(server):
    c = OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=300)
    yield c
    c.close()


QUESTION = [{"role": "user", "content": "Name three colours."}]


def test_greedy_chat_agrees_with_the_policy_streamed_or_not(client, policy):
    r = client.chat.completions.create(model=DEFAULT_POLICY, messages=QUESTION, max_tokens=8, temperature=0,
                                       logprobs=True, top_logprobs=2, extra_body={"return_token_ids": True})
    local = policy.generate([[Message(role="user", content="Name three colours.")]],
                            SamplingParams(max_tokens=8, temperature=0))[0]
    assert r.model == DEFAULT_POLICY
    entries = r.choices[0].logprobs.content
    # llama.cpp's kernels round the Q4 products differently for a batch of tokens and for one token, and this
    # context uses flash attention (as llama-server does): the same log-prob differs by up to ~0.3 nats between
    # paths (measured for this first token: -2.29 here, -2.33 in the policy, -2.59 evaluated token by token), so
    # near-ties may pick other tokens later on. The first token and its log-prob agree within that.
    assert r.choices[0].model_extra["token_ids"][0] == local.token_ids[0]
    assert entries[0].logprob == pytest.approx(local.logprobs[0], abs=0.5)
    for e in entries:  # greedy: every token is its own row's most likely, and reported with its own log-prob
        assert e.top_logprobs[0].token == e.token and e.top_logprobs[0].logprob == e.logprob
        assert e.top_logprobs[1].logprob <= e.logprob and bytes(e.bytes) == e.token.encode()
    chunks = list(client.chat.completions.create(model=DEFAULT_POLICY, messages=QUESTION, max_tokens=8, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 8


def test_concurrent_clients_share_decode_steps_and_n_shares_the_prompt(client, server):
    engine = server.engine
    steps, evaluated = engine.steps, engine.prompt_tokens_evaluated
    results = {}

    def ask(i: int) -> None:
        results[i] = client.chat.completions.create(
            model=DEFAULT_POLICY, messages=[{"role": "user", "content": f"Tell me a fact about the number {i}."}],
            max_tokens=10, temperature=1.0, seed=i, extra_body={"ignore_eos": True})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[i].usage.completion_tokens == 10 for i in range(4))
    assert engine.steps - steps < 4 * 10  # decode steps were shared by the four requests
    steps, evaluated = engine.steps, engine.prompt_tokens_evaluated
    r = client.chat.completions.create(model=DEFAULT_POLICY, messages=[{"role": "user", "content": "Write a haiku."}],
                                       max_tokens=6, temperature=1.0, n=3, seed=1, logprobs=True,
                                       extra_body={"ignore_eos": True, "return_token_ids": True})
    prompt = r.model_extra["prompt_token_ids"]
    assert engine.prompt_tokens_evaluated - evaluated <= len(prompt)  # one evaluation for three samples
    assert engine.steps - steps <= 1 + 6  # the prompt, then one step per token for all three
    ids = [c.model_extra["token_ids"] for c in r.choices]
    assert len({tuple(i) for i in ids}) > 1
    assert all(len(c.logprobs.content) == 6 for c in r.choices)


def test_raw_completions_with_token_ids_and_echo(client, policy):
    ids = policy.llm.tokenize(b"The sky is", add_bos=True, special=True)
    a = client.completions.create(model=DEFAULT_POLICY, prompt="The sky is", max_tokens=4, temperature=0, echo=True,
                                  logprobs=1)
    b = client.completions.create(model=DEFAULT_POLICY, prompt=ids, max_tokens=4, temperature=0)
    assert a.choices[0].text == "The sky is" + b.choices[0].text
    assert len(a.choices[0].logprobs.tokens) == len(ids) + 4
    assert a.choices[0].logprobs.token_logprobs[0] is None


def test_leaving_mid_stream_stops_the_generation_and_frees_its_sequences(client, server):
    engine = server.engine
    idle = len(engine.idle)
    with client.chat.completions.create(model=DEFAULT_POLICY, messages=QUESTION, max_tokens=2000, n=2, stream=True,
                                        extra_body={"ignore_eos": True}) as stream:
        for k, _ in enumerate(stream):
            if k == 4:
                break
    deadline = time.monotonic() + 20
    while engine.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not engine.running and len(engine.idle) == idle
    steps = engine.steps
    time.sleep(1.0)
    assert engine.steps == steps
