"""An `evolve hgm` run's parts beside the search itself: the world it acts in (policies batched, episodes here or
on Ray), resuming (the same tasks and rules; interrupted trajectories closed), the held-out re-evaluation of the
top nodes and the report. `evolve.hgm.cli` parses the arguments and calls these in order."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from pathlib import Path
from typing import Callable, ContextManager

from agent.batching import BatchingPolicy
from agent.policy.base import Policy
from evolve.errors import ConfigError
from evolve.hgm.real import DockerWorld, RealWorldConfig
from evolve.hgm.view import tree_summary
from evolve.run.executor import ExecutorConfig
from evolve.run.remote_episode import RayEpisodes
from evolve.store import RunStore
from records import TaskInstance, TrajectoryStatus
from sandbox import SandboxConfig


def _quiet(what: str) -> ContextManager:
    return contextlib.nullcontext()


def open_world(chosen: list[TaskInstance], held: list[TaskInstance], root_dir: str | Path, task_pol: Policy,
               meta_pol: Policy, store: RunStore, run_id: str, out: Path, *, workers: int, executor: ExecutorConfig,
               policy_spec: str, privileged_diagnosis: bool, smoke: bool, seed: int) -> DockerWorld:
    """The world of the search: with several workers the episodes share batched policy calls (and never call one
    backend concurrently); on Ray its episodes run as Ray tasks. Held-out tasks are never offered to the search."""
    loaded_task_pol = task_pol
    if workers > 1:
        shared = meta_pol is task_pol
        task_pol = BatchingPolicy(task_pol, max_batch=workers)
        task_pol.active = workers
        meta_pol = task_pol if shared else BatchingPolicy(meta_pol, max_batch=workers)
        meta_pol.active = workers
    world = DockerWorld(chosen + held, root_dir, task_pol, meta_pol, SandboxConfig(run_id=run_id), store, run_id,
                        out, RealWorldConfig(privileged_diagnosis=privileged_diagnosis, smoke=smoke), seed=seed)
    world.task_ids = [i.instance_id for i in chosen]
    if executor.backend == "ray":
        world.episodes = RayEpisodes(executor, loaded_task_pol, policy_spec)
        try:  # a meta policy the workers cannot reach is refused now, not at every expansion
            world.meta_worker_spec()
        except BaseException:
            world.close()
            raise
    return world


def close_interrupted(store: RunStore, run_id: str) -> None:
    """Trajectories a killed run left `running` are marked interrupted; their decisions are redone."""
    for tid in store.trajectory_ids(run_id=run_id, status=TrajectoryStatus.running.value):
        traj = store.get_trajectory(tid)
        traj.status, traj.error = TrajectoryStatus.error, "interrupted (the run was stopped; redone on resume)"
        store.put_trajectory(traj)


def check_resume(store: RunStore, run_id: str, config: dict) -> None:
    """A resumed run must search the same tasks with the same seed and rules (a larger budget is fine)."""
    old = next((r for r in store.runs() if r["id"] == run_id), None)
    if old is None:
        return
    if old["kind"] != "hgm":
        raise ConfigError(f"{store.dir} holds a {old['kind']} run, not an HGM run; give another --out")
    prev, new = old["config"], config
    for key in ("tasks", "holdout", "root_variant", "privileged_diagnosis"):
        if prev.get(key) != new.get(key):
            raise ConfigError(f"{store.dir} was searched with another {key.replace('_', ' ')}; give the same "
                              f"options to resume, or another --out")
    for key in ("seed", "alpha", "expansion_rule", "initial_expansions", "tau_schedule", "root_eval_charged"):
        if prev.get("search", {}).get(key) != new["search"].get(key):
            raise ConfigError(f"{store.dir} was searched with {key}={prev['search'].get(key)!r}; resume with "
                              f"the same value, or give another --out")


def evaluate_holdout(world: DockerWorld, sched, store: RunStore, run_id: str, held: list[TaskInstance], top: int,
                     status: Callable[[str], ContextManager] = _quiet) -> list[dict]:
    """The top nodes re-evaluated on the held-out tasks (rows under run id RUN/holdout; resumable). `status(what)`
    wraps each evaluation (the CLI shows a spinner with it)."""
    hid = f"{run_id}/holdout"
    done = {(r["node_id"], r["task_id"]): r for r in store.outcomes(run_id=hid)}
    rows = []
    for node in sched.ranking(top):
        for inst in held:
            key = (node, inst.instance_id)
            if key not in done or done[key]["status"] == "infra_error":
                t0 = time.time()
                with status(f"holdout: {node.rsplit(':', 1)[-1]} on {inst.instance_id}"):
                    ev = world.evaluate(sched.view(node), inst.instance_id)
                store.put_outcome(hid, node, inst.instance_id, ev.status, {"pass": True, "fail": False}.get(ev.status),
                                  ev.trajectory_id, t0, time.time(), info=ev.info)
                done[key] = {"status": ev.status}
        passed = sum(done[(node, i.instance_id)]["status"] == "pass" for i in held)
        judged = sum(done[(node, i.instance_id)]["status"] in ("pass", "fail") for i in held)
        rows.append({"node": node, "holdout_passed": passed, "holdout_judged": judged, "search_own": sched.stats.own(node)})
    return rows


def build_report(store: RunStore, run_id: str, sched, holdout_rows: list, seconds: float, stopped: bool) -> dict:
    """What `report.json` holds: the best-belief node, counts of the tree, the held-out rows."""
    summary = tree_summary(store, run_id, sched.cfg.quantile)
    nodes = [n for n in summary["nodes"] if n["parent_id"] is not None]
    reasons = Counter(n["reason"].split(":")[0] for n in nodes if n["status"] == "rejected")
    best = sched.final_pick()
    return {"run_id": run_id, "stopped": stopped, "seconds": round(seconds, 1), "best": best,
            "best_own": list(sched.stats.own(best)), "root_own": list(sched.stats.own(sched.root_id)),
            "evaluations": sched.summary()["evaluations"], "budget": sched.cfg.budget,
            "nodes_attempted": len(nodes), "accepted": sum(n["status"] == "accepted" for n in nodes),
            "rejected": sum(n["status"] == "rejected" for n in nodes), "rejected_by_reason": dict(reasons),
            "infra_errors": summary["infra_errors"], "tokens": sched.tokens,
            "privileged_diagnosis": summary["config"].get("privileged_diagnosis", False),
            "holdout": holdout_rows}
