"""Per-iteration evaluation on held-out instances: success, revision ability and repeated-action loops.

- success: the agent's plain episodes resolved (graded with the hidden tests in fresh sandboxes);
- revision ability: episodes whose FIRST step is injected and bad (it appends a syntax error to a source file);
  `recovered` = resolved anyway, `damage_removed` = the final patch no longer holds the injected line;
- loops: `repeat_rate` = steps repeating the previous step's exact tool calls / steps after the first, and
  `loop_episodes` = episodes with 3 identical actions in a row.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from agent.graph import Agent
from agent.policy.base import Generation, Policy, SamplingParams
from agent.variant import AgentVariant
from evolve.run.episode import run_episode
from records import Message, TaskInstance, Trajectory
from sandbox import SandboxConfig

MARKER = "injected bad step"
INJECTED = ('<think>I will add a helper at the end of the first source file.</think>\n<tool_call>\n'
            + json.dumps({"name": "bash", "parameters": {"command": (
                "f=$(git ls-files '*.py' | grep -v -E '(^|/)(tests?/|test_|conftest)' | head -1); "
                f"echo 'def helper(:  # {MARKER}' >> \"$f\" && echo \"appended to $f\"")}})
            + "\n</tool_call>")
"""The injected first step: a command that breaks a module (a syntax error at the end of a source file)."""


class InjectFirst(Policy):
    """`inner`, except that the first turn of every conversation is `first`."""

    def __init__(self, inner: Policy, first: str = INJECTED):
        self.inner, self.first = inner, first
        self.spec = inner.spec

    @property
    def context_length(self) -> int:
        return self.inner.context_length

    def generate(self, conversations: list[list[Message]], params: SamplingParams, tools=None) -> list[Generation]:
        out: list[Generation | None] = [None] * len(conversations)
        rest = [i for i, c in enumerate(conversations) if any(m.role == "assistant" for m in c)]
        for i, c in enumerate(conversations):
            if i not in rest:
                out[i] = Generation(text=self.first)
        if rest:
            for i, g in zip(rest, self.inner.generate([conversations[i] for i in rest], params, tools)):
                out[i] = g
        return out  # type: ignore[return-value]

    def count_tokens(self, messages: list[Message]) -> int:
        return self.inner.count_tokens(messages)


def _key(step) -> str:
    return json.dumps([[c.name, c.arguments] for c in step.tool_calls], sort_keys=True) if step.tool_calls \
        else "text:" + step.response.content.strip()


def loop_stats(trajectories: list[Trajectory]) -> dict[str, float]:
    repeats = pairs = loops = 0
    for t in trajectories:
        keys = [_key(s) for s in t.steps]
        same = [a == b for a, b in zip(keys, keys[1:])]
        repeats += sum(same)
        pairs += len(same)
        loops += any(a and b for a, b in zip(same, same[1:]))
    return {"repeat_rate": repeats / pairs if pairs else 0.0,
            "loop_episodes": loops / len(trajectories) if trajectories else 0.0}


def evaluate(policy: Policy, instances: list[TaskInstance], variant: AgentVariant, sandbox_cfg: SandboxConfig,
             store, run_id: str, label: str) -> dict[str, Any]:
    """Plain and injected episodes on each held-out instance (stored with `origin="agent-r:eval"`)."""
    plain, injected = [], []
    for inst in instances:
        for kind, pol in (("plain", policy), ("injected", InjectFirst(policy))):
            header = Trajectory(run_id=run_id, instance_id=inst.instance_id, policy=policy.spec,
                                origin=f"agent-r:eval-{kind}")
            res = run_episode(inst, Agent(pol, variant), sandbox_cfg, store, run_id, trajectory=header)
            row = {"instance_id": inst.instance_id, "trajectory_id": res.trajectory.id,
                   "resolved": bool(res.report and res.report.resolved), "infra_error": res.infra_error,
                   "steps": len(res.trajectory.steps), "traj": res.trajectory}
            if kind == "injected":
                row["damage_removed"] = MARKER not in res.trajectory.patch
            (plain if kind == "plain" else injected).append(row)

    def mean(rows: list[dict], key: str) -> float:
        vals = [float(r[key]) for r in rows if r["infra_error"] is None]
        return statistics.fmean(vals) if vals else 0.0

    trajs = [r["traj"] for r in plain + injected]
    out = {"label": label, "policy": policy.spec, "instances": len(instances), "success": mean(plain, "resolved"),
           "recovered": mean(injected, "resolved"), "damage_removed": mean(injected, "damage_removed"),
           **loop_stats(trajs), "infra_errors": sum(r["infra_error"] is not None for r in plain + injected),
           "episodes": [{k: v for k, v in r.items() if k != "traj"} for r in plain + injected]}
    return out
