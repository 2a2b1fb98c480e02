"""Sandbox configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from sandbox.base import SandboxError

BASE_IMAGE = "evolve-base:latest"
"""The project's base image (Debian bookworm, Python 3, git, pytest, patch, build tools)."""


class SandboxConfig(BaseModel):
    """How sandboxes are started. The defaults isolate: no network, bounded CPU, memory and pids."""

    backend: Literal["docker", "local"] = "docker"
    """`docker` (containers through docker-py) or `local` (bubblewrap, for machines without Docker)."""
    image: str = BASE_IMAGE
    """Image to start from (docker); a task's own image overrides it."""
    network: bool = False
    """Give the sandbox network access. Off by default: `network_mode="none"`."""
    cpus: float = 1.0
    """CPU limit in cores (docker `nano_cpus`)."""
    memory: str = "2g"
    """Memory limit (docker `mem_limit`, swap included). Locally: the sandbox's cgroup where one is
    writable, else an address-space limit per process (`sandbox.limits` says which), and the size of
    each of its tmpfs (`/tmp`, `/var/tmp`, `/root`)."""
    pids_limit: int = 512
    """Most processes at once in the sandbox (holds fork bombs): docker `pids_limit`; locally cgroup v2
    `pids.max`, else RLIMIT_NPROC of the sandbox's own host uid."""
    exec_timeout: float = 120.0
    """Default seconds before a command's process tree is killed."""
    max_output: int = 100_000
    """Bytes of output kept per command (head and tail halves); the middle is dropped with a notice."""
    direct_channel: bool = True
    """Docker: talk to the in-sandbox command server over a unix socket in a directory shared with the container
    (one per sandbox, nothing else in it), which takes the daemon's stdin/stdout relay out of every command's
    round trip; where the daemon cannot mount the directory or the host cannot reach the socket (a daemon on
    another machine, a desktop VM) the relay is used."""
    run_id: str = ""
    """Run that owns the sandbox, recorded in its labels so `evolve sandbox prune` can clean up."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Extra container labels."""


def parse_memory(text: str) -> int:
    """Bytes of a limit like `512m` or `2g`."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("b")
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except ValueError:
        raise SandboxError(f"bad memory limit {text!r}: use e.g. 512m or 2g") from None
