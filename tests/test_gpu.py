"""The CUDA paths, which CPU CI never runs: the `hf:` policy in bfloat16 on the GPU (batched sampling, raw
log-probs, seeds, LoRA adapters), SFT (full and LoRA) and GRPO (online and offline, with a KL reference)
on the GPU, and resuming a killed training there. Skipped where no CUDA GPU is available.

Models and data are those of the CPU tests (`tiny_model.py`; the tool-calling suite's gold answers and the
scale of `test_train_sft_learns`), so a GPU run is compared with a known CPU result. Tolerances on
log-probs are bfloat16's: sampling (KV cache, left padding) and a trainer's forward pass (no cache,
packed rows) round differently.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (the resume test)

sys.path.insert(0, str(Path(__file__).parent))
from test_train_sft_learns import (GRPO_START, MAX_ANSWER, SFT_STEPS, _lora_weights,  # noqa: E402
                                   request_only, single_call)
from tiny_model import build_tiny_model  # noqa: E402

from agent.policy import SamplingParams, load_policy  # noqa: E402
from evolve.store import RunStore  # noqa: E402
from evolve.train.config import TrainConfig  # noqa: E402
from evolve.train.data import build_sequences  # noqa: E402
from evolve.train.grpo import GRPOConfig, fill_logprobs, train_grpo  # noqa: E402
from evolve.train.modeling import LoraSettings, load_for_training, resolve_device, resolve_dtype  # noqa: E402
from evolve.train.rollout import (ToolcallGRPOConfig, evaluate_toolcall, make_trajectory,  # noqa: E402
                                  toolcall_instances, train_grpo_toolcall)
from evolve.train.sft import SFTConfig, train_sft  # noqa: E402
from records import Message, Step, Trajectory, TrajectoryStatus  # noqa: E402

CUDA = torch.device("cuda")
CONVERSATIONS = [
    [Message(role="user", content="hi")],
    [Message(role="system", content="You are a helpful assistant."),
     Message(role="user", content="What is the weather in Paris?")],
    [Message(role="user", content="def add(a, b):")],
]


def gold(instances) -> list[tuple[Trajectory, None]]:
    """(trajectory, reward) items answering each instance with its gold answer."""
    return [(Trajectory(run_id="gold", instance_id=i.instance_id, status=TrajectoryStatus.submitted,
                        prompt=request_only(i),
                        steps=[Step(index=0, response=Message(role="assistant", content=i.extra["answer"]))]), None)
            for i in instances]


def recompute(policy, messages: list[Message], token_ids: list[int]) -> torch.Tensor:
    """What a trainer does: one forward pass of the policy's model over prompt + completion."""
    prompt = policy.prompt_ids(messages)
    ids = torch.tensor([prompt + token_ids], device=policy.device)
    with torch.no_grad():
        logits = policy.model(ids).logits[0, len(prompt) - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(1, ids[0, len(prompt):, None]).squeeze(1).cpu()


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-peaked", init_std=0.2)


@pytest.fixture(scope="module")
def policy(model_dir):
    return load_policy(f"hf:{model_dir}")  # device and dtype "auto"


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    """Full fine-tuning on CUDA of the CPU learning test's model and data (same settings)."""
    from transformers import AutoTokenizer

    base = tmp_path_factory.getbasetemp()
    model = build_tiny_model(base / "tiny-128", hidden=128, layers=2)
    tok = AutoTokenizer.from_pretrained(model)
    train, test = single_call("train", tok), single_call("test", tok)
    cfg = SFTConfig(policy=f"hf:{model}", lora=None, lr=6e-3, warmup_steps=5, schedule="cosine", batch_size=4,
                    micro_batch_size=4, max_steps=SFT_STEPS, max_len=400, pack=False, save_every=GRPO_START,
                    keep_checkpoints=5, seed=0, device="cuda")
    out = base / "cuda-sft"
    version = train_sft(cfg, [], out, items=gold(train))
    return {"model": model, "version": version, "out": out, "train": train, "test": test}


@pytest.fixture(scope="module")
def grpo(sft):
    """Online GRPO on CUDA (full weights, a KL reference) from an early checkpoint of the SFT run."""
    start = f"hf:{sft['out']}/checkpoints/step-{GRPO_START:06d}/model"
    cfg = ToolcallGRPOConfig(policy=start, lora=None, lr=1e-3, steps=4, prompts_per_step=8, group_size=8,
                             max_new_tokens=MAX_ANSWER, batch_size=64, micro_batch_size=32, max_len=400, pack=False,
                             kl_coef=0.01, save_every=100, seed=0, device="cuda")
    out = sft["out"].parent / "cuda-grpo"
    version = train_grpo_toolcall(cfg, out, instances=sft["train"], prompt=request_only)
    return {"start": start, "version": version, "out": out, "cfg": cfg}


def test_auto_picks_cuda_bfloat16_with_float32_lora_adapters(policy, model_dir):
    """`auto` device/dtype: the policy and a LoRA trainer run in bfloat16 on CUDA, adapters and full FT in float32."""
    assert policy.device == "cuda"
    assert {(p.device.type, p.dtype) for p in policy.model.parameters()} == {("cuda", torch.bfloat16)}
    device = resolve_device("auto")
    assert device.type == "cuda"
    assert resolve_dtype("auto", device) == torch.bfloat16
    assert resolve_dtype("auto", device, full_finetune=True) == torch.float32
    model, _ = load_for_training(f"hf:{model_dir}", lora=LoraSettings(r=4), device=device,
                                 dtype=resolve_dtype("auto", device))
    trained = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert trained == {torch.float32} and frozen == {torch.bfloat16}
    assert all(p.is_cuda for p in model.parameters())


def test_cuda_batched_sampling_logprobs_match_one_forward_pass(policy):
    """Batched tempered top-p sampling on CUDA records the RAW log-probs a forward pass recomputes."""
    convs = CONVERSATIONS * 3
    gens = policy.generate(convs, SamplingParams(max_tokens=24, temperature=0.7, top_p=0.9, seed=3))
    assert len(gens) == len(convs)
    diffs = []
    for conv, gen in zip(convs, gens):
        assert gen.token_ids and len(gen.token_ids) == len(gen.logprobs) == gen.completion_tokens <= 24
        assert policy.tokenizer.decode(gen.token_ids, skip_special_tokens=True) == gen.text
        assert all(lp <= 0.0 for lp in gen.logprobs)
        diffs.append((torch.tensor(gen.logprobs) - recompute(policy, conv, gen.token_ids)).abs())
    diffs = torch.cat(diffs)
    print(f"sampled vs recomputed log-probs (bf16): max {diffs.max():.4f}, mean {diffs.mean():.5f}, n {len(diffs)}")
    assert diffs.max() < 0.1 and diffs.mean() < 0.01


def test_cuda_greedy_and_seeded_sampling_are_reproducible(policy):
    """On CUDA greedy decoding repeats, a seed fixes sampling, and seeding leaves the global CUDA RNG alone."""
    greedy = SamplingParams(max_tokens=12, temperature=0.0)
    first, again = policy.generate(CONVERSATIONS, greedy), policy.generate(CONVERSATIONS, greedy)
    assert [g.token_ids for g in first] == [g.token_ids for g in again]
    assert len({tuple(g.token_ids) for g in first}) == len(CONVERSATIONS)  # outputs depend on the prompt
    rng = torch.cuda.get_rng_state()
    params = SamplingParams(max_tokens=12, temperature=1.0, seed=7)
    a, b = policy.generate(CONVERSATIONS * 2, params), policy.generate(CONVERSATIONS * 2, params)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    other = policy.generate(CONVERSATIONS * 2, params.model_copy(update={"seed": 8}))
    assert [g.token_ids for g in other] != [g.token_ids for g in a]
    assert torch.equal(torch.cuda.get_rng_state(), rng)


def test_lora_adapter_on_cuda_matches_the_float32_cpu_model(model_dir, tmp_path):
    """A LoRA adapter loaded (and swapped) by the CUDA policy changes its outputs as the float32 CPU model says."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    refs = []
    for k in range(2):
        torch.manual_seed(k)
        ref = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), config).eval()
        ref.save_pretrained(tmp_path / f"adapter{k}")
        refs.append(ref)
    adapted = load_policy(f"hf:{model_dir}@{tmp_path / 'adapter0'}", device="cuda")
    greedy = SamplingParams(max_tokens=12, temperature=0.0)
    plain = load_policy(f"hf:{model_dir}", device="cuda").generate(CONVERSATIONS, greedy)
    for k, ref in enumerate(refs):
        if k:
            adapted.load_adapter(tmp_path / f"adapter{k}")  # swapped in place, as after a training round
        gens = adapted.generate(CONVERSATIONS, greedy)
        assert [g.token_ids for g in gens] != [g.token_ids for g in plain]
        for conv, gen in zip(CONVERSATIONS, gens):
            ids = torch.tensor([adapted.prompt_ids(conv) + gen.token_ids])
            with torch.no_grad():
                logits = ref(ids).logits[0, -len(gen.token_ids) - 1:-1]
            expected = torch.log_softmax(logits, -1).gather(1, ids[0, -len(gen.token_ids):, None]).squeeze(1)
            torch.testing.assert_close(torch.tensor(gen.logprobs), expected, atol=0.15, rtol=0)


def test_full_sft_on_cuda_learns_the_toolrl_format(sft):
    """Full fine-tuning on CUDA learns as on CPU: loss falls, held-out greedy ToolRL format goes from ~0 to >= 0.6."""
    version, out = sft["version"], sft["out"]
    assert version.kind == "sft" and not version.adapter
    assert {t.dtype for t in weights(Path(version.path)).values()} == {torch.float32}
    with RunStore(out, readonly=True) as store:
        steps = store.train_steps(version.id)
    assert [s.step for s in steps] == list(range(SFT_STEPS))
    first = sum(s.metrics["loss"] for s in steps[:5]) / 5
    last = sum(s.metrics["loss"] for s in steps[-20:]) / 20
    with load_policy(f"hf:{sft['model']}", device="cuda") as untrained:
        before = evaluate_toolcall(untrained, sft["test"], max_new_tokens=MAX_ANSWER, prompt=request_only)
    with load_policy(f"hf:{version.path}", device="cuda") as trained:
        after = evaluate_toolcall(trained, sft["test"], max_new_tokens=MAX_ANSWER, prompt=request_only)
    print(f"cuda SFT: loss {first:.3f} -> {last:.3f}; held-out format {before['format']:.2f} -> {after['format']:.2f}; "
          f"{steps[-1].metrics['tokens_per_s']:.0f} tok/s")
    assert last < 0.3 * first
    assert before["format"] <= 0.1 and after["format"] >= 0.6


def test_lora_sft_on_cuda_learns_and_resumes(tmp_path_factory, tmp_path):
    """LoRA SFT (bfloat16 base, dropout) on CUDA lowers the loss; a killed run resumes to the same adapter."""
    model = build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")
    items = gold(toolcall_instances("train")[:16])
    cfg = SFTConfig.model_validate({"policy": f"hf:{model}", "lora": {"r": 8, "alpha": 16, "dropout": 0.1},
                                    "lr": 5e-3, "batch_size": 4, "micro_batch_size": 2, "max_steps": 40,
                                    "save_every": 10, "max_len": 600, "device": "cuda"})
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        straight = train_sft(cfg, [], tmp_path / "straight", items=items)
        assert train_sft(cfg, [], tmp_path / "killed", items=items, stop_after=15) is None
        resumed = train_sft(cfg, [], tmp_path / "killed", items=items)  # from the step-10 checkpoint
    finally:
        torch.use_deterministic_algorithms(False)
    with RunStore(tmp_path / "straight", readonly=True) as store:
        losses = [s.metrics["loss"] for s in store.train_steps(straight.id)]
    with RunStore(tmp_path / "killed", readonly=True) as store:
        assert [s.step for s in store.train_steps(resumed.id)] == list(range(40))
    a, b = _lora_weights(Path(straight.path)), _lora_weights(Path(resumed.path))
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"cuda LoRA SFT: loss {sum(losses[:4]) / 4:.3f} -> {sum(losses[-4:]) / 4:.3f}; "
          f"resumed vs straight adapter max diff {worst:.2e}")
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.25  # measured on CPU in bf16: 6.18 -> 5.65
    assert resumed.adapter and a.keys() == b.keys() and {t.dtype for t in a.values()} == {torch.float32}
    assert worst < 1e-5


def test_online_grpo_on_cuda(grpo):
    """Online GRPO on CUDA: finite losses, on-policy ratio 1, KL 0 before the first update, weights change."""
    version, cfg = grpo["version"], grpo["cfg"]
    with RunStore(grpo["out"], readonly=True) as store:
        steps = store.train_steps(version.id)
        n_trajs = len(list(store.trajectories()))
    assert version.kind == "grpo" and len(steps) == cfg.steps
    assert n_trajs == cfg.steps * cfg.prompts_per_step * cfg.group_size
    updates = [s.metrics for s in steps if "loss" in s.metrics]
    assert updates and all(math.isfinite(m[k]) for m in updates for k in ("loss", "kl", "entropy", "grad_norm"))
    assert all(abs(m["ratio"] - 1) < 2e-3 for m in updates)  # recorded sampling log-probs = the trainer's
    assert "loss" in steps[0].metrics and steps[0].metrics["kl"] < 1e-6  # the reference is the starting policy
    start = weights(Path(grpo["start"][3:]))
    final = weights(Path(version.path))
    assert start.keys() == final.keys() and any(not torch.equal(start[k], final[k]) for k in start)


def test_sampled_logprobs_match_the_trainers_in_bfloat16(sft):
    """The CUDA policy's recorded log-probs equal, within bf16 rounding, what the trainer recomputes (packed rows)."""
    path = sft["version"].path
    insts = sft["test"][:8]
    with load_policy(f"hf:{path}", device="cuda") as policy:
        gens = policy.generate([request_only(i) for i in insts for _ in range(4)],
                               SamplingParams(max_tokens=MAX_ANSWER, temperature=1.0, seed=0))
        items = [(make_trajectory(insts[k // 4], request_only(insts[k // 4]), g, run_id="r", policy="p"), 0.0)
                 for k, g in enumerate(gens)]
        seqs, _ = build_sequences(items, policy.tokenizer, max_len=400)
    model, tok = load_for_training(f"hf:{path}", device=CUDA, dtype=resolve_dtype("auto", CUDA), trainable=False)
    assert next(model.parameters()).dtype == torch.bfloat16
    cfg = TrainConfig(max_len=400, micro_batch_size=16, pack=True)
    assert fill_logprobs(model, seqs, list(range(len(seqs))), cfg, tok.pad_token_id, "ref_logprobs") > 0
    recorded = torch.tensor([lp for s in seqs for lp, m in zip(s.old_logprobs, s.loss_mask) if m])
    recomputed = torch.tensor([lp for s in seqs for lp, m in zip(s.ref_logprobs, s.loss_mask) if m])
    assert len(recorded) == sum(len(g.token_ids) for g in gens) and not recorded.isnan().any()
    diffs = (recorded - recomputed).abs()
    print(f"recorded vs trainer log-probs (bf16): max {diffs.max():.4f}, mean {diffs.mean():.5f}, n {len(diffs)}")
    assert diffs.max() < 0.1 and diffs.mean() < 0.01


def test_offline_lora_grpo_with_kl_on_cuda(grpo, tmp_path):
    """Offline LoRA GRPO on CUDA from the stored rollouts: recomputed old log-probs (ratio 1), a KL that starts at 0."""
    cfg = GRPOConfig(policy=grpo["start"], lora=LoraSettings(r=8, alpha=16), lr=1e-3, batch_size=64,
                     micro_batch_size=32, max_len=400, pack=True, max_steps=3, kl_coef=0.05, norm="sequence",
                     recompute_old_logprobs=True, save_every=100, device="cuda")
    version = train_grpo(cfg, [grpo["out"]], tmp_path / "offline")
    with RunStore(tmp_path / "offline", readonly=True) as store:
        steps = [s.metrics for s in store.train_steps(version.id)]
    assert version.kind == "grpo" and version.adapter and len(steps) == 3
    assert all(math.isfinite(m["loss"]) for m in steps)
    assert steps[0]["ratio"] == pytest.approx(1.0, abs=1e-3) and steps[0]["kl"] < 1e-6
    assert steps[-1]["kl"] > 0  # the policy moved away from the reference
    adapter = _lora_weights(Path(version.path))
    assert any(k.endswith("lora_B.weight") and t.abs().max() > 0 for k, t in adapter.items())
