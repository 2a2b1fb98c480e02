"""Episodes on remote workers (Ray): the worker runs `run_episode` against a private scratch store and
returns the records; the driver, the run store's one writer, stores them as they arrive.

How a worker reaches the policy: a policy that is cheap to load and holds no weights (`openai:` clients,
`replay:` files) is loaded by each worker. A local model (`llamacpp:`, `hf:`, `version:`, `vllm:`) is loaded
once by the driver and served to the workers with Evolve's OpenAI-compatible server: one copy of the
weights, and the policy calls of all workers' episodes are batched together, as with `local`. That server
listens on loopback, so it serves a cluster on this machine (the default); on a multi-machine cluster give
`--policy openai:URL` of a server every node reaches (vLLM, `evolve serve` behind your own proxy).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from concurrent.futures import Future, TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from agent.graph import Agent
from agent.policy.base import Policy, SeededPolicy
from agent.policy.server import serve_in_thread
from agent.variant import AgentVariant
from evolve.errors import ConfigError
from evolve.policies import policy_loader
from evolve.run.episode import EpisodeResult, record_infra, record_interrupted, run_episode
from evolve.run.executor import RayExecutor
from evolve.store import RunStore
from records import Step, TaskInstance, Trajectory
from rewards.combine import RewardWeights, combine
from rewards.judge import Judge
from sandbox import SandboxConfig

log = logging.getLogger(__name__)

WORKER_LOADED = ("openai:", "replay:")
"""Policy spec prefixes each worker loads itself; every other policy is served by the driver."""


@dataclass
class EpisodeJob:
    """Everything a worker needs for one episode (pickled to it)."""

    instance: TaskInstance
    policy: str
    """Spec the worker loads (`openai:` or `replay:` with an absolute path)."""
    variant: AgentVariant
    sandbox: SandboxConfig
    run_id: str
    trajectory: Trajectory
    """The header to fill (id, run, policy label)."""
    grade: bool
    weights: RewardWeights
    steps: Any = None
    """A `ray.util.queue.Queue` the worker puts each finished step on (header JSON, step JSON), or None."""
    seed: int | None = None
    """Sampling seed of every policy call of the episode (None: the variant's sampling as it is)."""
    agent_cls: type[Agent] = Agent
    """The agent class (e.g. SE-Agent's `ContinuingAgent`, which first replays the header's steps)."""


_POLICIES: dict[str, Policy] = {}
_POLICIES_LOCK = threading.Lock()


def worker_policy(spec: str) -> Policy:
    """One policy object per spec per worker process (a worker runs many episodes)."""
    with _POLICIES_LOCK:
        if spec not in _POLICIES:
            _POLICIES[spec] = policy_loader(Path("runs"))(spec)
        return _POLICIES[spec]


def step_relay(queue: Any) -> Callable[[Trajectory, Step], None]:
    """A worker's `on_step`: puts each finished step on the driver's `StepRelay` queue (None: does nothing)."""

    def relay(traj: Trajectory, step: Step) -> None:
        if queue is not None:
            try:
                queue.put_nowait((traj.model_dump_json(exclude={"steps"}), step.model_dump_json()))
            except Exception as e:  # noqa: BLE001 - the live view is best effort; the result carries every step
                log.debug("relaying a step: %s", e)

    return relay


def run_remote_episode(job: EpisodeJob) -> EpisodeResult:
    """Run on a worker: one episode, graded, its records returned whole (steps included)."""
    policy = worker_policy(job.policy)
    with tempfile.TemporaryDirectory(prefix="evolve-episode-") as scratch, RunStore(scratch) as store:
        agent = job.agent_cls(policy if job.seed is None else SeededPolicy(policy, job.seed), job.variant,
                              on_step=step_relay(job.steps))
        result = run_episode(job.instance, agent, job.sandbox, store, job.run_id, grade=job.grade,
                             weights=job.weights, trajectory=job.trajectory)
        result.trajectory = store.get_trajectory(result.trajectory.id)
    return result


class TaskLost(Exception):
    """A Ray task failed for the cluster's reasons (its worker or node died beyond the retries)."""


class TaskStopped(Exception):
    """The run's stop request cancelled a Ray task."""


class StepRelay:
    """The driver's end of the workers' live steps: stores each as it arrives, so the TUI follows Ray runs
    as it follows local ones. A trajectory whose final record was stored is never overwritten by a late step."""

    def __init__(self) -> None:
        from ray.util.queue import Queue

        self.queue = Queue(actor_options={"num_cpus": 0})
        self._lock = threading.Lock()
        self._started: set[str] = set()
        self._final: set[str] = set()

    def drain(self, store: RunStore, limit: int = 1000) -> int:
        """Store up to `limit` waiting steps; returns how many."""
        try:
            items = self.queue.get_nowait_batch(min(limit, self.queue.qsize()))
        except Exception as e:  # noqa: BLE001 - an empty or gone queue
            log.debug("draining steps: %s", e)
            return 0
        for header, step_json in items:
            traj = Trajectory.model_validate_json(header)
            step = Step.model_validate_json(step_json)
            with self._lock:
                if traj.id in self._final:
                    continue
                if traj.id not in self._started:
                    self._started.add(traj.id)
                    store.put_trajectory(traj)
                store.append_step(traj.id, step)
        return len(items)

    def store_result(self, store: RunStore, result: EpisodeResult) -> None:
        with self._lock:
            self._final.add(result.trajectory.id)
            store_episode(store, result)


def judge_episode(result: EpisodeResult, instance: TaskInstance, judge: Judge, weights: RewardWeights) -> None:
    """Add the judge's reward to a worker's episode and combine every reward with the run's weights."""
    rewards = {name: r for name, r in result.rewards.items() if name != "combined"}
    rewards["judge"] = judge.judge_trajectory(instance, result.trajectory)
    result.rewards = {**rewards, "combined": combine(dict(rewards), weights)}


def store_episode(store: RunStore, result: EpisodeResult) -> None:
    """Write a worker's episode into the run store: the trajectory with its steps, the report, the rewards."""
    store.put_trajectory(result.trajectory)
    if result.report is not None:
        store.put_test_report(result.trajectory.id, result.report)
    for reward in result.rewards.values():
        store.put_reward(result.trajectory.id, reward)


def worker_policy_spec(spec: str) -> str:
    """The spec a worker loads for `spec` when the worker loads it itself (paths made absolute)."""
    if spec.startswith("replay:"):
        return "replay:" + str(Path(spec.removeprefix("replay:")).resolve())
    return spec


class ServedPolicy:
    """A driver-loaded policy served to the workers on loopback for the length of a run."""

    def __init__(self, policy: Policy, nodes: int):
        if nodes > 1:
            raise ConfigError(f"the Ray cluster has {nodes} nodes, but a local policy ({policy.spec}) can only be "
                              "served to workers on this machine: start a server every node reaches (vLLM, "
                              "`evolve serve`) and pass --policy openai:URL")
        # the policy's own generate, and tool-call text left for the agent's parser: workers see what a local
        # run's episodes see
        self.server = serve_in_thread(policy, host="127.0.0.1", port=0, engine="policy", parse_tool_calls=False)
        self.spec = f"openai:{self.server.url}"

    def close(self) -> None:
        self.server.stop()


class RayEpisodes:
    """`run_swe`'s episodes on a Ray cluster: each episode is a Ray task (rerun by Ray when its worker dies);
    its steps are relayed live and its records stored by the driver when it returns."""

    def __init__(self, cfg, policy: Policy, policy_spec: str):
        self.executor = RayExecutor(cfg)
        self.submitted = 0
        """Episodes handed to the cluster so far."""
        self.served: ServedPolicy | None = None
        try:
            if policy_spec.startswith(WORKER_LOADED):
                self.spec = worker_policy_spec(policy_spec)
            else:
                self.served = ServedPolicy(policy, self.executor.nodes())
                self.spec = self.served.spec
            self.relay = StepRelay()
        except BaseException:
            self.close()
            raise

    def run(self, instance: TaskInstance, variant: AgentVariant, sandbox_cfg: SandboxConfig, store: RunStore,
            run_id: str, trajectory: Trajectory, grade: bool, weights: RewardWeights, stop,
            seed: int | None = None, judge: Judge | None = None, agent_cls: type[Agent] = Agent) -> EpisodeResult:
        """One episode on the cluster; `stop` (the run's StopSignal) cancels it. `judge` scores the returned
        trajectory here, on the driver (its replies cached in the run store), before the records are stored."""
        store.put_trajectory(trajectory)
        # With a judge the worker combines only what it computes; the driver adds the judge and combines all.
        worker_weights = weights if judge is None else RewardWeights(
            weights={name: w for name, w in weights.weights.items() if name != "judge"})
        job = EpisodeJob(instance, self.spec, variant, sandbox_cfg, run_id, trajectory, grade, worker_weights,
                         self.relay.queue, seed, agent_cls)
        fut = self.executor.submit(run_remote_episode, job)
        self.submitted += 1
        store.log_event("ray_episode", run_id=run_id, instance_id=instance.instance_id, trajectory_id=trajectory.id)
        try:
            result = self.wait(fut, store, stop)
        except TaskStopped:
            return record_interrupted(store, trajectory)
        except TaskLost as e:
            if stop.is_set():
                return record_interrupted(store, trajectory)
            return record_infra(store, trajectory, f"the Ray worker failed: {e}", lambda iid, what: None)
        except Exception:  # the episode's own error, raised as with local
            if stop.is_set():
                return record_interrupted(store, trajectory)
            raise
        self.relay.drain(store)
        if judge is not None and result.infra_error is None and not result.interrupted and not stop.is_set():
            judge_episode(result, instance, judge, weights)
        self.relay.store_result(store, result)
        return result

    def wait(self, fut: Future, store: RunStore, stop=None) -> Any:
        """The result of a task on this cluster, storing the relayed live steps while it runs. The function's own
        error is raised as itself (as it would be here); a task lost beyond Ray's retries raises `TaskLost`;
        `stop` (a StopSignal) set while it runs cancels it and raises `TaskStopped`."""
        ray = self.executor.ray
        while True:
            try:
                return fut.result(timeout=0.5)
            except FutureTimeout:
                self.relay.drain(store)
                if stop is not None and stop.is_set():
                    self.executor.cancel(fut, force=True)
                    raise TaskStopped from None
            except ray.exceptions.RayTaskError as e:
                raise e.as_instanceof_cause() from None
            except Exception as e:  # noqa: BLE001 - the worker or node died more often than Ray retries
                raise TaskLost(f"{type(e).__name__}: {e}") from None

    def drain(self, store: RunStore) -> None:
        self.relay.drain(store)

    def close(self) -> None:
        if self.served is not None:
            self.served.close()
        self.executor.close()
