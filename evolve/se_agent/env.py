"""Where SE-Agent's attempts run. `Environment` is what the driver needs; `SWEEnvironment` runs real
agent episodes in Docker sandboxes through `evolve.run.episode.run_episode` (tests use toy environments)."""

from __future__ import annotations

import threading
from typing import Protocol

from agent.graph import Agent
from agent.policy.base import Policy, SeededPolicy
from agent.variant import AgentVariant
from evolve.run.episode import StopSignal, run_episode
from evolve.run.local_tasks import local_instance
from evolve.se_agent.branch import ContinuingAgent
from evolve.se_agent.records import DOC_BASELINE, Attempt, VisibleOutcome
from evolve.se_agent.remote import remote_baseline, remote_grade, remote_visible
from evolve.se_agent.visible import baseline, visible_outcome
from evolve.store import RunStore
from records import Message, TaskInstance, Trajectory
from rewards.combine import RewardWeights
from rewards.swe import swe_reward
from sandbox import WORKDIR, SandboxConfig
from tasks.grading import grade


class Environment(Protocol):
    def base_prompt(self, instance: TaskInstance) -> list[Message]:
        """The agent's own prompt for `instance` (system with tool instructions, instance message)."""

    def run(self, instance: TaskInstance, attempt: Attempt, trajectory: Trajectory) -> Trajectory:
        """Run `trajectory` (its prompt already built) to the end and store it."""

    def visible(self, instance: TaskInstance, trajectory: Trajectory) -> VisibleOutcome:
        """What can be seen of its outcome without the hidden tests."""

    def hidden(self, instance: TaskInstance, trajectory: Trajectory) -> bool | None:
        """Resolved by the hidden tests (stored as its test report); for the report only."""


class SWEEnvironment:
    """Agent episodes on SWE instances in fresh sandboxes; visible checks and hidden grading in fresh ones."""

    def __init__(self, policy: Policy, variant: AgentVariant, sandbox: SandboxConfig, store: RunStore, run_id: str,
                 on_event=lambda instance_id, what: None):
        self.policy, self.variant, self.sandbox, self.store, self.run_id = policy, variant, sandbox, store, run_id
        self.on_event = on_event
        self.stop = None
        """The run's `StopSignal` (set by the driver): cuts running episodes on a stop request."""
        self.episodes = None
        """`evolve.run.remote_episode.RayEpisodes` when the sandbox work runs on a Ray cluster (`--executor ray`);
        None: here. On Ray: every attempt's episode (a branch attempt as a `ContinuingAgent`, which replays the
        kept steps in the worker's fresh sandbox first), the visible baseline and checks and the hidden grading
        (tasks on the same executor, `evolve.se_agent.remote`); their results are stored here."""
        self._lock = threading.Lock()
        self._baselines: dict[str, dict | None] = {}
        self._runnable: dict[str, TaskInstance] = {}

    def runnable(self, instance: TaskInstance) -> TaskInstance:
        """The instance as this sandbox backend starts it (the local backend needs a workspace directory)."""
        if self.sandbox.backend != "local":
            return instance
        with self._lock:
            if instance.instance_id not in self._runnable:
                self._runnable[instance.instance_id] = local_instance(instance, self.store.dir / "workspaces")
            return self._runnable[instance.instance_id]

    def agent(self, attempt: Attempt | None = None) -> Agent:
        variant = self.variant
        if attempt is not None and attempt.temperature != variant.temperature:
            variant = variant.model_copy(update={"temperature": attempt.temperature})
        policy = self.policy if attempt is None else SeededPolicy(self.policy, attempt.seed)
        if attempt is not None and attempt.branch_step:
            return ContinuingAgent(policy, variant)
        return Agent(policy, variant)

    def base_prompt(self, instance: TaskInstance) -> list[Message]:
        return self.agent().prompt(instance, WORKDIR)

    def run(self, instance: TaskInstance, attempt: Attempt, trajectory: Trajectory) -> Trajectory:
        self.on_event(instance.instance_id, f"iteration {attempt.iteration}: {attempt.origin} running")
        trajectory.policy = trajectory.policy or self.policy.spec
        if self.episodes is not None:
            variant = self.variant.model_copy(update={"temperature": attempt.temperature})
            agent_cls = ContinuingAgent if attempt.branch_step else Agent
            result = self.episodes.run(instance, variant, self.sandbox, self.store, self.run_id, trajectory, False,
                                       RewardWeights(weights={}), self.stop or StopSignal(), seed=attempt.seed,
                                       agent_cls=agent_cls)
            return result.trajectory
        result = run_episode(instance, self.agent(attempt), self.sandbox, self.store, self.run_id, grade=False,
                             trajectory=trajectory, stop=self.stop, on_event=self.on_event)
        return result.trajectory

    def close(self) -> None:
        if self.episodes is not None:
            self.episodes.close()

    def visible(self, instance: TaskInstance, trajectory: Trajectory) -> VisibleOutcome:
        iid, instance = instance.instance_id, self.runnable(instance)
        with self._lock:
            if iid not in self._baselines:
                doc = self.store.document(DOC_BASELINE, iid)
                if doc is None:
                    statuses = self._remote("se-agent:baseline", iid, None, remote_baseline, instance, self.sandbox) \
                        if self.episodes is not None else baseline(instance, self.sandbox)
                    doc = {"statuses": statuses}
                    self.store.put_document(DOC_BASELINE, iid, doc, run_id=self.run_id)
                self._baselines[iid] = doc["statuses"]
        self.on_event(iid, f"visible checks of {trajectory.id}")
        if self.episodes is not None:
            return self._remote("se-agent:visible", iid, trajectory.id, remote_visible, instance, trajectory,
                                self.sandbox, self._baselines[iid])
        return visible_outcome(instance, trajectory, self.sandbox, self._baselines[iid])

    def hidden(self, instance: TaskInstance, trajectory: Trajectory) -> bool | None:
        self.on_event(instance.instance_id, f"grading {trajectory.id} (hidden tests, report only)")
        if self.episodes is not None:
            report = self._remote("se-agent:grade", instance.instance_id, trajectory.id, remote_grade,
                                  self.runnable(instance), trajectory.patch, self.sandbox, trajectory.id)
        else:
            report = grade(self.runnable(instance), trajectory.patch, self.sandbox, trajectory_id=trajectory.id)
        self.store.put_test_report(trajectory.id, report)
        self.store.put_reward(trajectory.id, swe_reward(report))
        return report.resolved

    def _remote(self, job: str, instance_id: str, trajectory_id: str | None, fn, *args):
        """`fn(*args)` as a task on the run's Ray executor, waited for here. The function's own error is raised
        as itself (as it would be here); a task lost beyond Ray's retries raises Ray's error."""
        executor = self.episodes.executor
        fut = executor.submit(fn, *args)
        self.store.log_event("ray_task", run_id=self.run_id, job=job, instance_id=instance_id,
                             trajectory_id=trajectory_id)
        try:
            return fut.result()
        except executor.ray.exceptions.RayTaskError as e:
            raise e.as_instanceof_cause() from None
