"""`evolve run toolcall`: evaluate a policy on the tool-calling suite with ToolRL's reward.

Prompts go to the policy in batches; each response is scored with `rewards.toolrl.score` and stored as
a one-step trajectory with its reward, so the trainer can learn from the same run. Resumable: instances
already done are skipped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from agent.policy.base import Policy, SamplingParams
from evolve.store import RunStore
from records import Step, TaskInstance, Trajectory, TrajectoryStatus
from rewards.toolrl import score
from tasks.toolcall.prompt import build_messages


def run_toolcall(instances: list[TaskInstance], policy: Policy, out: Path, config: dict, batch_size: int = 8,
                 max_tokens: int = 256, temperature: float = 0.0,
                 on_progress: Callable[[int, int], None] = lambda done, total: None) -> dict:
    run_id = out.resolve().name
    started = time.time()
    with RunStore(out) as store:
        store.put_run(run_id, "toolcall", config)
        for inst in instances:
            store.put_instance(run_id, inst)
        status = store.instance_status(run_id)
        todo = [i for i in instances if status.get(i.instance_id) != "done"]
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature)
        done = len(instances) - len(todo)
        on_progress(done, len(instances))
        for start in range(0, len(todo), batch_size):
            batch = todo[start: start + batch_size]
            prompts = [build_messages(i) for i in batch]
            t = time.perf_counter()
            gens = policy.generate(prompts, params)
            seconds = (time.perf_counter() - t) / len(batch)
            for inst, prompt, gen in zip(batch, prompts, gens):
                s = score(gen.text, inst.extra["answer"])
                traj = Trajectory(run_id=run_id, instance_id=inst.instance_id, policy=policy.spec, prompt=prompt,
                                  steps=[Step(index=0, response=gen.message(), prompt_tokens=gen.prompt_tokens,
                                              completion_tokens=gen.completion_tokens, policy_seconds=seconds)],
                                  status=TrajectoryStatus.submitted, answer=gen.text, finished_at=time.time())
                store.put_trajectory(traj)
                store.put_reward(traj.id, s.to_reward())
                store.set_instance_status(run_id, inst.instance_id, "done")
            done += len(batch)
            on_progress(done, len(instances))
        store.set_run_status(run_id, "finished")
        parts: dict[str, list[float]] = {"format": [], "correctness": [], "total": []}
        latest = {r["instance_id"]: r for r in store.trajectory_summaries(run_id)}
        for row in latest.values():
            reward = row["rewards"].get("toolrl")
            if reward is not None:
                parts["format"].append(reward.parts["format"])
                parts["correctness"].append(reward.parts["correctness"])
                parts["total"].append(reward.total)
    report = {"run_id": run_id, "instances": len(latest), "seconds": round(time.time() - started, 1),
              **{f"mean_{k}": (sum(v) / len(v) if v else 0.0) for k, v in parts.items()}}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report
