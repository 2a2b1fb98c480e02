"""A small OpenAI-compatible HTTP server around any Policy (stdlib only, loopback only).

Endpoints:
- `GET /v1/models`: the one model, with `max_model_len` (as vLLM reports it).
- `POST /v1/chat/completions`: messages, tools, max_tokens (or max_completion_tokens), temperature,
  top_p, stop, seed, logprobs. Answers `choices[0].message.content`, `finish_reason`, `stop_reason`
  (the stop string that ended it, as vLLM does), `usage`, and with `logprobs: true`
  `logprobs.content[i] = {token, logprob, bytes, top_logprobs, token_id}` (`token_id` is
  non-standard; with vLLM's `return_tokens_as_token_ids: true`, `token` is `"token_id:N"`).
  Streaming and n > 1 are not supported. Unlike the OpenAI API, `content` keeps the stop string
  (the Evolve convention, see `agent.policy.base`).
- `POST /tokenize`: `{"messages": [...]}` -> `{"count", "max_model_len"}` (vLLM-compatible subset).

Requests that arrive together with the same sampling settings are answered by one batched
`Policy.generate` call (they wait at most `batch_wait_s` for company).

Limits, so one client cannot starve the others: `max_tokens` above `max_tokens_cap` is refused (400,
the message names the cap); a body over `max_body_bytes` is refused with 413 before it is read; a client
that stalls longer than `request_timeout_s` is disconnected; a request whose client disconnected while
it waited is dropped before generation (a generation already running finishes: the backends cannot stop
mid-batch). A `model` other than the served one is answered 404 (`model_not_found`), as OpenAI does.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import queue
import select
import socket
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent.policy import DEFAULT_POLICY, load_policy
from agent.policy.base import Generation, Policy, PolicyError, SamplingParams
from records.trajectory import Message, ToolCall

log = logging.getLogger(__name__)

MAX_TOKENS_CAP = 4096
"""Default largest `max_tokens` a request may ask for."""
MAX_BODY_BYTES = 32 << 20
"""Default largest request body (a long conversation with tool schemas is well under 1 MB)."""
REQUEST_TIMEOUT_S = 60.0
"""Default seconds a client may stall while sending a request or reading the reply."""
LISTEN_BACKLOG = 128
"""Connections the kernel queues before the server accepts them (the stdlib default of 5 resets clients)."""


class BadRequest(ValueError):
    """The request body is not something this server understands (answered with 400)."""


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    raise BadRequest(f"unsupported message content: {content!r}")


def parse_messages(raw: Any) -> list[Message]:
    """OpenAI chat messages -> Messages (tool-call arguments decoded from JSON)."""
    if not isinstance(raw, list) or not raw:
        raise BadRequest("`messages` must be a non-empty list")
    out = []
    for m in raw:
        role = m.get("role")
        if role not in ("system", "user", "assistant", "tool", "developer"):
            raise BadRequest(f"unsupported role {role!r}")
        calls = []
        for c in m.get("tool_calls") or []:
            fn = c.get("function", c)
            args = fn.get("arguments") or {}
            if isinstance(args, str):
                try:
                    args = json.loads(args) if args.strip() else {}
                except json.JSONDecodeError:
                    args = {"_raw_arguments": args}
            calls.append(ToolCall(name=fn["name"], arguments=args, id=c.get("id")))
        out.append(
            Message(
                role="system" if role == "developer" else role,
                content=_text(m.get("content")),
                tool_calls=calls,
                name=m.get("name"),
            )
        )
    return out


class HTTPError(Exception):
    """Answer with `status` and an OpenAI-shaped error."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.code, self.param = status, kind, code, param


def parse_tools(raw: Any) -> list[dict[str, Any]] | None:
    """OpenAI tool schemas: a list of `{"type": "function", "function": {"name": ..., ...}}`."""
    if raw is None or raw == []:
        return None
    if not isinstance(raw, list):
        raise BadRequest("`tools` must be a list of tool schemas")
    for i, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or tool.get("type", "function") != "function":
            raise BadRequest(f"`tools[{i}]` must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}")
        if not isinstance(fn.get("parameters", {}), dict):
            raise BadRequest(f"`tools[{i}].function.parameters` must be a JSON schema object")
    return raw


def check_port(host: str, port: int) -> None:
    """PolicyError unless `port` is a port number that is free on `host` (checked before a model loads)."""
    if not 0 <= port <= 65535:
        raise PolicyError(f"--port {port} is not a port number (0-65535)")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind((host, port))
        except OSError as e:
            raise PolicyError(_bind_error(host, port, e)) from None


def _bind_error(host: str, port: int, e: OSError) -> str:
    if e.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use by another process: pick another --port"
    if e.errno == errno.EACCES:
        return f"port {port} on {host} needs privileges: pick a port above 1023"
    return f"cannot listen on {host}:{port}: {e.strerror or e}"


def parse_params(body: dict[str, Any]) -> SamplingParams:
    """OpenAI request fields -> SamplingParams."""
    if body.get("stream"):
        raise BadRequest("streaming is not supported by this server")
    if body.get("n", 1) != 1:
        raise BadRequest("only n=1 is supported; send the conversation several times")
    stop = body.get("stop") or []
    fields: dict[str, Any] = {"stop": [stop] if isinstance(stop, str) else list(stop)}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    for key, value in (("max_tokens", max_tokens), ("temperature", body.get("temperature")),
                       ("top_p", body.get("top_p")), ("seed", body.get("seed"))):
        if value is not None:
            fields[key] = value
    try:
        return SamplingParams(**fields)
    except ValueError as e:
        raise BadRequest(str(e)) from e


class _Batcher:
    """Collects concurrent requests and runs those with equal settings as one `generate` batch."""

    def __init__(self, policy: Policy, batch_wait_s: float, max_batch: int) -> None:
        self.policy, self.batch_wait_s, self.max_batch = policy, batch_wait_s, max_batch
        self.queue: queue.Queue[tuple[str, list[Message], SamplingParams, Any, Future[Generation]] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="policy-batcher", daemon=True)
        self.thread.start()

    def submit(self, messages: list[Message], params: SamplingParams, tools: Any) -> Future[Generation]:
        """Queue a request; its future can be cancelled until its batch starts."""
        future: Future[Generation] = Future()
        key = params.model_dump_json() + json.dumps(tools, sort_keys=True)
        self.queue.put((key, messages, params, tools, future))
        return future

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=10)

    def _loop(self) -> None:
        pending: list[Any] = []
        while True:
            if not pending:
                item = self.queue.get()
                if item is None:
                    return
                pending.append(item)
            deadline = time.monotonic() + self.batch_wait_s
            while len(pending) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                try:
                    item = self.queue.get(timeout=left)
                except queue.Empty:
                    break
                if item is None:
                    self.queue.put(None)
                    break
                pending.append(item)
            key = pending[0][0]
            group = [p for p in pending if p[0] == key][: self.max_batch]
            pending = [p for p in pending if not any(p is g for g in group)]
            group = [g for g in group if g[4].set_running_or_notify_cancel()]  # their clients left: dropped
            if not group:
                continue
            params, tools = group[0][2], group[0][3]
            try:
                generations = self.policy.generate([g[1] for g in group], params, tools)
                for g, gen in zip(group, generations):
                    g[4].set_result(gen)
            except Exception as e:  # noqa: BLE001 - handed to each waiting request
                for g in group:
                    g[4].set_exception(e)


def completion_body(gen: Generation, model: str, params: SamplingParams, *, want_logprobs: bool,
                    ids_as_tokens: bool, tokenizer: Any = None) -> dict[str, Any]:
    """The OpenAI chat.completion JSON for one Generation."""
    message: dict[str, Any] = {"role": "assistant", "content": gen.text}
    if gen.tool_calls:
        message["tool_calls"] = [
            {"id": c.id or f"call_{uuid.uuid4().hex[:8]}", "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for c in gen.tool_calls
        ]
    stop_reason = next((s for s in params.stop if gen.text.endswith(s)), None) if gen.finish_reason == "stop" else None
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": gen.finish_reason,
                              "stop_reason": stop_reason, "logprobs": None}
    if want_logprobs and gen.token_ids is not None and gen.logprobs is not None:
        content = []
        for tid, lp in zip(gen.token_ids, gen.logprobs):
            text = tokenizer.decode([tid]) if tokenizer is not None else ""
            content.append({
                "token": f"token_id:{tid}" if ids_as_tokens else text,
                "logprob": lp,
                "bytes": list(text.encode("utf-8")),
                "top_logprobs": [],
                "token_id": tid,
            })
        choice["logprobs"] = {"content": content}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                  "total_tokens": gen.prompt_tokens + gen.completion_tokens},
    }


class _HTTPServer(ThreadingHTTPServer):
    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True


class PolicyServer:
    """An OpenAI-compatible server for `policy` on a loopback address. `start()` runs it in a thread."""

    def __init__(self, policy: Policy, host: str = "127.0.0.1", port: int = 8000, *, model_name: str | None = None,
                 batch_wait_s: float = 0.01, max_batch: int = 16, max_tokens_cap: int = MAX_TOKENS_CAP,
                 max_body_bytes: int = MAX_BODY_BYTES, request_timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        if not ipaddress.ip_address("127.0.0.1" if host == "localhost" else host).is_loopback:
            raise PolicyError(
                f"the policy server has no authentication and binds to loopback only, not {host!r}; "
                "reach it from elsewhere through an SSH tunnel or a reverse proxy"
            )
        if max_tokens_cap < 1 or max_body_bytes < 1 or request_timeout_s <= 0:
            raise PolicyError("max_tokens_cap, max_body_bytes and request_timeout_s must be positive")
        if not 0 <= port <= 65535:
            raise PolicyError(f"--port {port} is not a port number (0-65535)")
        self.policy = policy
        self.model_name = model_name or policy.spec or "policy"
        self.max_tokens_cap, self.max_body_bytes, self.request_timeout_s = max_tokens_cap, max_body_bytes, request_timeout_s
        try:
            self.httpd = _HTTPServer((host, port), self._handler_class())
        except OSError as e:
            raise PolicyError(_bind_error(host, port, e)) from None
        self.batcher = _Batcher(policy, batch_wait_s, max_batch)
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.httpd.server_address[0]}:{self.port}/v1"

    def start(self) -> int:
        """Serve in a background thread; return the bound port (useful with port 0)."""
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="policy-server", daemon=True)
        self.thread.start()
        log.info("policy server for %s on %s", self.model_name, self.url)
        return self.port

    def stop(self) -> None:
        """Stop serving and free the port (the policy stays open)."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.batcher.stop()

    def __enter__(self) -> PolicyServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = server.request_timeout_s  # a stalled client is dropped, its thread freed

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("%s " + fmt, self.address_string(), *args)

            def _send(self, status: int, body: dict[str, Any], close: bool = False) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if close:  # the rest of the request was not read: the connection cannot carry another
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, kind: str, code: str | None = None,
                       param: str | None = None, close: bool = False) -> None:
                self._send(status, {"error": {"message": message, "type": kind, "param": param,
                                              "code": code or status}}, close=close)

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/") in ("/v1/models", "/models"):
                    self._send(200, {"object": "list", "data": [server._model_card()]})
                elif self.path.rstrip("/") in ("/health", ""):
                    self._send(200, {"status": "ok"})
                else:
                    self._error(404, f"no route GET {self.path}", "not_found")

            def _body(self) -> dict[str, Any]:
                if self.headers.get("Transfer-Encoding"):
                    raise HTTPError(411, "send the body with a Content-Length (no Transfer-Encoding)")
                raw = self.headers.get("Content-Length")
                try:
                    length = int(raw) if raw is not None else 0
                except ValueError:
                    raise HTTPError(400, f"bad Content-Length {raw!r}") from None
                if length < 0:
                    raise HTTPError(400, f"bad Content-Length {raw!r}")
                if length > server.max_body_bytes:
                    raise HTTPError(413, f"the body is {length} bytes, over this server's limit of "
                                         f"{server.max_body_bytes}")
                data = self.rfile.read(length)
                if len(data) < length:
                    raise HTTPError(400, f"the body ended after {len(data)} of {length} bytes")
                try:
                    body = json.loads(data or b"{}")
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise BadRequest(f"the body is not JSON: {e}") from None
                if not isinstance(body, dict):
                    raise BadRequest("the body must be a JSON object")
                return body

            def _client_gone(self) -> bool:
                """The client closed its end while its request waited (EOF is readable on the socket)."""
                try:
                    if not select.select([self.connection], [], [], 0)[0]:
                        return False
                    return self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True

            def do_POST(self) -> None:  # noqa: N802
                read = False
                try:
                    body = self._body()
                    read = True
                    path = self.path.rstrip("/")
                    if path in ("/v1/chat/completions", "/chat/completions"):
                        reply = server._chat(body, gone=self._client_gone)
                        if reply is None:
                            log.info("client %s left before its generation started: dropped", self.address_string())
                            self.close_connection = True
                            return
                        self._send(200, reply)
                    elif path in ("/tokenize", "/v1/tokenize"):
                        count = server.policy.count_tokens(parse_messages(body.get("messages")))
                        self._send(200, {"count": count, "max_model_len": server.policy.context_length})
                    else:
                        self._error(404, f"no route POST {self.path}", "not_found")
                except HTTPError as e:
                    self._error(e.status, str(e), e.kind, e.code, e.param, close=not read)
                except (BadRequest, KeyError, TypeError, AttributeError, ValueError) as e:
                    self._error(400, f"bad request: {e}", "invalid_request_error", close=not read)
                except PolicyError as e:
                    self._error(400, str(e), "invalid_request_error")
                except (TimeoutError, ConnectionError) as e:  # the client stalled or left: nobody to answer
                    log.debug("client %s: %s", self.address_string(), e)
                    self.close_connection = True
                except Exception as e:  # noqa: BLE001
                    log.exception("policy server error")
                    self._error(500, f"{type(e).__name__}: {e}", "server_error")

        return Handler

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.model_name, "object": "model", "created": 0, "owned_by": "evolve",
                "max_model_len": self.policy.context_length}

    def _chat(self, body: dict[str, Any], gone: Any = lambda: False) -> dict[str, Any] | None:
        """The completion for `body`; None when `gone()` says the client left before generation began."""
        model = body.get("model")
        if model is not None and model != self.model_name:
            raise HTTPError(404, f"The model `{model}` does not exist (this server serves `{self.model_name}`).",
                            code="model_not_found", param="model")
        messages = parse_messages(body.get("messages"))
        params = parse_params(body)
        if params.max_tokens > self.max_tokens_cap:
            raise HTTPError(400, f"max_tokens {params.max_tokens} is over this server's cap of {self.max_tokens_cap} "
                                 "(evolve serve --max-tokens-cap)", param="max_tokens")
        tools = parse_tools(body.get("tools"))
        future = self.batcher.submit(messages, params, tools)
        while True:
            try:
                gen = future.result(timeout=0.2)
                break
            except FutureTimeout:
                if gone() and future.cancel():
                    return None
        return completion_body(
            gen, self.model_name, params,
            want_logprobs=bool(body.get("logprobs")),
            ids_as_tokens=bool(body.get("return_tokens_as_token_ids")),
            tokenizer=getattr(self.policy, "tokenizer", None),
        )


def serve(policy: Policy, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> None:
    """Serve `policy` until interrupted (blocking)."""
    server = PolicyServer(policy, host, port, **options)
    log.info("serving %s at %s", server.model_name, server.url)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
        server.batcher.stop()


def serve_in_thread(policy: Policy, host: str = "127.0.0.1", port: int = 0, **options: Any) -> PolicyServer:
    """Start a server in a background thread and return it (`.port`, `.url`, `.stop()`)."""
    server = PolicyServer(policy, host, port, **options)
    server.start()
    return server


def main() -> None:
    """`python -m agent.policy.server --policy SPEC --port 8000`: serve a policy until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(description="OpenAI-compatible server around an Evolve policy (loopback only)")
    parser.add_argument("--policy", default=DEFAULT_POLICY, help="policy spec (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-tokens-cap", type=int, default=MAX_TOKENS_CAP,
                        help="largest max_tokens a request may ask for (default: %(default)s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        check_port(args.host, args.port)  # before a model loads for minutes
        policy = load_policy(args.policy)
        serve(policy, args.host, args.port, max_tokens_cap=args.max_tokens_cap)
    except PolicyError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
