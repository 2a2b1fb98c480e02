"""`evolve run SUITE` for SWE suites: agent episodes in parallel sandboxes, graded in fresh ones, all stored.

Every instance moves pending -> running -> done in the run store; a restarted run (after Ctrl-C or
SIGKILL) skips the done ones and redoes the rest. Outputs beside the store: `predictions.jsonl` in
SWE-bench's format and `report.json`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Optional

from pydantic import BaseModel, Field

from agent.batching import BatchingPolicy
from agent.policy import DEFAULT_POLICY
from agent.graph import Agent
from agent.policy.base import Policy
from agent.variant import DEFAULT_VARIANT, AgentVariant
from evolve.store import RunStore
from records import TaskInstance, Trajectory, TrajectoryStatus
from rewards.combine import RewardWeights, combine
from rewards.judge import Judge
from rewards.swe import swe_reward
from sandbox import SandboxConfig, SandboxError, start_sandbox
from tasks.grading import grade

log = logging.getLogger(__name__)


class RunConfig(BaseModel):
    """One `evolve run` of a suite."""

    suite: str = "bundled"
    """Suite name (`evolve tasks` lists them)."""
    instances: list[str] = Field(default_factory=list)
    """Instance ids to run (empty: all, cut to `limit`)."""
    limit: Optional[int] = None
    """Most instances to run."""
    dataset: Optional[str] = None
    """Local copy of a SWE-bench dataset (JSON, JSONL or parquet) for the swe-bench suites."""
    policy: str = DEFAULT_POLICY
    """Policy spec: `hf:PATH_OR_NAME`, `openai:URL[#model]`, `vllm:MODEL`, or `version:ID` of a trained policy."""
    variant: str = str(DEFAULT_VARIANT)
    """Agent variant directory (prompts, tools, settings)."""
    max_steps: Optional[int] = None
    """Override the variant's step budget."""
    max_tokens_per_step: Optional[int] = None
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
    out: str = "runs/latest"
    """Run directory (the store, predictions and report); rerunning with the same one resumes."""


def run_id_for(out: Path) -> str:
    return out.resolve().name


def run_swe(cfg: RunConfig, instances: list[TaskInstance], policy: Policy,
            on_event: Callable[[str, str], None] = lambda instance_id, what: None,
            judge_policy: Policy | None = None) -> dict:
    """Run the agent on `instances` (resuming), grade, store; returns the report."""
    out = Path(cfg.out)
    run_id = run_id_for(out)
    variant = AgentVariant.load(cfg.variant)
    if cfg.max_steps:
        variant.budget.max_steps = cfg.max_steps
    if cfg.max_tokens_per_step:
        variant.max_tokens_per_step = cfg.max_tokens_per_step
    sandbox_cfg = cfg.sandbox.model_copy(update={"run_id": run_id})
    started = time.time()
    with RunStore(out) as store:
        store.put_run(run_id, "run", cfg.model_dump(mode="json"))
        for inst in instances:
            store.put_instance(run_id, inst)
        status = store.instance_status(run_id)
        todo = [i for i in instances if status.get(i.instance_id) != "done"]
        for inst in instances:
            if status.get(inst.instance_id) == "done":
                on_event(inst.instance_id, "done (stored)")
        _close_interrupted(store, run_id, {i.instance_id for i in todo})
        judge = _judge(judge_policy, store) if judge_policy is not None else None
        batching = BatchingPolicy(policy, max_batch=cfg.workers)
        batching.active = min(cfg.workers, len(todo)) or 1
        lock = threading.Lock()

        def one(inst: TaskInstance) -> None:
            store.set_instance_status(run_id, inst.instance_id, "running")
            traj = Trajectory(run_id=run_id, instance_id=inst.instance_id)
            store.put_trajectory(traj)
            agent = Agent(batching, variant, on_step=lambda t, s: (store.append_step(t.id, s),
                                                                    on_event(inst.instance_id, f"step {s.index + 1}")))
            on_event(inst.instance_id, "starting sandbox")
            try:
                with start_sandbox(sandbox_cfg, image=inst.image or None) as sb:
                    traj = agent.run(inst, sb, traj)
            except SandboxError as e:
                traj.status, traj.error, traj.finished_at = TrajectoryStatus.error, str(e), time.time()
            finally:
                with lock:
                    batching.active = max(batching.active - 1, 1)
            store.put_trajectory(traj)
            rewards = {}
            if cfg.grade:
                on_event(inst.instance_id, "grading")
                report = grade(inst, traj.patch, sandbox_cfg, trajectory_id=traj.id)
                store.put_test_report(traj.id, report)
                rewards["swe"] = swe_reward(report)
            if judge is not None:
                on_event(inst.instance_id, "judging")
                rewards["judge"] = judge.judge_trajectory(inst, traj)
            for reward in rewards.values():
                store.put_reward(traj.id, reward)
            if rewards:
                store.put_reward(traj.id, combine(rewards, cfg.rewards))
            store.set_instance_status(run_id, inst.instance_id, "done")
            store.log_event("instance_done", instance_id=inst.instance_id, trajectory_id=traj.id)
            on_event(inst.instance_id, "done")

        with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
            futures = {pool.submit(one, inst): inst for inst in todo}
            for fut in as_completed(futures):
                exc = fut.exception()
                if exc is not None:
                    inst = futures[fut]
                    store.set_instance_status(run_id, inst.instance_id, "error")
                    on_event(inst.instance_id, f"error: {exc}")
                    if not isinstance(exc, SandboxError):
                        raise exc
        store.set_run_status(run_id, "finished")
        report = write_outputs(store, run_id, out, cfg.policy, time.time() - started)
    return report


def _judge(policy: Policy, store: RunStore) -> Judge:
    """A rubric judge through `policy`, its replies cached in the run store by content hash."""
    from agent.policy.base import SamplingParams

    params = SamplingParams(max_tokens=512, temperature=0.0)
    return Judge(lambda messages: policy.generate([messages], params)[0].text, cache=store.cache())


def _close_interrupted(store: RunStore, run_id: str, todo: set[str]) -> None:
    """Trajectories left `running` by a killed run are marked as interrupted errors (their steps stay)."""
    for tid in store.trajectory_ids(run_id=run_id, status=TrajectoryStatus.running.value):
        traj = store.get_trajectory(tid)
        if traj.instance_id in todo:
            traj.status, traj.error = TrajectoryStatus.error, "interrupted (the run was stopped)"
            store.put_trajectory(traj)


def write_outputs(store: RunStore, run_id: str, out: Path, model: str, seconds: float) -> dict:
    """`predictions.jsonl` (SWE-bench's format, the latest trajectory per instance) and `report.json`."""
    latest: dict[str, dict] = {}
    for row in store.trajectory_summaries(run_id):
        if row["status"] != TrajectoryStatus.running.value:
            latest[row["instance_id"]] = row
    rows, preds = [], []
    for inst in store.instances(run_id):
        row = latest.get(inst.instance_id)
        if row is None:
            rows.append({"instance_id": inst.instance_id, "status": "not run"})
            continue
        traj = store.get_trajectory(row["id"])
        preds.append({"instance_id": inst.instance_id, "model_name_or_path": model, "model_patch": traj.patch})
        report = store.test_report(traj.id)
        rows.append({"instance_id": inst.instance_id, "status": traj.status.value, "resolved": row["resolved"],
                     "steps": len(traj.steps), "tokens": traj.prompt_tokens + traj.completion_tokens,
                     "seconds": round((traj.finished_at or traj.created_at) - traj.created_at, 1),
                     "patch_applied": report.patch_applied if report else None, "error": traj.error})
    with open(out / "predictions.jsonl", "w") as f:
        for p in preds:
            f.write(json.dumps(p) + "\n")
    graded = [r for r in rows if r.get("resolved") is not None]
    report = {"run_id": run_id, "instances": len(rows), "graded": len(graded),
              "resolved": sum(bool(r["resolved"]) for r in graded),
              "resolved_rate": (sum(bool(r["resolved"]) for r in graded) / len(rows)) if rows else 0.0,
              "tokens": sum(r.get("tokens", 0) for r in rows), "seconds": round(seconds, 1), "per_instance": rows}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report
