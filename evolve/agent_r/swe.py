"""The SWE world: the real agent (its variant's prompts and tools, `undo` included) in Docker sandboxes.

Branching is by reset + replay: a child of a node runs in a FRESH sandbox where the agent loop replays the
node's recorded responses (the same tools, so the same files, shell state and undo checkpoints) and then
executes the newly sampled response. Snapshots (`docker commit`) would skip the replay but lose the shell
sessions; replay keeps an episode exactly as the agent lived it. Its cost is one sandbox start plus the
prefix's commands per child (measured in `bench/` and the README). A terminal node's reward is the SWE reward of
its patch graded in another fresh sandbox with the hidden tests (this is training-data construction, never
evaluation), clamped to [0, 1]: an empty or non-applying patch (-1) is a "disaster" scored 0.

Branches and splice replays are scripted replays that need no policy, so they run on the run's executor
(`evolve.agent_r.branch_job`: threads here, or Ray tasks with `--executor ray`); sampling stays on the driver,
batched, and the driver stores every record as the branches come back.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import Future, as_completed
from typing import Literal

from agent.graph import Agent, compact_history
from agent.parsing import STOP
from agent.policy.base import Policy, SamplingParams
from agent.variant import AgentVariant, with_undo
from evolve.agent_r.branch_job import BranchJob, BranchResult, failed_branch, replay_episode, run_branch
from evolve.agent_r.node import Node
from evolve.agent_r.world import Outcome, Replayed, World
from evolve.run.executor import Executor, LocalExecutor
from records import Message, TaskInstance, ToolCall, Trajectory, TrajectoryStatus
from rewards.swe import swe_reward
from sandbox import SandboxConfig
from sandbox.base import WORKDIR

log = logging.getLogger(__name__)


def action_label(msg: Message, calls: list[ToolCall]) -> str:
    if not calls:
        return "(no tool call)"
    c = calls[0]
    arg = next(iter(c.arguments.values()), "") if c.arguments else ""
    return f"{c.name}: {str(arg)[:80]}".replace("\n", " ")


def _first_line(e: BaseException) -> str:
    return next(iter(str(e).strip().splitlines()), "")


class SweWorld(World):
    """One SWE instance. Every branch's trajectory is stored (`origin="agent-r:mcts"`, `parent_id` the node's
    trajectory, `branch_step` its depth), so each tree node stands for a stored, inspectable trajectory."""

    revisable_after_done = False  # a submit ends the agent's episode

    def __init__(self, instance: TaskInstance, policy: Policy, variant: AgentVariant, sandbox_cfg: SandboxConfig,
                 store, run_id: str, *, temperature: float = 1.0, workers: int = 2, seed: int = 0,
                 executor: Executor | None = None):
        variant = with_undo(variant)  # the revision turn restores the workspace with `undo`
        self.instance, self.policy, self.store, self.run_id = instance, policy, store, run_id
        self.variant = variant.model_copy(deep=True)
        self.variant.attempts.k = 1
        self.sandbox_cfg = sandbox_cfg
        self.temperature, self.workers, self.seed = temperature, workers, seed
        self.task = instance.problem_statement
        self.policy_calls = 0
        self.prompt_messages = Agent(policy, self.variant).prompt(instance, WORKDIR)
        self.prefix_mismatches = 0
        self.executor = executor or LocalExecutor(max(1, workers))
        """Where branches and replays run (shared by every world of a run); the default: `workers` threads."""

    # --- running branches (on the executor) -------------------------------------------------------
    def _job(self, responses: list[Message], header: Trajectory, grade: Literal["submitted", "always"],
             branch: bool) -> BranchJob:
        return BranchJob(self.instance, self.variant, list(responses), header, list(self.prompt_messages),
                         self.sandbox_cfg, grade, branch)

    def episode(self, responses: list[Message], header: Trajectory) -> Trajectory:
        """The agent loop with `responses` as its policy, in a fresh sandbox here, stopped after them."""
        return replay_episode(self._job(responses, header, "submitted", False))

    def _store(self, res: BranchResult, trajectory: bool = True) -> float | None:
        """Write a branch's records (the driver is the store's one writer); its SWE reward when it was graded.
        `trajectory=False` (a splice's replay): the report and reward only; the splice stores the trajectory
        if it is kept."""
        reward = swe_reward(res.report) if res.report is not None else None
        if self.store is not None:
            if trajectory:
                self.store.put_trajectory(res.trajectory)
            if res.report is not None and reward is not None:
                self.store.put_test_report(res.trajectory.id, res.report)
                self.store.put_reward(res.trajectory.id, reward)
        return reward.total if reward is not None else None

    def _came_back(self, res: BranchResult) -> None:
        """Note a branch that ran on a remote worker (`agent-r:remote_branch` event: which worker, how long)."""
        if self.store is not None and self.executor.remote:
            self.store.log_event("agent-r:remote_branch", run_id=self.run_id, instance_id=self.instance.instance_id,
                                 trajectory_id=res.trajectory.id, worker=res.worker, seconds=round(res.seconds, 2))

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
        futures: dict[Future, int] = {}
        for i, gen in enumerate(gens):
            header = Trajectory(run_id=self.run_id, instance_id=self.instance.instance_id, policy=self.policy.spec,
                                parent_id=node.trajectory_id, branch_step=node.depth, origin="agent-r:mcts")
            job = self._job(recorded + [gen.message()], header, "always" if final else "submitted", True)
            futures[self.executor.submit(run_branch, job)] = i
        outcomes: list[Outcome | None] = [None] * len(gens)
        errors: list[BaseException] = []
        for fut in as_completed(futures):  # stored as they finish; the children keep the sampling order
            try:
                res = fut.result()
            except Exception as e:  # noqa: BLE001 - a lost branch (its worker died past the reruns) or a crash
                log.warning("%s: a branch could not run (%s: %s); it is left out of the tree",
                            self.instance.instance_id, type(e).__name__, _first_line(e))
                errors.append(e)
                continue
            self._came_back(res)
            outcomes[futures[fut]] = self._child(node, prefix, res)
        if errors and len(errors) == len(gens):  # nothing ran: a broken setup, not bad luck; stop (resumable)
            raise errors[0]
        return [o for o in outcomes if o is not None]

    def _child(self, node: Node, prefix: Trajectory | None, res: BranchResult) -> Outcome | None:
        traj = res.trajectory
        if failed_branch(traj, node.depth + 1):
            log.warning("%s: a branch failed (%s); it is left out of the tree", self.instance.instance_id,
                        traj.error or traj.status.value)
            return None
        if prefix is not None:
            same = all(a.observation == b.observation for a, b in zip(traj.steps, prefix.steps))
            self.prefix_mismatches += not same
        last = traj.steps[node.depth]
        reward = self._store(res)
        return Outcome(last.response, last.observation, done=traj.status == TrajectoryStatus.submitted,
                       reward=reward, state=traj.patch, trajectory_id=traj.id,
                       label=action_label(last.response, last.tool_calls), info={"status": traj.status.value})

    def replay(self, responses: list[Message]) -> Replayed:
        header = Trajectory(run_id=self.run_id, instance_id=self.instance.instance_id, policy=self.policy.spec,
                            origin="agent-r:splice")
        try:
            res = self.executor.submit(run_branch, self._job(responses, header, "always", False)).result()
        except Exception as e:  # noqa: BLE001 - a lost replay: the splice cannot be checked, so it is not kept
            log.warning("%s: a splice replay could not run (%s: %s); the splice is dropped",
                        self.instance.instance_id, type(e).__name__, _first_line(e))
            header.status, header.error = TrajectoryStatus.error, f"replay lost: {type(e).__name__}"
            return Replayed(header, "", 0.0)
        self._came_back(res)
        total = self._store(res, trajectory=False)
        return Replayed(res.trajectory, res.trajectory.patch, min(max(total or 0.0, 0.0), 1.0))

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
