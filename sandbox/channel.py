"""The host side of the in-sandbox server: send a JSON request, read the JSON reply.

Three transports carry the same line protocol: a Docker exec's attached socket (stdout multiplexed in
8-byte-header frames, as the Engine API sends it without a TTY), a unix socket the host listens on in a
directory it shares read-only with the container (the daemon out of the loop; the container can connect
there, never create, change or chmod anything on the host), and a child process's pipes (bubblewrap).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import struct
import subprocess
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from sandbox.base import ExecResult, SandboxDied, SandboxError

SERVER_SOURCE = (Path(__file__).parent / "server.py").read_text()
SERVER_ARGV = ["python3", "-u", "-c", "import sys, json; exec(json.loads(sys.stdin.readline()))"]
"""Starts the server; its source arrives as the first line on stdin (keeps `ps` inside the sandbox short)."""


class Channel(ABC):
    """A line-oriented byte stream to the server."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.stderr = bytearray()

    @abstractmethod
    def _send(self, data: bytes) -> None: ...

    @abstractmethod
    def _recv_stdout(self) -> bytes:
        """Next chunk of the server's stdout; b'' at end of stream."""

    def readline(self) -> bytes:
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                line = bytes(self._buf[: i + 1])
                del self._buf[: i + 1]
                return line
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

    def _send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_stdout(self) -> bytes:
        return self.sock.recv(1 << 16)

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
            chunk = self.sock.recv(n - len(data))
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

    def _send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def _recv_stdout(self) -> bytes:
        assert self.proc.stdout is not None
        return os.read(self.proc.stdout.fileno(), 1 << 16)

    def close(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f and f.close()
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class ServerClient:
    """Sends requests to one in-sandbox server, one at a time."""

    def __init__(self, channel: Channel, describe_death: Any = None):
        self.channel = channel
        self._lock = threading.Lock()
        self._describe_death = describe_death or (lambda: "the sandbox process ended")
        self.dead = False
        self._held: Channel | None = None  # the channel the server started on, kept open after an upgrade
        try:
            channel._send(json.dumps(SERVER_SOURCE).encode() + b"\n")
        except OSError:
            raise SandboxDied(self._describe_death()) from None
        ready = self._read_reply()
        if not ready.get("ready"):
            raise SandboxError(f"sandbox server did not start: {ready}")

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
                sock.settimeout(timeout)
                channel = SocketChannel(sock)
                introduced = channel.readline().strip() == token.encode()
                sock.settimeout(None)
            except (OSError, EOFError):
                introduced = False
            if not introduced:  # the server said it connected, yet no connection with its token came
                self.dead = True
                raise SandboxError("sandbox server's channel handshake failed (no connection with its token)")
            self._held, self.channel = self.channel, channel
            return True

    def _read_reply(self) -> dict[str, Any]:
        try:
            line = self.channel.readline()
        except (EOFError, OSError):
            self.dead = True
            err = bytes(self.channel.stderr).decode(errors="replace").strip()
            raise SandboxDied(self._describe_death() + (f" (server said: {err[-300:]})" if err else "")) from None
        return json.loads(line)

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        if self.dead:
            raise SandboxDied(self._describe_death())
        with self._lock:
            try:
                self.channel._send(json.dumps({"op": op, **fields}).encode() + b"\n")
            except OSError:
                self.dead = True
                raise SandboxDied(self._describe_death()) from None
            reply = self._read_reply()
        if "error" in reply:
            raise SandboxError(f"sandbox {op} failed: {reply['error']}")
        return reply

    def exec(self, command: str, timeout: float, session: str | None, max_output: int, cwd: str | None,
             env: dict[str, str] | None = None) -> ExecResult:
        r = self.request("exec", cmd=command, timeout=timeout, session=session, max_output=max_output,
                         cwd=cwd, env=env)
        return ExecResult(output=r["output"], exit_code=r["exit_code"], timed_out=r["timed_out"],
                          truncated=r["truncated"], total_bytes=r["total_bytes"], seconds=r["seconds"])

    def read(self, path: str) -> bytes:
        return base64.b64decode(self.request("read", path=path)["data"])

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
