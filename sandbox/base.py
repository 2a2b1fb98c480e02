"""The `Sandbox` interface that every backend implements, and the errors it raises."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

WORKDIR = "/testbed"
"""Where the task repository lives inside every sandbox, as in SWE-bench images."""
MAX_PATCH_BYTES = 64 << 20
"""The largest patch `diff()` returns; a larger one is an error, never a patch cut in the middle."""
MAX_READ_BYTES = 64 << 20
"""The most bytes `read_file` returns unless told otherwise; a larger file is an error, never cut."""


class SandboxError(RuntimeError):
    """A sandbox could not do what was asked (bad image, daemon missing, bad config)."""


class SandboxDied(SandboxError):
    """The sandbox's container or process is gone (killed from outside, OOM, crashed), or its command server
    stopped answering or answered out of turn."""

    def __init__(self, message: str, *, inside: bool = False):
        super().__init__(message)
        self.inside = inside
        """True when the evidence says something inside the sandbox ended it: the command server ended, stalled or
        was impersonated while the sandbox itself (container, bubblewrap) kept running and no out-of-memory kill was
        recorded. False when it was stopped or removed from outside, ran out of memory, or the daemon failed."""


@dataclass
class ExecResult:
    """The outcome of one command."""

    output: str
    """Merged stdout and stderr, head and tail kept when longer than the limit."""
    exit_code: int
    """Exit status; -9 when killed at its timeout."""
    timed_out: bool = False
    """The command ran past its timeout and its process tree was killed."""
    truncated: bool = False
    """Output was longer than the limit; the middle was dropped."""
    total_bytes: int = 0
    """How many bytes the command printed in all."""
    seconds: float = 0.0
    """Wall time inside the sandbox."""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class Sandbox(ABC):
    """An isolated place to run an agent's commands on a repository at `WORKDIR`.

    Backends: `DockerSandbox` (default) and `LocalSandbox` (bubblewrap). Both run the same in-sandbox
    server (`sandbox/server.py`), so behaviour is the same; only the transport differs.
    """

    workdir: str = WORKDIR
    base_commit: str = ""

    # --- commands -------------------------------------------------------------------------------
    @abstractmethod
    def exec(self, command: str, timeout: float | None = None, *, session: str | None = None,
             max_output: int | None = None, cwd: str | None = None) -> ExecResult:
        """Run `command` with bash. With `session`, `cd` and `export` persist between calls that name
        the same session (a session starts in `cwd`, default `workdir`, then keeps its own). On timeout
        the whole process tree is killed and the sandbox stays usable."""

    # --- files ----------------------------------------------------------------------------------
    @abstractmethod
    def read_file(self, path: str, max_bytes: int = MAX_READ_BYTES) -> bytes:
        """Bytes of a regular file inside the sandbox (relative paths are under `workdir`). A FIFO, device, socket or
        directory, a file over `max_bytes`, or a read that does not finish in 30 s raises SandboxError."""

    @abstractmethod
    def write_file(self, path: str, data: bytes | str) -> None:
        """Create or replace a file inside the sandbox, creating parent directories."""

    @abstractmethod
    def copy_in(self, host_path: str, path: str) -> None:
        """Copy a host file or directory into the sandbox at `path`."""

    @abstractmethod
    def copy_out(self, path: str, host_path: str) -> None:
        """Copy a file or directory from the sandbox to `host_path` on the host."""

    # --- repository state -----------------------------------------------------------------------
    @abstractmethod
    def diff(self) -> str:
        """The patch the workspace holds against its base commit (new files included), as text that `git apply`
        turns back into exactly the bytes the agent left (`sandbox.patch`). A patch over `MAX_PATCH_BYTES` raises
        SandboxError: a truncated patch would apply as a different change."""

    @abstractmethod
    def reset(self) -> None:
        """Back to the base commit: tracked files restored, new files removed, stray processes killed,
        shell sessions forgotten."""

    @abstractmethod
    def snapshot(self, name: str | None = None) -> str:
        """Save the current state; returns a handle that `start(..., image=handle)` starts from."""

    # --- lifecycle ------------------------------------------------------------------------------
    @abstractmethod
    def alive(self) -> bool:
        """True while the sandbox can run commands."""

    @abstractmethod
    def stop(self) -> None:
        """Stop and remove the sandbox. Safe to call twice."""

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
