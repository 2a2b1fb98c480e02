"""A loop SIGKILLed in each of its stages, then run again with the same command: it resumes in the stage it was in,
redoes no finished work (no duplicate attempts, held-out scores, searched instances, optimiser steps or search
decisions), and ends where an uninterrupted loop ends. And a stop request ends it after the work in flight."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loop_helpers import ROOT, TRAIN, tiny_config  # noqa: E402

pytestmark = pytest.mark.slow

OVER = {"generations": 1, "sft__min_reward": 4.0}
"""One generation; only exact answers are successes, so the champion fails some instances and Agent-R runs."""


def _run(out: Path, model: Path, stage: str = "none", at: int = 0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tests" / "loop_helpers.py"), str(out), str(model), stage,
                           str(at), json.dumps(OVER)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                               "TOKENIZERS_PARALLELISM": "false", "HOME": str(Path.home())})


def _shape(out: Path) -> dict:
    """What an uninterrupted and a resumed loop must agree on, and the work counts that must not grow by a redo."""
    from evolve.loop.state import LoopState
    from evolve.store import RunStore

    with RunStore(out, readonly=True) as store:
        state = LoopState(store, "loop")
        nodes = sorted((n.id, n.parent_id, n.status, n.info.get("expansion"), n.successes, n.trials)
                       for n in state.nodes())
        gens = [(r.generation, r.champion_out, r.accepted, round(r.held_out.get("mean", 0.0), 6))
                for r in state.generations()]
        decisions = [d for _, d in store.documents("hgm:decision")]
        outcomes = Counter((r["run_id"], r["node_id"], r["task_id"]) for r in store.outcomes())
        held = store.documents("loop:held-out")
        held_trajs = store.trajectory_ids(run_id="loop-held-out")
        stages = {k: d["status"] for k, d in store.documents("loop:stage")}
    with RunStore(out / "runs" / "g01-rollouts", readonly=True) as s:
        attempts = Counter(s.get_trajectory(t).instance_id for t in s.trajectory_ids())
    steps = {}
    for db in (out / "train").glob("*/evolve.db"):
        with RunStore(db.parent, readonly=True) as s:
            steps[db.parent.name] = sorted(st.step for v in s.policy_versions() for st in s.train_steps(v.id))
    searched = 0
    if (out / "runs" / "g01-agent-r" / "evolve.db").exists():
        with RunStore(out / "runs" / "g01-agent-r", readonly=True) as s:
            searched = len(s.documents("agent-r:instance"))
            searched_trees = Counter(n.tree_id for n in s.tree_nodes())
        assert all("#abandoned" not in t for t in searched_trees) or searched
    return {"nodes": nodes, "generations": gens, "decisions": len(decisions),
            "unique_decisions": len({(d["seq"]) for d in decisions}), "outcomes_max": max(outcomes.values()),
            "held_out_docs": len(held), "held_out_trajectories": len(held_trajs), "stages": stages,
            "attempts": dict(attempts), "steps": steps, "searched": searched}


@pytest.fixture(scope="module")
def reference(loop_warm_model, tmp_path_factory) -> dict:
    """The uninterrupted loop."""
    out = tmp_path_factory.mktemp("uninterrupted") / "loop"
    r = _run(out, loop_warm_model)
    assert r.returncode == 0, r.stderr[-3000:]
    return _shape(out)


# (what the kill waits for, at which occurrence): the warm start's training, generation 0's gate (held-out scores
# of the start node), the rollouts (after 2 of 3 batches), the evolution (Agent-R after its instance), the search
# (after a decision's evaluation), a search child's training (after its first checkpointed step)
KILLS = [("training", 1), ("gate", 2), ("rollouts", 3), ("evolution", 1), ("search", 3), ("training", 3)]


@pytest.mark.parametrize("stage,at", KILLS, ids=[f"{s}-{a}" for s, a in KILLS])
def test_sigkill_in_each_stage_resumes_without_redoing_work(loop_warm_model, reference, tmp_path, stage, at):
    out = tmp_path / "loop"
    killed = _run(out, loop_warm_model, stage, at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    from evolve.loop.state import LoopState
    from evolve.store import RunStore

    with RunStore(out, readonly=True) as store:
        started = [k for k, d in store.documents("loop:stage") if d["status"] == "started"]
        assert len(started) == 1, started  # the loop knows the one stage it was in
        assert LoopState(store, "loop").generation(1) is None
    resumed = _run(out, loop_warm_model)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    shape = _shape(out)
    assert set(shape["stages"].values()) <= {"done", "skipped"}
    assert shape["attempts"] == {i: 3 for i in TRAIN}  # no attempt sampled twice
    assert shape["held_out_docs"] == shape["held_out_trajectories"]  # no held-out answer made twice
    assert shape["decisions"] == shape["unique_decisions"] and shape["outcomes_max"] == 1
    for name, steps in shape["steps"].items():
        assert steps == list(range(len(steps))), (name, steps)  # each optimiser step once, none redone
    assert shape["searched"] <= 1
    # and it ends where the uninterrupted loop ends: the same tree, the same held-out numbers, the same champion
    assert shape["nodes"] == reference["nodes"]
    assert shape["generations"] == reference["generations"]
    assert {k: len(v) for k, v in shape["steps"].items()} == {k: len(v) for k, v in reference["steps"].items()}


def test_a_stop_request_ends_the_loop_after_the_work_in_flight(loop_warm_model, tmp_path):
    """`RunStore.request_stop` (the TUI's stop): the loop ends with LoopStopped, the stage stays `started`, and the
    same call resumes and finishes it."""
    import torch

    from evolve.loop.run import LoopStopped, run_loop
    from evolve.store import RunStore

    torch.set_num_threads(1)
    out = tmp_path / "loop"
    asked = {"done": False}

    def progress(stage, event, detail):
        if stage == "rollouts" and event == "progress" and detail["done"] >= 3 and not asked["done"]:
            asked["done"] = True
            with RunStore(out) as s:
                s.request_stop("loop")

    with pytest.raises(LoopStopped) as stopped:
        run_loop(tiny_config(loop_warm_model, **OVER), out, progress=progress)
    assert stopped.value.report["stopped"] and stopped.value.report["running"]["stage"] == "rollouts"
    with RunStore(out, readonly=True) as s:
        assert next(r for r in s.runs() if r["id"] == "loop")["status"] == "stopped"
    with RunStore(out / "runs" / "g01-rollouts", readonly=True) as s:
        assert 3 <= len(s.trajectory_ids()) < 9  # stopped between batches
    report = run_loop(tiny_config(loop_warm_model, **OVER), out)
    assert [r["generation"] for r in report["generations"]] == [0, 1]


def test_the_first_ctrl_c_stops_after_the_work_in_flight_and_a_second_interrupts(loop_warm_model, tmp_path):
    """Ctrl-C (SIGINT to the main thread) is a stop request: the loop ends with LoopStopped and the run says
    `stopped`; a second Ctrl-C interrupts at once (KeyboardInterrupt), leaving the run `stopped`, not `running`."""
    import signal

    import torch

    from evolve.loop.run import LoopStopped, run_loop
    from evolve.store import RunStore

    torch.set_num_threads(1)

    def ctrl_c(times: int):
        sent = {"n": 0}

        def progress(stage, event, detail):
            if stage == "rollouts" and event == "progress" and detail["done"] >= 3 and sent["n"] < times:
                for _ in range(times):
                    sent["n"] += 1
                    signal.raise_signal(signal.SIGINT)
        return progress

    once = tmp_path / "once"
    with pytest.raises(LoopStopped) as stopped:
        run_loop(tiny_config(loop_warm_model, **OVER), once, progress=ctrl_c(1))
    assert stopped.value.report["running"]["stage"] == "rollouts"
    with RunStore(once / "runs" / "g01-rollouts", readonly=True) as s:
        assert 3 <= len(s.trajectory_ids()) < 9  # the batch in flight finished, no other started
    twice = tmp_path / "twice"
    with pytest.raises(KeyboardInterrupt):
        run_loop(tiny_config(loop_warm_model, **OVER), twice, progress=ctrl_c(2))
    for out in (once, twice):
        with RunStore(out, readonly=True) as s:
            assert next(r for r in s.runs() if r["id"] == out.name)["status"] == "stopped"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back
