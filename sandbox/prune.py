"""Removing what dead processes left behind: Docker containers and snapshot images, local workspaces
and snapshot directories. What a live process owns is kept unless forced (see `sandbox.owner`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sandbox.base import SandboxError
from sandbox.docker import prune as prune_docker
from sandbox.local import prune_local

log = logging.getLogger(__name__)


@dataclass
class Pruned:
    """What one prune removed, and what it kept."""

    containers: int = 0
    """Docker containers removed."""
    images: int = 0
    """Docker snapshot images removed."""
    workspaces: int = 0
    """Local sandbox workspaces removed."""
    snapshots: int = 0
    """Local snapshot directories removed."""
    kept: int = 0
    """Docker containers and images kept because their owner is alive (or on another host)."""
    docker_error: str = ""
    """Why Docker was not pruned (daemon unreachable), or ''."""

    @property
    def total(self) -> int:
        return self.containers + self.images + self.workspaces + self.snapshots


def prune(run_id: str | None = None, force: bool = False, docker: bool = True) -> Pruned:
    """Remove the leftovers of dead owners (all leftovers with `force`), only `run_id`'s when given.
    Local leftovers are always looked at; Docker's when `docker` and the daemon answers."""
    out = Pruned()
    out.workspaces, out.snapshots = prune_local(run_id, force)
    if docker:
        try:
            out.containers, out.images, out.kept = prune_docker(run_id, force)
        except SandboxError as e:
            out.docker_error = str(e)
    return out


def prune_orphans(run_id: str, docker: bool = True) -> Pruned:
    """Called when a run starts: remove what a killed earlier process of the same run id left (its
    containers would otherwise run on, its workspaces fill the disk). A live process's sandboxes stay."""
    pruned = prune(run_id, docker=docker)
    if pruned.total:
        log.info("removed %d containers, %d snapshot images, %d local workspaces and %d local snapshots "
                 "left by an earlier, killed run of %s", pruned.containers, pruned.images, pruned.workspaces,
                 pruned.snapshots, run_id)
    return pruned
