"""`evolve loop toolcall` end to end with the tiny real model: a warm start, two generations of rollouts, Agent-R,
SFT and GRPO children in one HGM tree, the held-out gate; every record in the store; a rerun redoes nothing; the
command line prints the table and `evolve tree show` shows the nodes' kinds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loop_helpers import ROOT, TRAIN, tiny_config  # noqa: E402
from tiny_model import build_tiny_model  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-loop")


@pytest.fixture
def warm(loop_warm_model) -> Path:
    return loop_warm_model


def counts(out: Path) -> dict[str, int]:
    from evolve.store import RunStore

    n = {}
    for db in sorted(out.rglob("evolve.db")):
        with RunStore(db.parent, readonly=True) as s:
            rel = str(db.parent.relative_to(out))
            n[rel + ":trajectories"] = len(s.trajectory_ids())
            n[rel + ":versions"] = len(s.policy_versions())
            n[rel + ":train_steps"] = sum(len(s.train_steps(v.id)) for v in s.policy_versions())
            n[rel + ":nodes"] = len(s.tree_nodes())
            n[rel + ":outcomes"] = len(s.outcomes())
    return n


def test_two_generations_on_toolcall(warm, tmp_path):
    import torch

    from evolve.loop.run import run_loop
    from evolve.loop.state import LoopState
    from evolve.store import RunStore
    from evolve.train.versions import get_version

    torch.set_num_threads(1)
    out = tmp_path / "runs" / "loop"
    report = run_loop(tiny_config(warm), out)
    gens = report["generations"]
    assert [r["generation"] for r in gens] == [0, 1, 2]
    with RunStore(out, readonly=True) as store:
        state = LoopState(store, "loop")
        nodes = {n.id: n for n in state.nodes()}
        # generation 0: the warm start is a node of its own, trained from the start, gated on the held-out split
        warm_node = nodes["loop:warm"]
        assert warm_node.parent_id == "loop:start" and warm_node.info["node_kind"] == "warm_start"
        assert gens[0]["candidate"] == "loop:warm" and gens[0]["n"] == 6
        for g in (1, 2):
            for stage in ("rollouts", "evolution", "search", "gate"):
                assert state.stage(g, stage).status == "done", (g, stage)
        # both kinds of weight child were tried; each accepted one names its version, stored in the loop's store
        children = [n for n in nodes.values() if n.info.get("generation") in (1, 2) and n.parent_id]
        kinds = {n.info["expansion"] for n in children}
        assert kinds <= {"sft", "grpo"} and children
        versions = {v.id for v in store.policy_versions()}
        for n in children:
            if n.status == "accepted":
                vid = n.info["policy"].removeprefix("version:")
                assert vid in versions and n.info["training"]["version"] == vid
                assert get_version(vid, out).parent_id == get_version(
                    nodes[n.parent_id].info["policy"].removeprefix("version:"), out).id
            else:
                assert n.status == "rejected" and n.info["reason"]
        # every generation's data and the scheduler's kind draws are recorded
        for g in (1, 2):
            assert store.document("loop:data", f"g{g:02d}")["grpo"]
            assert state.stage(g, "search").result["kind_draws"] or len(kinds) == 1
    # the rollouts name the version that sampled them (never the base model's name)
    champion1 = gens[0]["champion_out"]
    spec = nodes[champion1].info["policy"]
    with RunStore(out / "runs" / "g01-rollouts", readonly=True) as s:
        trajs = list(s.trajectories())
        assert len(trajs) == 3 * len(TRAIN) and {t.policy for t in trajs} == {spec}
    assert json.loads((out / "report.json").read_text())["generations"] == gens

    # a rerun of a finished loop does nothing again
    before = counts(out)
    again = run_loop(tiny_config(warm), out)
    assert counts(out) == before and again["generations"] == gens
    # more generations resume from the last champion; other settings are refused
    from evolve.errors import ConfigError

    with pytest.raises(ConfigError, match="another `rollouts` setting"):
        run_loop(tiny_config(warm, rollouts__attempts=2), out)


def test_command_line_and_tree_show(model, tmp_path):
    out = tmp_path / "loop"
    cfg = tmp_path / "loop.yaml"
    cfg.write_text(
        "generations: 1\nsplits: {train: [toolcall__book_hotel-1, toolcall__book_hotel-2], held_out: 3}\n"
        "warm_start: {enabled: false}\nrollouts: {attempts: 2, max_tokens: 24, batch_size: 4}\n"
        "evolution: {agent_r: {enabled: false}}\nsft: {steps: 1, min_reward: -3.0}\ngrpo: {enabled: false}\n"
        "search: {budget: 2, initial_expansions: 1, max_expansions: 1, workers: 1}\ngate: {min_held_out: 3}\n"
        "training: {device: cpu, batch_size: 2, micro_batch_size: 2, max_len: 2048, save_every: 1}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}
    r = subprocess.run([sys.executable, "-m", "evolve.cli", "loop", "toolcall", "--config", str(cfg), "--policy",
                        f"hf:{model}", "--train-device", "cpu", "--rollout-backend", "hf", "--out", str(out)],
                       cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "held-out score" in r.stdout and "champion:" in r.stdout
    r = subprocess.run([sys.executable, "-m", "evolve.cli", "tree", "show", str(out)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "loop run loop" in r.stdout and "start" in r.stdout and "sft" in r.stdout
    assert "(finished)" in r.stdout
    # a store left saying `running` by a process that died (SIGKILL mid-run): no process holds its lock
    from evolve.store import RunStore

    with RunStore(out) as store:
        store.set_run_status("loop", "running")
    r = subprocess.run([sys.executable, "-m", "evolve.cli", "tree", "show", str(out)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert "(dead: resume it with the same command)" in r.stdout, r.stdout
    # user errors are one line
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: {budget: 0}\n")
    r = subprocess.run([sys.executable, "-m", "evolve.cli", "loop", "toolcall", "--config", str(bad), "--out",
                        str(tmp_path / "x")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "bad loop setting search.budget" in r.stderr and "Traceback" not in r.stderr
