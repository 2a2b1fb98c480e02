"""The HTTP side of `evolve serve`: routes, limits, JSON and server-sent events (stdlib only).

Limits, so that one client cannot starve the others or reach the model from where it should not:
- at most `max_connections` connections at once; more are answered 503 at once and closed;
- a request's line and headers must arrive within `request_timeout_s` of its first byte (or of the
  previous request on a kept-alive connection), and its body within `request_timeout_s` more: a client
  that sends a byte now and then is cut off when the time is up, not kept alive by each byte;
- a body over `max_body_bytes` is refused with 413 before it is read;
- a `Host` header that is not a loopback name (localhost, 127.x.x.x, ::1) and any `Origin` header that is
  not a loopback origin are refused with 403, so a web page cannot use the model (DNS rebinding, CORS);
- a client that leaves is noticed while its request waits or generates: its generation stops; errors of
  dropped connections are logged at debug level, never as tracebacks.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import queue
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from agent.policy.base import PolicyError
from agent.policy.serve import schema
from agent.policy.serve.engine import Done, EngineError, Failed, Finish, Job, Prompt, Token
from agent.policy.serve.responses import Builder
from agent.policy.serve.schema import BadRequest, HTTPError

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 128
"""Connections the kernel queues before the server accepts them (the stdlib default of 5 resets clients)."""
GONE_CHECK_S = 0.2
"""How often a waiting or generating request checks that its client is still there."""

_DISCONNECTS = (ConnectionError, TimeoutError, BrokenPipeError, socket.timeout)


def is_loopback_host(host: str) -> bool:
    """Whether a Host header or an origin's host names this machine's loopback (with or without a port)."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host in ("localhost", "localhost.") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HTTPServer(ThreadingHTTPServer):
    """A threading server with a connection cap and per-phase deadlines enforced by a reaper thread."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type, *, max_connections: int) -> None:
        self.max_connections = max_connections
        self.active = 0
        self._count_lock = threading.Lock()
        self.deadlines: dict[socket.socket, float] = {}
        self._deadline_lock = threading.Lock()
        self._reaping = True
        super().__init__(address, handler)
        self._reaper = threading.Thread(target=self._reap, name="policy-server-reaper", daemon=True)
        self._reaper.start()

    def arm(self, sock: socket.socket, seconds: float) -> None:
        with self._deadline_lock:
            self.deadlines[sock] = time.monotonic() + seconds

    def disarm(self, sock: socket.socket) -> None:
        with self._deadline_lock:
            self.deadlines.pop(sock, None)

    def _reap(self) -> None:
        while self._reaping:
            time.sleep(0.1)
            now = time.monotonic()
            with self._deadline_lock:
                late = [s for s, t in self.deadlines.items() if t <= now]
                for s in late:
                    del self.deadlines[s]
            for s in late:
                log.debug("a client ran out of time sending its request: disconnected")
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._count_lock:
            busy = self.active >= self.max_connections
            if not busy:
                self.active += 1
        if busy:
            body = json.dumps({"error": {"message": f"this server holds {self.max_connections} connections at most; "
                                                    "retry shortly", "type": "server_error", "param": None,
                                         "code": 503}}).encode()
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            with self._count_lock:
                self.active -= 1
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.disarm(request)
            with self._count_lock:
                self.active -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (*_DISCONNECTS, OSError)):
            log.debug("client %s dropped: %r", client_address, error)
        else:
            log.error("policy server: unexpected error with client %s: %r", client_address, error)

    def server_close(self) -> None:
        self._reaping = False
        super().server_close()


def make_handler(server: Any) -> type[BaseHTTPRequestHandler]:
    """The request handler class for a `PolicyServer`."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = server.request_timeout_s  # one stalled send or receive
        server_version = "evolve-serve"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s " + fmt, self.address_string(), *args)

        # ---- limits ----------------------------------------------------------------------------

        def handle_one_request(self) -> None:
            self.server.arm(self.connection, server.request_timeout_s)  # request line and headers
            try:
                super().handle_one_request()
            except _DISCONNECTS as e:
                log.debug("client %s: %r", self.client_address, e)
                self.close_connection = True
            finally:
                self.server.disarm(self.connection)

        def parse_request(self) -> bool:
            if not super().parse_request():
                return False
            self.server.disarm(self.connection)
            host = self.headers.get("Host")
            if host is not None and not is_loopback_host(host):
                self._error(403, f"Host {host!r} is not a loopback name: this server answers only requests "
                                 "addressed to localhost", "forbidden", close=True)
                return False
            origin = self.headers.get("Origin")
            if origin is not None:
                parts = urlsplit(origin)
                if parts.scheme not in ("http", "https") or not is_loopback_host(parts.netloc):
                    self._error(403, f"Origin {origin!r} is not a loopback origin: web pages cannot use this "
                                     "server", "forbidden", close=True)
                    return False
            return True

        def _client_gone(self) -> bool:
            """The client closed its end (EOF is readable on the socket)."""
            try:
                if not select.select([self.connection], [], [], 0)[0]:
                    return False
                return self.connection.recv(1, socket.MSG_PEEK) == b""
            except (OSError, ValueError):
                return True

        # ---- writing ---------------------------------------------------------------------------

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

        def _error(self, status: int, message: str, kind: str, code: str | int | None = None,
                   param: str | None = None, close: bool = False) -> None:
            self._send(status, {"error": {"message": message, "type": kind, "param": param,
                                          "code": code or status}}, close=close)

        def _start_stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

        def _event(self, payload: dict[str, Any] | str) -> None:
            text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
            data = f"data: {text}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        def _end_stream(self) -> None:
            self._event("[DONE]")
            self.wfile.write(b"0\r\n\r\n")

        # ---- routes ----------------------------------------------------------------------------

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0].rstrip("/")
            if path in ("/v1/models", "/models"):
                self._send(200, {"object": "list", "data": server.models.cards()})
            elif path.startswith(("/v1/models/", "/models/")):
                name = path.split("/models/", 1)[1]
                try:
                    canonical, engine = server.models.acquire(name)
                    server.models.release(engine)
                    self._send(200, server.models.card(canonical))
                except HTTPError as e:
                    self._error(e.status, str(e), e.kind, e.code, e.param)
            elif path in ("/health", ""):
                self._send(200, {"status": "ok"})
            else:
                self._error(404, f"no route GET {self.path}", "not_found")

        def do_OPTIONS(self) -> None:  # noqa: N802 - a CORS preflight: no cross-origin access is granted
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

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
            self.server.arm(self.connection, server.request_timeout_s)  # the whole body, in time
            try:
                data = self.rfile.read(length)
            finally:
                self.server.disarm(self.connection)
            if len(data) < length:
                raise HTTPError(400, f"the body ended after {len(data)} of {length} bytes")
            return schema.decode_body(data)

        def do_POST(self) -> None:  # noqa: N802
            read = False
            try:
                body = self._body()
                read = True
                path = self.path.split("?", 1)[0].rstrip("/")
                if path in ("/v1/chat/completions", "/chat/completions"):
                    request = schema.parse_chat(body, max_tokens_default=server.default_max_tokens,
                                                max_tokens_cap=server.max_tokens_cap)
                    self._generate(request)
                elif path in ("/v1/completions", "/completions"):
                    self._generate(schema.parse_completion(body, max_tokens_cap=server.max_tokens_cap))
                elif path in ("/tokenize", "/v1/tokenize"):
                    self._tokenize(body)
                else:
                    self._error(404, f"no route POST {self.path}", "not_found")
            except HTTPError as e:
                self._error(e.status, str(e), e.kind, e.code, e.param, close=not read)
            except BadRequest as e:
                self._error(400, str(e), "invalid_request_error", param=e.param, close=not read)
            except (EngineError, PolicyError) as e:
                self._error(400, str(e), "invalid_request_error")
            except _DISCONNECTS as e:  # the client stalled or left: nobody to answer
                log.debug("client %s: %r", self.client_address, e)
                self.close_connection = True
            except Exception as e:  # noqa: BLE001
                log.exception("policy server error")
                self._error(500, f"{type(e).__name__}: {e}", "server_error")

        def _tokenize(self, body: dict[str, Any]) -> None:
            name, engine = server.models.acquire(schema.get_str(body, "model"))
            try:
                if "prompt" in body:
                    prompt = schema.get_str(body, "prompt")
                    tokens = engine.encode(prompt or "")
                    self._send(200, {"count": len(tokens), "max_model_len": engine.context_length, "tokens": tokens})
                else:
                    count = engine.count_tokens(schema.parse_messages(body.get("messages")))
                    self._send(200, {"count": count, "max_model_len": engine.context_length})
            finally:
                server.models.release(engine)

        # ---- generation ------------------------------------------------------------------------

        def _generate(self, request: schema.ChatRequest | schema.CompletionRequest) -> None:
            name, engine = server.models.acquire(request.model)
            jobs: list[Job] = []
            try:
                events: queue.Queue = queue.Queue()
                chat = isinstance(request, schema.ChatRequest)
                prompts = [None] if chat else request.prompts  # type: ignore[union-attr]
                for k, prompt in enumerate(prompts):
                    if chat:
                        job = Job(params=request.params, n=request.n, messages=request.messages,  # type: ignore[union-attr]
                                  tools=request.tools)  # type: ignore[union-attr]
                    else:
                        if not engine.can_complete_raw:
                            raise EngineError(f"model {name} takes chat requests only (its backend completes no raw "
                                              "prompts); use /v1/chat/completions")
                        ids = prompt if isinstance(prompt, list) else engine.encode(prompt)  # type: ignore[arg-type]
                        job = Job(params=request.params, n=request.n, prompt_ids=list(ids))
                    job.logprobs, job.top_logprobs = request.logprobs, request.top_logprobs
                    job.prompt_logprobs = request.echo and request.logprobs
                    job.ignore_eos, job.include_stop = request.ignore_eos, request.include_stop
                    job.first_index, job.events = k * request.n, events
                    engine.prepare(job)
                    jobs.append(job)
                if request.top_logprobs and not engine.can_top_logprobs:
                    raise EngineError(f"model {name} cannot report top log-probs (its backend returns only the "
                                      "sampled tokens' log-probs)")
                builder = Builder(engine, request, name, server.parse_tool_calls)
                for job in jobs:
                    engine.submit(job)
                if request.stream:
                    self._stream(builder, jobs, events)
                else:
                    self._collect(builder, jobs, events)
            finally:
                for job in jobs:
                    job.cancel()  # finished jobs ignore it; others (the client left, an error) stop
                server.models.release(engine)

        def _next(self, jobs: list[Job], events: queue.Queue, state: dict[str, float]) -> Any:
            """The next event; None when the client left (its jobs are cancelled)."""
            while True:
                now = time.monotonic()
                if now - state["checked"] >= GONE_CHECK_S:
                    state["checked"] = now
                    if self._client_gone():
                        for job in jobs:
                            job.cancel()
                        log.info("client %s left: its generation stops", self.client_address)
                        self.close_connection = True
                        return None
                try:
                    return events.get(timeout=GONE_CHECK_S)
                except queue.Empty:
                    continue

        def _collect(self, builder: Builder, jobs: list[Job], events: queue.Queue) -> None:
            state, done = {"checked": time.monotonic()}, 0
            while done < len(jobs):
                event = self._next(jobs, events, state)
                if event is None:
                    return
                if isinstance(event, Failed):
                    raise event.error
                if isinstance(event, Prompt):
                    builder.prompt(event, event.first_index)
                elif isinstance(event, Token):
                    builder.token(event)
                elif isinstance(event, Finish):
                    builder.finish(event)
                elif isinstance(event, Done):
                    done += 1
                    builder.prompt_tokens += event.prompt_tokens
                    builder.completion_tokens += event.completion_tokens
            self._send(200, builder.body())

        def _stream(self, builder: Builder, jobs: list[Job], events: queue.Queue) -> None:
            self._start_stream()
            state, done = {"checked": time.monotonic()}, 0
            try:
                while done < len(jobs):
                    event = self._next(jobs, events, state)
                    if event is None:
                        return
                    chunks: list[dict[str, Any]] = []
                    if isinstance(event, Failed):
                        error = event.error
                        status = 400 if isinstance(error, EngineError) else 500
                        self._event({"error": {"message": str(error), "type": "server_error", "code": status}})
                        break
                    if isinstance(event, Prompt):
                        builder.prompt(event, event.first_index)
                    elif isinstance(event, Token):
                        chunks = builder.stream_token(event)
                    elif isinstance(event, Finish):
                        chunks = builder.stream_finish(event)
                    elif isinstance(event, Done):
                        done += 1
                        builder.prompt_tokens += event.prompt_tokens
                        builder.completion_tokens += event.completion_tokens
                    for chunk in chunks:
                        self._event(chunk)
                for chunk in builder.stream_usage() if done == len(jobs) else []:
                    self._event(chunk)
                self._end_stream()
            except _DISCONNECTS as e:
                for job in jobs:
                    job.cancel()
                log.info("client %s left mid-stream (%r): its generation stops", self.client_address, e)
                self.close_connection = True

    return Handler
