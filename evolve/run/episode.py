"""One episode: the agent in a fresh sandbox, its patch graded in another fresh sandbox, rewards computed,
everything stored (`run_episode`). A failure of the infrastructure (the sandbox died or was removed, the task
image is missing, grading gave no verdict) is not the agent's: the trajectory gets status `infra_error` and no
reward (`record_infra`); an episode cut by a stop is marked interrupted (`record_interrupted`)."""

from __future__ import annotations

import copy
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from agent.graph import Agent
from agent.policy.base import PolicyError
from evolve.run.local_tasks import local_instance
from evolve.store import RunStore, StoreError
from records import Reward, TaskInstance, TestReport, Trajectory, TrajectoryStatus
from records.trajectory import INTERRUPTED
from rewards.combine import RewardWeights, combine
from rewards.judge import Judge
from rewards.swe import swe_reward
from sandbox import Sandbox, SandboxConfig, SandboxError, start_sandbox
from tasks import grading

log = logging.getLogger(__name__)

OnEvent = Callable[[str, str], None]


@dataclass
class EpisodeResult:
    """What one episode produced (all of it is also in the store)."""

    trajectory: Trajectory
    report: TestReport | None = None
    """The grading report (None when not graded)."""
    rewards: dict[str, Reward] = field(default_factory=dict)
    """Rewards by name, `combined` included when any reward was computed."""
    infra_error: str | None = None
    """Why the infrastructure failed (then the trajectory's status is `infra_error`); None otherwise."""
    infra_stage: str | None = None
    """Where it failed: `episode` (the agent's sandbox) or `grading`; None without an infra error."""
    interrupted: bool = False
    """The run was stopped while the episode ran; nothing was graded."""
    started: bool = True
    """False when the stop came before the agent acted (the instance never started: it stays pending)."""


class StopSignal:
    """A run's stop flag plus the sandboxes of its running episodes, stopped at once when it is set, so an
    episode waiting on a long command ends promptly. `commit()` orders results against a stop."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""
        self._lock = threading.RLock()
        self._live: set[Sandbox] = set()

    def is_set(self) -> bool:
        return self.event.is_set()

    def request(self, reason: str) -> None:
        with self._lock:
            if not self.event.is_set():
                self.reason = reason
                self.event.set()
            live, self._live = list(self._live), set()
        for sb in live:
            try:
                sb.stop()
            except Exception as e:  # noqa: BLE001 - stopping is best effort; the episode ends either way
                log.debug("stopping a sandbox on stop: %s", e)

    def register(self, sb: Sandbox) -> None:
        with self._lock:
            self._live.add(sb)
        if self.is_set():
            self.request(self.reason)

    def unregister(self, sb: Sandbox) -> None:
        with self._lock:
            self._live.discard(sb)

    def commit(self) -> "threading.RLock":
        """Hold while storing a result: a stop cannot slip between the check and the write."""
        return self._lock


def grading_failure(report: TestReport) -> str | None:
    """Why grading gave no verdict that the agent can be held to (`TestReport.infra_error`: the grading
    environment fails the same way without the patch), else None.

    Everything else is a verdict: an empty patch, one that does not apply, one that tampers with the tests, and
    one with which the tests time out or give no results while they give results without it (`tasks.grading`)."""
    return getattr(report, "infra_error", None) or None


def run_episode(instance: TaskInstance, agent: Agent, sandbox_cfg: SandboxConfig, store: RunStore, run_id: str,
                *, grade: bool = True, judge: Judge | None = None, weights: RewardWeights | None = None,
                trajectory: Trajectory | None = None, on_event: OnEvent | None = None,
                stop: StopSignal | None = None, grade_retries: int = 0,
                retry_delay: float = 0.0) -> EpisodeResult:
    """One episode of `agent` on `instance` in a fresh sandbox, graded in another fresh one; all stored.

    `trajectory` may carry a header (ids, parent, policy) to fill. Steps are stored as they happen. On an
    infrastructure failure the trajectory's status is `infra_error` and no reward is stored; when `stop` is
    set while the episode runs it ends as interrupted (status `error`), ungraded. Grading that raised (its
    sandbox died, its image is missing) is tried again up to `grade_retries` times on the same patch."""
    say = on_event or (lambda instance_id, what: None)
    iid = instance.instance_id
    traj = trajectory or Trajectory(run_id=run_id, instance_id=iid)
    traj.run_id = traj.run_id or run_id
    store.put_trajectory(traj)
    inner_on_step = getattr(agent, "on_step", None)

    def on_step(t: Trajectory, s) -> None:
        store.append_step(t.id, s)
        if inner_on_step is not None:
            inner_on_step(t, s)
        say(iid, f"step {s.index + 1}")

    ep_agent = copy.copy(agent)  # the caller's agent may be shared by parallel episodes
    ep_agent.on_step = on_step
    if getattr(ep_agent, "on_attempt", None) is None:  # attempts.k > 1: each attempt is a stored trajectory
        ep_agent.on_attempt = store.put_trajectory
    infra: str | None = None
    started = True
    say(iid, "starting sandbox")
    try:
        if sandbox_cfg.backend == "local":
            instance = local_instance(instance, store.dir / "workspaces")
            sb = start_sandbox(sandbox_cfg, workspace=instance.image)
        else:
            sb = start_sandbox(sandbox_cfg, image=instance.image or None)
    except SandboxError as e:
        infra = f"sandbox did not start: {e}"
    else:
        if stop is not None:
            stop.register(sb)
        try:
            if stop is not None and stop.is_set():
                started = False
            else:
                traj = ep_agent.run(instance, sb, traj)
            if traj.status != TrajectoryStatus.submitted and not traj.sandbox_ended_by_agent and not _alive(sb):
                infra = f"the sandbox died during the episode ({traj.error or 'gone'})"
        except (PolicyError, StoreError, sqlite3.Error):  # the policy or the run store failed: every episode would, the run stops
            raise
        except Exception as e:  # noqa: BLE001 - anything else ends this episode only; the others go on
            log.warning("%s: the episode failed: %s: %s", iid, type(e).__name__, e, exc_info=log.isEnabledFor(10))
            infra = f"the episode failed: {type(e).__name__}: {e}"
        finally:
            if stop is not None:
                stop.unregister(sb)
            try:
                sb.stop()
            except Exception as e:  # noqa: BLE001 - a gone sandbox may fail to stop; the episode is over
                log.debug("stopping the sandbox of %s: %s", iid, e)
    if stop is not None and stop.is_set():
        return record_interrupted(store, traj, started=started)
    if infra is not None:
        return record_infra(store, traj, infra, say, stage="episode")
    store.put_trajectory(traj)

    rewards: dict[str, Reward] = {}
    report: TestReport | None = None
    if grade:
        for attempt in range(grade_retries + 1):
            say(iid, "grading" if not attempt else f"grading again ({attempt}/{grade_retries})")
            try:
                report = grading.grade(instance, traj.patch, sandbox_cfg, trajectory_id=traj.id)
                break
            except Exception as e:  # noqa: BLE001 - whatever broke in the harness, the agent did not
                if stop is not None and stop.is_set():
                    return record_interrupted(store, traj)
                if not isinstance(e, SandboxError):
                    log.exception("grading %s failed", iid)
                why = f"grading error: {e}" if isinstance(e, SandboxError) else \
                    f"grading error: {type(e).__name__}: {e}"
                if attempt == grade_retries:
                    return record_infra(store, traj, why, say, stage="grading")
                log.debug("%s: %s; grading again", iid, why)
                if stop is None:
                    time.sleep(retry_delay)
                elif stop.event.wait(retry_delay):
                    return record_interrupted(store, traj)
        failure = grading_failure(report)
        if failure is not None:
            store.put_test_report(traj.id, report)
            return record_infra(store, traj, f"grading error: {failure}", say, report, stage="grading")
        rewards["swe"] = swe_reward(report)
    if judge is not None and not (stop is not None and stop.is_set()):
        say(iid, "judging")
        rewards["judge"] = judge.judge_trajectory(instance, traj)
    if rewards:  # without weights: `swe` alone when graded, else every reward computed, each weight 1
        rewards["combined"] = combine(dict(rewards), weights or RewardWeights(
            weights={"swe": 1.0} if "swe" in rewards else {name: 1.0 for name in rewards}))
    with (stop.commit() if stop is not None else _nothing()):
        if stop is not None and stop.is_set():
            return record_interrupted(store, traj)
        if report is not None:
            store.put_test_report(traj.id, report)
        for reward in rewards.values():
            store.put_reward(traj.id, reward)
    return EpisodeResult(traj, report, rewards)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _alive(sb: Sandbox) -> bool:
    try:
        return sb.alive()
    except Exception:  # noqa: BLE001 - a sandbox that cannot say is not usable
        return False


def record_infra(store: RunStore, traj: Trajectory, why: str, say: OnEvent,
                 report: TestReport | None = None, stage: str = "episode") -> EpisodeResult:
    """Store `traj` as an infrastructure error (`why`), with no reward; log and announce it."""
    ended = traj.status.value
    traj.status, traj.finished_at = TrajectoryStatus.infra_error, traj.finished_at or time.time()
    traj.error = why if ended in ("running", "error") else f"{why} (the episode itself ended {ended})"
    store.put_trajectory(traj)
    store.log_event("infra_error", run_id=traj.run_id, instance_id=traj.instance_id, trajectory_id=traj.id,
                    error=why)
    log.debug("%s: %s", traj.instance_id, why)  # said once, through the run's events (and the report)
    say(traj.instance_id, why if stage == "grading" else f"infra error: {why}")
    return EpisodeResult(traj, report, {}, infra_error=why, infra_stage=stage)


def record_interrupted(store: RunStore, traj: Trajectory, started: bool = True) -> EpisodeResult:
    """Store `traj` as interrupted by a stop (status `error`), ungraded."""
    traj.status, traj.error, traj.finished_at = TrajectoryStatus.error, INTERRUPTED, time.time()
    try:
        store.put_trajectory(traj)
    except Exception as e:  # noqa: BLE001 - the run may have closed the store already; it marks it then
        log.debug("storing an interrupted trajectory: %s", e)
    return EpisodeResult(traj, interrupted=True, started=started)

