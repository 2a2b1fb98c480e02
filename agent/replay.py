"""Replay: a policy that repeats recorded responses, and rebuilding a sandbox's state at a step.

`ScriptedPolicy` drives the real agent loop with a recorded trajectory's responses (harness benchmarks,
tests, and re-running a trajectory on a new agent variant). `replay_actions` re-executes the first `k`
steps' tool calls in a fresh sandbox, so a search can branch from the middle of an episode where no
snapshot was taken.
"""

from __future__ import annotations

from typing import Any

from agent.policy.base import Generation, Policy, SamplingParams
from agent.tools import TOOLS, ToolContext, ToolError
from records import Message, Trajectory
from sandbox import Sandbox, SandboxError

SUBMIT = '<think>Done.</think>\n<tool_call>\n{"name": "submit", "parameters": {}}\n</tool_call>'


class ScriptedPolicy(Policy):
    """Answers the n-th assistant turn of a conversation with `responses[n]`; submits after the last."""

    def __init__(self, responses: list[str], context_length: int = 1_000_000):
        self.responses = responses
        self.spec = "replay"
        self._context_length = context_length

    @classmethod
    def from_trajectory(cls, traj: Trajectory) -> "ScriptedPolicy":
        return cls([s.response.content for s in traj.steps])

    @property
    def context_length(self) -> int:
        return self._context_length

    def generate(self, conversations: list[list[Message]], params: SamplingParams,
                 tools: list[dict[str, Any]] | None = None) -> list[Generation]:
        out = []
        for conv in conversations:
            n = sum(m.role == "assistant" for m in conv)
            text = self.responses[n] if n < len(self.responses) else SUBMIT
            out.append(Generation(text=text, prompt_tokens=self.count_tokens(conv), completion_tokens=len(text) // 4))
        return out

    def count_tokens(self, messages: list[Message]) -> int:
        return sum(len(m.content) for m in messages) // 4


def replay_actions(traj: Trajectory, upto: int, sandbox: Sandbox, command_timeout: float = 120.0) -> list[str]:
    """Re-run the tool calls of `traj.steps[:upto]` in `sandbox` (fresh, at the base commit). Returns the
    observations, so a caller can check the replay matched the recording."""
    ctx = ToolContext(sandbox=sandbox, command_timeout=command_timeout)
    observations = []
    for step in traj.steps[:upto]:
        for call in step.tool_calls:
            tool = TOOLS.get(call.name)
            if tool is None or call.name == "submit":
                continue
            try:
                observations.append(tool(ctx, call.arguments))
            except (ToolError, SandboxError) as e:
                observations.append(f"error: {e}")
    return observations
