"""`run_se_agent`: one resumable SE-Agent run in a run directory (store, predictions, report)."""

from __future__ import annotations

import glob
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, ContextManager, Iterator

from agent.batching import BatchingPolicy
from agent.policy.base import Policy
from agent.variant import AgentVariant
from evolve.errors import ConfigError
from evolve.policies import load_policies
from evolve.run.opening import check_resume, open_run
from evolve.run.remote_episode import RayEpisodes
from evolve.se_agent.config import SEAgentConfig
from evolve.se_agent.env import Environment, SWEEnvironment
from evolve.se_agent.loop import SEAgent
from evolve.se_agent.report import build_report, grade_candidates
from evolve.se_agent.select import Judge, policy_judge
from evolve.store import DB_NAME, RunStore
from evolve.train.versions import canonical_spec
from records import TaskInstance
from tasks.registry import get_suite
from tasks.suite_images import ensure_suite_images, quiet

KIND = "se-agent"
"""The run kind an SE-Agent run stores."""
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
            if any(r["kind"] == KIND and r["status"] in UNFINISHED for r in store.runs()):
                return path
    return Path(out.replace("{timestamp}", time.strftime("%Y%m%d-%H%M%S")))


FIXED = ("suite", "policy", "operator_policy", "pilots", "operators", "seed", "branch")
"""Settings a resumed run must keep (more `--iterations` may be added; these would mix two experiments)."""


@contextmanager
def open_se_agent(cfg: SEAgentConfig, ids: list[str] | None, *,
                  status: Callable[[str], ContextManager] = quiet) -> Iterator[list[TaskInstance]]:
    """Open an SE-Agent run before its policies load: the SWE suite's instances chosen (`cfg.instances`), the run
    directory resolved (`cfg.out`, see `resolve_out`) and locked while the block runs, a resume with other
    settings refused (`version:latest` policies are recorded as the `version:ID` they name now), the task images
    made present (docker). Yields the chosen instances."""
    suite = get_suite(cfg.suite, cfg.dataset)
    if suite.kind != "swe":
        raise ConfigError(f"se-agent runs SWE suites; {cfg.suite!r} is a {suite.kind} suite")
    chosen = suite.select(ids, cfg.limit)
    cfg.instances = [i.instance_id for i in chosen]
    out = resolve_out(cfg.out)
    cfg.out = str(out)
    with open_run(out, f"evolve se-agent {cfg.suite}"):
        cfg.policy = canonical_spec(cfg.policy, out.parent)  # `version:latest` recorded (and compared) as its id
        cfg.operator_policy = cfg.operator_policy and canonical_spec(cfg.operator_policy, out.parent)
        if (out / DB_NAME).exists():  # before images are built or a policy loads
            with RunStore(out, readonly=True) as store:
                check_resume(store, out.resolve().name, KIND, cfg.model_dump(mode="json"), FIXED)
        if cfg.sandbox.backend == "docker":
            ensure_suite_images(suite, chosen, status=status)
        yield chosen


def se_agent_policies(cfg: SEAgentConfig) -> tuple[BatchingPolicy, Policy]:
    """(the agent's policy, batched over `cfg.workers` attempts; the operator policy: the same batched policy when
    `cfg.operator_policy` is the agent's or unset), loaded with the run directory's parent as the runs root."""
    agent, operator = load_policies(Path(cfg.out).parent, cfg.policy, cfg.operator_policy or cfg.policy)
    batching = BatchingPolicy(agent, max_batch=cfg.workers)
    batching.active = cfg.workers
    return batching, batching if operator is agent else operator


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
    with open_run(out, f"evolve se-agent {cfg.suite}"), RunStore(out) as store:
        check_resume(store, run_id, KIND, cfg.model_dump(mode="json"), FIXED)
        store.put_run(run_id, KIND, {**cfg.model_dump(mode="json"), "out": str(out)})
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
