"""Trainings end cleanly (issue 22, "found outside the TUI"): a stop request or Ctrl-C ends an SFT or GRPO training
at the next step with its checkpoint and the version's state saved (resumable to the same result), and GRPO on
trajectories all longer than `max_len` is a one-line error that leaves the store saying so, not a `bincount`
traceback and a store "running" forever. A tiny real model (tests/tiny_model.py), real stores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import build_tiny_model  # noqa: E402

from evolve.store import RunStore  # noqa: E402
from evolve.train.grpo import GRPOConfig, train_grpo  # noqa: E402
from evolve.train.modeling import TrainError  # noqa: E402
from evolve.train.sft import SFTConfig, train_sft  # noqa: E402
from evolve.train.versions import get_version  # noqa: E402
from records import Message, Reward, Step, Trajectory, TrajectoryStatus  # noqa: E402

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent


def gold(k: int, long: int = 0) -> Trajectory:
    return Trajectory(run_id="gold", instance_id=f"i{k % 4}", status=TrajectoryStatus.submitted,
                      prompt=[Message(role="user", content=f"say {k}" + " please" * long)],
                      steps=[Step(index=0, response=Message(role="assistant", content=f"<think>ok</think> {k}"))])


def config(model: Path, steps: int = 6) -> SFTConfig:
    return SFTConfig(policy=f"hf:{model}", lora=None, lr=1e-3, batch_size=2, micro_batch_size=2, max_steps=steps,
                     max_len=128, save_every=100, device="cpu", seed=0,
                     num_threads=1)  # exact resume comparisons: not a thread count measured from the load


def state(out: Path) -> tuple[str, str, list[int]]:
    with RunStore(out, readonly=True) as store:
        run = store.runs()[0]
        version = next(v for v in store.policy_versions() if v.id == run["config"]["version_id"])
        return run["status"], version.status, [s.step for s in store.train_steps(version.id)]


def test_a_stop_request_ends_sft_at_the_next_step_saved_and_resumable(tmp_path: Path):
    model = build_tiny_model(tmp_path / "tiny")
    data = [(gold(k), None) for k in range(8)]
    asked = []

    def stop_at_two() -> str | None:
        asked.append(1)
        return "stop requested" if len(asked) == 3 else None  # asked before steps 0, 1, 2

    out = tmp_path / "sft"
    assert train_sft(config(model), [], out, items=data, should_stop=stop_at_two) is None
    assert state(out) == ("stopped", "stopped", [0, 1])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002"]
    try:
        get_version(state_id(out), tmp_path)
        raise AssertionError("a stopped version must not load")
    except TrainError as e:
        assert "stopped" in str(e)
    resumed = train_sft(config(model), [], out, items=data)
    assert resumed.id == state_id(out) and resumed.status == "ready"
    assert state(out) == ("done", "ready", list(range(6)))
    straight = train_sft(config(model), [], tmp_path / "straight", items=data)
    assert straight.metrics["loss"] == resumed.metrics["loss"]  # the stop lost nothing


def state_id(out: Path) -> str:
    with RunStore(out, readonly=True) as store:
        return store.runs()[0]["config"]["version_id"]


def test_ctrl_c_ends_cli_training_at_the_next_step(tmp_path: Path):
    model = build_tiny_model(tmp_path / "tiny")
    runs = tmp_path / "gold"
    with RunStore(runs) as store:
        for k in range(8):
            store.put_trajectory(gold(k))
    out = tmp_path / "sft"
    proc = subprocess.Popen([sys.executable, "-m", "evolve.cli", "train", "sft", str(runs), "--policy", f"hf:{model}",
                             "--out", str(out), "--max-steps", "100000", "--full", "--device", "cpu",
                             "--all-trajectories"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.time() + 900  # a generous wait for two steps on a busy machine, never a timing claim
        seen = 0
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            try:
                if (seen := len(state(out)[2])) >= 2:
                    break
            except Exception:  # noqa: BLE001 - the store or its run row is not written yet
                continue
        assert seen >= 2 and proc.poll() is None, "training never reached its second step"
        proc.send_signal(signal.SIGINT)
        text = proc.communicate(timeout=900)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "stopped" in text and "resume" in text, text[-2000:]
    assert "Traceback" not in text, text[-2000:]
    run, version, steps = state(out)
    assert (run, version) == ("stopped", "stopped")
    # it stopped at a step boundary, checkpointed there (a tiny model's steps take milliseconds: how many ran
    # between the signal and the stop is not something a test can pin down)
    assert len(steps) >= seen and sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"step-{len(steps):06d}"]


def test_grpo_with_every_trajectory_too_long_is_one_line_and_the_store_says_so(tmp_path: Path):
    model = build_tiny_model(tmp_path / "tiny")
    runs = tmp_path / "scored"
    with RunStore(runs) as store:
        for k in range(8):
            t = gold(k, long=60)
            store.put_trajectory(t)
            store.put_reward(t.id, Reward(name="combined", total=float(k % 2)))
    cfg = GRPOConfig(policy=f"hf:{model}", lora=None, max_len=32, batch_size=2, micro_batch_size=2, device="cpu")
    try:
        train_grpo(cfg, [runs], tmp_path / "grpo")
        raise AssertionError("GRPO trained on nothing")
    except TrainError as e:
        assert "max_len" in str(e)
    run, version, steps = state(tmp_path / "grpo")
    assert (run, version, steps) == ("error", "failed", [])
    (tmp_path / "grpo.yaml").write_text("max_len: 32\nlora: null\ndevice: cpu\n")
    cli = subprocess.run([sys.executable, "-m", "evolve.cli", "train", "grpo", str(runs), "--policy", f"hf:{model}",
                          "--config", str(tmp_path / "grpo.yaml"), "--out", str(tmp_path / "grpo-cli")], cwd=ROOT,
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert cli.returncode == 2 and "Traceback" not in cli.stdout + cli.stderr, cli.stdout + cli.stderr
    assert "max_len" in cli.stderr
