"""Stores for the TUI tests: tree nodes, outcomes and training steps written through the store API the way
HGM, Agent-R, SE-Agent and the trainer write them (their real runs take minutes; the records are the same)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from evolve.store import RunStore
from records import Message, PolicyVersion, Reward, Step, TestReport, ToolCall, TrainStep, Trajectory, TrajectoryStatus, TreeNode


def write_hgm(store: RunStore, run_id: str = "hgm-run", trajectory_ids: list[str] | None = None) -> dict[str, TreeNode]:
    """An HGM tree: root, two children, a grandchild, a rejected expansion; outcome rows per node (the first
    evaluations point at `trajectory_ids`, so they open real trajectories)."""
    tids = list(trajectory_ids or [])
    store.put_run(run_id, "hgm", {"budget": 40})
    nodes = {
        "root": TreeNode(id="n-root", tree_id=run_id, kind="hgm", label="initial agent", status="evaluated"),
        "a": TreeNode(id="n-a", parent_id="n-root", tree_id=run_id, kind="hgm", label="add undo tool",
                      status="evaluating", info={"diff": "--- a/variant.yaml\n+++ b/variant.yaml\n@@ -1 +1 @@\n-tools: [bash]\n+tools: [bash, undo]\n",
                                                 "diagnosis": "The agent repeats failing edits; give it undo."}),
        "b": TreeNode(id="n-b", parent_id="n-root", tree_id=run_id, kind="hgm", label="longer context",
                      status="evaluating", info={"diff": "+max_steps: 60\n"}),
        "c": TreeNode(id="n-c", parent_id="n-a", tree_id=run_id, kind="hgm", label="pre-submit test run",
                      status="expanding"),
        "d": TreeNode(id="n-d", parent_id="n-b", tree_id=run_id, kind="hgm", label="broken yaml",
                      status="rejected", info={"reason": "variant.yaml: unknown field 'toolz'"}),
    }
    for n in nodes.values():
        store.put_tree_node(n)
    plan = {"n-root": (6, 4), "n-a": (5, 1), "n-b": (2, 4), "n-c": (3, 0)}
    now = time.time()
    for nid, (s, f) in plan.items():
        for k in range(s + f):
            tid = tids.pop(0) if tids else None
            store.put_outcome(run_id, nid, f"task-{k}", "pass" if k < s else "fail", k < s, tid, now - 5, now)
    store.put_outcome(run_id, "n-b", "task-9", "infra_error", None, None, now - 5, now)
    return nodes


def write_mcts_and_lineage(store: RunStore, trajectory_ids: list[str]) -> None:
    """An Agent-R MCTS tree (value/visits) and an SE-Agent lineage whose nodes point at trajectories."""
    store.put_tree_node(TreeNode(id="m-0", tree_id="inst-1", kind="mcts", label="root", successes=2, trials=5))
    store.put_tree_node(TreeNode(id="m-1", parent_id="m-0", tree_id="inst-1", kind="mcts", label="bash: ls",
                                 successes=2, trials=3, trajectory_id=trajectory_ids[0]))
    store.put_tree_node(TreeNode(id="m-2", parent_id="m-0", tree_id="inst-1", kind="mcts", label="edit calc.py",
                                 successes=0, trials=2, status="terminal"))
    for i, tid in enumerate(trajectory_ids[:2]):
        store.put_tree_node(TreeNode(id=f"se-{i}", parent_id=f"se-{i - 1}" if i else None, tree_id="inst-1",
                                     kind="se-agent", label=["initial", "revision"][i], trajectory_id=tid))


def write_training(store: RunStore, steps: int = 30) -> PolicyVersion:
    """A base version and a GRPO version with per-step metrics, as the trainer stores them."""
    base = PolicyVersion(id="base-tiny", base="hf:tiny", kind="base", created_at=time.time() - 10)
    store.put_policy_version(base)
    v = PolicyVersion(id="v-grpo1", parent_id=base.id, base="hf:tiny", kind="grpo", path="/tmp/x", adapter=True,
                      metrics={"loss": 0.1, "reward": 0.6})
    store.put_run("train", "train", {"kind": "grpo", "version_id": v.id, "base": "hf:tiny"})
    for s in range(steps):
        store.put_train_step(TrainStep(policy_version_id=v.id, step=s, metrics={
            "loss": 1.0 / (1 + s), "reward": 0.2 + 0.4 * s / steps, "kl": 0.01 * s, "entropy": 2 - s / steps,
            "clip_fraction": 0.1 * math.sin(s) ** 2, "tokens_per_s": 800 + s}))
    store.put_policy_version(v)
    return v


def synthetic_step(i: int, long: int = 400) -> Step:
    return Step(index=i, response=Message(role="assistant", content=f"<think>plan {i}</think>\nrun step {i}",
                                          logprobs=[-0.1, -0.5, -2.5, -0.05]),
                tool_calls=[ToolCall(name="bash", arguments={"command": f"echo {i}"})],
                observation=Message(role="tool", name="bash", content=("out %d " % i) * (long // 6)),
                prompt_tokens=100 + i, completion_tokens=20, policy_seconds=0.5, tool_seconds=0.1)


def write_synthetic_run(store: RunStore, run_id: str, n: int, steps: int, status_cycle=None) -> list[str]:
    """`n` trajectories of `steps` steps each, graded and rewarded (for the benchmark and paging tests)."""
    statuses = status_cycle or ["submitted", "submitted", "budget_exhausted", "error", "infra_error"]
    store.put_run(run_id, "run", {"policy": "replay:bench"})
    ids = []
    now = time.time() - n
    step_json = [synthetic_step(i).model_dump_json() for i in range(steps)]  # the same steps in every trajectory
    with store._lock:  # one transaction: building 300,000 steps one commit each would take minutes
        db = store._db
        db.execute("BEGIN")
        for k in range(n):
            tid = f"t{k:06d}"
            ids.append(tid)
            st = statuses[k % len(statuses)]
            traj = Trajectory(id=tid, run_id=run_id, instance_id=f"inst-{k % 500:04d}", status=TrajectoryStatus.submitted,
                              patch="--- a/x\n+++ b/x\n@@\n-a\n+b\n", created_at=now + k, finished_at=now + k + 30)
            header = traj.model_dump_json(exclude={"steps"}).replace('"status":"submitted"', f'"status":"{st}"')
            db.execute("INSERT INTO trajectories (id, run_id, instance_id, status, parent_id, header, created_at, "
                       "finished_at) VALUES (?,?,?,?,?,?,?,?)",
                       (tid, run_id, traj.instance_id, st, None, header, traj.created_at, traj.finished_at))
            db.executemany("INSERT INTO steps VALUES (?,?,?)", [(tid, i, step_json[i]) for i in range(steps)])
            resolved = k % 3 == 0
            rep = TestReport(instance_id=traj.instance_id, trajectory_id=tid, patch_applied=True, resolved=resolved,
                             fail_to_pass_success=["test_a"] if resolved else [],
                             fail_to_pass_failure=[] if resolved else ["test_a"], pass_to_pass_success=["test_b"])
            db.execute("INSERT INTO test_reports VALUES (?,?,?,?)", (tid, traj.instance_id, int(resolved),
                                                                     rep.model_dump_json()))
            for r in (Reward(name="swe", total=float(resolved), parts={"resolved": float(resolved)}),
                      Reward(name="combined", total=float(resolved) * 0.8 + 0.1 * (k % 3), parts={"swe": float(resolved)})):
                db.execute("INSERT INTO rewards VALUES (?,?,?,?)", (tid, r.name, r.total, r.model_dump_json()))
        db.execute("COMMIT")
    return ids


def build(path: Path) -> Path:
    with RunStore(path) as store:
        ids = write_synthetic_run(store, "synthetic", 12, 5)
        write_hgm(store)
        write_mcts_and_lineage(store, ids)
        write_training(store)
        store.log_event("instance_done", instance_id="inst-0000", trajectory_id=ids[0])
    return path


def call(name: str, **params) -> str:
    return f"<think>go</think>\n<tool_call>\n{json.dumps({'name': name, 'parameters': params})}\n</tool_call>"


def real_runs(root: Path) -> dict[str, object]:
    """A root of real runs made by the project's own code: `evolve run bundled` (run_swe, Docker sandboxes,
    graded in fresh ones) with a scripted policy on two instances (one resolved by the gold edit, one not),
    `evolve run toolcall` (run_toolcall) with scripted answers, then, through the store API, an SE-Agent
    revision of a real trajectory, an HGM tree whose evaluations are the real trajectories, Agent-R/SE-Agent
    trees, and a training run's versions and steps."""
    from agent.replay import ScriptedPolicy
    from evolve.run.runner import RunConfig, run_swe
    from evolve.toolcall_eval import run_toolcall
    from tasks.registry import get_suite

    suite = get_suite("bundled")
    suite.build_images()
    insts = suite.instances()[:2]
    gold = insts[0]
    script = [call("create", path="/tmp/fix.diff", content=gold.patch),
              call("bash", command="git apply /tmp/fix.diff && git status --short"), call("submit")]
    cfg = RunConfig(suite="bundled", instances=[i.instance_id for i in insts], out=str(root / "swe"), workers=2,
                    infra_retries=0)
    report = run_swe(cfg, insts, ScriptedPolicy(script))
    tc = get_suite("toolcall").select(None, 6, split="test")
    answers = [i.extra["answer"] if k % 2 == 0 else "<think>no</think>\nI cannot." for k, i in enumerate(tc)]

    class PerPrompt(ScriptedPolicy):  # each toolcall prompt gets its own scripted answer
        def responses_for(self, conversation):
            k = next(n for n, i in enumerate(tc) if i.problem_statement in conversation[-1].content)
            return [Message(role="assistant", content=answers[k])]

    run_toolcall(tc, PerPrompt([]), root / "toolcall", {"suite": "toolcall", "policy": "replay"})
    with RunStore(root / "swe") as store:
        tids = store.trajectory_ids()
        parent = store.get_trajectory(tids[0])
        child = parent.model_copy(update={"id": "revision-1", "parent_id": parent.id, "branch_step": 1,
                                          "origin": "se-agent:revision", "steps": parent.steps[:2]})
        store.put_trajectory(child)
        write_mcts_and_lineage(store, [tids[0], "revision-1"])
        write_hgm(store, trajectory_ids=tids)  # an HGM run stores its evaluations' trajectories beside its tree
    with RunStore(root / "train") as store:
        version = write_training(store)
    return {"report": report, "trajectory_ids": tids, "gold": gold, "version": version}


async def settle(app, pilot) -> None:
    """Let the screens' worker threads finish reading and their results be drawn."""
    for _ in range(3):
        await pilot.pause()
        await app.workers.wait_for_complete()
    await pilot.pause()
