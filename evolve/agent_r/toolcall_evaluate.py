"""Per-iteration evaluation on held-out tool-calling instances (the toolcall twin of `evaluate.evaluate`).

- reward: mean ToolRL reward of the policy's greedy answer, rescaled to [0, 1] (`toolcall.unit_reward`), and
  `toolrl` the same mean on ToolRL's own scale [-3, 4]; success: answers with the full reward (right format and
  exactly the right calls);
- revision ability: episodes whose FIRST answer is injected and wrong (a call of a tool the task does not offer),
  after which the policy gets `REVISION_TURNS` more greedy turns (it may `undo`); the episode is replayed by the
  world (an `undo` withdraws the last answer) and scored on its last standing answer: `recovered` = full reward,
  `damage_removed` = the injected answer no longer stands;
- loops: `repeat_rate` / `loop_episodes` as for SWE (`evaluate.loop_stats`) over the injected episodes' turns.
"""

from __future__ import annotations

import statistics
from typing import Any, Callable

from agent.policy.base import Policy, SamplingParams
from evolve.agent_r.evaluate import loop_stats
from evolve.agent_r.toolcall import RECORDED, WITHDRAWN, ToolcallWorld, _is_undo, unit_reward
from records import Message, TaskInstance, Trajectory, TrajectoryStatus
from rewards.toolrl import score

WRONG = ('<think>I will call the first tool that comes to mind.</think>\n<tool_call>\n'
         '{"name": "injected_wrong_tool", "parameters": {"query": "injected bad step"}}\n</tool_call>')
"""The injected first answer: a call of a tool no instance offers (format right, calls wrong)."""
REVISION_TURNS = 2
"""Greedy turns the policy gets after the injected answer."""


def evaluate_toolcall(policy: Policy, instances: list[TaskInstance], prompt: Callable[[TaskInstance], list[Message]],
                      store, run_id: str, label: str, max_tokens: int = 256) -> dict[str, Any]:
    """Plain and injected episodes on each held-out instance, stored with `origin="agent-r:eval-*"` (plain ones
    with their ToolRL reward)."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    worlds = [ToolcallWorld(i, policy, prompt, max_tokens=max_tokens) for i in instances]
    gens = policy.generate([w.prompt() for w in worlds], params)
    plain = []
    for w, g in zip(worlds, gens):
        s = score(g.text, w.answer)
        traj = w.replay([g.message()]).trajectory
        traj.run_id, traj.origin = run_id, "agent-r:eval-plain"
        traj.status = TrajectoryStatus.submitted
        if store is not None:
            store.put_trajectory(traj)
            store.put_reward(traj.id, s.to_reward())
        plain.append({"instance_id": w.instance.instance_id, "trajectory_id": traj.id, "toolrl": s.total,
                      "reward": unit_reward(g.text, w.answer)})
    # injected: wrong first answer, then REVISION_TURNS greedy turns (all instances batched per turn)
    convs = [w.prompt() + [Message(role="assistant", content=WRONG), Message(role="user", content=RECORDED)]
             for w in worlds]
    responses: list[list[Message]] = [[Message(role="assistant", content=WRONG)] for _ in worlds]
    for _ in range(REVISION_TURNS):
        for conv, resp, g in zip(convs, responses, policy.generate(convs, params)):
            msg = g.message()
            resp.append(msg)
            conv += [msg, Message(role="user", content=WITHDRAWN if _is_undo(msg.content) else RECORDED)]
    injected, trajs = [], []
    for w, resp in zip(worlds, responses):
        rep = w.replay(resp)
        traj: Trajectory = rep.trajectory
        traj.run_id, traj.origin = run_id, "agent-r:eval-injected"
        if store is not None:
            store.put_trajectory(traj)
        trajs.append(traj)
        injected.append({"instance_id": w.instance.instance_id, "trajectory_id": traj.id, "reward": rep.reward,
                         "recovered": rep.reward >= 1.0 - 1e-9, "damage_removed": rep.state != WRONG.strip()})

    def mean(rows: list[dict], key: str) -> float:
        return statistics.fmean(float(r[key]) for r in rows) if rows else 0.0

    return {"label": label, "policy": policy.spec, "instances": len(instances), "reward": mean(plain, "reward"),
            "toolrl": mean(plain, "toolrl"),
            "success": statistics.fmean(r["reward"] >= 1.0 - 1e-9 for r in plain) if plain else 0.0,
            "recovered": mean(injected, "recovered"), "damage_removed": mean(injected, "damage_removed"),
            **loop_stats(trajs), "infra_errors": 0, "episodes": plain + injected}
