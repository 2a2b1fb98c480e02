"""`evolve serve` under hostile or careless clients: many at once, stalled, huge bodies, huge max_tokens,
clients that leave, wrong models, malformed headers and tools, busy and invalid ports."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from agent.policy.base import Generation, Policy, PolicyError, SamplingParams
from agent.policy.server import PolicyServer, serve_in_thread
from records.trajectory import Message


class SlowPolicy(Policy):
    """Answers each conversation with its last message, after `delay` seconds per batch; records what it
    generated."""

    spec = "slow"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.generated: list[str] = []
        self.lock = threading.Lock()

    @property
    def context_length(self) -> int:
        return 4096

    def generate(self, conversations: list[list[Message]], params: SamplingParams, tools=None) -> list[Generation]:
        time.sleep(self.delay)
        with self.lock:
            self.generated += [c[-1].content for c in conversations]
        return [Generation(text=c[-1].content, finish_reason="stop", prompt_tokens=1, completion_tokens=1)
                for c in conversations]

    def count_tokens(self, messages: list[Message]) -> int:
        return len(messages)


def chat(text: str, **extra) -> dict:
    return {"model": "slow", "messages": [{"role": "user", "content": text}], "max_tokens": 8, **extra}


@pytest.fixture
def server():
    s = serve_in_thread(SlowPolicy(), port=0, model_name="slow", batch_wait_s=0.0, request_timeout_s=1.0,
                        max_body_bytes=1 << 20, max_tokens_cap=256)
    yield s
    s.stop()


def raw(server: PolicyServer, data: bytes, *, read: bool = True, timeout: float = 10) -> bytes:
    """Send raw bytes, return what the server answers until it closes or `timeout` passes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while read:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out:
                head, _, body = out.partition(b"\r\n\r\n")
                length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")), 0)
                if len(body) >= length:
                    break
        return out


def test_backlog_holds_many_concurrent_clients(server):
    if shutil.which("ss"):
        out = subprocess.run(["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True).stdout
        assert int(out.split()[2]) >= 128  # Send-Q of a listening socket is its backlog
    server.policy.delay = 0.05  # the batcher is busy while connections pile up
    with ThreadPoolExecutor(64) as pool:
        codes = list(pool.map(lambda i: httpx.post(f"{server.url}/chat/completions", json=chat(f"q{i}"),
                                                   timeout=60).status_code, range(64)))
    assert codes == [200] * 64


def test_stalled_clients_are_dropped_and_do_not_block_others(server):
    stalled = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
    for s in stalled:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"mess")  # and nothing more
    start = time.monotonic()
    assert httpx.post(f"{server.url}/chat/completions", json=chat("hi"), timeout=10).status_code == 200
    for s in stalled:  # the server closes each one after its request timeout (1 s here)
        s.settimeout(10)
        assert s.recv(65536) == b""
        s.close()
    assert time.monotonic() - start < 8


def test_huge_body_is_refused_unread(server):
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: 300000000\r\n\r\n{\"messages\": [")
    start = time.monotonic()
    reply = raw(server, head)
    assert reply.startswith(b"HTTP/1.1 413") and b"over this server's limit" in reply
    assert time.monotonic() - start < 5  # answered without waiting for 300 MB


@pytest.mark.parametrize("length", [b"abc", b"-5", b"1e3"])
def test_bad_content_length_is_400(server, length: bytes):
    reply = raw(server, b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: " + length + b"\r\n\r\n{}")
    assert reply.startswith(b"HTTP/1.1 400") and b"Content-Length" in reply


@pytest.mark.parametrize("tools", ["x", [1], [{"type": "function"}], [{"function": {"name": 3}}],
                                   [{"type": "function", "function": {"name": "f", "parameters": "no"}}]])
def test_garbage_tools_are_400(server, tools):
    r = httpx.post(f"{server.url}/chat/completions", json=chat("hi", tools=tools), timeout=10)
    assert r.status_code == 400 and "tools" in r.json()["error"]["message"]


def test_garbage_bodies_are_400(server):
    for body in (b"not json", b"[1, 2]", b"\xff\xfe", json.dumps({"messages": ["x"]}).encode(),
                 json.dumps({"messages": [{"role": "user", "content": 5}]}).encode()):
        r = httpx.post(f"{server.url}/chat/completions", content=body, timeout=10)
        assert r.status_code == 400, (body, r.text)


def test_wrong_model_is_404_in_openai_shape(server):
    r = httpx.post(f"{server.url}/chat/completions", json=chat("hi", model="gpt-4o"), timeout=10)
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model" and "gpt-4o" in error["message"]
    assert error["type"] == "invalid_request_error"
    assert httpx.post(f"{server.url}/chat/completions", json=chat("hi", model=None), timeout=10).status_code == 200


def test_huge_max_tokens_is_refused_with_the_cap(server):
    r = httpx.post(f"{server.url}/chat/completions", json=chat("hi", max_tokens=10_000_000), timeout=10)
    assert r.status_code == 400 and "cap of 256" in r.json()["error"]["message"]
    assert server.policy.generated == []
    assert httpx.post(f"{server.url}/chat/completions", json=chat("ok", max_tokens=256), timeout=10).status_code == 200


def test_a_request_whose_client_left_is_not_generated(server):
    server.policy.delay = 1.0
    busy = threading.Thread(target=lambda: httpx.post(f"{server.url}/chat/completions", json=chat("first"),
                                                      timeout=30))
    busy.start()
    time.sleep(0.3)  # "first" is generating; the next one waits in the queue
    body = json.dumps(chat("abandoned")).encode()
    raw(server, b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body, read=False)
    busy.join()
    time.sleep(1.5)
    assert server.policy.generated == ["first"]


def test_busy_and_invalid_ports_are_one_line_errors():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PolicyError, match=f"port {port} on 127.0.0.1 is in use"):
            PolicyServer(SlowPolicy(), port=port)
        r = subprocess.run([sys.executable, "-m", "evolve.cli", "serve", "--port", str(port)],
                           capture_output=True, text=True, timeout=120, env={**os.environ})
        assert r.returncode == 2 and "Traceback" not in r.stderr and "in use" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    for bad in ("70000", "-1"):
        r = subprocess.run([sys.executable, "-m", "evolve.cli", "serve", "--port", bad],
                           capture_output=True, text=True, timeout=120, env={**os.environ})
        assert r.returncode == 2 and "Traceback" not in r.stderr and "not a port number" in r.stderr, r.stderr
    with pytest.raises(PolicyError, match="not a port number"):
        PolicyServer(SlowPolicy(), port=70000)
