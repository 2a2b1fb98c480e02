"""Shared pieces of the `evolve loop` tests: a small toolcall config for the tiny model, scripted toolcall policies,
and a runner for the SIGKILL tests (`python tests/loop_helpers.py OUT MODEL KILL_STAGE KILL_AT [OVERRIDES_JSON]`)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from agent.policy.base import Generation, Policy, SamplingParams  # noqa: E402
from records import Message  # noqa: E402

TRAIN = ["toolcall__book_hotel-1", "toolcall__book_hotel-2", "toolcall__book_hotel-3"]


WARM_STEPS = 60


def warm_tiny_model(base: Path) -> Path:
    """The tiny model after WARM_STEPS of full SFT on the reference answers of TRAIN (the suite's prompt): at T=1
    its answers differ in ToolRL reward (GRPO has groups with signal, some succeed), greedy ones are mostly right.
    Built once per directory (`tests/conftest.py` keeps it across sessions in the test cache: it costs a minute or
    two of CPU), under a file lock; a killed build resumes from its training checkpoint."""
    import fcntl
    import shutil

    from tiny_model import build_tiny_model

    final = base / f"warm-tiny-{WARM_STEPS}"
    if (final / "config.json").exists():
        return final
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".warm-tiny.lock", "w") as lock:  # concurrent sessions: one trains, the others wait for it
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "config.json").exists():
            return final
        return _train_warm(base, final, build_tiny_model, shutil)


def _train_warm(base: Path, final: Path, build_tiny_model, shutil) -> Path:
    from evolve.store import RunStore
    from evolve.train.sft import SFTConfig, train_sft
    from records import Message, Step, Trajectory, TrajectoryStatus
    from tasks.registry import get_suite
    from tasks.toolcall.prompt import build_messages

    model = build_tiny_model(base / "tiny")
    gold = base / "warm-gold"
    with RunStore(gold) as store:
        if not store.trajectory_ids():
            for inst in get_suite("toolcall").select(TRAIN):
                store.put_trajectory(Trajectory(
                    run_id="gold", instance_id=inst.instance_id, status=TrajectoryStatus.submitted, origin="reference",
                    prompt=build_messages(inst),
                    steps=[Step(index=0, response=Message(role="assistant", content=inst.extra["answer"]))]))
    version = train_sft(SFTConfig(policy=f"hf:{model}", lora=None, lr=1e-2, warmup_steps=3, batch_size=3,
                                  micro_batch_size=3, max_steps=WARM_STEPS, max_len=4096, pack=False, seed=0,
                                  device="cpu", save_every=10, num_threads=1), [gold], base / "warm-train")
    tmp = base / ".warm-tiny"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(version.path, tmp)
    os.rename(tmp, final)
    return final


def tiny_config(model: Path, **over: Any):
    """Two generations on three training instances for the tiny model (start it from `warm_tiny_model`): a short warm
    start (the stage's mechanics), 3 sampled attempts per instance (GRPO groups), SFT and GRPO children, Agent-R on
    what failed, six held-out instances. `over` sets fields by path, e.g. `rollouts__attempts=2`."""
    from evolve.loop.config import load_loop_config

    data = {
        "generations": 2, "seed": 0,
        "splits": {"train": TRAIN, "search": None, "held_out": 6},
        "warm_start": {"enabled": True, "steps": 2, "lr": 1e-4},
        "rollouts": {"attempts": 3, "temperature": 1.0, "max_tokens": 160, "batch_size": 3},
        "evolution": {"agent_r": {"enabled": True, "limit": 1, "rollouts": 1, "n_gen": 2, "max_depth": 2,
                                  "max_pairs": 1, "alpha": 0.1, "beta": 0.05}},
        "sft": {"steps": 2, "min_reward": 1.0}, "grpo": {"steps": 2, "lr": 1e-4},
        "search": {"budget": 4, "initial_expansions": 2, "max_expansions": 2, "workers": 1, "pass_threshold": 0.75},
        "gate": {"min_held_out": 3},
        "policies": {"policy": f"hf:{model}", "rollout_backend": "hf"},
        "training": {"device": "cpu", "lora": False, "lr": 1e-3, "batch_size": 3, "micro_batch_size": 3,
                     "max_len": 2048, "save_every": 1, "num_threads": 1},
    }
    for key, value in over.items():
        *parents, last = key.split("__")
        at = data
        for p in parents:
            at = at.setdefault(p, {})
        at[last] = value
    import tempfile

    import yaml

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(data, f)
    try:
        return load_loop_config("toolcall", Path(f.name), suite="toolcall")
    finally:
        os.unlink(f.name)


class ScriptedToolcall(Policy):
    """Answers toolcall prompts from a table: the instance's reference answer when `good`, else a wrong one."""

    context_length = 1_000_000

    def __init__(self, spec: str, good: bool | set[str]):
        from tasks.registry import get_suite

        self.spec = spec
        self.answers = {i.problem_statement: i.extra["answer"] for i in get_suite("toolcall").instances()}
        self.good = good
        self.calls = 0

    def generate(self, conversations: list[list[Message]], params: SamplingParams, tools=None) -> list[Generation]:
        out = []
        for conv in conversations:
            self.calls += 1
            request = conv[1].content
            ok = self.good if isinstance(self.good, bool) else any(i in request for i in self.good)
            text = self.answers[request] if ok else "<think>no idea</think>\n<response>I cannot help.</response>"
            out.append(Generation(text=text, prompt_tokens=100, completion_tokens=20))
        return out

    def count_tokens(self, messages: list[Message]) -> int:
        return sum(len(m.content) for m in messages) // 4


def _kill_at(stage: str, at: int):
    """A progress hook that SIGKILLs this process at the `at`-th event of `stage`."""
    seen = {"n": 0}

    def hook(st: str, event: str, detail: dict) -> None:
        if st == stage:
            seen["n"] += 1
            if seen["n"] >= at:
                os.kill(os.getpid(), signal.SIGKILL)
    return hook


def _kill_in_training(at: int) -> None:
    """SIGKILL this process right after the `at`-th optimiser step of any training (its checkpoint written)."""
    from evolve.train import session

    original = session.TrainSession.save_checkpoint
    seen = {"n": 0}

    def save_checkpoint(self, step, *args, **kwargs):
        path = original(self, step, *args, **kwargs)
        seen["n"] += 1
        if seen["n"] >= at:
            os.kill(os.getpid(), signal.SIGKILL)
        return path

    session.TrainSession.save_checkpoint = save_checkpoint


def main() -> None:
    import json

    out, model, stage, at = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    over = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    import torch

    torch.set_num_threads(1)
    from evolve.loop.run import run_loop

    hook = None
    if stage == "training":
        _kill_in_training(at)
    elif stage != "none":
        hook = _kill_at(stage, at)
    run_loop(tiny_config(model, **over), out, progress=hook)


if __name__ == "__main__":
    main()
