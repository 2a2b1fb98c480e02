"""`evolve run SUITE` for SWE suites: agent episodes in parallel sandboxes, graded in fresh ones, all stored.

`run_episode` (`evolve.run.episode`) is one episode: the agent in a fresh sandbox, its patch graded in another fresh sandbox,
rewards computed, everything stored. A failure of the infrastructure (the sandbox did not start, died or was
removed, the task image is missing, the grading environment gives no verdict even without the patch) is not
the agent's: the trajectory gets status `infra_error`, no reward, and `run_swe` retries a bounded number of
times: the episode when its sandbox failed, the grading alone when the grading sandbox failed (a grading
environment that gives no verdict without the patch is not retried within the run: it would say the same
again). What the agent can cause is its own failure, graded and rewarded: tests that end, hang or give no
results because of its patch, tampering (`tasks.grading`); a sandbox its own commands ended (its command server
killed or stalled from inside, `Trajectory.sandbox_ended_by_agent`), or a patch too large to store (status
`error`). Any other exception of an episode ends that episode only (an infra error with its reason); only the
policy or the run store failing stops the run.

`run_swe` runs a suite: every instance moves pending -> running -> done (or infra_error / interrupted) in
the run store, under an exclusive lock on the run directory. Ctrl-C or a stop request (the TUI's stop
button, `RunStore.request_stop`) stops it gracefully: queued instances do not start, running episodes are
cut and marked interrupted, the report is written; the same command resumes. A SIGKILLed run resumes too.
Outputs beside the store: `predictions.jsonl` in SWE-bench's format and `report.json`.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, Field

from agent.batching import BatchingPolicy
from agent.graph import Agent
from agent.policy import DEFAULT_POLICY
from agent.policy.base import Policy, SamplingParams
from agent.variant import DEFAULT_VARIANT, AgentVariant
from evolve.errors import ConfigError
from evolve.run.episode import EpisodeResult, OnEvent, StopSignal, run_episode
from evolve.run.executor import ExecutorConfig
from evolve.run.local_tasks import check_local_python, local_instance, local_refusal
from evolve.run.remote_episode import RayEpisodes
from evolve.run.ctrl_c import FirstCtrlCStops
from evolve.run.run_lock import RunLock
from evolve.store import DB_NAME, RunStore, StoreError, check_run_dir
from records import Message, TaskInstance, Trajectory, TrajectoryStatus
from records.trajectory import INTERRUPTED
from rewards.combine import RewardWeights
from rewards.judge import Judge
from sandbox import SandboxConfig, SandboxError, prune_orphans

log = logging.getLogger(__name__)


class RunConfig(BaseModel):
    """One `evolve run` of a suite."""

    suite: str = "bundled"
    """Suite name (`evolve tasks` lists them)."""
    instances: list[str] = Field(default_factory=list)
    """Instance ids to run (empty: all, cut to `limit`)."""
    limit: Optional[int] = Field(default=None, ge=1)
    """Most instances to run (at least 1; None: all)."""
    dataset: Optional[str] = None
    """Local copy of a SWE-bench dataset (JSON, JSONL or parquet) for the swe-bench suites."""
    policy: str = DEFAULT_POLICY
    """Policy spec: `hf:PATH_OR_NAME`, `openai:URL[#model]`, `vllm:MODEL`, or `version:ID` of a trained policy."""
    variant: str = str(DEFAULT_VARIANT)
    """Agent variant directory (prompts, tools, settings)."""
    max_steps: Optional[int] = Field(default=None, ge=1)
    """Override the variant's step budget (at least 1)."""
    max_tokens_per_step: Optional[int] = Field(default=None, ge=1)
    """Override the variant's tokens per step."""
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    """How sandboxes start (backend, limits)."""
    workers: int = Field(default=2, ge=1)
    """Episodes run in parallel; their policy calls are batched together."""
    grade: bool = True
    """Grade each patch in a fresh sandbox."""
    judge: Optional[str] = None
    """Policy spec of an LLM judge scoring each trajectory with a rubric (reward `judge`); None: no judge."""
    rewards: RewardWeights = Field(default_factory=RewardWeights)
    """Weights of the rewards summed into the stored `combined` reward (default: `swe` alone)."""
    attempts: int = Field(default=1, ge=1)
    """Episodes per instance, each its own trajectory, graded apart (with `temperature` > 0: the groups offline
    GRPO compares); an instance is done once all are finished, and a resumed run runs only the missing ones."""
    temperature: Optional[float] = Field(default=None, ge=0)
    """Sampling temperature of the agent's policy calls (None: the variant's)."""
    infra_retries: int = Field(default=2, ge=0)
    """Times an episode whose sandbox failed (did not start, died, removed, image missing) is run again, and
    times grading whose sandbox failed is tried again on the same patch, before the instance is left as an
    infrastructure or grading error (rerunning the command retries it). A grading environment that gives no
    verdict even without the patch is not retried in the run."""
    infra_retry_delay: float = Field(default=5.0, ge=0)
    """Seconds to wait before such a retry (a daemon or disk under pressure gets a moment)."""
    stop_grace: float = Field(default=10.0, ge=0)
    """Seconds a stop (Ctrl-C, stop request) waits for running episodes to wind down before the report."""
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    """Where episodes run: threads here (`local`) or tasks on a Ray cluster (`ray`); the store has one writer."""
    out: str = "runs/latest"
    """Run directory (the store, predictions and report); rerunning with the same one resumes."""


def run_id_for(out: Path) -> str:
    return out.resolve().name


# --- a whole run -------------------------------------------------------------------------------------

def run_swe(cfg: RunConfig, instances: list[TaskInstance], policy: Policy,
            on_event: OnEvent = lambda instance_id, what: None,
            judge_policy: Policy | None = None) -> dict:
    """Run the agent on `instances` (resuming), grade, store; returns the report.

    Bad input (no instances, reward weights this run cannot produce, an unreachable judge, another policy
    than the one the directory was run with) raises `ConfigError` before anything is stored. The report
    says `stopped` (the reason) when Ctrl-C or a stop request ended the run early."""
    out = Path(cfg.out)
    run_id = run_id_for(out)
    instances = list({i.instance_id: i for i in instances}.values())  # each instance once
    if not instances:
        raise ConfigError("no instances to run: the selection is empty")
    try:
        cfg.rewards.check_available(({"swe"} if cfg.grade else set()) | ({"judge"} if judge_policy else set()))
    except ValueError as e:
        raise ConfigError(f"--reward-weights: {e}") from None
    variant = AgentVariant.load(cfg.variant)
    if cfg.max_steps is not None:
        variant.budget.max_steps = cfg.max_steps
    if cfg.max_tokens_per_step is not None:
        variant.max_tokens_per_step = cfg.max_tokens_per_step
    if cfg.temperature is not None:
        variant.temperature = cfg.temperature
    if judge_policy is not None:
        check_judge(judge_policy, cfg.judge or "")
    sandbox_cfg = cfg.sandbox.model_copy(update={"run_id": run_id})
    started = time.time()
    check_run_dir(out)
    with RunLock(out, f"evolve run {cfg.suite}"), RunStore(out) as store:
        _refuse_other_policy(store, run_id, cfg.policy)
        prune_orphans(run_id, docker=sandbox_cfg.backend == "docker")  # what a killed earlier run of this id left
        runnable = instances
        if sandbox_cfg.backend == "local":  # the local sandbox starts from a directory, not an image
            why = local_refusal(instances)
            if why:
                store_refusal(store, cfg, instances, why)
                raise SandboxError(why)
            runnable = [local_instance(i, store.dir / "workspaces") for i in instances]
            check_local_python(sandbox_cfg, runnable[0])
        store.put_run(run_id, "run", cfg.model_dump(mode="json"))
        for inst in instances:
            store.put_instance(run_id, inst)
        on_event = _stored_events(store, run_id, on_event)
        status = store.instance_status(run_id)
        for iid, state in status.items():  # left `running` by a killed run: cut, so interrupted until it reruns
            if state == "running":
                store.set_instance_status(run_id, iid, "interrupted")
        todo = [i for i in runnable if status.get(i.instance_id) != "done"]
        _close_interrupted(store, run_id, {i.instance_id for i in todo})
        finished = _finished_attempts(store, run_id)
        todo += [i for i in runnable if status.get(i.instance_id) == "done"  # more --attempts than before
                 and finished.get(i.instance_id, 0) < cfg.attempts]
        for inst in instances:
            if inst.instance_id not in {i.instance_id for i in todo}:
                on_event(inst.instance_id, "done (stored)")
        judge = _judge(judge_policy, store) if judge_policy is not None else None
        remote = _remote_episodes(cfg, policy)
        batching = BatchingPolicy(policy, max_batch=cfg.workers)
        stopper = StopSignal()
        fatal: list[BaseException] = []
        pending: queue.Queue[TaskInstance] = queue.Queue()
        for inst in todo:
            pending.put(inst)
        n_workers = min(cfg.workers, len(todo))
        batching.active = n_workers or 1
        count_lock = threading.Lock()

        def do_instance(inst: TaskInstance) -> None:
            iid = inst.instance_id
            with stopper.commit():
                if stopper.is_set():  # taken from the queue as the stop came: it never started, it stays queued
                    return
                store.set_instance_status(run_id, iid, "running")
            for _ in range(finished.get(iid, 0), cfg.attempts - 1):  # every attempt but the last
                if not do_attempt(inst, final=False):
                    return
            do_attempt(inst, final=True)

        def do_attempt(inst: TaskInstance, final: bool) -> bool:
            """One episode (with its infra retries); the instance's status is set after the final attempt or when
            an attempt did not finish. True when it finished and the next attempt may start."""
            iid = inst.instance_id
            result: EpisodeResult | None = None
            for attempt in range(cfg.infra_retries + 1):
                if attempt:
                    on_event(iid, f"retrying after an infra error ({attempt}/{cfg.infra_retries})")
                    if stopper.event.wait(cfg.infra_retry_delay):
                        break
                traj = Trajectory(run_id=run_id, instance_id=iid, policy=cfg.policy)
                if remote is not None:
                    result = remote.run(inst, variant, sandbox_cfg, store, run_id, traj, cfg.grade, cfg.rewards,
                                        stopper, judge=judge)
                else:
                    result = run_episode(inst, Agent(batching, variant), sandbox_cfg, store, run_id, grade=cfg.grade,
                                         judge=judge, weights=cfg.rewards, trajectory=traj, on_event=on_event,
                                         stop=stopper, grade_retries=cfg.infra_retries,
                                         retry_delay=cfg.infra_retry_delay)
                if result.infra_error is None or result.interrupted or stopper.is_set():
                    break
                if result.infra_stage == "grading":  # the episode was sound: grading was already retried
                    break
            if result is not None and not result.started:
                with stopper.commit():
                    store.set_instance_status(run_id, iid, "pending")
                return
            if result is None or result.interrupted or stopper.is_set() and result.infra_error is not None:
                with stopper.commit():
                    store.set_instance_status(run_id, iid, "interrupted")
                on_event(iid, "interrupted")
                return False
            with stopper.commit():
                if result.infra_error is not None:
                    store.set_instance_status(run_id, iid, "infra_error")
                    store.log_event("instance_infra_error", run_id=run_id, instance_id=iid,
                                    trajectory_id=result.trajectory.id, error=result.infra_error)
                    on_event(iid, "grading error" if result.infra_stage == "grading" else "infra error")
                    return False
                if not final:
                    return True
                store.set_instance_status(run_id, iid, "done")
                store.log_event("instance_done", instance_id=iid, trajectory_id=result.trajectory.id)
            on_event(iid, "done")
            return True

        def worker() -> None:
            try:
                while not stopper.is_set() and not fatal:
                    try:
                        inst = pending.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        do_instance(inst)
                    except BaseException as e:  # noqa: BLE001 - handed to the main thread
                        if stopper.is_set():
                            log.debug("%s after the stop: %s", inst.instance_id, e)
                            return
                        try:
                            store.set_instance_status(run_id, inst.instance_id, "error")
                        except Exception:  # noqa: BLE001
                            pass
                        on_event(inst.instance_id, f"error: {e}")
                        fatal.append(e)
                        stopper.request(f"error on {inst.instance_id}")
                        return
            finally:
                with count_lock:
                    batching.active = max(batching.active - 1, 1)

        threads = [threading.Thread(target=worker, name=f"evolve-episode-{k}", daemon=True)
                   for k in range(n_workers)]
        with FirstCtrlCStops() as sigint, _closing(remote):
            for t in threads:
                t.start()
            last_poll = 0.0
            while any(t.is_alive() for t in threads) and not stopper.is_set():
                for t in threads:
                    t.join(0.2)
                if remote is not None:
                    remote.drain(store)
                if sigint.hit:
                    stopper.request("Ctrl-C")
                elif time.time() - last_poll >= 1.0:
                    last_poll = time.time()
                    if store.stop_requested(run_id, since=started):
                        stopper.request("stop requested")
            if stopper.is_set():
                log.warning("stopping (%s): queued instances will not start; press Ctrl-C again to abort at once",
                            stopper.reason)
                deadline = time.time() + cfg.stop_grace
                for t in threads:
                    t.join(max(0.0, deadline - time.time()))
        if fatal:  # e.g. the policy server went away: what finished is kept and reported, then the error
            try:
                store.set_run_status(run_id, "error")
                with stopper.commit():
                    _close_interrupted(store, run_id, {i.instance_id for i in todo})
                    write_outputs(store, run_id, out, cfg.policy, time.time() - started,
                                  stopped=f"error: {type(fatal[0]).__name__}: {fatal[0]}")
            except (StoreError, OSError) as e:  # a full disk fails these too: the first error is the one to tell
                log.warning("the run's error could not be recorded: %s", e)
            raise fatal[0]
        if stopper.is_set():
            with stopper.commit():
                _close_interrupted(store, run_id, {i.instance_id for i in todo})
                status = store.instance_status(run_id)
                for inst in todo:  # a queued instance never started: it stays pending (nothing of it was cut)
                    if status.get(inst.instance_id) == "running":
                        store.set_instance_status(run_id, inst.instance_id, "interrupted")
                store.set_run_status(run_id, "stopped")
                store.log_event("run_stopped", run_id=run_id, reason=stopper.reason)
                return write_outputs(store, run_id, out, cfg.policy, time.time() - started,
                                     stopped=stopper.reason)
        store.set_run_status(run_id, "finished")
        report = write_outputs(store, run_id, out, cfg.policy, time.time() - started)
    return report


def _stored_events(store: RunStore, run_id: str, on_event: OnEvent) -> OnEvent:
    """`on_event` that first stores each line (event `progress`): the TUI's event log shows what the CLI prints.
    Storing a line is best effort: a store that cannot be written (a full disk) fails the run's own writes, which
    say so; the line is still printed."""
    def say(instance_id: str, what: str) -> None:
        try:
            if what != "done":  # (stored as its own `instance_done` event)
                store.log_event("progress", run_id=run_id, instance_id=instance_id, text=what)
        except (StoreError, sqlite3.Error) as e:
            log.debug("storing the event %r of %s: %s", what, instance_id, e)
        on_event(instance_id, what)
    return say


def store_refusal(store: RunStore, cfg: RunConfig, instances: list[TaskInstance], why: str) -> dict:
    """A run refused before any episode started: its instances stored as not run, the run as an error, and its
    `report.json` (`stopped`: the reason) written, so the directory says why nothing ran."""
    run_id = run_id_for(Path(cfg.out))
    store.put_run(run_id, "run", cfg.model_dump(mode="json"))
    for inst in instances:
        store.put_instance(run_id, inst)
    store.set_run_status(run_id, "error")
    return write_outputs(store, run_id, Path(cfg.out), cfg.policy, 0.0, stopped=f"error: {why}")


def _remote_episodes(cfg: RunConfig, policy: Policy):
    """`RayEpisodes` when the run's executor is Ray, else None (episodes run in this process's threads)."""
    if cfg.executor.backend == "local":
        return None
    return RayEpisodes(cfg.executor, policy, cfg.policy)


class _closing:
    """Close `thing` (if any) on exit."""

    def __init__(self, thing) -> None:
        self.thing = thing

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        if self.thing is not None:
            self.thing.close()


def check_judge(policy: Policy, spec: str = "") -> None:
    """Ask the judge for one token, so an unreachable judge is found before any episode, not after each."""
    try:
        policy.generate([[Message(role="user", content="Reply with OK.")]], SamplingParams(max_tokens=1,
                                                                                         temperature=0.0))
    except Exception as e:  # noqa: BLE001 - any failure here means the judge cannot judge
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"the judge {spec or policy!r} does not answer: {first}") from None


def refuse_other_policy(out: Path, policy: str) -> None:
    """`ConfigError` when the run directory `out` holds trajectories of another policy (checked before a
    policy is loaded; `run_swe` checks again under the lock)."""
    if (Path(out) / DB_NAME).exists():
        with RunStore(out, readonly=True) as store:
            _refuse_other_policy(store, run_id_for(Path(out)), policy)


def _refuse_other_policy(store: RunStore, run_id: str, policy: str) -> None:
    """A run directory holds one policy's predictions: resuming it with another policy is refused."""
    before = next((r for r in store.runs() if r["id"] == run_id), None)
    if before is None or before["config"].get("policy", policy) == policy:
        return
    if store.trajectory_ids(run_id=run_id):
        raise ConfigError(f"{store.dir} was run with --policy {before['config']['policy']}, not {policy}: "
                          "resume it with that policy, or give another --out directory")


def _judge(policy: Policy, store: RunStore) -> Judge:
    """A rubric judge through `policy`, its replies cached in the run store by content hash."""
    params = SamplingParams(max_tokens=512, temperature=0.0)
    return Judge(lambda messages: policy.generate([messages], params)[0].text, cache=store.cache())


def _finished_attempts(store: RunStore, run_id: str) -> dict[str, int]:
    """Episodes per instance that finished and say something about the agent (not infra errors, not
    interrupted): the attempts a resumed run does not redo."""
    out: dict[str, int] = {}
    for row in store.trajectory_summaries(run_id):
        if row["status"] in (TrajectoryStatus.running.value, TrajectoryStatus.infra_error.value):
            continue
        if row["status"] == TrajectoryStatus.error.value and store.get_trajectory(row["id"]).infra_failure:
            continue
        out[row["instance_id"]] = out.get(row["instance_id"], 0) + 1
    return out


def _close_interrupted(store: RunStore, run_id: str, todo: set[str]) -> None:
    """Trajectories left `running` by a stopped or killed run are marked as interrupted errors (their steps
    stay); they are never graded, rewarded or trained on."""
    for tid in store.trajectory_ids(run_id=run_id, status=TrajectoryStatus.running.value):
        traj = store.get_trajectory(tid)
        if traj.instance_id in todo:
            traj.status, traj.error = TrajectoryStatus.error, INTERRUPTED
            traj.finished_at = traj.finished_at or time.time()
            store.put_trajectory(traj)


# --- outputs -----------------------------------------------------------------------------------------

def write_outputs(store: RunStore, run_id: str, out: Path, model: str, seconds: float,
                  stopped: str | None = None) -> dict:
    """`predictions.jsonl` (SWE-bench's format, the latest graded (else finished) trajectory per instance, each named
    with the policy that produced it) and `report.json`.

    The report counts apart: resolved; `ungraded` (no verdict, whatever the reason); `grading_errors` (the
    grading harness failed or gave no verdict: `grading_error` per instance); `infra_errors` (the
    infrastructure failed the episode itself: `infra_error`); `errors` (the agent's episode failed: graded
    as such); `interrupted` and `not_run`; `stopped` says why the run stopped early (None: it finished).
    `resolved_rate` is SWE-bench's (resolved over all instances, the ungraded counting as unresolved), and
    None when nothing was graded."""
    latest: dict[str, dict] = {}  # the latest graded trajectory, else the latest finished (attempts not chosen
    for row in store.trajectory_summaries(run_id):  # by a multi-attempt variant are never graded)
        before = latest.get(row["instance_id"])
        if row["status"] != TrajectoryStatus.running.value and not (
                before is not None and before["resolved"] is not None and row["resolved"] is None):
            latest[row["instance_id"]] = row
    status = store.instance_status(run_id)
    rows, preds = [], []
    for inst in store.instances(run_id):
        row = latest.get(inst.instance_id)
        state = status.get(inst.instance_id, "pending")
        if row is None:
            rows.append({"instance_id": inst.instance_id, "status": "not run", "state": state, "resolved": None})
            continue
        traj = store.get_trajectory(row["id"])
        report = store.test_report(traj.id)
        infra = traj.status == TrajectoryStatus.infra_error
        interrupted = traj.infra_failure and not infra
        grading_error = traj.error if infra and (traj.error or "").startswith("grading") else None
        if not traj.infra_failure:
            preds.append({"instance_id": inst.instance_id, "model_name_or_path": traj.policy or model,
                          "model_patch": traj.patch})
        shown = "grading_error" if grading_error else traj.status.value  # one name: table, report, footer
        rows.append({"instance_id": inst.instance_id, "status": shown, "state": state,
                     "resolved": None if traj.infra_failure else row["resolved"],
                     "steps": len(traj.steps), "tokens": traj.prompt_tokens + traj.completion_tokens,
                     "seconds": round((traj.finished_at or traj.created_at) - traj.created_at, 1),
                     "patch_applied": report.patch_applied if report else None,
                     "error": traj.error, "grading_error": grading_error,
                     "infra_error": traj.error if infra and grading_error is None else None,
                     "interrupted": interrupted,
                     "policy": traj.policy or model})
    with open(out / "predictions.jsonl", "w") as f:
        for p in preds:
            f.write(json.dumps(p) + "\n")
    graded = [r for r in rows if r.get("resolved") is not None]
    resolved = sum(bool(r["resolved"]) for r in graded)
    report = {"run_id": run_id, "stopped": stopped, "instances": len(rows), "graded": len(graded),
              "resolved": resolved,
              "resolved_rate": resolved / len(rows) if graded else None,
              "ungraded": len(rows) - len(graded),
              "grading_errors": sum(r.get("grading_error") is not None for r in rows),
              "infra_errors": sum(r.get("infra_error") is not None for r in rows),
              "errors": sum(r["status"] == TrajectoryStatus.error.value and not r.get("interrupted") for r in rows),
              "interrupted": sum(bool(r.get("interrupted")) for r in rows),
              "not_run": sum(r["status"] == "not run" for r in rows),
              "tokens": sum(r.get("tokens", 0) for r in rows), "seconds": round(seconds, 1), "per_instance": rows}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def report_ok(report: dict) -> bool:
    """True when every instance ran and was graded (or ran ungraded by choice): the run may exit 0."""
    return not (report.get("stopped") or report.get("infra_errors") or report.get("grading_errors")
                or report.get("interrupted") or report.get("not_run"))
