"""Per-episode overhead of `--executor ray` against `local` on the same episodes, in one run.

Both run `run_swe` on the same bundled instances with the same replayed policy (a short script: one command,
then submit) and the same number of workers, grading off so that the episodes are short and the executor's
share shows. The Ray cluster's start and its workers'
first episodes (each worker process imports Evolve once) are timed apart. Run: `.venv/bin/python bench/bench_executor.py [--n 6]`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agent.graph import Agent
from agent.policy import load_policy
from agent.replay import ScriptedPolicy
from agent.variant import AgentVariant
from evolve.run.executor import ExecutorConfig, RayExecutor
from evolve.run.runner import RunConfig, run_swe
from records import Message, Step, Trajectory
from rewards.combine import RewardWeights
from sandbox import WORKDIR
from tasks.registry import get_suite


def replay_file(path: Path, instances) -> Path:
    agent = Agent(ScriptedPolicy([]), AgentVariant.load())
    call = '<tool_call>\n{"name": "bash", "parameters": {"command": "ls"}}\n</tool_call>'
    path.write_text("".join(Trajectory(instance_id=i.instance_id, prompt=agent.prompt(i, WORKDIR),
                                       steps=[Step(index=0, response=Message(role="assistant", content=call))]
                                       ).model_dump_json() + "\n" for i in instances))
    return path


def timed_run(out: Path, instances, policy_file: Path, executor: ExecutorConfig, workers: int) -> float:
    cfg = RunConfig(suite="bundled", instances=[i.instance_id for i in instances], out=str(out), workers=workers,
                    policy=f"replay:{policy_file}", grade=False, executor=executor,
                    rewards=RewardWeights(weights={}))
    started = time.perf_counter()
    report = run_swe(cfg, instances, load_policy(cfg.policy))
    assert report["instances"] == len(instances), report
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6, help="episodes (bundled instances)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    suite = get_suite("bundled")
    suite.build_images()
    instances = suite.instances()[:args.n]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        policy = replay_file(tmp / "replay.jsonl", instances)
        timed_run(tmp / "warm", instances[:1], policy, ExecutorConfig(), 1)  # images and caches warm
        local = timed_run(tmp / "local", instances, policy, ExecutorConfig(), args.workers)
        t = time.perf_counter()
        cluster = RayExecutor(ExecutorConfig(backend="ray", num_cpus=args.workers))  # started once, reused
        start = time.perf_counter() - t
        try:
            warm = timed_run(tmp / "ray-warm", instances[:args.workers], policy, ExecutorConfig(backend="ray"),
                             args.workers)  # workers start and import Evolve once
            ray = timed_run(tmp / "ray", instances, policy, ExecutorConfig(backend="ray"), args.workers)
        finally:
            cluster.close()
    n = len(instances)
    table = Table(title=f"executor overhead: {n} episodes, {args.workers} workers, grading off")
    for col in ("executor", "wall s", "per episode s", "overhead per episode vs local"):
        table.add_column(col, justify="right")
    table.add_row("local (threads)", f"{local:.2f}", f"{local / n:.3f}", "-")
    table.add_row("ray (local cluster)", f"{ray:.2f}", f"{ray / n:.3f}",
                  f"{(ray - local) / n * 1000:+.0f} ms ({ray / local:.2f}x)")
    table.add_row("ray cluster start (once)", f"{start:.2f}", "", "")
    table.add_row("ray workers' first episodes (imports)", f"{warm:.2f}", "", "")
    Console().print(table)
    print(json.dumps({"local_s": local, "ray_s": ray, "ray_start_s": start, "ray_warmup_s": warm, "episodes": n}))


if __name__ == "__main__":
    main()
