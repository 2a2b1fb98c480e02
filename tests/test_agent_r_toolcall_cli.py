"""`evolve agent-r toolcall` end to end with a tiny real model: one iteration (search with ToolRL's reward, splices,
export, SFT, a new policy version), held-out reward before/after in the report, the exported data's masks, and a
rerun that resumes without searching again.

The starting policy is the tiny model briefly fine-tuned on the gold answers of the searched instances, so its
samples at T=1 differ in ToolRL reward (pairs need a reward gap) without being all right."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_model import build_tiny_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ["toolcall__book_hotel-1", "toolcall__book_hotel-2", "toolcall__book_hotel-3"]
HELD_OUT = ["toolcall__book_hotel-4", "toolcall__book_hotel-5"]  # the same tool, other arguments
START_STEPS = 60


def _start_policy(base: Path) -> Path:
    """The tiny model after START_STEPS of SFT on the gold answers (suite prompt) of TRAIN: a version directory."""
    from evolve.store import RunStore
    from evolve.train.sft import SFTConfig, train_sft
    from records import Message, Step, Trajectory, TrajectoryStatus
    from tasks.registry import get_suite
    from tasks.toolcall.prompt import build_messages

    model = build_tiny_model(base / "tiny", hidden=64, layers=2)
    gold = base / "gold"
    with RunStore(gold) as store:
        for inst in get_suite("toolcall").select(TRAIN):
            store.put_trajectory(Trajectory(
                run_id="gold", instance_id=inst.instance_id, status=TrajectoryStatus.submitted, origin="reference",
                prompt=build_messages(inst),
                steps=[Step(index=0, response=Message(role="assistant", content=inst.extra["answer"]))]))
    version = train_sft(SFTConfig(policy=f"hf:{model}", lora=None, lr=1e-2, warmup_steps=3, batch_size=3,
                                  micro_batch_size=3, max_steps=START_STEPS, max_len=4096, pack=False, seed=0,
                                  device="cpu"), [gold], base / "start")
    return Path(version.path)


def _cli(out: Path, start: Path) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "evolve.cli", "agent-r", "toolcall", "--instances", ",".join(TRAIN),
            "--held-out", ",".join(HELD_OUT), "--iterations", "1", "--policy", f"hf:{start}", "--train-policy", f"hf:{start}",
            "--rollouts", "1", "--n-gen", "4", "--temperature", "1.0", "--alpha", "0.1", "--beta", "0.05",
            "--max-tokens-per-step", "160", "--sft-steps", "2", "--full", "--device", "cpu", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_agent_r_toolcall_cli_iteration_and_resume(tmp_path):
    from evolve.agent_r.export import masked_in_tokens
    from evolve.store import RunStore
    from evolve.train.data import build_sequence, load_trajectories
    from evolve.train.versions import resolve_policy

    start = _start_policy(tmp_path)
    out = tmp_path / "agent-r"
    first = _cli(out, start)
    assert first.returncode == 0, first.stdout + first.stderr
    report = json.loads((out / "report.json").read_text())
    before, row = report["before"], report["iterations"][0]
    after = row["eval"]
    print(f"held-out ToolRL reward before {before['reward']:.3f} -> after {after['reward']:.3f}; "
          f"splices {row['splices']}, good {row['good']}")
    assert {"reward", "toolrl", "success", "recovered", "repeat_rate"} <= before.keys() <= after.keys() | {"label"}
    assert before["instances"] == after["instances"] == 2 and before["label"] == "it0" and after["label"] == "it1"
    assert row["splices"] >= 1 and row["trained"]
    with RunStore(out / "it1" / "sft", readonly=True) as store:
        version = next(v for v in store.policy_versions() if v.id == row["trained"])
        steps = store.train_steps(version.id)
    assert version.kind == "sft" and Path(version.path, "config.json").exists() and after["policy"] != before["policy"]
    assert resolve_policy(f"version:{version.id}", out)[0] == f"hf:{version.path}"
    assert len(steps) == 2 and all(s.metrics["trained_tokens"] > 0 for s in steps)
    with RunStore(out, readonly=True) as store:
        trees = store.tree(kind="mcts")
        assert {n.tree_id.rsplit("/", 1)[1] for n in trees} == set(TRAIN)
        assert len(store.documents("agent-r:instance")) == len(TRAIN) and store.documents("agent-r:splice")
    # the exported data: splices keep the bad answer as context and learn the undo and the good answer
    trajs = [t for t, _ in load_trajectories([out / "it1" / "data"])]
    splices = [t for t in trajs if t.origin == "agent-r:splice"]
    assert len(splices) == row["splices"] and len(trajs) == row["splices"] + row["good"]
    for t in splices:
        assert [s.response.train for s in t.steps] == [False, True, True] and '"undo"' in t.steps[1].response.content
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(start)
    seqs = [build_sequence(t, tok, max_len=4096) for t in trajs]
    assert all(seqs) and sum(sum(q.loss_mask) for q in seqs) == masked_in_tokens(trajs, tok) > 0
    # a rerun resumes: no search, no training, the same report
    def counts() -> tuple[int, int, int]:
        with RunStore(out, readonly=True) as store:
            return len(store.tree_nodes()), len(store.documents("agent-r:splice")), len(list(store.trajectories()))

    before_rerun = counts()
    second = _cli(out, start)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "searching" not in second.stdout and "already finished" in second.stdout + second.stderr
    assert counts() == before_rerun
    with RunStore(out / "it1" / "sft", readonly=True) as store:
        # base + it1, untouched
        assert len(store.policy_versions()) == 2 and len(store.train_steps(version.id)) == 2
    again = json.loads((out / "report.json").read_text())
    assert again["iterations"][0]["trained"] == row["trained"] and again["before"] == before


def test_held_out_accepts_ids_a_split_or_a_count():
    from evolve.agent_r.start import held_out_instances as _held_out
    from tasks.registry import get_suite

    suite = get_suite("toolcall")
    test = [i.instance_id for i in suite.instances("test")]
    assert [i.instance_id for i in _held_out(suite, "3")] == test[:3]
    assert [i.instance_id for i in _held_out(suite, "test")] == test and _held_out(suite, "0") == []
    assert [i.instance_id for i in _held_out(suite, ",".join(HELD_OUT))] == HELD_OUT
