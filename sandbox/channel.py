"""The host side of the in-sandbox server: send a JSON request, read the JSON reply.

Three transports carry the same line protocol: a Docker exec's attached socket (stdout multiplexed in
8-byte-header frames, as the Engine API sends it without a TTY), a unix socket the host listens on in a
directory it shares read-only with the container (the daemon out of the loop; the container can connect
there, never create, change or chmod anything on the host), and a child process's pipes (bubblewrap).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import select
import socket
import struct
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from sandbox.base import ExecResult, SandboxDied, SandboxError

log = logging.getLogger(__name__)

SERVER_SOURCE = (Path(__file__).parent / "server.py").read_text()
REPLY_GRACE = 90.0
"""Seconds a reply may take beyond the request's own timeout (the server's first command also captures the image's
shell environment, bounded at 60 s) before the host gives up on the server."""
FILE_SECONDS = 60.0
"""Seconds the host waits for a file read or write (the server cuts its own at 30 s), or a ping."""
REPLY_SLACK = 64 << 10
"""Bytes of a reply line beyond its payload's bound (JSON keys, numbers, the omission notice)."""
START_SECONDS = 300.0
"""Seconds the host waits for a new server's first line (a cold start of a big image)."""
SERVER_ARGV = ["python3", "-u", "-c", "import sys, json; exec(json.loads(sys.stdin.readline()))"]
"""Starts the server; its source arrives as the first line on stdin (keeps `ps` inside the sandbox short)."""


class ReplyTimeout(Exception):
    """The server did not take a request or answer it before the request's deadline."""


class ReplyTooLong(Exception):
    """The server's reply line grew past the bound of its request."""


class Channel(ABC):
    """A line-oriented byte stream to the server. `deadline` (a `time.monotonic()` value, None: none) bounds every
    wait on the stream; past it `ReplyTimeout` is raised."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.stderr = bytearray()
        self.deadline: float | None = None

    def _wait(self, fd: int, write: bool = False) -> None:
        if self.deadline is None:
            return
        left = self.deadline - time.monotonic()
        ready = select.select([], [fd], [], max(left, 0))[1] if write else select.select([fd], [], [], max(left, 0))[0]
        if not ready:
            raise ReplyTimeout

    @abstractmethod
    def _send(self, data: bytes) -> None: ...

    @abstractmethod
    def _recv_stdout(self) -> bytes:
        """Next chunk of the server's stdout; b'' at end of stream."""

    def readline(self, limit: int | None = None) -> bytes:
        """The next line; `ReplyTooLong` once more than `limit` bytes arrived without its end."""
        start = 0
        while True:
            i = self._buf.find(b"\n", start)
            if i >= 0:
                line = bytes(self._buf[: i + 1])
                del self._buf[: i + 1]
                return line
            if limit is not None and len(self._buf) > limit:
                raise ReplyTooLong
            start = len(self._buf)  # search only what arrives next: a long line costs linear time
            chunk = self._recv_stdout()
            if not chunk:
                raise EOFError
            self._buf += chunk

    @abstractmethod
    def close(self) -> None: ...


class SocketChannel(Channel):
    """A plain stream socket: the server's unix socket, connected from the host."""

    def __init__(self, sock: socket.socket):
        super().__init__()
        self.sock = sock

    def _timed(self, fn: Any, *args: Any) -> Any:
        left = None if self.deadline is None else self.deadline - time.monotonic()
        if left is not None and left <= 0:
            raise ReplyTimeout
        self.sock.settimeout(left)
        try:
            return fn(*args)
        except socket.timeout:
            raise ReplyTimeout from None

    def _send(self, data: bytes) -> None:
        self._timed(self.sock.sendall, data)

    def _recv(self, n: int) -> bytes:
        return self._timed(self.sock.recv, n)

    def _recv_stdout(self) -> bytes:
        return self._recv(1 << 16)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class FramedSocketChannel(SocketChannel):
    """A Docker exec's hijacked socket, stdout and stderr multiplexed in frames."""

    def _read_exact(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self._recv(min(n - len(data), 1 << 20))
            if not chunk:
                return b""
            data += chunk
        return bytes(data)

    def _recv_stdout(self) -> bytes:
        while True:
            header = self._read_exact(8)
            if len(header) < 8:
                return b""
            stream, size = header[0], struct.unpack(">I", header[4:])[0]
            payload = self._read_exact(size)
            if len(payload) < size:
                return b""
            if stream == 1:
                return payload
            self.stderr += payload
            del self.stderr[:-8192]


class PipeChannel(Channel):
    """A child process's stdin/stdout (stderr goes to a file the host can show)."""

    def __init__(self, proc: subprocess.Popen):
        super().__init__()
        self.proc = proc
        assert proc.stdin is not None
        os.set_blocking(proc.stdin.fileno(), False)  # a full pipe waits in `_wait`, bounded by the deadline

    def _send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        fd = self.proc.stdin.fileno()
        view = memoryview(data)
        while view:
            self._wait(fd, write=True)
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                if self.deadline is None:
                    select.select([], [fd], [])

    def _recv_stdout(self) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        self._wait(fd)
        return os.read(fd, 1 << 16)

    def close(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f and f.close()
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class ServerGarbled(SandboxDied):
    """What came back is not a reply of the server: it did not start (the runtime's own error, e.g. no python3 in
    the image), or something inside the sandbox wrote into its channel."""

    def __init__(self, line: bytes):
        self.line = line.decode(errors="replace").strip()
        super().__init__(f"the sandbox's command server sent a line that is not a reply: {line[:80]!r}", inside=True)


def _bounds(op: str, fields: dict[str, Any]) -> tuple[float, int]:
    """(seconds, bytes): how long the reply to a request may take and how long its line may grow. A command's output
    is at most `max_output` bytes, and JSON writes each byte in at most 6 (`\\ufffd` for an invalid one); a read's
    data is base64 (4 per 3)."""
    if op in ("exec", "reset"):
        return float(fields.get("timeout") or 120) + REPLY_GRACE, 6 * int(fields.get("max_output") or 100_000) + REPLY_SLACK
    if op == "read":
        return FILE_SECONDS + int(fields["max_bytes"]) / (8 << 20), int(fields["max_bytes"]) * 4 // 3 + REPLY_SLACK
    if op == "write":  # a second more per 8 MiB to carry
        return FILE_SECONDS + len(fields["data"]) / (8 << 20), REPLY_SLACK
    if op == "env":
        return FILE_SECONDS, 16 << 20
    return FILE_SECONDS, REPLY_SLACK


class ServerClient:
    """Sends requests to one in-sandbox server, one at a time."""

    def __init__(self, channel: Channel, describe_death: Any = None):
        self.channel = channel
        self._lock = threading.Lock()
        self._describe_death = describe_death or (lambda: "the sandbox process ended")
        """Says why the server is gone: a message, or a `SandboxDied` carrying whether it ended from inside."""
        self.dead = False
        self._held: Channel | None = None  # the channel the server started on, kept open after an upgrade
        channel.deadline = time.monotonic() + START_SECONDS
        try:
            channel._send(json.dumps(SERVER_SOURCE).encode() + b"\n")
            ready = self._read_reply("start")
        except (OSError, ReplyTimeout):
            self.close()
            raise self._death(" (its command server did not start)") from None
        except ServerGarbled as e:  # e.g. the runtime's "exec: python3: executable file not found"
            hint = (" (the image has no python3, which the sandbox's command server needs)"
                    if "python3" in e.line else "")
            raise SandboxError(f"the sandbox's command server did not start: {e.line[:300]}{hint}") from None
        finally:
            channel.deadline = None
        if not ready.get("ready"):
            raise SandboxError(f"sandbox server did not start: {ready}")
        self.guarded = bool(ready.get("guarded"))
        """The server made itself non-dumpable (no ptrace, pidfd_getfd or /proc/PID/fd by the sandbox's commands)."""
        if not self.guarded:
            log.warning("the sandbox's command server could not make itself non-dumpable (no ctypes in the image's "
                        "python3?): the sandbox's commands could reach its channel")

    def upgrade(self, sandbox_path: str, listener: socket.socket, timeout: float = 10.0) -> bool:
        """Move the conversation onto a unix socket: `listener` listens on the host, the server connects to it at
        `sandbox_path` (a read-only view of the host's directory) and introduces itself with a one-time token
        sent on the current channel. False, and the current channel kept, where the server cannot reach it (e.g.
        a Docker daemon on another machine). Called once, before anything untrusted runs in the sandbox; the
        caller closes the listener afterwards, so nothing else can connect later."""
        token = secrets.token_hex(16)
        with self._lock:
            self.channel._send(json.dumps({"op": "connect", "path": sandbox_path, "token": token}).encode() + b"\n")
            if not self._read_reply().get("connected"):
                return False
            listener.settimeout(timeout)
            try:
                sock, _ = listener.accept()
                channel = SocketChannel(sock)
                channel.deadline = time.monotonic() + timeout
                introduced = channel.readline(len(token) + 2).strip() == token.encode()
                channel.deadline = None
            except (OSError, EOFError, ReplyTimeout, ReplyTooLong):
                introduced = False
            if not introduced:  # the server said it connected, yet no connection with its token came
                self.dead = True
                raise SandboxError("sandbox server's channel handshake failed (no connection with its token)")
            self._held, self.channel = self.channel, channel
            return True

    def _death(self, detail: str = "") -> SandboxDied:
        said = self._describe_death()
        return SandboxDied(str(said) + detail, inside=getattr(said, "inside", False))

    def _read_reply(self, op: str = "", limit: int | None = None) -> dict[str, Any]:
        try:
            line = self.channel.readline(limit)
        except (EOFError, OSError):
            self.dead = True
            err = bytes(self.channel.stderr).decode(errors="replace").strip()
            raise self._death(f" (server said: {err[-300:]})" if err else "") from None
        except ReplyTimeout:
            self.close()
            raise self._death(f" (its command server did not answer the {op} request in time)") from None
        except ReplyTooLong:
            self.close()
            raise self._death(f" (its command server's reply to the {op} request grew past {limit} bytes)") from None
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            self.close()
            raise ServerGarbled(line)
        return reply

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and read its reply. Each request carries a fresh random id that the server echoes:
        a reply naming another id (or none) was not written by the server for this request (something in the
        sandbox wrote into the channel), so the channel is closed and the sandbox counts as dead."""
        if self.dead:
            raise self._death()
        rid = secrets.token_hex(16)
        seconds, limit = _bounds(op, fields)
        with self._lock:
            self.channel.deadline = time.monotonic() + seconds
            try:
                self.channel._send(json.dumps({"op": op, "id": rid, **fields}).encode() + b"\n")
                reply = self._read_reply(op, limit)
            except OSError:
                self.dead = True
                raise self._death() from None
            except ReplyTimeout:
                self.close()
                raise self._death(f" (its command server did not take the {op} request in time)") from None
            finally:
                self.channel.deadline = None
            if reply.get("id") != rid:
                self.close()
                raise SandboxDied(f"the sandbox's command server sent a reply that does not answer the {op} request "
                                  "(written into its channel from inside the sandbox?); the sandbox is closed",
                                  inside=True)
        if "error" in reply:
            raise SandboxError(f"sandbox {op} failed: {reply['error']}")
        return reply

    def exec(self, command: str, timeout: float, session: str | None, max_output: int, cwd: str | None,
             env: dict[str, str] | None = None) -> ExecResult:
        r = self.request("exec", cmd=command, timeout=timeout, session=session, max_output=max_output,
                         cwd=cwd, env=env)
        return ExecResult(output=r["output"], exit_code=r["exit_code"], timed_out=r["timed_out"],
                          truncated=r["truncated"], total_bytes=r["total_bytes"], seconds=r["seconds"])

    def read(self, path: str, max_bytes: int) -> bytes:
        """The file's bytes; a SandboxError when it is not a regular file or holds more than `max_bytes`."""
        return base64.b64decode(self.request("read", path=path, max_bytes=max_bytes)["data"])

    def write(self, path: str, data: bytes) -> None:
        self.request("write", path=path, data=base64.b64encode(data).decode())

    def reset(self, command: str, cwd: str) -> ExecResult:
        r = self.request("reset", cmd=command, cwd=cwd)
        return ExecResult(output=r["output"], exit_code=r["exit_code"], timed_out=r["timed_out"])

    def ping(self) -> bool:
        try:
            self.request("ping")
            return True
        except SandboxError:
            return False

    def close(self) -> None:
        self.dead = True
        self.channel.close()
        if self._held is not None:
            self._held.close()
