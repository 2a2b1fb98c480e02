"""The agent loop as a LangGraph `StateGraph`: policy -> tools -> policy ... until submit or a budget ends it.

Each finished step is handed to `on_step` at once (the run store writes it), so a killed run loses at most
the step in flight.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypedDict

from langgraph.graph import END, START, StateGraph

from agent.parsing import STOP, parse_tool_calls
from agent.policy.base import Policy, SamplingParams
from agent.tools import TOOLS, ToolContext, ToolError, truncate_middle
from agent.variant import AgentVariant
from records import Message, Step, TaskInstance, Trajectory, TrajectoryStatus
from sandbox import Sandbox, SandboxError
from sandbox.base import SandboxDied


class EpisodeState(TypedDict):
    trajectory: Trajectory
    pending: Step | None
    done: bool


@dataclass
class Agent:
    """A policy acting with a variant's prompts and tools."""

    policy: Policy
    variant: AgentVariant = field(default_factory=AgentVariant.load)
    on_step: Callable[[Trajectory, Step], None] = lambda traj, step: None
    """Called after each step is complete (record it)."""

    def __post_init__(self) -> None:
        unknown = [t for t in self.variant.tools if t not in TOOLS]
        if unknown:
            raise ValueError(f"variant {self.variant.name!r} names unknown tools {unknown}; known: {sorted(TOOLS)}")
        self.tools = {name: TOOLS[name] for name in self.variant.tools}

    # --- prompts --------------------------------------------------------------------------------
    def prompt(self, instance: TaskInstance, workdir: str) -> list[Message]:
        v = self.variant
        tools = "\n".join(t.describe() for t in self.tools.values())
        return [Message(role="system", content=v.system_template.format(tools=tools, workdir=workdir)),
                Message(role="user", content=v.instance_template.format(
                    problem_statement=instance.problem_statement, workdir=workdir))]

    # --- the graph ------------------------------------------------------------------------------
    def build_graph(self, ctx: ToolContext, started: float) -> Any:
        v = self.variant
        sampling = SamplingParams(max_tokens=v.max_tokens_per_step, temperature=v.temperature,
                                  stop=[] if v.native_tools else [STOP])
        schemas = [t.schema() for t in self.tools.values()] if v.native_tools else None

        def over_budget(traj: Trajectory) -> TrajectoryStatus | None:
            b = v.budget
            tokens = traj.prompt_tokens + traj.completion_tokens
            if len(traj.steps) >= b.max_steps or tokens >= b.max_tokens or time.time() - started >= b.max_seconds:
                return TrajectoryStatus.budget_exhausted
            if b.max_cost and tokens / 1000 * b.cost_per_1k_tokens >= b.max_cost:
                return TrajectoryStatus.budget_exhausted
            return None

        def policy_node(state: EpisodeState) -> dict:
            traj = state["trajectory"]
            status = over_budget(traj)
            messages = traj.messages()
            prompt_tokens = self.policy.count_tokens(messages)
            if status is None and prompt_tokens + v.max_tokens_per_step > self.policy.context_length:
                status = TrajectoryStatus.context_exceeded
            if status is not None:
                traj.status = status
                return {"done": True, "pending": None}
            t = time.perf_counter()
            gen = self.policy.generate([messages], sampling, tools=schemas)[0]
            step = Step(index=len(traj.steps), response=gen.message(), prompt_tokens=gen.prompt_tokens or prompt_tokens,
                        completion_tokens=gen.completion_tokens, policy_seconds=time.perf_counter() - t)
            if gen.tool_calls:
                step.tool_calls = list(gen.tool_calls)
            else:
                step.tool_calls, step.parse_error = parse_tool_calls(gen.text)
            return {"pending": step}

        def tools_node(state: EpisodeState) -> dict:
            traj, step = state["trajectory"], state["pending"]
            assert step is not None
            t = time.perf_counter()
            if step.parse_error:
                text = v.format_error_template.format(error=step.parse_error)
            else:
                outputs = []
                for call in step.tool_calls:
                    tool = self.tools.get(call.name)
                    try:
                        if tool is None:
                            raise ToolError(f"unknown tool {call.name!r}; the tools are {', '.join(self.tools)}")
                        out = tool(ctx, call.arguments)
                    except ToolError as e:
                        out = f"error: {e}"
                    except SandboxDied:
                        raise
                    except SandboxError as e:
                        out = f"error: {e}"
                    prefix = f"[{call.name}]\n" if len(step.tool_calls) > 1 else ""
                    outputs.append(prefix + truncate_middle(out, v.max_observation_chars))
                    if ctx.submitted:
                        break
                text = "\n".join(outputs)
            if v.native_tools and step.tool_calls and not step.parse_error:
                step.observation = Message(role="tool", content=text, name=step.tool_calls[0].name)
            else:
                step.observation = Message(role="user", content=v.observation_template.format(observation=text))
            step.tool_seconds = time.perf_counter() - t
            traj.steps.append(step)
            if ctx.submitted:
                traj.patch = ctx.sandbox.diff()
                traj.status = TrajectoryStatus.submitted
            self.on_step(traj, step)
            return {"pending": None, "done": ctx.submitted}

        graph = StateGraph(EpisodeState)
        graph.add_node("policy", policy_node)
        graph.add_node("tools", tools_node)
        graph.add_edge(START, "policy")
        graph.add_conditional_edges("policy", lambda s: END if s["done"] else "tools", ["tools", END])
        graph.add_conditional_edges("tools", lambda s: END if s["done"] else "policy", ["policy", END])
        return graph.compile()

    # --- one episode ----------------------------------------------------------------------------
    def run(self, instance: TaskInstance, sandbox: Sandbox, trajectory: Trajectory | None = None) -> Trajectory:
        """Act on `instance` in `sandbox` until submit or a budget ends it. `trajectory` may carry a header
        (ids, parent) and already-taken steps to continue from (their actions must already be in the sandbox)."""
        traj = trajectory or Trajectory(instance_id=instance.instance_id)
        traj.agent_variant = traj.agent_variant or self.variant.fingerprint()
        traj.policy = traj.policy or self.policy.spec
        if not traj.prompt:
            traj.prompt = self.prompt(instance, sandbox.workdir)
        traj.status = TrajectoryStatus.running
        ctx = ToolContext(sandbox=sandbox, command_timeout=self.variant.command_timeout)
        graph = self.build_graph(ctx, time.time())
        try:
            graph.invoke({"trajectory": traj, "pending": None, "done": False},
                         {"recursion_limit": 2 * self.variant.budget.max_steps + 10})
        except SandboxError as e:
            traj.status, traj.error = TrajectoryStatus.error, str(e)
        if traj.status == TrajectoryStatus.running:
            traj.status = TrajectoryStatus.budget_exhausted
        if traj.status != TrajectoryStatus.submitted and traj.status != TrajectoryStatus.error:
            try:  # keep what the agent did, so partial work can be graded and learned from
                traj.patch = sandbox.diff()
            except SandboxError:
                pass
        traj.answer = traj.steps[-1].response.content if traj.steps else ""
        traj.finished_at = time.time()
        return traj
