"""The OpenAI-compatible backend against real servers: agent.policy.server around the tiny HF policy,
and small stdlib servers that fail on purpose (500s, refused extras, native tool calls)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from agent.policy import Generation, Policy, PolicyError, SamplingParams, load_policy
from agent.policy.hf import HFPolicy
from agent.policy.openai_compat import OpenAIPolicy, _wire_messages
from agent.policy.server import PolicyServer, serve_in_thread
from records.trajectory import Message, ToolCall
from tests.tiny_model import build_tiny_model

CONVERSATIONS = [
    [Message(role="user", content="hi")],
    [Message(role="system", content="You are terse."), Message(role="user", content="What is the weather in Paris?")],
    [Message(role="user", content="def add(a, b):")],
    [Message(role="user", content="list the files")],
]


class RecordingPolicy(Policy):
    """Delegates to a real policy and records the batch sizes it was asked for."""

    def __init__(self, inner: HFPolicy) -> None:
        self.inner, self.spec, self.batches = inner, inner.spec, []
        self.tokenizer = inner.tokenizer

    @property
    def context_length(self) -> int:
        return self.inner.context_length

    def generate(self, conversations, params, tools=None) -> list[Generation]:
        self.batches.append(len(conversations))
        return self.inner.generate(conversations, params, tools)

    def count_tokens(self, messages) -> int:
        return self.inner.count_tokens(messages)


@pytest.fixture(scope="module")
def hf_policy(tmp_path_factory: pytest.TempPathFactory) -> HFPolicy:
    return load_policy(f"hf:{build_tiny_model(tmp_path_factory.mktemp('tiny') / 'model', init_std=0.2)}")


@pytest.fixture(scope="module")
def served(hf_policy: HFPolicy):
    recording = RecordingPolicy(hf_policy)
    server = serve_in_thread(recording, port=0, model_name="tiny", batch_wait_s=0.05)
    yield server, recording
    server.stop()


@pytest.fixture
def client(served) -> OpenAIPolicy:
    server, _ = served
    policy = load_policy(f"openai:{server.url}#tiny", concurrency=4, backoff_s=0.01)
    yield policy
    policy.close()


def test_openai_backend_matches_the_served_policy(client: OpenAIPolicy, served, hf_policy: HFPolicy) -> None:
    params = SamplingParams(max_tokens=8, temperature=0.0)
    remote = client.generate(CONVERSATIONS, params)
    local = hf_policy.generate(CONVERSATIONS, params)
    assert len(remote) == len(CONVERSATIONS)
    for r, l in zip(remote, local):
        assert r.text == l.text and r.token_ids == l.token_ids  # ids come back through the logprobs
        assert r.logprobs == pytest.approx(l.logprobs, abs=1e-4)
        assert r.prompt_tokens == l.prompt_tokens and r.completion_tokens == l.completion_tokens
        assert r.finish_reason == "length"
    _, recording = served
    assert max(recording.batches) > 1  # the concurrent requests were served as one batch


def test_sampling_with_seed_and_stop_string(client: OpenAIPolicy, hf_policy: HFPolicy) -> None:
    full = hf_policy.generate([CONVERSATIONS[1]], SamplingParams(max_tokens=16, temperature=0.0))[0]
    stop = full.text[4:6]
    gen = client.generate([CONVERSATIONS[1]], SamplingParams(max_tokens=16, temperature=0.0, stop=[stop]))[0]
    assert gen.finish_reason == "stop" and gen.text == full.text[: full.text.index(stop) + 2]
    sampled = client.generate(CONVERSATIONS[:2] * 2, SamplingParams(max_tokens=6, temperature=1.0, seed=5))
    again = client.generate(CONVERSATIONS[:2] * 2, SamplingParams(max_tokens=6, temperature=1.0, seed=5))
    assert [g.token_ids for g in sampled] == [g.token_ids for g in again]
    assert all(len(g.logprobs) == len(g.token_ids) and max(g.logprobs) <= 0 for g in sampled)


def test_models_context_length_and_token_count(client: OpenAIPolicy, hf_policy: HFPolicy) -> None:
    assert client.context_length == hf_policy.context_length == 2048
    assert client.count_tokens(CONVERSATIONS[1]) == hf_policy.count_tokens(CONVERSATIONS[1])
    unnamed = OpenAIPolicy(client.base)  # no #model: the server's first model
    assert unnamed.model == "tiny"
    unnamed.close()


def test_server_rejects_bad_requests_and_non_loopback(served, hf_policy: HFPolicy) -> None:
    server, _ = served
    r = httpx.post(f"{server.url}/chat/completions", json={"messages": [], "max_tokens": 2})
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    r = httpx.post(f"{server.url}/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "stream": "yes"})
    assert r.status_code == 400 and "stream" in r.json()["error"]["message"]
    with pytest.raises(PolicyError, match="loopback"):
        PolicyServer(hf_policy, host="0.0.0.0", port=0)


# ---- failure handling, against small scripted servers ------------------------------------------


def completion(text: str = "ok", **extra: Any) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, **extra.pop("message", {})},
                     "finish_reason": extra.pop("finish_reason", "stop"), **extra}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }


class Scripted:
    """A stdlib HTTP server answering POSTs from a script of (status, body) pairs; records requests."""

    def __init__(self, script: list[tuple[int, dict[str, Any]]]) -> None:
        self.script, self.requests = list(script), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((dict(self.headers), body))
                status, answer = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                if callable(answer):
                    status, answer = answer(body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    servers: list[Scripted] = []

    def make(script):
        servers.append(Scripted(script))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_5xx_is_retried_with_backoff(scripted) -> None:
    server = scripted([(500, {"error": "boom"}), (503, {"error": "busy"}), (200, completion("fine"))])
    policy = OpenAIPolicy(f"{server.url}#m", backoff_s=0.01, context_length=100)
    gen = policy.generate([CONVERSATIONS[0]], SamplingParams(max_tokens=4))[0]
    assert gen.text == "fine" and len(server.requests) == 3
    assert gen.token_ids is None and gen.logprobs is None  # this server gave no log-probs
    policy.close()


def test_429_is_retried_and_persistent_errors_raise(scripted) -> None:
    server = scripted([(429, {"error": "slow down"}), (200, completion())])
    policy = OpenAIPolicy(f"{server.url}#m", backoff_s=0.01)
    assert policy.generate([CONVERSATIONS[0]], SamplingParams())[0].text == "ok"
    failing = scripted([(500, {"error": "down"})])
    policy = OpenAIPolicy(f"{failing.url}#m", backoff_s=0.01, max_retries=2)
    with pytest.raises(PolicyError, match="answered 500 after 3 tries"):
        policy.generate([CONVERSATIONS[0]], SamplingParams())
    assert len(failing.requests) == 3


def test_4xx_is_not_retried_and_names_the_fix(scripted) -> None:
    server = scripted([(401, {"error": "bad key"})])
    policy = OpenAIPolicy(f"{server.url}#m", api_key="sk-test", token_ids=False)
    with pytest.raises(PolicyError, match="OPENAI_API_KEY"):
        policy.generate([CONVERSATIONS[0]], SamplingParams())
    assert len(server.requests) == 1 and server.requests[0][0]["Authorization"] == "Bearer sk-test"


def test_server_refusing_vllm_extras_is_asked_again_without_them(scripted) -> None:
    def answer(body):
        if "return_tokens_as_token_ids" in body:
            return 400, {"error": "unknown field return_tokens_as_token_ids"}
        return 200, completion("x", logprobs={"content": [{"token": "x", "logprob": -0.5}]})

    server = scripted([(200, answer)])
    policy = OpenAIPolicy(f"{server.url}#m")
    gen = policy.generate([CONVERSATIONS[0]], SamplingParams())[0]
    assert gen.logprobs == [-0.5] and gen.token_ids is None
    policy.generate([CONVERSATIONS[0]], SamplingParams())
    assert len(server.requests) == 3  # refused once, then never sent again


def test_native_tool_calls_and_stop_reason(scripted) -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": '{"command": "ls"}'}}]
    server = scripted([
        (200, completion("", message={"tool_calls": calls}, finish_reason="tool_calls")),
        (200, completion("answer", stop_reason="</tool_call>")),
    ])
    policy = OpenAIPolicy(f"{server.url}#m")
    tools = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]
    gen = policy.generate([CONVERSATIONS[0]], SamplingParams(), tools=tools)[0]
    assert gen.tool_calls == [ToolCall(name="bash", arguments={"command": "ls"}, id="call_1")]
    assert gen.finish_reason == "tool_calls" and server.requests[0][1]["tools"] == tools
    gen = policy.generate([CONVERSATIONS[0]], SamplingParams(stop=["</tool_call>"]))[0]
    assert gen.text == "answer</tool_call>"  # Evolve keeps the stop string the server dropped


def test_tool_results_carry_the_call_id() -> None:
    wire = _wire_messages([
        Message(role="user", content="go"),
        Message(role="assistant", content="", tool_calls=[ToolCall(name="a", id="c1"), ToolCall(name="b", id="c2")]),
        Message(role="tool", content="B", name="b"),
        Message(role="tool", content="A", name="a"),
    ])
    assert [m.get("tool_call_id") for m in wire] == [None, None, "c2", "c1"]
    assert wire[1]["tool_calls"][0]["function"]["arguments"] == "{}"


def test_closed_port_is_a_quick_policy_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = load_policy(f"openai:http://127.0.0.1:{port}/v1#m")
    started = time.monotonic()
    with pytest.raises(PolicyError, match="cannot reach .* start the server or check the URL"):
        policy.generate([CONVERSATIONS[0]], SamplingParams())
    assert time.monotonic() - started < 5
    policy.close()
