"""HGM's sandbox work as Ray tasks (`evolve hgm --executor ray`): the meta-agent's edit of a variant and a
child's own tests, each a module-level function whose arguments and result pickle.

A variant directory crosses to a worker as bytes (a gzipped tar), so a worker on any node works on its own
copy; nothing it returns is a path. The driver, the run store's one writer, stores what comes back: the edit's
trajectory (its steps relayed live through the run's `StepRelay`, like an episode's), the tests' result.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.graph import Agent
from agent.variant import AgentVariant
from agent.variant_dir import VariantTestResult, run_variant_tests
from evolve.run.remote_episode import step_relay, worker_policy
from records import TaskInstance, Trajectory, TrajectoryStatus
from sandbox import SandboxConfig, SandboxError, start_sandbox


def pack_dir(directory: str | Path, with_git: bool = False) -> bytes:
    """`directory` as a gzipped tar (paths relative to it); `.git` only `with_git`, caches never."""
    root = Path(directory)
    skip = {"__pycache__"} | (set() if with_git else {".git"})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(root, arcname=".", filter=lambda ti: None if set(Path(ti.name).parts) & skip else ti)
    return buf.getvalue()


def unpack_dir(data: bytes, dest: Path) -> Path:
    """Extract `pack_dir`'s bytes into the new directory `dest` (nothing may land outside it)."""
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")
    return dest


@dataclass
class EditJob:
    """Everything a worker needs for one meta-agent edit (pickled to it)."""

    workspace: bytes
    """`pack_dir` of the copy of the parent's variant directory (a git repository: the patch is its diff)."""
    variant: AgentVariant
    """The parent's variant (tools/ and tests/ included), its step budget cut to the meta budget."""
    instance: TaskInstance
    """The edit's task: the diagnosis as its problem statement."""
    sandbox: SandboxConfig
    policy: str
    """Spec the worker loads (`openai:` or `replay:`; a driver-served meta policy is `openai:URL`)."""
    trajectory: Trajectory
    """The header to fill (id, run, policy, origin `hgm:meta`)."""
    steps: Any = None
    """The run's `StepRelay` queue: each finished step is put on it (header JSON, step JSON), or None."""


def run_remote_edit(job: EditJob) -> tuple[Trajectory, str]:
    """Run on a worker: the parent's agent on its own copy of the workspace; (trajectory with its steps,
    error). A sandbox failure is the error (the trajectory then `infra_error`); anything else raises."""
    traj = job.trajectory
    agent = Agent(worker_policy(job.policy), job.variant, on_step=step_relay(job.steps))
    with tempfile.TemporaryDirectory(prefix="evolve-hgm-edit-") as tmp:
        ws = unpack_dir(job.workspace, Path(tmp) / "workspace")
        try:
            with start_sandbox(job.sandbox, workspace=ws) as sb:
                traj = agent.run(job.instance, sb, traj)
        except SandboxError as e:
            traj.status, traj.error, traj.finished_at = TrajectoryStatus.infra_error, str(e), time.time()
            return traj, f"the edit's sandbox failed: {e}"
    return traj, ""


def run_remote_variant_tests(variant: bytes, sandbox: SandboxConfig,
                             timeout: float) -> tuple[VariantTestResult | None, str]:
    """Run on a worker: a child's own tests (`pack_dir` of its directory) in a fresh sandbox; (result, '') or
    (None, why its sandbox failed)."""
    with tempfile.TemporaryDirectory(prefix="evolve-hgm-tests-") as tmp:
        child = unpack_dir(variant, Path(tmp) / "variant")
        try:
            with start_sandbox(sandbox) as sb:
                return run_variant_tests(child, sb, timeout=timeout), ""
        except SandboxError as e:
            return None, f"sandbox failed: {e}"
