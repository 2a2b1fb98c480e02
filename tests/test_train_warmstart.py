"""`evolve train sft-toolcall` (the tool-calling warm start) and `export-gguf`'s user errors, with the tiny model."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import build_tiny_model  # noqa: E402

from evolve.store import RunStore  # noqa: E402
from evolve.train.cli import app  # noqa: E402
from evolve.train.warmstart import GOLD_RUN_ID, gold_trajectories  # noqa: E402

torch.set_num_threads(1)
runner = CliRunner()


def test_gold_trajectories_are_the_suites_prompts_with_reference_answers():
    from evolve.train.rollout import toolcall_instances
    from tasks.toolcall.prompt import build_messages

    insts = toolcall_instances("train", 3)
    for inst, (traj, reward) in zip(insts, gold_trajectories(insts)):
        assert reward is None and traj.run_id == GOLD_RUN_ID and traj.instance_id == inst.instance_id
        assert [m.content for m in traj.prompt] == [m.content for m in build_messages(inst)]
        assert traj.messages()[-1].role == "assistant" and traj.messages()[-1].content == inst.extra["answer"]


def test_sft_toolcall_trains_stores_a_version_and_resumes(tmp_path):
    model = build_tiny_model(tmp_path / "tiny")
    cfg = tmp_path / "warm.yaml"
    cfg.write_text("max_len: 2048\nbatch_size: 2\nmicro_batch_size: 2\nsave_every: 1\ndevice: cpu\n")
    args = ["sft-toolcall", "--policy", f"hf:{model}", "--out", str(tmp_path / "warm"), "--limit", "3",
            "--max-steps", "2", "--config", str(cfg)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with RunStore(tmp_path / "warm", readonly=True) as store:
        [version] = [v for v in store.policy_versions() if v.kind == "sft"]
        steps = store.train_steps(version.id)
    assert version.data == [GOLD_RUN_ID] and Path(version.path).is_dir()
    assert len(steps) == 2
    again = runner.invoke(app, args)  # finished: the same version, nothing retrained
    assert again.exit_code == 0 and version.id in again.output


def test_export_gguf_user_errors_are_one_line(tmp_path):
    for args, text in ((["llamacpp:gemma3-270m", "--out", str(tmp_path / "x.gguf")], "needs a trained version"),
                       (["hf:gemma3-270m", "--out", str(tmp_path / "x.gguf"), "--type", "q2"], "--type must be")):
        result = runner.invoke(app, ["export-gguf"] + args)
        assert result.exit_code == 2 and "Traceback" not in result.output
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and text in lines[0], result.output
