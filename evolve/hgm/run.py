"""An `evolve hgm` run around the search itself: the tasks chosen and held out (`choose`), the run opened
(`open_hgm`: locked, resumed with the same tasks and rules, interrupted trajectories closed, images present,
policies loaded, the world it acts in: policies batched, episodes here or on Ray), then `search` (the search, the
held-out re-evaluation of the top nodes, the report). `evolve.hgm.cli` parses the arguments, calls these and
prints.

    search_tasks, held = choose(suite, ids, limit, holdout)
    with open_hgm(cfg, out, suite, search_tasks, held, policy=..., ...) as hgm:
        report = search(hgm, holdout_top=3, on_event=print)
"""

from __future__ import annotations

import json
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterator

from agent.batching import BatchingPolicy
from agent.policy.base import Policy
from agent.variant import AgentVariant
from evolve.errors import ConfigError
from evolve.hgm.config import HGMConfig
from evolve.hgm.real import DockerWorld, RealWorldConfig
from evolve.hgm.scheduler import Scheduler
from evolve.hgm.search import open_search, run_search
from evolve.hgm.view import tree_summary
from evolve.policies import load_policies
from evolve.run.executor import ExecutorConfig
from evolve.run.opening import check_resume, open_run, parse_ids
from evolve.run.remote_episode import RayEpisodes
from evolve.store import RunStore
from evolve.train.versions import canonical_spec
from records import TaskInstance, TrajectoryStatus
from sandbox import SandboxConfig, prune_orphans
from tasks.suite import Suite
from tasks.suite_images import ensure_suite_images, quiet


KIND = "hgm"
"""The run kind an HGM run stores."""


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


FIXED = ("tasks", "holdout", "root_variant", "privileged_diagnosis", "search.seed", "search.alpha",
         "search.expansion_rule", "search.initial_expansions", "search.tau_schedule", "search.root_eval_charged")
"""Settings a resumed run must keep: the same tasks with the same seed and rules (a larger budget is fine)."""


def choose(suite: Suite, ids: list[str] | None, limit: int | None,
           holdout: str | None) -> tuple[list[TaskInstance], list[TaskInstance]]:
    """(search tasks, held-out tasks) of a SWE suite: `holdout` N keeps the last N chosen instances out of the
    search; `holdout` ID,ID names instances of the suite the search never sees. `ConfigError` when no task is left
    to search or the suite is not a SWE suite."""
    if suite.kind != "swe":
        raise ConfigError(f"suite {suite.name!r} is a {suite.kind} suite; HGM evolves coding agents (use a SWE suite)")
    chosen = suite.select(ids, limit)
    held: list[TaskInstance] = []
    text = (holdout or "").strip()
    if text.isdigit():
        n = int(text)
        if not 0 < n < len(chosen):
            raise ConfigError(f"--holdout {n}: hold out between 1 and {len(chosen) - 1} of the {len(chosen)} "
                              f"chosen instances")
        chosen, held = chosen[:-n], chosen[-n:]
    elif text:
        held_ids = parse_ids(text) or []
        held = suite.select(held_ids, None)
        chosen = [i for i in chosen if i.instance_id not in set(held_ids)]
        if not chosen:
            raise ConfigError("--holdout takes every chosen instance: the search needs some")
    if not chosen:
        raise ConfigError("no instances to search on: the selection is empty")
    return chosen, held


@dataclass
class HGMRun:
    """An opened HGM run: its store (held open and locked), the world and the scheduler over it."""

    out: Path
    run_id: str
    store: RunStore
    world: DockerWorld
    sched: Scheduler
    held: list[TaskInstance]
    workers: int


@contextmanager
def open_hgm(cfg: HGMConfig, out: Path, suite: Suite, chosen: list[TaskInstance], held: list[TaskInstance], *,
             policy: str, meta_policy: str | None, root_variant: str | Path, workers: int, executor: ExecutorConfig,
             privileged_diagnosis: bool, smoke: bool, seed: int,
             status: Callable[[str], ContextManager] = quiet) -> Iterator[HGMRun]:
    """Open (or resume) the HGM run in `out`, locked while the block runs: a resume must keep `FIXED`; what a
    killed run left (containers, running trajectories) is cleared; the task images made present; the policies
    loaded (`version:latest` recorded as the `version:ID` it names now; the meta policy shares the task policy when
    it is the same spec); the world and the scheduler built (a stored search resumes). The world is closed when
    the block ends."""
    AgentVariant.load(root_variant)  # a bad root variant is a user error, before anything starts
    run_id = out.resolve().name
    policy = canonical_spec(policy, out.parent)  # `version:latest` recorded (and compared on resume) as its id
    meta_policy = canonical_spec(meta_policy, out.parent) if meta_policy else policy
    config = {"suite": suite.name, "tasks": [i.instance_id for i in chosen], "holdout": [i.instance_id for i in held],
              "policy": policy, "meta_policy": meta_policy,
              "root_variant": str(Path(root_variant).resolve()), "privileged_diagnosis": privileged_diagnosis,
              "workers": workers, "smoke": smoke, "search": cfg.model_dump(mode="json")}
    with open_run(out, f"evolve hgm {suite.name}"), RunStore(out) as store:
        check_resume(store, run_id, KIND, config, FIXED)
        ensure_suite_images(suite, chosen + held, status=status)
        prune_orphans(run_id)
        store.put_run(run_id, KIND, config)
        close_interrupted(store, run_id)
        with status("loading policies"):
            task_pol, meta_pol = load_policies(out.parent, policy, meta_policy)
        world = open_world(chosen, held, root_variant, task_pol, meta_pol, store, run_id, out, workers=workers,
                           executor=executor, policy_spec=policy, privileged_diagnosis=privileged_diagnosis,
                           smoke=smoke, seed=seed)
        try:
            yield HGMRun(out, run_id, store, world, open_search(cfg, world, store, run_id), held, workers)
        finally:
            world.close()


def search(hgm: HGMRun, *, holdout_top: int = 3, on_event: Callable[[str], None] = lambda what: None,
           status: Callable[[str], ContextManager] = quiet) -> dict:
    """Run the search until its budget or a stop request, re-evaluate the top `holdout_top` nodes on the held-out
    tasks (unless stopped), write `report.json` and the run's status; returns the report. `on_event(what)` sees a
    line per finished action (also stored as an `hgm` event)."""
    started = time.time()
    store, run_id, sched = hgm.store, hgm.run_id, hgm.sched
    stop = lambda: store.stop_requested(run_id, since=started)  # noqa: E731

    def on_complete(action, result, t0, t1) -> None:
        what = (f"{action.kind} {action.node.rsplit(':', 1)[-1]}"
                + (f" on {action.task}: {result.status}" if action.kind == "evaluate" else
                   f" -> {action.child.rsplit(':', 1)[-1]}: "
                   f"{'accepted' if result.accepted else 'rejected (' + result.reason[:60] + ')'}"))
        store.log_event("hgm", run_id=run_id, what=what)
        on_event(what)

    run_search(sched, hgm.world, hgm.workers, should_stop=stop, on_complete=on_complete)
    stopped = stop()
    holdout_rows = [] if not hgm.held or stopped else evaluate_holdout(
        hgm.world, sched, store, run_id, hgm.held, holdout_top, status=status)
    report = build_report(store, run_id, sched, holdout_rows, time.time() - started, stopped)
    (hgm.out / "report.json").write_text(json.dumps(report, indent=2))
    store.set_run_status(run_id, "stopped" if stopped else "finished")
    return report


def evaluate_holdout(world: DockerWorld, sched, store: RunStore, run_id: str, held: list[TaskInstance], top: int,
                     status: Callable[[str], ContextManager] = quiet) -> list[dict]:
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
