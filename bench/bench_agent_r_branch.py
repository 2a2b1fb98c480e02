"""Agent-R's branching cost: one MCTS child at depth d, by reset + replay (what `evolve agent-r` does: a fresh
sandbox, the agent loop replays the node's d recorded steps, then runs the new one) against a Docker snapshot
(`docker commit` of a sandbox at the node's state, then a sandbox started from the snapshot runs the new step).

The snapshot side pays its commit once per node (shared by the node's N children) and loses the shell sessions
(cwd, variables) the replay keeps. Both sides run the real agent loop with the same scripted responses on a
bundled instance; times are medians.

    .venv/bin/python bench/bench_agent_r_branch.py [--rounds 3] [--depths 1,3,6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from rich.console import Console
from rich.table import Table

from agent.graph import Agent
from agent.replay import ScriptedPolicy
from agent.variant import AgentVariant
from evolve.agent_r.swe import SweWorld
from records import Message, Trajectory
from sandbox import SandboxConfig, start_sandbox
from sandbox.docker import docker_client
from tasks.registry import get_suite

INSTANCE = "bundled__unitconv-1"


def step(i: int) -> Message:
    cmd = f"cd /testbed && echo 'note {i}' >> NOTES.txt && python3 -c 'import unitconv' && git status --short | head -3"
    call = json.dumps({"name": "bash", "parameters": {"command": cmd}})
    return Message(role="assistant", content=f"<think>step {i}</think>\n<tool_call>\n{call}\n</tool_call>")


def by_replay(world: SweWorld, d: int) -> float:
    t = time.perf_counter()
    world.episode([step(i) for i in range(d + 1)], Trajectory(instance_id=INSTANCE))
    return time.perf_counter() - t


def by_snapshot(world: SweWorld, d: int) -> tuple[float, float]:
    """(commit seconds, child seconds): the node's sandbox is committed, a child starts from the image and
    runs one step with the agent loop."""
    variant = world.variant.model_copy(deep=True)
    variant.budget.max_steps = d
    inst = world.instance
    with start_sandbox(world.sandbox_cfg, image=inst.image) as sb:
        Agent(ScriptedPolicy([step(i) for i in range(d)]), variant).run(inst, sb, Trajectory(instance_id=INSTANCE))
        t = time.perf_counter()
        handle = sb.snapshot()
        commit = time.perf_counter() - t
    try:
        t = time.perf_counter()
        variant.budget.max_steps = d + 1
        prefix = Trajectory(instance_id=INSTANCE)
        with start_sandbox(world.sandbox_cfg, image=handle) as sb:
            prefix.prompt = world.prompt()
            prefix.steps = []  # the steps are in the image; continue with one new step
            Agent(ScriptedPolicy([step(d)]), variant).run(inst, sb, prefix)
        child = time.perf_counter() - t
    finally:
        docker_client().images.remove(handle, force=True)
    return commit, child


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--depths", default="1,3,6")
    args = parser.parse_args()
    inst = get_suite("bundled").select([INSTANCE])[0]
    world = SweWorld(inst, ScriptedPolicy([]), AgentVariant.load(), SandboxConfig(run_id="bench-agent-r"), None, "bench")
    table = Table("depth d", "replay: one child", "snapshot: commit (once per node)", "snapshot: one child",
                  "snapshot, per child of N=4", "replay / snapshot (N=4)")
    for d in [int(x) for x in args.depths.split(",")]:
        rep = statistics.median(by_replay(world, d) for _ in range(args.rounds))
        snaps = [by_snapshot(world, d) for _ in range(args.rounds)]
        commit = statistics.median(s[0] for s in snaps)
        child = statistics.median(s[1] for s in snaps)
        per = child + commit / 4
        table.add_row(str(d), f"{rep:.2f} s", f"{commit:.2f} s", f"{child:.2f} s", f"{per:.2f} s", f"{rep / per:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
