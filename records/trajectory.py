"""Trajectories: what an agent saw and did, step by step, with what a trainer needs to learn from it."""

from __future__ import annotations

import time
import uuid
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, Field


class ToolCall(BaseModel):
    """One call of a tool, as the policy asked for it."""

    name: str
    """Tool name."""
    arguments: dict[str, Any] = Field(default_factory=dict)
    """Arguments as a JSON object."""
    id: str | None = None
    """Call id from native tool calling (OpenAI-compatible servers); None for text-parsed calls."""


class Message(BaseModel):
    """One chat message. Assistant messages carry the sampled tokens when the policy reports them."""

    role: Literal["system", "user", "assistant", "tool"]
    """Chat role."""
    content: str
    """Text content exactly as the policy produced it or as it was shown to the policy."""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    """Native tool calls of an assistant message (empty when calls were written in `content`)."""
    name: str | None = None
    """Tool name for `tool` messages."""
    train: bool = True
    """Whether a trainer may learn from this turn (assistant only). Agent-R's revision data sets it to
    False on the erroneous prefix so only the revision is learned."""
    token_ids: list[int] | None = None
    """Completion token ids exactly as sampled (assistant only), when the policy reports them."""
    logprobs: list[float] | None = None
    """Log-probability of each sampled token under the sampling policy, aligned with `token_ids`."""


class Step(BaseModel):
    """One policy call and the tool results it led to."""

    index: int
    """Position in the trajectory, from 0."""
    response: Message
    """The assistant message the policy produced."""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    """Calls parsed from the response (or its native calls)."""
    parse_error: str | None = None
    """Why the response could not be parsed into calls, shown to the agent as the observation."""
    observation: Message | None = None
    """Tool results returned to the policy (None after the final step)."""
    prompt_tokens: int = 0
    """Tokens in the prompt of this policy call."""
    completion_tokens: int = 0
    """Tokens the policy generated in this call."""
    policy_seconds: float = 0.0
    """Wall time of the policy call."""
    tool_seconds: float = 0.0
    """Wall time of running the tools."""
    started_at: float = Field(default_factory=time.time)
    """Unix time the step started."""


class TrajectoryStatus(str, Enum):
    """How an episode ended."""

    running = "running"
    submitted = "submitted"
    budget_exhausted = "budget_exhausted"
    context_exceeded = "context_exceeded"
    error = "error"
    infra_error = "infra_error"
    """The infrastructure failed, not the agent: its sandbox died or was removed, the task image was
    missing, or grading could not give a verdict. Never a reward, never training data; the run retries it."""


SANDBOX_ENDED_BY_AGENT = "the agent ended its sandbox"
"""Start of `Trajectory.error` (status `error`) when the sandbox's command server was killed, stalled or impersonated from
inside the sandbox after the agent acted there: the agent's failure, graded and rewarded as such, never retried."""
INTERRUPTED = "interrupted (the run was stopped)"
"""`Trajectory.error` of an episode cut short by Ctrl-C, a stop request or a killed run (status `error`)."""


class Trajectory(BaseModel):
    """One episode of one agent on one task instance."""

    schema_version: int = 1
    """Version of this record's layout."""
    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:16])
    """Unique id."""
    run_id: str = ""
    """Run that produced it."""
    instance_id: str
    """Task instance it worked on."""
    agent_variant: str = ""
    """Name or hash of the agent variant (prompts, tools, settings) that acted."""
    policy: str = ""
    """Policy spec or stored policy version id that generated the responses."""
    prompt: list[Message] = Field(default_factory=list)
    """System and first user messages."""
    steps: list[Step] = Field(default_factory=list)
    """The steps, in order."""
    status: TrajectoryStatus = TrajectoryStatus.running
    """How the episode ended (running while in flight)."""
    patch: str = ""
    """The diff the agent produced (SWE tasks)."""
    answer: str = ""
    """The final answer (tool-calling tasks): the last response."""
    error: str | None = None
    """What went wrong, when status is `error` or `infra_error`."""
    parent_id: str | None = None
    """Trajectory this one branches from (SE-Agent, Agent-R), if any."""
    branch_step: int | None = None
    """Number of the parent's steps this one shares before it diverges."""
    origin: str = "rollout"
    """What made it: `rollout`, `se-agent:revision`, `agent-r:splice`, ..."""
    created_at: float = Field(default_factory=time.time)
    """Unix time the episode started."""
    finished_at: float | None = None
    """Unix time it ended."""

    def messages(self) -> list[Message]:
        """The whole chat: prompt, then each response and its observation."""
        out = list(self.prompt)
        for step in self.steps:
            out.append(step.response)
            if step.observation is not None:
                out.append(step.observation)
        return out

    @property
    def truncated(self) -> bool:
        """True when the episode was cut by a budget or the context length, not ended by the agent."""
        return self.status in (TrajectoryStatus.budget_exhausted, TrajectoryStatus.context_exceeded)

    @property
    def infra_failure(self) -> bool:
        """True when the episode says nothing about the agent: an infrastructure error, or an interruption
        of the run. Such trajectories are kept for inspection but never rewarded or trained on."""
        return self.status == TrajectoryStatus.infra_error or (
            self.status == TrajectoryStatus.error and (self.error or "").startswith("interrupted"))

    @property
    def sandbox_ended_by_agent(self) -> bool:
        """True when the agent's own actions ended its sandbox (its failure, not the infrastructure's)."""
        return self.status == TrajectoryStatus.error and (self.error or "").startswith(SANDBOX_ENDED_BY_AGENT)

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.steps)

    @property
    def prompt_tokens(self) -> int:
        return sum(s.prompt_tokens for s in self.steps)
