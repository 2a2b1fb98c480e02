"""The SWE world: the real agent (its variant's prompts and tools, `undo` included) in Docker sandboxes.

Branching is by reset + replay: a child of a node runs in a FRESH sandbox where the agent loop replays the
node's recorded responses (the same tools, so the same files, shell state and undo checkpoints) and then
executes the newly sampled response. Snapshots (`docker commit`) would skip the replay but lose the shell
sessions; replay keeps an episode exactly as the agent lived it. Its cost is one sandbox start plus the
prefix's commands per child (measured in `bench/` and the README). A terminal node's reward is the SWE reward of
its patch graded in another fresh sandbox with the hidden tests (this is training-data construction, never
evaluation), clamped to [0, 1]: an empty or non-applying patch (-1) is a "disaster" scored 0.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

from agent.graph import Agent, compact_history
from agent.parsing import STOP
from agent.policy.base import Policy, SamplingParams
from agent.replay import ScriptedPolicy
from agent.variant import AgentVariant
from records import Message, TaskInstance, ToolCall, Trajectory, TrajectoryStatus
from rewards.swe import swe_reward
from sandbox import SandboxConfig, start_sandbox
from sandbox.base import WORKDIR
from tasks.grading import grade

from evolve.agent_r.tree import Node
from evolve.agent_r.world import Outcome, Replayed, World
from evolve.errors import ConfigError

log = logging.getLogger(__name__)


def action_label(msg: Message, calls: list[ToolCall]) -> str:
    if not calls:
        return "(no tool call)"
    c = calls[0]
    arg = next(iter(c.arguments.values()), "") if c.arguments else ""
    return f"{c.name}: {str(arg)[:80]}".replace("\n", " ")


class SweWorld(World):
    """One SWE instance. Every branch's trajectory is stored (`origin="agent-r:mcts"`, `parent_id` the node's
    trajectory, `branch_step` its depth), so each tree node stands for a stored, inspectable trajectory."""

    revisable_after_done = False  # a submit ends the agent's episode

    def __init__(self, instance: TaskInstance, policy: Policy, variant: AgentVariant, sandbox_cfg: SandboxConfig,
                 store, run_id: str, *, temperature: float = 1.0, workers: int = 2, seed: int = 0):
        if "undo" not in variant.tools:
            raise ConfigError(f"agent-r needs the `undo` tool in the agent variant's tools (variant {variant.name!r} "
                              f"has {', '.join(variant.tools)}): the revision turn restores the workspace with it")
        self.instance, self.policy, self.store, self.run_id = instance, policy, store, run_id
        self.variant = variant.model_copy(deep=True)
        self.variant.attempts.k = 1
        self.sandbox_cfg = sandbox_cfg
        self.temperature, self.workers, self.seed = temperature, workers, seed
        self.task = instance.problem_statement
        self.policy_calls = 0
        self.prompt_messages = Agent(policy, self.variant).prompt(instance, WORKDIR)
        self.prefix_mismatches = 0

    # --- running episodes -----------------------------------------------------------------------
    def episode(self, responses: list[Message], header: Trajectory) -> Trajectory:
        """The agent loop with `responses` as its policy, in a fresh sandbox, stopped after them."""
        variant = self.variant.model_copy(deep=True)
        variant.budget.max_steps = len(responses)
        agent = Agent(ScriptedPolicy(responses), variant)
        header.prompt = list(self.prompt_messages)
        with start_sandbox(self.sandbox_cfg, image=self.instance.image or None) as sb:
            return agent.run(self.instance, sb, header)

    def score(self, traj: Trajectory) -> float:
        report = grade(self.instance, traj.patch, self.sandbox_cfg, trajectory_id=traj.id)
        reward = swe_reward(report)
        if self.store is not None:
            self.store.put_test_report(traj.id, report)
            self.store.put_reward(traj.id, reward)
        return reward.total

    def _trajectory(self, node: Node) -> Trajectory | None:
        return self.store.get_trajectory(node.trajectory_id) if node.trajectory_id else None

    # --- World ----------------------------------------------------------------------------------
    def expand(self, path: list[Node], n: int, final: bool) -> list[Outcome]:
        node = path[-1]
        prefix = self._trajectory(node)
        messages = compact_history(prefix, self.variant.history) if prefix else list(self.prompt_messages)
        params = SamplingParams(max_tokens=self.variant.max_tokens_per_step, temperature=self.temperature,
                                stop=[] if self.variant.native_tools else [STOP],
                                seed=self.seed + self.policy_calls)
        gens = self.policy.generate([messages] * n, params)
        self.policy_calls += n
        recorded = [s.response for s in prefix.steps] if prefix else []

        def child(gen) -> Outcome | None:
            header = Trajectory(run_id=self.run_id, instance_id=self.instance.instance_id, policy=self.policy.spec,
                                parent_id=node.trajectory_id, branch_step=node.depth, origin="agent-r:mcts")
            traj = self.episode(recorded + [gen.message()], header)
            if traj.status == TrajectoryStatus.error or len(traj.steps) < node.depth + 1:
                log.warning("%s: a branch failed (%s); it is left out of the tree", self.instance.instance_id,
                            traj.error or traj.status.value)
                return None
            if prefix is not None:
                same = all(a.observation == b.observation for a, b in zip(traj.steps, prefix.steps))
                self.prefix_mismatches += not same
            last = traj.steps[node.depth]
            done = traj.status == TrajectoryStatus.submitted
            reward = self.score(traj) if (done or final) else None
            if self.store is not None:
                self.store.put_trajectory(traj)
            return Outcome(last.response, last.observation, done=done, reward=reward, state=traj.patch,
                           trajectory_id=traj.id, label=action_label(last.response, last.tool_calls),
                           info={"status": traj.status.value})

        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            return [o for o in pool.map(child, gens) if o is not None]

    def replay(self, responses: list[Message]) -> Replayed:
        header = Trajectory(run_id=self.run_id, instance_id=self.instance.instance_id, policy=self.policy.spec,
                            origin="agent-r:splice")
        traj = self.episode(responses, header)
        total = self.score(traj)
        return Replayed(traj, traj.patch, min(max(total, 0.0), 1.0))

    def revision(self, thought: str, steps: int = 1) -> Message:
        if self.variant.native_tools:
            return Message(role="assistant", content=thought,
                           tool_calls=[ToolCall(name="undo", arguments={"steps": steps})])
        call = json.dumps({"name": "undo", "parameters": {"steps": steps}})
        return Message(role="assistant", content=f"<think>{thought}</think>\n<tool_call>\n{call}\n</tool_call>")

    def noop_revision(self, thought: str) -> Message:
        return Message(role="assistant", content=f"<think>{thought}</think>")

    def prompt(self) -> list[Message]:
        return list(self.prompt_messages)

    def path_trajectory(self, node: Node) -> Trajectory:
        return self.store.get_trajectory(node.trajectory_id)
