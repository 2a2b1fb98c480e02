"""SFT learns: a tiny random model trained on the tool-calling suite's gold answers gets the ToolRL format right
on held-out prompts; training stores a policy version; a killed training resumes exactly.

Scale, chosen so the whole test runs in well under a minute on a shared 2-core CPU:

* Prompt: the instance's request as the user turn, *without* the suite's tool-schema system message
  (`tasks.toolcall.prompt.build_messages`). With the tiny byte-level tokenizer that system message is
  ~1,300 tokens, ten times the compute of the request and answer together; the CLI and
  `train_grpo_toolcall` use the suite's full prompt by default.
* Instances: the single-call category with answers under 150 tokens (124 train, 29 test), so one
  output layout is learned in a few hundred small steps.
* Model: the tiny Llama of `tiny_model.py` with hidden size 128 (learns several times faster per
  step than 64 at about the same cost), full fine-tuning.

Everything else is the production path: gold trajectories in a run store -> `train_sft` (data,
loss mask, checkpoints, policy version) -> `resolve_policy` -> `agent.policy.load_policy` -> greedy
generation -> `rewards.toolrl.score`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import build_tiny_model  # noqa: E402

from records import Message, Step, TaskInstance, Trajectory, TrajectoryStatus  # noqa: E402
from evolve.store import RunStore  # noqa: E402
from evolve.train.rollout import evaluate_toolcall, toolcall_instances  # noqa: E402
from evolve.train.sft import SFTConfig, train_sft  # noqa: E402
from evolve.train.versions import resolve_policy  # noqa: E402

torch.set_num_threads(1)

MAX_ANSWER = 150
SFT_STEPS = 300
GRPO_START = 100  # the checkpoint the GRPO test starts from (format ~0.5 when sampling)


def request_only(instance: TaskInstance) -> list[Message]:
    """The test prompt: the user's request alone (see the module docstring)."""
    return [Message(role="user", content=instance.problem_statement)]


def single_call(split: str, tokenizer) -> list[TaskInstance]:
    return [i for i in toolcall_instances(split) if i.extra["category"] == "single"
            and len(tokenizer(i.extra["answer"], add_special_tokens=False)["input_ids"]) < MAX_ANSWER]


def toolcall_sft(base: Path) -> dict:
    """Build the tiny model, store gold trajectories and SFT on them; reused within a test session
    (a finished training in the same output directory is returned as is)."""
    from transformers import AutoTokenizer

    model = build_tiny_model(base / "tiny-128", hidden=128, layers=2)
    tok = AutoTokenizer.from_pretrained(model)
    train, test = single_call("train", tok), single_call("test", tok)
    gold = base / "toolcall-gold"
    if not (gold / "evolve.db").exists():
        with RunStore(gold) as store:
            for inst in train:
                store.put_trajectory(Trajectory(
                    run_id="gold", instance_id=inst.instance_id, status=TrajectoryStatus.submitted, origin="reference",
                    prompt=request_only(inst),
                    steps=[Step(index=0, response=Message(role="assistant", content=inst.extra["answer"]))]))
    cfg = SFTConfig(policy=f"hf:{model}", lora=None, lr=6e-3, warmup_steps=5, schedule="cosine", batch_size=4,
                    micro_batch_size=4, max_steps=SFT_STEPS, max_len=400, pack=False, save_every=GRPO_START,
                    keep_checkpoints=5, seed=0, device="cpu")
    out = base / "toolcall-sft"
    version = train_sft(cfg, [gold], out)
    return {"model": model, "version": version, "out": out, "train": train, "test": test}


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    return toolcall_sft(tmp_path_factory.getbasetemp())


def test_sft_learns_the_toolrl_format(sft):
    from agent.policy import load_policy

    test = sft["test"]
    assert len(sft["train"]) >= 100 and len(test) >= 25
    with load_policy(f"hf:{sft['model']}", device="cpu") as untrained:
        before = evaluate_toolcall(untrained, test, max_new_tokens=MAX_ANSWER, prompt=request_only)
    spec, options = resolve_policy(f"version:{sft['version'].id}", sft["out"].parent)
    with load_policy(spec, device="cpu", **options) as trained:
        after = evaluate_toolcall(trained, test, max_new_tokens=MAX_ANSWER, prompt=request_only)
        sampled = evaluate_toolcall(trained, test * 2, max_new_tokens=MAX_ANSWER, prompt=request_only,
                                    temperature=1.0, seed=0)
    print(f"held-out ToolRL format, greedy: untrained {before['format']:.2f} -> trained {after['format']:.2f}; "
          f"sampled (T=1) {sampled['format']:.2f}")
    assert before["format"] <= 0.1
    assert after["format"] >= 0.6
    assert sampled["format"] >= before["format"] + 0.4


def test_sft_stores_version_and_step_metrics(sft):
    version, out = sft["version"], sft["out"]
    assert version.kind == "sft" and not version.adapter and Path(version.path, "config.json").exists()
    assert version.data == ["gold"] and version.parent_id and version.parent_id.startswith("base-")
    with RunStore(out, readonly=True) as store:
        versions = {v.id: v for v in store.policy_versions()}
        steps = store.train_steps(version.id)
    assert version.id in versions and versions[version.parent_id].kind == "base"
    assert [s.step for s in steps] == list(range(SFT_STEPS))
    assert {"loss", "lr", "grad_norm", "tokens_per_s"} <= steps[0].metrics.keys()
    first = sum(s.metrics["loss"] for s in steps[:5]) / 5
    last = sum(s.metrics["loss"] for s in steps[-20:]) / 20
    assert last < 0.3 * first
    assert resolve_policy(f"version:{version.id}", out.parent) == (f"hf:{version.path}", {})


def _lora_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_killed_training_resumes_exactly(tmp_path_factory, tmp_path):
    """LoRA with dropout (so RNG state matters): a run stopped after step 3 (checkpoint at step 2)
    and resumed ends with exactly the weights of an uninterrupted run."""
    model = build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")
    insts = toolcall_instances("train")[:12]
    items = [(Trajectory(run_id="gold", instance_id=i.instance_id, status=TrajectoryStatus.submitted,
                         prompt=request_only(i),
                         steps=[Step(index=0, response=Message(role="assistant", content=i.extra["answer"]))]), None)
             for i in insts]
    cfg = SFTConfig.model_validate({"policy": f"hf:{model}", "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
                                    "lr": 1e-3, "batch_size": 4, "micro_batch_size": 2, "max_steps": 6,
                                    "save_every": 2, "max_len": 600, "device": "cpu",
                                    "num_threads": 1})  # a thread count measured from the load could differ per run
    straight = train_sft(cfg, [], tmp_path / "straight", items=items)
    assert train_sft(cfg, [], tmp_path / "killed", items=items, stop_after=3) is None
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()) == ["step-000002"]
    with RunStore(tmp_path / "killed", readonly=True) as store:
        version_id = store.runs()[0]["config"]["version_id"]
    resumed = train_sft(cfg, [], tmp_path / "killed", items=items)
    assert resumed.id == version_id and resumed.adapter
    a, b = _lora_weights(Path(straight.path)), _lora_weights(Path(resumed.path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with RunStore(tmp_path / "killed", readonly=True) as store:
        assert [s.step for s in store.train_steps(resumed.id)] == list(range(6))
    # a finished output directory is not trained again
    assert train_sft(cfg, [], tmp_path / "killed", items=items).id == resumed.id
