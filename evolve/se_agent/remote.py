"""SE-Agent's checks as Ray tasks (`evolve se-agent --executor ray`): the visible baseline, the visible checks of
a candidate and its hidden-test grading, each in fresh sandboxes on a worker. Arguments and results pickle;
the driver stores what comes back (it is the run store's one writer)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from evolve.run.local_tasks import local_instance
from evolve.se_agent.records import VisibleOutcome
from evolve.se_agent.visible import baseline, visible_outcome
from records import TaskInstance, TestReport, Trajectory
from sandbox import SandboxConfig
from tasks.grading import grade


def worker_instance(instance: TaskInstance, sandbox: SandboxConfig) -> TaskInstance:
    """`instance` as this worker's sandbox backend starts it: the local backend needs the repository as a
    directory (the driver's, on the same machine; else materialised once by this worker process)."""
    if sandbox.backend != "local":
        return instance
    return local_instance(instance, Path(tempfile.gettempdir()) / f"evolve-workspaces-{os.getpid()}")


def remote_baseline(instance: TaskInstance, sandbox: SandboxConfig) -> dict[str, str] | None:
    """Run on a worker: the visible tests' results on the unpatched repository."""
    return baseline(worker_instance(instance, sandbox), sandbox)


def remote_visible(instance: TaskInstance, trajectory: Trajectory, sandbox: SandboxConfig,
                   base: dict[str, str] | None) -> VisibleOutcome:
    """Run on a worker: the visible checks of `trajectory`'s patch in a fresh sandbox."""
    return visible_outcome(worker_instance(instance, sandbox), trajectory, sandbox, base)


def remote_grade(instance: TaskInstance, patch: str, sandbox: SandboxConfig, trajectory_id: str) -> TestReport:
    """Run on a worker: the hidden-test grading of `patch` in a fresh sandbox."""
    return grade(worker_instance(instance, sandbox), patch, sandbox, trajectory_id=trajectory_id)
