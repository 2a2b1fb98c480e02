"""`PolicyServer`: the OpenAI-compatible server for a policy (and stored versions), on loopback only."""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import threading
from typing import Any

from agent.policy.base import Policy, PolicyError
from agent.policy.serve.factory import engine_factory
from agent.policy.serve.http import HTTPServer, make_handler
from agent.policy.serve.models import Lister, Models, Resolver

log = logging.getLogger(__name__)

MAX_TOKENS_CAP = 4096
"""Default largest `max_tokens` a request may ask for."""
DEFAULT_MAX_TOKENS = 1024
"""`max_tokens` of a chat request that names none."""
MAX_BODY_BYTES = 32 << 20
"""Default largest request body (a long conversation with tool schemas is well under 1 MB)."""
REQUEST_TIMEOUT_S = 60.0
"""Default seconds a client has to send a request's headers, then its body; also the longest stall of one
send or receive."""
MAX_CONNECTIONS = 128
"""Default most connections at once."""


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


class PolicyServer:
    """An OpenAI-compatible server for `policy` on a loopback address. `start()` runs it in a thread.

    `resolver` / `lister` make stored versions servable by name (see `agent.policy.serve.models`);
    `engine="policy"` serves every model through its own `Policy.generate` (whole completions);
    `parse_tool_calls=False` leaves tool-call markup in `content` (Evolve's own clients parse it)."""

    def __init__(self, policy: Policy, host: str = "127.0.0.1", port: int = 8000, *, model_name: str | None = None,
                 batch_wait_s: float = 0.01, max_batch: int = 16, max_tokens_cap: int = MAX_TOKENS_CAP,
                 max_body_bytes: int = MAX_BODY_BYTES, request_timeout_s: float = REQUEST_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS, engine: str = "auto", resolver: Resolver | None = None,
                 lister: Lister | None = None, max_model_bytes: int | None = None, llamacpp: Any = None,
                 parse_tool_calls: bool = True) -> None:
        if not ipaddress.ip_address("127.0.0.1" if host == "localhost" else host).is_loopback:
            raise PolicyError(
                f"the policy server has no authentication and binds to loopback only, not {host!r}; "
                "reach it from elsewhere through an SSH tunnel or a reverse proxy"
            )
        if max_tokens_cap < 1 or max_body_bytes < 1 or request_timeout_s <= 0 or max_connections < 1:
            raise PolicyError("max_tokens_cap, max_body_bytes, request_timeout_s and max_connections must be positive")
        if not 0 <= port <= 65535:
            raise PolicyError(f"--port {port} is not a port number (0-65535)")
        self.policy = policy
        self.model_name = model_name or policy.spec or "policy"
        self.max_tokens_cap, self.max_body_bytes, self.request_timeout_s = max_tokens_cap, max_body_bytes, request_timeout_s
        self.default_max_tokens = min(DEFAULT_MAX_TOKENS, max_tokens_cap)
        self.parse_tool_calls = parse_tool_calls
        try:
            self.httpd = HTTPServer((host, port), make_handler(self), max_connections=max_connections)
        except OSError as e:
            raise PolicyError(_bind_error(host, port, e)) from None
        try:
            make = engine_factory(engine, llamacpp=llamacpp, batch_wait_s=batch_wait_s, max_batch=max_batch)
            self.models = Models(self.model_name, policy, make, resolver=resolver, lister=lister,
                                 max_bytes=max_model_bytes)
        except BaseException:
            self.httpd.server_close()
            raise
        self.thread: threading.Thread | None = None

    @property
    def engine(self) -> Any:
        """The base model's engine."""
        return self.models.loaded[self.model_name].engine

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
        """Stop serving and free the port (the base policy stays open)."""
        if self.thread is not None:
            self.httpd.shutdown()
        self.httpd.server_close()
        self.models.close()

    def __enter__(self) -> PolicyServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
        server.models.close()


def serve_in_thread(policy: Policy, host: str = "127.0.0.1", port: int = 0, **options: Any) -> PolicyServer:
    """Start a server in a background thread and return it (`.port`, `.url`, `.stop()`)."""
    server = PolicyServer(policy, host, port, **options)
    server.start()
    return server
