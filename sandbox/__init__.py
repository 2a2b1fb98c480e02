"""Sandboxes: isolated places to run an agent's commands (Docker containers, or bubblewrap locally)."""

from __future__ import annotations

from pathlib import Path

from sandbox.base import WORKDIR, ExecResult, Sandbox, SandboxDied, SandboxError
from sandbox.config import BASE_IMAGE, SandboxConfig
from sandbox.docker import DockerSandbox
from sandbox.local import LocalSandbox
from sandbox.prune import prune_orphans

__all__ = ["WORKDIR", "BASE_IMAGE", "ExecResult", "Sandbox", "SandboxConfig", "SandboxDied", "SandboxError",
           "prune_orphans", "start_sandbox"]


def start_sandbox(config: SandboxConfig | None = None, image: str | None = None,
                  workspace: str | Path | None = None) -> Sandbox:
    """Start a sandbox with the configured backend (`docker` or `local`)."""
    config = config or SandboxConfig()
    if config.backend == "local":
        return LocalSandbox.start(config, image=image, workspace=workspace)
    return DockerSandbox.start(config, image=image, workspace=workspace)
