"""What both backends share: commands, files and reset go through the in-sandbox server."""

from __future__ import annotations

import shlex

from sandbox.base import MAX_READ_BYTES, ExecResult, Sandbox, SandboxError
from sandbox.channel import ServerClient
from sandbox.config import SandboxConfig
from sandbox.patch import workspace_patch


class ServedSandbox(Sandbox):
    """A sandbox whose work is done by `sandbox/server.py` through `self._client`."""

    id: str
    config: SandboxConfig
    _client: ServerClient

    def exec(self, command: str, timeout: float | None = None, *, session: str | None = None,
             max_output: int | None = None, cwd: str | None = None) -> ExecResult:
        return self._client.exec(command, timeout or self.config.exec_timeout, session,
                                 max_output or self.config.max_output, cwd or self.workdir)

    def _abs(self, path: str) -> str:
        return path if path.startswith("/") else f"{self.workdir}/{path}"

    def read_file(self, path: str, max_bytes: int = MAX_READ_BYTES) -> bytes:
        return self._client.read(self._abs(path), max_bytes)

    def write_file(self, path: str, data: bytes | str) -> None:
        self._client.write(self._abs(path), data.encode() if isinstance(data, str) else data)

    def diff(self) -> str:
        return workspace_patch(self)

    def reset(self) -> None:
        base = shlex.quote(self.base_commit or "HEAD")
        r = self._client.reset(f"git reset -q --hard {base} && git clean -fdq", cwd=self.workdir)
        if r.exit_code != 0:
            raise SandboxError(f"reset of sandbox {self.id} failed: {r.output[-300:]}")
