"""`evolve run toolcall`: a policy on the tool-calling suite, scored with ToolRL's reward.

Prompts go to the policy in batches; each response is scored with `rewards.toolrl.score` and stored as
a one-step trajectory with its reward, so the trainer can learn from the same run. `attempts` > 1 samples
that many answers per instance (at `temperature`): the groups offline GRPO compares. Resumable: an instance
is done once all its attempts are stored, and a resumed run samples only the attempts an instance lacks.
`toolcall_rollouts` is the store-level part, shared with `evolve loop`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from agent.policy.base import Policy, SamplingParams
from evolve.store import RunStore
from records import Message, Step, TaskInstance, Trajectory, TrajectoryStatus
from rewards.toolrl import score
from tasks.toolcall.prompt import build_messages


def toolcall_rollouts(store: RunStore, run_id: str, instances: list[TaskInstance], policy: Policy, *,
                      attempts: int = 1, temperature: float = 0.0, seed: int = 0, batch_size: int = 8,
                      max_tokens: int = 256, label: str | None = None, origin: str = "rollout",
                      prompt: Callable[[TaskInstance], list[Message]] = build_messages,
                      on_progress: Callable[[int, int], None] = lambda done, total: None,
                      should_stop: Callable[[], bool] = lambda: False) -> bool:
    """Sample `attempts` scored answers per instance into `store` under `run_id` (instances recorded, each
    marked done once all its attempts are stored). `label` is the policy name the trajectories carry (default
    `policy.spec`). Returns False when `should_stop()` ended it between batches (the rest resumes)."""
    for inst in instances:
        store.put_instance(run_id, inst)
    status = store.instance_status(run_id)
    have: dict[str, int] = {}
    for row in store.trajectory_summaries(run_id):
        if row["status"] != TrajectoryStatus.running.value:
            have[row["instance_id"]] = have.get(row["instance_id"], 0) + 1
    todo = [(inst, a) for inst in instances if status.get(inst.instance_id) != "done"
            for a in range(have.get(inst.instance_id, 0), attempts)]
    for inst in instances:  # every attempt stored by an earlier, killed run
        if status.get(inst.instance_id) != "done" and have.get(inst.instance_id, 0) >= attempts:
            store.set_instance_status(run_id, inst.instance_id, "done")
    total, done = len(instances) * attempts, len(instances) * attempts - len(todo)
    on_progress(done, total)
    name = label or policy.spec
    for start in range(0, len(todo), batch_size):
        if should_stop():
            return False
        batch = todo[start: start + batch_size]
        prompts = [prompt(inst) for inst, _ in batch]
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed * 1_000_003 + start)
        t = time.perf_counter()
        gens = policy.generate(prompts, params)
        seconds = (time.perf_counter() - t) / len(batch)
        for (inst, attempt), messages, gen in zip(batch, prompts, gens):
            s = score(gen.text, inst.extra["answer"])
            ended = TrajectoryStatus.budget_exhausted if gen.finish_reason == "length" else TrajectoryStatus.submitted
            traj = Trajectory(run_id=run_id, instance_id=inst.instance_id, policy=name, prompt=messages,
                              steps=[Step(index=0, response=gen.message(), prompt_tokens=gen.prompt_tokens,
                                          completion_tokens=gen.completion_tokens, policy_seconds=seconds)],
                              status=ended, answer=gen.text, origin=origin, finished_at=time.time())
            store.put_trajectory(traj)
            store.put_reward(traj.id, s.to_reward())
            if attempt == attempts - 1:
                store.set_instance_status(run_id, inst.instance_id, "done")
        done += len(batch)
        on_progress(done, total)
    return True


def toolcall_means(store: RunStore, run_id: str) -> dict[str, float | int]:
    """Mean ToolRL format / correctness / total over every scored trajectory of the run, and the counts."""
    parts: dict[str, list[float]] = {"format": [], "correctness": [], "total": []}
    rows = store.trajectory_summaries(run_id)
    for row in rows:
        reward = row["rewards"].get("toolrl")
        if reward is not None:
            parts["format"].append(reward.parts["format"])
            parts["correctness"].append(reward.parts["correctness"])
            parts["total"].append(reward.total)
    return {"instances": len({r["instance_id"] for r in rows}), "trajectories": len(parts["total"]),
            **{f"mean_{k}": (sum(v) / len(v) if v else 0.0) for k, v in parts.items()}}


def run_toolcall(instances: list[TaskInstance], policy: Policy, out: Path, config: dict, batch_size: int = 8,
                 max_tokens: int = 256, temperature: float = 0.0, attempts: int = 1, seed: int = 0,
                 on_progress: Callable[[int, int], None] = lambda done, total: None) -> dict:
    """`evolve run toolcall` in the run directory `out`: rollouts, then `report.json`."""
    run_id = out.resolve().name
    started = time.time()
    with RunStore(out) as store:
        store.put_run(run_id, "toolcall", config)
        toolcall_rollouts(store, run_id, instances, policy, attempts=attempts, temperature=temperature, seed=seed,
                          batch_size=batch_size, max_tokens=max_tokens, on_progress=on_progress)
        store.set_run_status(run_id, "finished")
        means = toolcall_means(store, run_id)
    report = {"run_id": run_id, "seconds": round(time.time() - started, 1), **means}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report
