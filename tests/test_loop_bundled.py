"""`evolve loop bundled` for two generations in Docker: real sandboxes, hidden-test grading, HGM's meta-agent as
the maker of code children, the held-out gate on instances the search never saw.

The start variant's `apply_patch` tool is broken (it says it applied the patch and changes nothing), the task
policy applies each issue's fix with it, and a scripted meta policy repairs the tool (as in `test_hgm_docker`).
Generation 1: the rollouts fail, Agent-R searches and SE-Agent retries a failed instance (their own run
directories), the search grows a code child that resolves its search tasks, the gate sees it
resolve the held-out instances the start fails, and it becomes the champion. Generation 2 starts from it: its
rollouts resolve everything, so its own code child has nothing to improve (rejected), and the gate keeps it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_hgm_docker import FIXED_RUN, MetaPolicy, TaskPolicy, make_root

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TRAIN = ["bundled__unitconv-1", "bundled__cachebox-1"]
HELD_OUT = ["bundled__clip-1", "bundled__iniconf-1", "bundled__semverkit-1"]


def test_two_generations_on_bundled_with_a_code_child(tmp_path, docker_ready):
    from evolve.loop.config import LoopConfig
    from evolve.loop.run import run_loop
    from evolve.loop.state import LoopState
    from evolve.store import RunStore
    from tasks.registry import get_suite

    instances = get_suite("bundled").select(TRAIN + HELD_OUT)
    root = make_root(tmp_path / "root-variant")
    task, meta = TaskPolicy(instances), MetaPolicy()
    cfg = LoopConfig.model_validate({
        "suite": "bundled", "generations": 2, "variant": str(root),
        "splits": {"train": TRAIN, "held_out": HELD_OUT},
        "rollouts": {"attempts": 1, "temperature": 0.0, "max_steps": 4, "max_tokens": 256},
        "evolution": {"agent_r": {"enabled": True, "limit": 1, "rollouts": 1, "n_gen": 1, "max_depth": 1},
                      "se_agent": {"enabled": True, "limit": 1, "pilots": 1, "iterations": 1}},
        "sft": {"enabled": False}, "grpo": {"enabled": False},
        "code": {"enabled": True, "smoke": True},
        "search": {"budget": 2, "initial_expansions": 1, "max_expansions": 1, "workers": 1},
        "gate": {"min_held_out": 3},
        "policies": {"policy": "scripted-task", "meta_policy": "scripted-meta", "rollout_backend": "as-is"},
        "workers": 2})
    out = tmp_path / "runs" / "loop"
    report = run_loop(cfg, out, load_policy={"scripted-task": task, "scripted-meta": meta}.__getitem__)
    g0, g1 = report["generations"]
    child = "loop:g01:n0001"
    assert g0["generation"] == 1 and g0["candidate"] == child and g0["accepted"] and g0["champion_out"] == child
    assert g0["n"] == 3 and g0["diff"] == 1.0 and g0["held_out"]["mean"] == 1.0  # resolved what the start could not
    assert g0["winner"]["kind"] == "code" and "git apply" in g0["winner"]["diff"]
    assert g1["champion_in"] == child and not g1["accepted"] and g1["champion_out"] == child
    with RunStore(out, readonly=True) as store:
        state = LoopState(store, "loop")
        nodes = {n.id: n for n in state.nodes()}
        c = nodes[child]
        assert c.info["node_kind"] == "code" and c.info["policy"] == "scripted-task"  # keeps its parent's policy
        assert (Path(c.variant_dir) / "tools" / "apply_patch" / "run").read_text() == FIXED_RUN
        rejected = nodes["loop:g02:n0001"]
        assert rejected.parent_id == child and rejected.status == "rejected"
        assert "nothing to improve" in rejected.info["reason"]
        # generation 1's evolution searched (Agent-R) and retried (SE-Agent) a failed instance in its own run dirs
        evo = state.stage(1, "evolution").result
        assert evo["agent_r"]["searched"] == 1 and evo["se_agent"]["retried"] == 1
        assert store.document("loop:data", "g01")["counts"]["sft"]["evolved"] == evo["se_agent"]["resolved"] + \
            evo["agent_r"]["splices"] + evo["agent_r"]["good"]
        # generation 2's search counted the champion's generation-1 evaluations instead of running them again
        assert not [r for r in store.outcomes(run_id="loop:g02") if r["node_id"] == child]
        held = {d["instance_id"]: d["score"] for _, d in store.documents("loop:held-out", key_prefix=f"{child}|")}
        assert held == {i: 1.0 for i in HELD_OUT}
        for t in store.trajectories(run_id="loop-held-out"):
            assert store.test_report(t.id) is not None  # graded with the hidden tests in a fresh sandbox
    with RunStore(out / "runs" / "g01-agent-r", readonly=True) as s:
        assert s.documents("agent-r:instance") and s.tree(kind="mcts")
    with RunStore(out / "runs" / "g01-se-agent", readonly=True) as s:
        assert s.trajectory_ids() and all(s.test_report(t) is not None for t in s.trajectory_ids())
    with RunStore(out / "runs" / "g01-rollouts", readonly=True) as s:
        assert [r["resolved"] for r in s.trajectory_summaries()] == [False, False]  # the broken start
    with RunStore(out / "runs" / "g02-rollouts", readonly=True) as s:
        assert [r["resolved"] for r in s.trajectory_summaries()] == [True, True]  # the champion's variant
    r = subprocess.run([sys.executable, "-m", "evolve.cli", "tree", "show", str(out)], capture_output=True,
                       text=True, env={**os.environ, "COLUMNS": "200"}, timeout=120)
    assert r.returncode == 0 and "code" in r.stdout and "champion of g1, g2" in r.stdout, r.stdout + r.stderr
