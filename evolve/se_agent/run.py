"""`run_se_agent`: one resumable SE-Agent run in a run directory (store, predictions, report)."""

from __future__ import annotations

import glob
import time
from pathlib import Path
from typing import Callable

from agent.policy.base import Policy
from agent.variant import AgentVariant
from evolve.errors import ConfigError
from evolve.run.remote_episode import RayEpisodes
from evolve.run.run_lock import RunLock
from evolve.se_agent.config import SEAgentConfig
from evolve.se_agent.env import Environment, SWEEnvironment
from evolve.se_agent.loop import SEAgent
from evolve.se_agent.report import build_report, grade_candidates
from evolve.se_agent.select import Judge, policy_judge
from evolve.store import DB_NAME, RunStore, check_run_dir
from records import TaskInstance

UNFINISHED = ("running", "stopped")


def resolve_out(out: str) -> Path:
    """The run directory. `{timestamp}` in `out` resumes the newest unfinished run directory matching the
    pattern; only when there is none is the current time filled in (a resume never lands in a new directory)."""
    if "{timestamp}" not in out:
        return Path(out)
    candidates = sorted((Path(p) for p in glob.glob(out.replace("{timestamp}", "*"))
                         if (Path(p) / DB_NAME).exists()), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        with RunStore(path, readonly=True) as store:
            if any(r["kind"] == "se-agent" and r["status"] in UNFINISHED for r in store.runs()):
                return path
    return Path(out.replace("{timestamp}", time.strftime("%Y%m%d-%H%M%S")))


FIXED = ("suite", "policy", "operator_policy", "pilots", "operators", "seed", "branch")
"""Settings a resumed run must keep (more `--iterations` may be added; these would mix two experiments)."""


def refuse_changed_settings(store: RunStore, run_id: str, cfg: SEAgentConfig) -> None:
    prev = next((r for r in store.runs() if r["id"] == run_id), None)
    if prev is None:
        return
    if prev["kind"] != "se-agent":
        raise ConfigError(f"{store.dir} holds an `evolve {prev['kind']}` run, not an se-agent run; give another --out")
    now = cfg.model_dump(mode="json")
    for key in FIXED:
        if key in prev["config"] and prev["config"][key] != now[key]:
            raise ConfigError(f"{store.dir} was run with {key}={prev['config'][key]!r}, not {now[key]!r}: resume "
                              f"with the same setting or give another --out")


def swe_env(cfg: SEAgentConfig, policy: Policy, on_event) -> Callable[[RunStore, str], Environment]:
    def make(store: RunStore, run_id: str) -> Environment:
        variant = AgentVariant.load(cfg.variant)
        if cfg.max_steps:
            variant.budget.max_steps = cfg.max_steps
        if cfg.max_tokens_per_step:
            variant.max_tokens_per_step = cfg.max_tokens_per_step
        sandbox = cfg.sandbox.model_copy(update={"run_id": run_id})
        env = SWEEnvironment(policy, variant, sandbox, store, run_id, on_event)
        if cfg.executor.backend == "ray":
            # the driver serves the policy itself (its server batches); a BatchingPolicy would wait for episodes
            env.episodes = RayEpisodes(cfg.executor, getattr(policy, "inner", policy), cfg.policy)
        return env
    return make


def run_se_agent(cfg: SEAgentConfig, instances: list[TaskInstance], policy: Policy | None,
                 operator_policy: Policy | None = None, *,
                 make_env: Callable[[RunStore, str], Environment] | None = None,
                 judge: Judge | None = None, on_event: Callable[[str, str], None] = lambda i, w: None) -> dict:
    """Run (or resume) SE-Agent in `cfg.out`; returns the report (`{"stopped": True, ...}` when a stop
    request ended it early)."""
    out = resolve_out(cfg.out)
    run_id = out.resolve().name
    started = time.time()
    if make_env is None:
        assert policy is not None, "a policy is needed to run real episodes"
        make_env = swe_env(cfg, policy, on_event)
    if judge is None and cfg.judge and operator_policy is not None:
        judge = policy_judge(operator_policy, max_tokens=cfg.operator_max_tokens)
    check_run_dir(out)
    with RunLock(out, f"evolve se-agent {cfg.suite}"), RunStore(out) as store:
        refuse_changed_settings(store, run_id, cfg)
        store.put_run(run_id, "se-agent", {**cfg.model_dump(mode="json"), "out": str(out)})
        for inst in instances:
            store.put_instance(run_id, inst)
        env = make_env(store, run_id)
        try:
            finished = SEAgent(cfg, instances, env, store, run_id, operator_policy, judge, on_event).run()
            if finished and cfg.grade:  # before the environment closes: grading may run on its executor
                grade_candidates(store, run_id, instances, env, cfg.workers)
        finally:
            if hasattr(env, "close"):
                env.close()
        if not finished:
            store.set_run_status(run_id, "stopped")
            return {"run_id": run_id, "out": str(out), "stopped": True}
        report = build_report(store, run_id, instances, cfg.policy, time.time() - started, out)
        report["out"] = str(out)
        store.set_run_status(run_id, "finished")
    return report
