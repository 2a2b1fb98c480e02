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
"""

from __future__ import annotations

import ipaddress
import json
import logging
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent.policy.base import Generation, Policy, PolicyError, SamplingParams
from records.trajectory import Message, ToolCall

log = logging.getLogger(__name__)


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

    def submit(self, messages: list[Message], params: SamplingParams, tools: Any) -> Generation:
        future: Future[Generation] = Future()
        key = params.model_dump_json() + json.dumps(tools, sort_keys=True)
        self.queue.put((key, messages, params, tools, future))
        return future.result()

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


class PolicyServer:
    """An OpenAI-compatible server for `policy` on a loopback address. `start()` runs it in a thread."""

    def __init__(self, policy: Policy, host: str = "127.0.0.1", port: int = 8000, *, model_name: str | None = None,
                 batch_wait_s: float = 0.01, max_batch: int = 16) -> None:
        if not ipaddress.ip_address("127.0.0.1" if host == "localhost" else host).is_loopback:
            raise PolicyError(
                f"the policy server has no authentication and binds to loopback only, not {host!r}; "
                "reach it from elsewhere through an SSH tunnel or a reverse proxy"
            )
        self.policy = policy
        self.model_name = model_name or policy.spec or "policy"
        self.batcher = _Batcher(policy, batch_wait_s, max_batch)
        self.httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self.httpd.daemon_threads = True
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

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("%s " + fmt, self.address_string(), *args)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, kind: str) -> None:
                self._send(status, {"error": {"message": message, "type": kind, "code": status}})

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/") in ("/v1/models", "/models"):
                    self._send(200, {"object": "list", "data": [server._model_card()]})
                elif self.path.rstrip("/") in ("/health", ""):
                    self._send(200, {"status": "ok"})
                else:
                    self._error(404, f"no route GET {self.path}", "not_found")

            def do_POST(self) -> None:  # noqa: N802
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    body = json.loads(self.rfile.read(length) or b"{}")
                    if not isinstance(body, dict):
                        raise BadRequest("the body must be a JSON object")
                    path = self.path.rstrip("/")
                    if path in ("/v1/chat/completions", "/chat/completions"):
                        self._send(200, server._chat(body))
                    elif path in ("/tokenize", "/v1/tokenize"):
                        count = server.policy.count_tokens(parse_messages(body.get("messages")))
                        self._send(200, {"count": count, "max_model_len": server.policy.context_length})
                    else:
                        self._error(404, f"no route POST {self.path}", "not_found")
                except (BadRequest, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                    self._error(400, f"bad request: {e}", "invalid_request_error")
                except PolicyError as e:
                    self._error(400, str(e), "invalid_request_error")
                except Exception as e:  # noqa: BLE001
                    log.exception("policy server error")
                    self._error(500, f"{type(e).__name__}: {e}", "server_error")

        return Handler

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.model_name, "object": "model", "created": 0, "owned_by": "evolve",
                "max_model_len": self.policy.context_length}

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = parse_messages(body.get("messages"))
        params = parse_params(body)
        tools = body.get("tools") or None
        gen = self.batcher.submit(messages, params, tools)
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

    from agent.policy import DEFAULT_POLICY, load_policy

    parser = argparse.ArgumentParser(description="OpenAI-compatible server around an Evolve policy (loopback only)")
    parser.add_argument("--policy", default=DEFAULT_POLICY, help="policy spec (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        policy = load_policy(args.policy)
        serve(policy, args.host, args.port)
    except PolicyError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
