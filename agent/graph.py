"""The agent loop as a LangGraph `StateGraph`: policy -> tools -> policy ... until submit or a budget ends it.

Each finished step is handed to `on_step` at once (the run store writes it), so a killed run loses at most
the step in flight. The variant's declarative knobs act here, with no host code from the variant:
history compaction (old observations elided from the prompt), a pre-submit check (run in the sandbox,
shown to the agent, a failure refuses the submit), what to do on an empty patch, and several attempts
with the best one picked by signals the agent can see (non-empty patch, check passed, fewer steps).
"""

from __future__ import annotations

import logging
import shlex
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypedDict

from langgraph.graph import END, START, StateGraph

from agent.parsing import STOP, parse_tool_calls
from agent.policy.base import Policy, SamplingParams
from agent.tools import ToolContext, ToolError, truncate_middle
from agent.tools.undo import checkpoint, clear_checkpoints, restore_tree, snapshot_tree
from agent.variant import AgentVariant, History
from records import Message, Step, TaskInstance, Trajectory, TrajectoryStatus
from records.trajectory import SANDBOX_ENDED_BY_AGENT
from sandbox import Sandbox, SandboxError
from sandbox.base import SandboxDied

log = logging.getLogger(__name__)


class EpisodeState(TypedDict):
    trajectory: Trajectory
    pending: Step | None
    done: bool


def compact_history(traj: Trajectory, history: History) -> list[Message]:
    """The messages the policy sees: the whole chat, with all but the `keep_last` newest observations replaced
    by a one-line notice (those longer than the notice). The trajectory itself is not changed."""
    messages = list(traj.prompt)
    observed = [i for i, s in enumerate(traj.steps) if s.observation is not None]
    elide = set(observed[:-history.keep_last]) if history.keep_last and len(observed) > history.keep_last else set()
    for i, step in enumerate(traj.steps):
        messages.append(step.response)
        obs = step.observation
        if obs is None:
            continue
        if i in elide:
            notice = history.elided_template.format(step=i + 1, chars=len(obs.content))
            if len(notice) < len(obs.content):
                obs = obs.model_copy(update={"content": notice})
        messages.append(obs)
    return messages


@dataclass
class CheckResult:
    """One run of the pre-submit check."""

    passed: bool
    exit_code: int
    output: str


@dataclass
class Attempt:
    """One attempt's visible signals, for choosing among attempts."""

    trajectory: Trajectory
    check: CheckResult | None

    @property
    def key(self) -> tuple:
        """Larger is better: a non-empty patch, the check passed (or none configured), submitted, fewer steps."""
        t = self.trajectory
        return (bool(t.patch.strip()), self.check is None or self.check.passed,
                t.status == TrajectoryStatus.submitted, -len(t.steps))


@dataclass
class Agent:
    """A policy acting with a variant's prompts and tools."""

    policy: Policy
    variant: AgentVariant = field(default_factory=AgentVariant.load)
    on_step: Callable[[Trajectory, Step], None] = lambda traj, step: None
    """Called after each step is complete (record it)."""
    on_attempt: Callable[[Trajectory], None] | None = None
    """With `attempts.k > 1`: called when a further attempt's trajectory starts (before its first step) and
    when any attempt ends, so a caller can store every attempt; the chosen one is what `run` returns."""

    def __post_init__(self) -> None:
        self.tools = self.variant.resolve_tools()

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
        undo_enabled = "undo" in self.tools

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
            messages = compact_history(traj, v.history)
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
            died: SandboxDied | None = None
            if step.parse_error:
                text = v.format_error_template.format(error=step.parse_error)
            else:
                if undo_enabled:
                    checkpoint(ctx, step.index)
                outputs = []
                for call in step.tool_calls:
                    tool = self.tools.get(call.name)
                    try:
                        if tool is None:
                            raise ToolError(f"unknown tool {call.name!r}; the tools are {', '.join(self.tools)}")
                        ctx.state[ACTED] = step.index  # from here on, what happens inside the sandbox is the agent's
                        out = tool(ctx, call.arguments)
                        if ctx.submitted:
                            out = self._gate_submit(ctx, out)
                    except SandboxDied as e:  # the step is stored with what happened, then the episode ends
                        died = e
                        out = f"error: the sandbox died: {e}"
                    except (ToolError, SandboxError) as e:
                        out = f"error: {e}"
                        ctx.submitted = False  # a submit whose patch could not be taken did not happen
                    prefix = f"[{call.name}]\n" if len(step.tool_calls) > 1 else ""
                    outputs.append(prefix + truncate_middle(out, v.max_observation_chars))
                    if ctx.submitted or died is not None:
                        break
                text = "\n".join(outputs)
            if v.native_tools and step.tool_calls and not step.parse_error:
                step.observation = Message(role="tool", content=text, name=step.tool_calls[0].name)
            else:
                step.observation = Message(role="user", content=v.observation_template.format(observation=text))
            step.tool_seconds = time.perf_counter() - t
            traj.steps.append(step)
            if died is not None:
                self.on_step(traj, step)
                raise died
            if ctx.submitted:
                patch = ctx.state.pop("submitted_patch", None)
                traj.patch = patch if patch is not None else ctx.sandbox.diff()
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

    # --- the gate at submit ---------------------------------------------------------------------
    def _gate_submit(self, ctx: ToolContext, out: str) -> str:
        """The agent called submit: refuse an empty patch once (if asked), run the pre-submit check (its
        output is shown; a failure refuses the submit up to `refuse_times`). Sets `ctx.submitted` back to
        False when refused; returns the observation."""
        v = self.variant
        patch = ctx.sandbox.diff()
        if not patch.strip() and v.empty_patch.action == "retry_once" and not ctx.state.get("empty_nudged"):
            ctx.state["empty_nudged"] = True
            ctx.submitted = False
            return v.empty_patch.nudge
        check = self.run_check(ctx) if v.pre_submit_check.command else None
        ctx.state["submitted_patch"] = patch
        if check is None:
            return out
        ctx.state["last_check"] = check
        shown = truncate_middle(check.output, v.pre_submit_check.max_output_chars)
        refused = ctx.state.get("check_refusals", 0)
        if not check.passed and refused < v.pre_submit_check.refuse_times:
            ctx.state["check_refusals"] = refused + 1
            ctx.submitted = False
            ctx.state.pop("submitted_patch", None)
            return v.pre_submit_check.failed_template.format(command=v.pre_submit_check.command,
                                                             exit_code=check.exit_code, output=shown)
        verdict = "passed" if check.passed else f"failed (exit code {check.exit_code}); submitted anyway"
        return f"{out}\ncheck `{v.pre_submit_check.command}` {verdict}:\n{shown}"

    def run_check(self, ctx: ToolContext) -> CheckResult:
        """Run the pre-submit check in the sandbox's workdir, then put the workspace files back as they were
        (a check that writes files, caches or reports, must not change the patch)."""
        c = self.variant.pre_submit_check
        before = snapshot_tree(ctx)
        timeout = min(c.timeout, run_command_limit(ctx.sandbox, c.timeout))
        try:
            r = ctx.sandbox.exec(f"cd {shlex.quote(ctx.sandbox.workdir)} && {c.command}", timeout=timeout)
        except SandboxDied:
            raise
        except SandboxError as e:
            return CheckResult(passed=False, exit_code=-1, output=f"the check could not run: {e}")
        if before is not None:
            try:
                restore_tree(ctx, before)
            except ToolError as e:
                log.warning("could not restore the workspace after the pre-submit check: %s", e)
        out = r.output + (f"\n[check timed out after {timeout:.0f} s]" if r.timed_out else "")
        return CheckResult(passed=r.ok, exit_code=r.exit_code, output=out or "[no output]")

    # --- one attempt ----------------------------------------------------------------------------
    def _run_once(self, instance: TaskInstance, sandbox: Sandbox, traj: Trajectory) -> tuple[Trajectory, ToolContext]:
        traj.agent_variant = traj.agent_variant or self.variant.fingerprint()
        traj.policy = traj.policy or self.policy.spec
        if not traj.prompt:
            traj.prompt = self.prompt(instance, sandbox.workdir)
        traj.status = TrajectoryStatus.running
        ctx = ToolContext(sandbox=sandbox, command_timeout=min(self.variant.command_timeout,
                                                               run_command_limit(sandbox, self.variant.command_timeout)))
        graph = self.build_graph(ctx, time.time())
        try:
            if "undo" in self.tools and not traj.steps:
                clear_checkpoints(ctx)  # a fresh episode: nothing before it can be undone
            graph.invoke({"trajectory": traj, "pending": None, "done": False},
                         {"recursion_limit": 2 * self.variant.budget.max_steps + 10})
        except SandboxError as e:
            traj.status, traj.error = TrajectoryStatus.error, died_reason(e, ctx)
        if traj.status == TrajectoryStatus.running:
            traj.status = TrajectoryStatus.budget_exhausted
        if traj.status != TrajectoryStatus.submitted and traj.status != TrajectoryStatus.error:
            try:  # keep what the agent did, so partial work can be graded and learned from
                traj.patch = sandbox.diff()
            except SandboxError as e:  # too large, the disk full, the sandbox ended: the episode's failure
                traj.status, traj.error = TrajectoryStatus.error, died_reason(e, ctx, "the patch could not be taken: ")
        traj.answer = traj.steps[-1].response.content if traj.steps else ""
        traj.finished_at = time.time()
        return traj, ctx

    # --- one episode ----------------------------------------------------------------------------
    def run(self, instance: TaskInstance, sandbox: Sandbox, trajectory: Trajectory | None = None) -> Trajectory:
        """Act on `instance` in `sandbox` until submit or a budget ends it. `trajectory` may carry a header
        (ids, parent) and already-taken steps to continue from (their actions must already be in the sandbox).

        With `attempts.k > 1` (and no steps to continue from) the sandbox is reset between attempts, each
        further attempt is a new trajectory (`parent_id` the first, `branch_step` 0, `origin` "attempt"),
        and the best by visible signals is returned, its patch left in the sandbox."""
        first = trajectory or Trajectory(instance_id=instance.instance_id)
        k = self.variant.attempts.k if not first.steps else 1
        attempts: list[Attempt] = []
        for i in range(k):
            if i == 0:
                traj = first
            else:
                try:
                    sandbox.reset()
                except SandboxError as e:
                    log.warning("attempt %d of %s not started: reset failed: %s", i + 1, instance.instance_id, e)
                    break
                traj = Trajectory(run_id=first.run_id, instance_id=first.instance_id, policy=first.policy,
                                  agent_variant=first.agent_variant, parent_id=first.id, branch_step=0,
                                  origin="attempt")
                if self.on_attempt is not None:
                    self.on_attempt(traj)
            traj, ctx = self._run_once(instance, sandbox, traj)
            attempt = Attempt(traj, self._final_check(ctx, traj) if k > 1 else None)
            attempts.append(attempt)
            if k > 1 and self.on_attempt is not None:
                self.on_attempt(traj)
            if traj.status == TrajectoryStatus.error:
                break  # the sandbox is gone or broken: no further attempt can run in it
            if self.variant.attempts.stop_on_success and attempt.key[:3] == (True, True, True):
                break
        best = max(attempts, key=lambda a: a.key)  # ties: the earliest attempt
        if len(attempts) > 1:
            log.info("%s: attempt %d of %d chosen (%s)", instance.instance_id, attempts.index(best) + 1,
                     len(attempts), [a.key for a in attempts])
            if best is not attempts[-1] and best.trajectory.status != TrajectoryStatus.error:
                self._restore_patch(sandbox, best.trajectory.patch)
        return best.trajectory

    def _final_check(self, ctx: ToolContext, traj: Trajectory) -> CheckResult | None:
        """The pre-submit check's verdict on the attempt's final patch (reused from submit when it ran there)."""
        if not self.variant.pre_submit_check.command or traj.status == TrajectoryStatus.error:
            return None
        if not traj.patch.strip():
            return CheckResult(passed=False, exit_code=-1, output="empty patch")
        last = ctx.state.get("last_check")
        if traj.status == TrajectoryStatus.submitted and last is not None:
            return last
        try:
            return self.run_check(ctx)
        except SandboxError as e:
            return CheckResult(passed=False, exit_code=-1, output=str(e))

    @staticmethod
    def _restore_patch(sandbox: Sandbox, patch: str) -> None:
        """Leave the chosen attempt's changes in the sandbox (its state after the last attempt is another's)."""
        try:
            sandbox.reset()
            if patch.strip():
                sandbox.write_file("/tmp/.evolve/chosen.patch", patch)
                r = sandbox.exec(f"cd {shlex.quote(sandbox.workdir)} && git apply --whitespace=nowarn "
                                 "/tmp/.evolve/chosen.patch", timeout=120)
                if r.exit_code != 0:
                    log.warning("could not re-apply the chosen attempt's patch: %s", r.output[-300:])
        except SandboxError as e:
            log.warning("could not restore the chosen attempt in the sandbox: %s", e)


ACTED = "agent_acted"
"""`ToolContext.state` key: the index of the step whose tool call started last (absent before the agent's first)."""


def died_reason(e: SandboxError, ctx: ToolContext, prefix: str = "") -> str:
    """`Trajectory.error` for an episode ended by `e`. A sandbox that died from inside (`SandboxDied.inside`) after the
    agent's first tool call died by the agent's doing: the error starts with `SANDBOX_ENDED_BY_AGENT`, which makes it
    the agent's failure (graded, rewarded), not an infrastructure error. Before its first call nothing of the agent's
    ran there, and a death from outside (removed, daemon, out of memory) is never the agent's."""
    if isinstance(e, SandboxDied) and e.inside and ACTED in ctx.state:
        return f"{SANDBOX_ENDED_BY_AGENT} (step {ctx.state[ACTED] + 1} was its last action): {e}"
    return f"{prefix}{e}"


def run_command_limit(sandbox: Sandbox, default: float) -> float:
    """The run's command timeout (the sandbox configuration's), which caps every timeout a variant sets."""
    config = getattr(sandbox, "config", None)
    limit = getattr(config, "exec_timeout", None)
    return float(limit) if limit else default
