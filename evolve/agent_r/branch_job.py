"""One branch of an Agent-R SWE search as a piece of work an executor runs (threads here or a Ray task).

A branch is a scripted replay: the agent loop in a FRESH sandbox with the node's recorded responses plus the
newly sampled one as its policy, then (when asked) the patch graded in another fresh sandbox. It needs no
policy, so a worker gets everything in the pickled `BranchJob` and returns the records in a `BranchResult`;
the driver computes the reward and writes the run store (its one writer).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Literal

from agent.graph import Agent
from agent.replay import ScriptedPolicy
from agent.variant import AgentVariant
from records import Message, TaskInstance, TestReport, Trajectory, TrajectoryStatus
from sandbox import SandboxConfig, start_sandbox
from tasks.grading import grade


@dataclass
class BranchJob:
    """Everything a worker needs for one branch (pickled to it)."""

    instance: TaskInstance
    variant: AgentVariant
    """The search's variant (one attempt); its step budget is set to the responses' count here."""
    responses: list[Message]
    """The assistant turns to replay, in order (the node's recorded ones, then the new one)."""
    header: Trajectory
    """The trajectory to fill (id, run, parent, branch step, origin): made by the driver, so ids are its."""
    prompt: list[Message]
    """The messages before the first response (the driver's `Agent.prompt`)."""
    sandbox: SandboxConfig
    grade: Literal["submitted", "always"] = "submitted"
    """`submitted`: grade only an episode that submitted; `always`: grade however it ended."""
    branch: bool = True
    """A search branch: one that errs or stops before its last response failed and is not graded.
    False (a splice's replay): graded whatever happened, as its check needs a reward."""


@dataclass
class BranchResult:
    """What a branch gives back: the trajectory with its steps, and the test report when it was graded."""

    trajectory: Trajectory
    report: TestReport | None
    worker: str
    """`host:pid` of the process that ran it."""
    seconds: float


def failed_branch(traj: Trajectory, want_steps: int) -> bool:
    """The episode broke (error) or stopped before replaying its `want_steps` responses."""
    return traj.status == TrajectoryStatus.error or len(traj.steps) < want_steps


def replay_episode(job: BranchJob) -> Trajectory:
    """The agent loop with `job.responses` as its policy, in a fresh sandbox, stopped after them."""
    variant = job.variant.model_copy(deep=True)
    variant.budget.max_steps = len(job.responses)
    header = job.header.model_copy(deep=True)
    header.prompt = list(job.prompt)
    with start_sandbox(job.sandbox, image=job.instance.image or None) as sb:
        return Agent(ScriptedPolicy(job.responses), variant).run(job.instance, sb, header)


def run_branch(job: BranchJob) -> BranchResult:
    """Run one branch (on whichever worker the executor picked): replay, then grade as `job` asks."""
    t0 = time.time()
    traj = replay_episode(job)
    report = None
    if not (job.branch and failed_branch(traj, len(job.responses))):
        if job.grade == "always" or traj.status == TrajectoryStatus.submitted:
            report = grade(job.instance, traj.patch, job.sandbox, trajectory_id=traj.id)
    return BranchResult(traj, report, f"{socket.gethostname()}:{os.getpid()}", time.time() - t0)
