"""GRPO update throughput: Evolve's trainer against TRL's `GRPOTrainer`, same model, batch and lengths.

Method
------
Both sides train the same tiny Llama (``tests/tiny_model.py``, full fine-tuning, float32) on the same
precomputed batch: ``--prompts`` real tool-calling prompts (the suite's chat prompts rendered with the
model's chat template) x ``--group`` completions each (gold answers of other instances + end-of-turn,
so lengths vary like real completions), with fixed per-completion rewards. Only the *update* is
compared, not generation:

* TRL gets the completions through its ``rollout_func`` hook (returns the precomputed prompt ids,
  completion ids and log-probs instantly), so its training step runs everything but sampling:
  reward function, advantage computation, padding, the policy forward/backward and the optimiser step.
  ``num_iterations=1`` and no vLLM, so TRL (correctly) skips the old-log-prob pass.
* Evolve gets the same completions as stored ``Trajectory`` records with their sampled ``token_ids``
  and ``logprobs`` (recorded log-probs: no old-log-prob pass either), and each timed step runs
  everything from records to weights: chat templating and id splicing (`data.build_sequences`),
  group advantages, batching (packed rows by default), `grpo_step` (forward/backward/optimiser).

Same loss on both sides: token-level clipped ratio, clip 0.2 / 0.28 (DAPO), token normalisation
(TRL ``loss_type="dapo"``), no KL (``beta=0``), one micro-batch per step, AdamW, grad clip 1.0.
Each side runs in its own subprocess (separate peak RSS, ``ru_maxrss``); the first step is a
warm-up, the median of the next ``--steps`` step times is reported. tokens/s counts prompt +
completion tokens of the batch per second of step time. GPU peak memory (``max_memory_allocated``)
is reported when run with ``--device cuda``.

Run: ``python bench/bench_grpo.py [--prompts 2 --group 8 --steps 3 --hidden 128 --layers 2 --threads 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_batch(tokenizer, n_prompts: int, group: int, max_prompt: int, max_completion: int, seed: int):
    """Prompt messages, prompt ids, completion texts/ids and rewards, the same for both sides."""
    from evolve.train.data import message_dicts
    from tasks.toolcall import ToolCallSuite
    from tasks.toolcall.prompt import build_messages

    rng = random.Random(seed)
    items = ToolCallSuite().instances(split="train")
    prompts, answers = [], []
    for inst in items:
        msgs = build_messages(inst)
        text = tokenizer.apply_chat_template(message_dicts(msgs), add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        ans = tokenizer(inst.extra["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(ids) <= max_prompt:
            prompts.append((inst.instance_id, msgs, ids))
        if len(ans) <= max_completion:
            answers.append((inst.extra["answer"], ans))
    rng.shuffle(prompts)
    batch = []
    for iid, msgs, ids in prompts[:n_prompts]:
        for text, ans in rng.sample(answers, group):
            batch.append({"instance_id": iid, "messages": msgs, "prompt_ids": ids, "text": text, "completion_ids": ans,
                          "reward": float(rng.randint(0, 3))})
    return batch


def run_evolve(args, model_dir: Path, batch: list[dict]) -> dict:
    import torch

    from evolve.train.data import build_sequences, micro_batches
    from evolve.train.grpo import GRPOConfig, advantages_for, fill_logprobs, grpo_step
    from evolve.train.modeling import load_for_training
    from records import Message, Step, Trajectory, TrajectoryStatus

    torch.manual_seed(0)
    device = torch.device(args.device)
    model, tok = load_for_training(f"hf:{model_dir}", lora=None, device=device, dtype=torch.float32)
    rss_loaded = _rss_mib()
    n = len(batch)
    cfg = GRPOConfig(lora=None, lr=1e-5, clip_low=0.2, clip_high=0.28, norm="token", kl_coef=0.0, batch_size=n,
                     micro_batch_size=n, max_len=args.max_prompt + args.max_completion, pack=not args.no_pack,
                     device=args.device)
    trajs = [Trajectory(instance_id=b["instance_id"], status=TrajectoryStatus.submitted, prompt=b["messages"],
                        steps=[Step(index=0, response=Message(role="assistant", content=b["text"],
                                                              token_ids=b["completion_ids"]))]) for b in batch]
    # Record the sampling log-probs once (what a rollout would have stored): on-policy, ratio 1.
    seqs, _ = build_sequences([(t, b["reward"]) for t, b in zip(trajs, batch)], tok, max_len=cfg.max_len)
    fill_logprobs(model, seqs, list(range(len(seqs))), cfg, tok.pad_token_id)
    for t, s in zip(trajs, seqs):
        t.steps[0].response.logprobs = [lp for lp, m in zip(s.old_logprobs, s.loss_mask) if m]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    times, tokens = [], 0
    for step in range(args.steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        seqs, _ = build_sequences([(t, b["reward"]) for t, b in zip(trajs, batch)], tok, max_len=cfg.max_len)
        adv, train, _ = advantages_for(seqs, cfg)
        idx = [i for i, keep in enumerate(train) if keep]
        batches = micro_batches(seqs, idx, micro_batch_size=cfg.micro_batch_size, max_len=cfg.max_len,
                                pack=cfg.pack, pad_id=tok.pad_token_id, advantages=adv, train=train)
        grpo_step(model, opt, sched, batches, cfg)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - t0)
        tokens = sum(len(s) for s in seqs)
    out = {"step_s": statistics.median(times), "tokens": tokens, "rss_loaded_mib": rss_loaded,
           "peak_rss_mib": _rss_mib(), "rows": sum(b.input_ids.shape[0] for b in batches),
           "width": max(b.input_ids.shape[1] for b in batches)}
    if device.type == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_trl(args, model_dir: Path, batch: list[dict]) -> dict:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rss_loaded = _rss_mib()
    n, g = len(batch), args.group
    prompt_texts = [f"prompt-{k}" for k in range(n // g)]
    by_prompt = {p: batch[k * g:(k + 1) * g] for k, p in enumerate(prompt_texts)}
    rewards = {tuple(b["completion_ids"]) + (k // g,): b["reward"] for k, b in enumerate(batch)}

    def rollout(prompts, trainer):
        seen: dict[str, int] = {}
        out = {"prompt_ids": [], "completion_ids": [], "logprobs": []}
        for p in prompts:
            b = by_prompt[p][seen.get(p, 0)]
            seen[p] = seen.get(p, 0) + 1
            out["prompt_ids"].append(b["prompt_ids"])
            out["completion_ids"].append(b["completion_ids"])
            out["logprobs"].append([0.0] * len(b["completion_ids"]))
        return out

    def reward(prompts, completions, completion_ids, **kw):
        return [rewards[tuple(ids) + (prompt_texts.index(p),)] for p, ids in zip(prompts, completion_ids)]

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if args.device == "cuda":
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            if args.device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

    cfg = GRPOConfig(output_dir=tempfile.mkdtemp(), use_cpu=args.device == "cpu", bf16=False,
                     per_device_train_batch_size=n, num_generations=g, max_completion_length=args.max_completion,
                     gradient_accumulation_steps=1, num_iterations=1, loss_type="dapo", beta=0.0, epsilon=0.2,
                     epsilon_high=0.28, learning_rate=1e-5, max_grad_norm=1.0, max_steps=args.steps + 1,
                     logging_steps=10**6, save_strategy="no", report_to=[], disable_tqdm=True, seed=0,
                     dataloader_num_workers=0, shuffle_dataset=False)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, processing_class=tok,
                          train_dataset=Dataset.from_dict({"prompt": prompt_texts}), rollout_func=rollout,
                          callbacks=[Timer()])
    trainer.train()
    tokens = sum(len(b["prompt_ids"]) + len(b["completion_ids"]) for b in batch)
    out = {"step_s": statistics.median(times[1:]), "tokens": tokens, "rss_loaded_mib": rss_loaded,
           "peak_rss_mib": _rss_mib(), "steps_timed": len(times) - 1}
    if args.device == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def child(args) -> None:
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    model_dir = Path(args.model_dir)
    batch = make_batch(AutoTokenizer.from_pretrained(model_dir), args.prompts, args.group, args.max_prompt,
                       args.max_completion, args.seed)
    result = (run_evolve if args.side.startswith("evolve") else run_trl)(args, model_dir, batch)
    print("RESULT " + json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--max-prompt", type=int, default=1400)
    p.add_argument("--max-completion", type=int, default=200)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--side", default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-pack", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        return child(args)

    from tiny_model import build_tiny_model

    cache = Path(tempfile.gettempdir()) / f"evolve-bench-tiny-{args.hidden}-{args.layers}"
    model_dir = build_tiny_model(cache, hidden=args.hidden, layers=args.layers)
    results = {}
    for side in ("evolve", "evolve-padded", "trl"):
        cmd = [sys.executable, __file__, "--side", side, "--model-dir", str(model_dir)] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
            if k not in ("side", "model_dir", "no_pack")] + (["--no-pack"] if side == "evolve-padded" else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise SystemExit(f"{side} failed")
        results[side] = json.loads(line[7:])
    trl = results["trl"]
    print(f"GRPO update: {args.prompts} prompts x {args.group} completions, tiny Llama hidden={args.hidden} "
          f"layers={args.layers}, {args.device}, {args.threads} threads, {trl['tokens']} tokens/step")
    print(f"{'':16}{'step s':>9}{'tokens/s':>11}{'ratio':>8}{'RSS load MiB':>14}{'peak RSS MiB':>14}"
          + (f"{'peak GPU MiB':>14}" if args.device.startswith("cuda") else ""))
    for side in ("evolve", "evolve-padded", "trl"):
        r = results[side]
        tps = r["tokens"] / r["step_s"]
        ratio = tps / (trl["tokens"] / trl["step_s"])
        print(f"{side:16}{r['step_s']:>9.3f}{tps:>11.0f}{ratio:>8.2f}{r['rss_loaded_mib']:>14.0f}"
              f"{r['peak_rss_mib']:>14.0f}" + (f"{r['peak_gpu_mib']:>14.0f}" if "peak_gpu_mib" in r else ""))


if __name__ == "__main__":
    main()
