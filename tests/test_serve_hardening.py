"""`evolve serve` attacked as issue 18 item 11 describes: slowloris connections, foreign Host / Origin headers
(a web page on the machine), 100,000-deep JSON, values of the wrong type, and clients that drop mid-request
or mid-stream (no traceback may reach stderr)."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from agent.policy.serve import serve_in_thread
from tests.test_policy_server_limits import SlowPolicy, chat


@pytest.fixture
def server():
    s = serve_in_thread(SlowPolicy(), port=0, model_name="slow", batch_wait_s=0.0, request_timeout_s=1.0,
                        max_body_bytes=1 << 20, max_tokens_cap=256, max_connections=16)
    yield s
    s.stop()


def post(server, body, **headers):
    return httpx.post(f"{server.url}/chat/completions", json=body, headers=headers, timeout=10)


def test_slowloris_is_cut_off_at_the_deadline_not_kept_alive_by_each_byte(server):
    """Each connection sends one byte of headers every 0.3 s, well inside the 1 s per-receive timeout;
    the deadline for the whole header (1 s) cuts them anyway, and the cap (16) refuses the rest at once."""
    socks = []
    for _ in range(40):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.settimeout(10)
        socks.append(s)
    stop = threading.Event()

    def dribble() -> None:
        header = b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 1000
        for i in range(len(header)):
            if stop.is_set():
                return
            for s in socks:
                try:
                    s.send(header[i: i + 1])
                except OSError:
                    pass
            time.sleep(0.3)

    threading.Thread(target=dribble, daemon=True).start()
    start = time.monotonic()
    try:
        refused = closed = 0
        for s in socks:  # every connection ends: 503 at once past the cap, else closed at the deadline
            data = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except (ConnectionResetError, TimeoutError):
                    break
                if not chunk:
                    break
                data += chunk
            if data.startswith(b"HTTP/1.1 503"):
                refused += 1
            else:
                closed += 1
        assert time.monotonic() - start < 6  # not the 0.3 s x 1000 bytes the clients would take
        assert refused >= 40 - 16 and closed >= 1
        assert post(server, chat("after")).status_code == 200  # the server serves again
        assert server.httpd.active <= 1
    finally:
        stop.set()
        for s in socks:
            s.close()


def test_a_slow_body_is_cut_off_at_its_deadline(server):
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.settimeout(10)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n")
        start = time.monotonic()
        got = b""
        try:
            for _ in range(100):  # a byte every 0.2 s: each inside the receive timeout
                s.sendall(b" ")
                time.sleep(0.2)
        except OSError:
            pass
        try:
            while chunk := s.recv(65536):
                got += chunk
        except OSError:
            pass
        assert time.monotonic() - start < 5
        assert b"200 OK" not in got


@pytest.mark.parametrize("headers", [{"Host": "evil.example"}, {"Host": "192.168.1.5:8000"},
                                     {"Origin": "http://evil.example"}, {"Origin": "null"},
                                     {"Host": "localhost", "Origin": "https://attacker.test:8000"}])
def test_foreign_host_or_origin_is_refused(server, headers):
    r = post(server, chat("hi"), **headers)
    assert r.status_code == 403 and r.json()["error"]["type"] == "forbidden"
    r = httpx.get(f"{server.url}/models", headers=headers, timeout=10)
    assert r.status_code == 403
    assert server.policy.generated == []


@pytest.mark.parametrize("headers", [{}, {"Host": "localhost:8000"}, {"Host": "127.0.0.1"}, {"Host": "[::1]:1"},
                                     {"Origin": "http://localhost:3000"}, {"Origin": "http://127.0.0.1"}])
def test_loopback_host_and_origin_are_served(server, headers):
    assert post(server, chat("hi"), **headers).status_code == 200


def test_deeply_nested_json_is_400(server):
    for depth in (100_000, 200):
        body = b'{"messages": ' + b"[" * depth + b"]" * depth + b"}"
        r = httpx.post(f"{server.url}/chat/completions", content=body, timeout=10)
        assert r.status_code == 400 and "nested deeper" in r.json()["error"]["message"], (depth, r.text)
    r = httpx.post(f"{server.url}/chat/completions", content=b'{"a": ' + b'{"b": ' * 100_000, timeout=10)
    assert r.status_code == 400
    assert post(server, chat("still fine")).status_code == 200


@pytest.mark.parametrize("field,value,word", [
    ("max_tokens", True, "integer"), ("max_tokens", "7", "integer"), ("max_tokens", 7.5, "integer"),
    ("max_tokens", 0, "at least"), ("temperature", "hot", "number"), ("temperature", -1, "temperature"),
    ("top_p", 0, "top_p"), ("stop", {"a": 1}, "stop"), ("stop", [1, 2], "stop"), ("n", 0, "n"),
    ("n", True, "integer"), ("n", 100, "at most"), ("logprobs", 1, "logprobs"), ("seed", "1", "integer"),
    ("stream", 1, "stream"), ("top_logprobs", -3, "top_logprobs"), ("presence_penalty", 1.0, "presence_penalty"),
    ("tool_choice", "sometimes", "tool_choice"), ("model", 5, "model"), ("stream_options", [], "stream_options"),
])
def test_values_of_the_wrong_type_are_one_400(server, field, value, word):
    body = chat("hi", **{field: value})
    if field == "top_logprobs":
        body["logprobs"] = True
    r = post(server, body)
    assert r.status_code == 400, r.text
    assert word in r.json()["error"]["message"]
    assert server.policy.generated == []


@pytest.mark.parametrize("literal", [b"Infinity", b"-Infinity", b"NaN"])
def test_non_finite_numbers_are_400(server, literal):
    body = b'{"messages": [{"role": "user", "content": "hi"}], "temperature": ' + literal + b"}"
    r = httpx.post(f"{server.url}/chat/completions", content=body, timeout=10)
    assert r.status_code == 400 and "finite" in r.json()["error"]["message"]
    assert server.policy.generated == []


def test_dropped_clients_leave_no_traceback_on_stderr(server, capfd):
    server.policy.delay = 0.2
    body = json.dumps(chat("x")).encode()
    request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    stream_body = json.dumps(chat("y", stream=True)).encode()
    stream_request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n"
                      % len(stream_body) + stream_body)
    for i in range(30):
        s = socket.create_connection(("127.0.0.1", server.port))
        if i % 3 == 0:  # reset (RST) right after sending the request
            s.sendall(request)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        elif i % 3 == 1:  # half a request, then gone
            s.sendall(request[: len(request) // 2])
        else:  # a stream, left after its first bytes
            s.sendall(stream_request)
            s.settimeout(5)
            try:
                s.recv(10)
            except OSError:
                pass
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    time.sleep(2.5)  # generations finish and find their clients gone; stalled ones time out
    assert post(server, chat("alive")).status_code == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception" not in err, err[-3000:]
