"""Rebuilding a sandbox's state at a step: `replay_actions` re-executes the first `k` steps' tool calls in a
fresh sandbox, so a search can branch from the middle of an episode where no snapshot was taken.

The policies that repeat recorded responses (`ScriptedPolicy`, `ReplayPolicy`) live in `agent.policy.replay`
and are importable from here too.
"""

from __future__ import annotations

from agent.policy.replay import ReplayPolicy, ScriptedPolicy
from agent.tools import TOOLS, ToolContext, ToolError
from agent.tools.undo import checkpoint, clear_checkpoints
from agent.variant import AgentVariant
from records import Trajectory
from sandbox import Sandbox, SandboxError

__all__ = ["ReplayPolicy", "ScriptedPolicy", "replay_actions"]


def replay_actions(traj: Trajectory, upto: int, sandbox: Sandbox, command_timeout: float = 120.0,
                   variant: AgentVariant | None = None) -> list[str]:
    """Re-run the tool calls of `traj.steps[:upto]` in `sandbox` (fresh, at the base commit). Returns the
    observations, so a caller can check the replay matched the recording. `variant` supplies its sandbox
    tools (default: the host tools, `undo` among them). Where `undo` is offered, checkpoints are recorded
    before each tool-calling step as in the loop, so replayed `undo` calls, and an agent continuing from
    here, can undo into the replayed steps."""
    tools = variant.resolve_tools() if variant is not None else dict(TOOLS)
    ctx = ToolContext(sandbox=sandbox, command_timeout=command_timeout)
    undo = "undo" in tools
    if undo:
        clear_checkpoints(ctx)
    observations = []
    for step in traj.steps[:upto]:
        if undo and step.tool_calls and not step.parse_error:
            checkpoint(ctx, step.index)
        for call in step.tool_calls:
            tool = tools.get(call.name)
            if tool is None or call.name == "submit":
                continue
            try:
                observations.append(tool(ctx, call.arguments))
            except (ToolError, SandboxError) as e:
                observations.append(f"error: {e}")
    return observations
