"""Trajectory-level operators: continue an executed trajectory from one of its steps with a new strategy.

The branch point is the step before the source's first edit of the repository: its exploration (reading,
searching, running a reproduction) is kept, and the fix is redone under the operator's strategy. The kept
steps are replayed in the fresh sandbox before the agent continues (`agent.replay.replay_actions`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.graph import Agent
from agent.replay import replay_actions
from records import TaskInstance, Trajectory
from sandbox import WORKDIR, Sandbox

_WRITES = re.compile(r"(sed\s+-i|>>|(^|[^2&])>\s*[\w./]|\bgit\s+(apply|checkout|reset)|\bpatch\b|\bmv\b|\brm\b|\bcp\b|"
                     r"\btee\b|\bpip\b)")


def edits_repository(name: str, arguments: dict) -> bool:
    """Whether a tool call (probably) changes the repository's files."""
    if name in ("str_replace", "create", "edit", "write_file", "undo"):
        path = str(arguments.get("path", ""))
        return not path.startswith("/") or path.startswith(WORKDIR)
    if name == "bash":
        return bool(_WRITES.search(str(arguments.get("command", ""))))
    return False


def branch_point(traj: Trajectory, max_steps: int) -> int:
    """Steps of `traj` before its first edit (at most `max_steps - 1`, so the continuation has room)."""
    for step in traj.steps:
        if step.parse_error is None and any(edits_repository(c.name, c.arguments) for c in step.tool_calls):
            return min(step.index, max_steps - 1)
    return min(len(traj.steps), max_steps - 1)


def prefix(parent: Trajectory, upto: int) -> list:
    return [s.model_copy(deep=True) for s in parent.steps[:upto]]


@dataclass
class ContinuingAgent(Agent):
    """An agent that first replays the trajectory's already-taken steps in its sandbox, then continues."""

    def run(self, instance: TaskInstance, sandbox: Sandbox, trajectory: Trajectory | None = None) -> Trajectory:
        if trajectory is not None and trajectory.steps:
            replay_actions(trajectory, len(trajectory.steps), sandbox, self.variant.command_timeout, self.variant)
        return super().run(instance, sandbox, trajectory)
