"""`evolve train` commands and `version:` resolution: help, one-line user errors, a tiny end-to-end SFT."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import build_tiny_model  # noqa: E402

from agent.policy import load_policy  # noqa: E402
from evolve.policies import RunsRoot  # noqa: E402
from records import Message, PolicyVersion, Reward, Step, Trajectory, TrajectoryStatus  # noqa: E402
from evolve.store import RunStore  # noqa: E402
from evolve.train.cli import app  # noqa: E402
from evolve.train.modeling import TrainError  # noqa: E402
from evolve.train.versions import resolve_policy  # noqa: E402

torch.set_num_threads(1)
runner = CliRunner()


def _gold_run(path: Path, n: int = 4, reward: float | None = None) -> Path:
    with RunStore(path) as store:
        for k in range(n):
            traj = Trajectory(run_id=path.name, instance_id=f"i{k % 2}", status=TrajectoryStatus.submitted,
                              origin="reference" if reward is None else "rollout",  # gold: demonstrations
                              prompt=[Message(role="user", content=f"question {k}")],
                              steps=[Step(index=0, response=Message(role="assistant", content=f"<think>a</think>\n"
                                                                    f"<response>{k}</response>"))])
            store.put_trajectory(traj)
            if reward is not None:
                store.put_reward(traj.id, Reward(name="toolrl", total=reward))
    return path


def _one_line_error(result, text: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], result.output


@pytest.mark.parametrize("command", [[], ["sft"], ["grpo"], ["grpo-toolcall"], ["versions"]])
def test_help(command):
    result = runner.invoke(app, command + ["--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_user_errors_are_one_line(tmp_path):
    _one_line_error(runner.invoke(app, ["sft", str(tmp_path / "nope")]), "is not a run directory")
    run = _gold_run(tmp_path / "runs" / "gold")
    _one_line_error(runner.invoke(app, ["sft", str(run), "--policy", "version:abc", "--out", str(tmp_path / "o")]),
                    "unknown policy version 'abc'")
    assert not (tmp_path / "o").exists()  # nothing written for a bad command
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: -1\n")
    _one_line_error(runner.invoke(app, ["sft", str(run), "--config", str(bad)]), "bad SFTConfig setting lr")
    bad.write_text("learning_rate: 0.1\n")
    _one_line_error(runner.invoke(app, ["sft", str(run), "--config", str(bad)]), "learning_rate")
    _one_line_error(runner.invoke(app, ["sft", str(run), "--config", str(tmp_path / "missing.yaml")]),
                    "does not exist")
    _one_line_error(runner.invoke(app, ["grpo", str(run), "--out", str(tmp_path / "g")]), "no scored trajectories")
    same = _gold_run(tmp_path / "runs" / "same", reward=1.0)
    _one_line_error(runner.invoke(app, ["grpo", str(same), "--policy", "hf:/no/such/model", "--out",
                                        str(tmp_path / "g2")]), "no model directory")
    assert not (tmp_path / "g2").exists()


def test_sft_from_the_command_line_then_resolve(tmp_path_factory, tmp_path):
    model = build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")
    runs = tmp_path / "runs"
    gold = _gold_run(runs / "gold")
    cfg = tmp_path / "sft.yaml"
    cfg.write_text("device: cpu\nbatch_size: 2\nmicro_batch_size: 2\nmax_len: 256\nlora:\n  r: 4\n")
    result = runner.invoke(app, ["sft", str(gold), "--config", str(cfg), "--policy", f"hf:{model}",
                                 "--out", str(runs / "sft"), "--max-steps", "2"])
    assert result.exit_code == 0, result.output
    assert "policy version" in result.output
    spec, options = resolve_policy("version:latest", runs)
    assert spec == f"hf:{Path(model).resolve()}" and Path(options["adapter"], "adapter_config.json").exists()
    with load_policy("version:latest", runs=RunsRoot(runs), device="cpu") as trained:  # how every command loads it
        # its outputs name the trained version by id (never `version:latest`, nor the base model it sits on)
        assert re.fullmatch(r"version:[0-9a-f]+", trained.spec) and trained.adapter == options["adapter"]
    listing = runner.invoke(app, ["versions", str(runs)])
    assert listing.exit_code == 0 and "sft" in listing.output


def test_resolve_policy(tmp_path):
    assert resolve_policy("hf:gemma3-270m", tmp_path) == ("hf:gemma3-270m", {})
    with pytest.raises(TrainError, match="no trained policy version"):
        resolve_policy("version:latest", tmp_path)
    with RunStore(tmp_path / "a") as a, RunStore(tmp_path / "b") as b:
        base = PolicyVersion(id="base-1", base="hf:/m", kind="base", created_at=1.0)
        lora = PolicyVersion(id="v1", parent_id="base-1", base="hf:/m", kind="sft", path="/runs/a/final",
                             adapter=True, created_at=2.0)
        full = PolicyVersion(id="v2", parent_id="v1", base="hf:/m", kind="grpo", path="/runs/b/final",
                             adapter=False, created_at=3.0)
        a.put_policy_version(base)
        a.put_policy_version(lora)
        b.put_policy_version(full)
    assert resolve_policy("version:v1", tmp_path) == ("hf:/m", {"adapter": "/runs/a/final"})
    assert resolve_policy("version:v2", tmp_path) == ("hf:/runs/b/final", {})
    assert resolve_policy("version:latest", tmp_path) == ("hf:/runs/b/final", {})
    assert resolve_policy("version:base-1", tmp_path) == ("hf:/m", {})
    with pytest.raises(TrainError, match="unknown policy version"):
        resolve_policy("version:zzz", tmp_path)
    assert RunsRoot(tmp_path).version("v1") == ("hf:/m", {"adapter": "/runs/a/final"})
    assert RunsRoot(tmp_path).run_trajectories(tmp_path / "a") == []  # a run directory with no trajectory
    assert RunsRoot(tmp_path).run_trajectories(tmp_path) is None  # not a run directory: replay:PATH reads a file


def test_grpo_toolcall_smoke_with_the_suite_prompt(tmp_path_factory, tmp_path):
    """The CLI's online GRPO on the real suite prompt (tool schemas in the system message): one tiny step. The
    untrained tiny model never answers in format, so the group's rewards are equal: no update, no version (a run
    that learned nothing says so instead of storing the starting weights as a new `version:latest`)."""
    model = build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")
    cfg = tmp_path / "grpo.yaml"
    cfg.write_text("device: cpu\nmax_new_tokens: 4\nmax_len: 2048\nlimit: 2\nmicro_batch_size: 2\nlora: null\n")
    result = runner.invoke(app, ["grpo-toolcall", "--config", str(cfg), "--policy", f"hf:{model}", "--out",
                                 str(tmp_path / "g"), "--steps", "1", "--group-size", "2", "--prompts-per-step", "1"])
    assert result.exit_code == 2 and "made no update" in result.output, result.output
    with RunStore(tmp_path / "g", readonly=True) as store:
        trajs = list(store.trajectories())
        (step,) = store.train_steps(store.runs()[0]["config"]["version_id"])
        versions = {v.kind: v.status for v in store.policy_versions()}  # watched live, then closed as empty
        assert versions == {"base": "ready", "grpo": "no-updates"}
    assert len(trajs) == 2 and trajs[0].prompt[0].role == "system"
    assert "Available tools" in trajs[0].prompt[0].content  # the suite's own prompt
    assert "reward" in step.metrics and "format" in step.metrics
