"""Training and rollout speed of the embedded model (Gemma 3 270M) on this CPU: Evolve against today's code and TRL.

Training (`--train`, default on): SFT and GRPO updates of the real `hf:gemma3-270m` (LoRA r=16 on every linear
layer, the default settings) on the same data, side by side, each side in its own process (own peak RSS):

* ``main``: today's trainer, the code of ``--baseline-rev`` (default: the commit before the chunked head)
  extracted with ``git archive`` and imported in place of this checkout's;
* ``evolve``: this checkout (chunked output layer, precision `auto`: bfloat16 where the CPU has it);
* ``trl``: TRL's `SFTTrainer` / `GRPOTrainer` with the same model, LoRA, data, batch, packing, learning rate and
  precision (GRPO: completions handed over by ``rollout_func``, as in bench_grpo.py).

Data. SFT: agent-like multi-turn trajectories (the default variant's real system prompt, bundled-suite style
requests, assistant tool calls, 40-line observations from this repository's own files): most tokens are
context, 10-20% are trained. GRPO: tool-calling rollouts, ``--prompts`` real prompts of the suite x
``--group`` completions (reference answers of instances, with end-of-turn), fixed rewards. tokens/s counts
every token of a step (context + trained) per second of step time; the first step is a warm-up, the median of
the next ``--steps`` is reported, with the CPU time the process used for it (user + system, all threads: a
measure of work that another process's load changes little). MFU: the model FLOPs a step must do (forward 2 N_body
per token, backward through activations 2 N_body (LoRA: frozen weights get no gradient), attention 4 n_layers
d_attn per pair of attended positions (causal, sliding window where the layer has one) times 2 for the backward,
and the output layer 2 H V forward + 2 H V backward per trained token only; the adapter's own FLOPs are left out,
about 1%) divided by step time and by the peak rate of a 2048^3 matmul that the same process measures right after
its steps, in its precision and with its threads (so under the same load). The FLOPs are those of the data with
every sequence computed alone, the same count for every side: Evolve's shared-prefix trees compute a group's prompt
once, so its figure is an effective rate of useful work.

Threads: ``--threads N`` gives every side N. By default each side runs as its code does: today's trainer and TRL
with torch's default (every core), Evolve with the cores other processes leave free (`agent.policy.threads`,
measured when it starts; on a busy machine, fewer threads are faster).

Rollouts (`--rollouts`): ``--rollout-prompts`` tool-calling test prompts x ``--group`` samples each (a GRPO
group), ``--max-tokens`` each at temperature 1: today's llama.cpp path (one completion at a time, prompt cache
reused; every core, today's default) against the batched path (each distinct prompt evaluated once, the group
decoded together; threads measured), and a trained version (the evolve SFT side's LoRA adapter, merged and
exported to GGUF Q8_0) on the batched path.

Run once, on an otherwise idle machine if possible (the load average is printed beside the numbers):
``python bench/bench_train.py [--steps 2] [--rollouts]``
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
ENV0 = dict(os.environ)
"""The environment the bench started with, before any of its imports changed it (the sides get this one)."""
BASELINE_REV = "cf02476f47f5520d6ea14288512190fdf950351a"
"""main before the chunked output layer (today's trainer)."""


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- data ---------------------------------------------------------------------------------------------

def agent_trajectories(n: int, turns: int, seed: int):
    """Agent-like trajectories: real system prompt and files, assistant tool calls (see the module docstring)."""
    from agent.variant import AgentVariant
    from records import Message, Step, Trajectory, TrajectoryStatus

    rng = random.Random(seed)
    variant = AgentVariant.load()
    system = variant.system_template.replace("{tools}", "bash, view, str_replace, create, search, submit")
    system = system.replace("{workdir}", "/testbed")
    files = sorted(p for p in (ROOT / "evolve").rglob("*.py") if p.stat().st_size > 2000)
    tasks = ["The parser drops the last field of a CSV line that ends with a comma.",
             "Caching decorator ignores keyword arguments when building its key.",
             "The retry helper sleeps once more after the last failed attempt.",
             "Config loading fails with a traceback when the YAML file is empty."]
    out = []
    for k in range(n):
        steps = []
        for t in range(turns):
            f = rng.choice(files)
            lines = f.read_text().splitlines()
            start = rng.randrange(max(1, len(lines) - 40))
            rel = f.relative_to(ROOT)
            call = (f"<think>Look at {rel.name} around line {start} to find where the value is lost.</think>\n"
                    f'<tool_call>\n{{"name": "bash", "arguments": {{"command": "sed -n {start},{start + 40}p {rel}"}}}}'
                    "\n</tool_call>")
            steps.append(Step(index=t, response=Message(role="assistant", content=call),
                              observation=Message(role="tool", name="bash", content="\n".join(lines[start:start + 40]))))
        steps.append(Step(index=turns, response=Message(
            role="assistant", content='<think>Fix found; submit.</think>\n<tool_call>\n{"name": "submit", '
                                      '"arguments": {}}\n</tool_call>')))
        out.append(Trajectory(instance_id=f"agent-{k}", run_id="bench", status=TrajectoryStatus.submitted,
                              prompt=[Message(role="system", content=system),
                                      Message(role="user", content=variant.instance_template.format(
                                          problem_statement=tasks[k % len(tasks)], workdir="/testbed"))],
                              steps=steps))
    return out


def toolcall_group_trajectories(tok, n_prompts: int, group: int, seed: int):
    """GRPO groups of tool-calling rollouts: real prompts, reference answers of other instances as samples."""
    from records import Message, Step, Trajectory, TrajectoryStatus
    from tasks.toolcall import ToolCallSuite
    from tasks.toolcall.prompt import build_messages

    rng = random.Random(seed)
    items = ToolCallSuite().instances(split="train")
    rng.shuffle(items)
    answers = [i.extra["answer"] for i in items]
    out = []
    for inst in items[:n_prompts]:
        for g in range(group):
            text = rng.choice(answers)
            ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<end_of_turn>")]
            out.append((Trajectory(instance_id=inst.instance_id, run_id="bench", status=TrajectoryStatus.submitted,
                                   prompt=build_messages(inst),
                                   steps=[Step(index=0, response=Message(role="assistant", content=text,
                                                                         token_ids=ids))]),
                        float(rng.randint(0, 3))))
    return out


# --- FLOPs ----------------------------------------------------------------------------------------------

def step_flops(config, lens: list[int], trained: int, n_body: int) -> float:
    """Model FLOPs of one LoRA update over sequences of ``lens`` tokens with ``trained`` trained tokens."""
    c = config.get_text_config() if hasattr(config, "get_text_config") else config
    d_attn = c.num_attention_heads * c.head_dim
    window = getattr(c, "sliding_window", None)
    types = getattr(c, "layer_types", None) or ["full_attention"] * c.num_hidden_layers
    pairs = 0.0
    for L in lens:
        for kind in types:
            w = min(L, window) if kind == "sliding_attention" and window else L
            pairs += L * w - w * w / 2  # causal pairs within the window
    tokens = sum(lens)
    body = 4 * n_body * tokens
    attn = 2 * 4 * d_attn * pairs
    head = 4 * c.hidden_size * c.vocab_size * trained
    return body + attn + head


def peak_flops(dtype_name: str, n: int = 2048, reps: int = 5) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


# --- sides ----------------------------------------------------------------------------------------------

def run_side(args) -> dict:
    import torch

    torch.manual_seed(0)
    kind, side = args.side.split(":")
    from transformers import AutoTokenizer

    from evolve.train.modeling import model_dir

    path = model_dir("hf:gemma3-270m")
    tok = AutoTokenizer.from_pretrained(path)
    if kind == "sft":
        items = [(t, None) for t in agent_trajectories(args.batch, args.turns, args.seed)]
    else:
        items = toolcall_group_trajectories(tok, args.prompts, args.group, args.seed)
    if side == "trl":
        return run_trl(args, kind, path, tok, items)
    return run_evolve(args, kind, side, items)


def _precision(side: str) -> dict:
    return {} if side == "main" else {"precision": "auto"}


def run_evolve(args, kind: str, side: str, items) -> dict:
    import torch

    from evolve.train.data import build_sequences, micro_batches
    from evolve.train.modeling import load_for_training, resolve_dtype

    device = torch.device("cpu")
    extra = _precision(side)
    if kind == "sft":
        from evolve.train.sft import SFTConfig, sft_step
        cfg = SFTConfig(lr=1e-4, batch_size=args.batch, micro_batch_size=args.micro, max_len=args.max_len,
                        device="cpu", **extra)
    else:
        from evolve.train.grpo import GRPOConfig, advantages_for, fill_logprobs, grpo_step
        n = len(items)
        cfg = GRPOConfig(lr=1e-5, batch_size=n, micro_batch_size=args.micro, max_len=args.max_len, device="cpu",
                         norm="token", **extra)
    dtype = resolve_dtype(cfg.dtype, device, full_finetune=False)  # each side's own default
    model, tok = load_for_training(cfg.policy, lora=cfg.lora, device=device, dtype=dtype)
    rss_loaded = _rss_mib()
    seqs, _ = build_sequences(items, tok, max_len=cfg.max_len)
    if kind == "grpo":  # what a rollout would have recorded: on-policy log-probs
        fill_logprobs(model, seqs, list(range(len(seqs))), cfg, tok.pad_token_id)
        for (t, _), s in zip(items, seqs):
            t.steps[0].response.logprobs = [lp for lp, m in zip(s.old_logprobs, s.loss_mask) if m]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    share = {} if side == "main" else {"share_prefix": cfg.share_prefix}  # today's code has no trees
    times, cpu, losses = [], [], []
    for step in range(args.steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        seqs, _ = build_sequences(items, tok, max_len=cfg.max_len)
        if kind == "sft":
            batches = micro_batches(seqs, list(range(len(seqs))), micro_batch_size=cfg.micro_batch_size,
                                    max_len=cfg.max_len, pack=cfg.pack, pad_id=tok.pad_token_id, **share)
            m = sft_step(model, opt, sched, batches, cfg)
        else:
            adv, train, _ = advantages_for(seqs, cfg)
            idx = [i for i, keep in enumerate(train) if keep]
            batches = micro_batches(seqs, idx, micro_batch_size=cfg.micro_batch_size, max_len=cfg.max_len,
                                    pack=cfg.pack, pad_id=tok.pad_token_id, advantages=adv, train=train, **share)
            m = grpo_step(model, opt, sched, batches, cfg)
        losses.append(m["loss"])
        if step or not args.steps:  # --steps 0: the one (cold) step is timed
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    if args.save_adapter and side == "evolve" and kind == "sft":
        model.save_pretrained(args.save_adapter)
    compute = "float32"
    if side != "main":
        from evolve.train.modeling import resolve_precision
        compute = str(resolve_precision(cfg.precision, device)).split(".")[-1]
    n_body = sum(p.numel() for n, p in model.named_parameters()
                 if "lora_" not in n and "embed_tokens" not in n and "lm_head" not in n)
    lens = [len(s) for s in seqs]
    return {"step_s": statistics.median(times), "cpu_s": statistics.median(cpu), "tokens": sum(lens), "trained": sum(s.trained_tokens for s in seqs),
            "lens": lens, "n_body": n_body, "loss": losses, "rss_loaded_mib": rss_loaded, "peak_rss_mib": _rss_mib(),
            "precision": f"{str(dtype).split('.')[-1]} weights, {compute} compute"}


def run_trl(args, kind: str, path: Path, tok, items) -> dict:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback

    from evolve.train.data import build_sequences
    from evolve.train.modeling import resolve_precision

    bf16 = resolve_precision("auto", torch.device("cpu")) == torch.bfloat16
    # the same weights as Evolve's side: a bfloat16 frozen base where the CPU has bf16 (PEFT keeps the adapter fp32)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if bf16 else torch.float32)
    rss_loaded = _rss_mib()
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    times: list[float] = []
    cpu: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, a, state, control, **kw):
            times.append(time.perf_counter() - self.t0)
            cpu.append(time.process_time() - self.c0)

    common = dict(output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=bf16, gradient_checkpointing=False, max_steps=args.steps + 1,
                  logging_steps=10**6, save_strategy="no", report_to=[], disable_tqdm=True, seed=0,
                  dataloader_num_workers=0, max_grad_norm=1.0, lr_scheduler_type="constant")
    # The same token sequences Evolve trains on (the same chat template and loss mask).
    seqs, _ = build_sequences(items, tok, max_len=args.max_len)
    if kind == "sft":
        from trl import SFTConfig, SFTTrainer

        data = Dataset.from_dict({"input_ids": [s.input_ids for s in seqs],
                                  "completion_mask": [s.loss_mask for s in seqs]})
        per_device = min(args.micro, args.batch)
        cfg = SFTConfig(per_device_train_batch_size=per_device, gradient_accumulation_steps=max(1, args.batch // per_device),
                        learning_rate=1e-4, max_length=args.max_len, packing=True, completion_only_loss=True,
                        dataset_kwargs={"skip_prepare_dataset": False}, shuffle_dataset=False, **common)
        trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(
            [data[i] for i in range(len(data))] * (args.steps + 2)), processing_class=tok, peft_config=lora,
            callbacks=[Timer()])
        trainer.train()
        tokens = sum(len(s) for s in seqs)
    else:
        from trl import GRPOConfig, GRPOTrainer

        g = args.group
        by_prompt: dict[str, list] = {}
        for s in seqs:
            by_prompt.setdefault(s.instance_id, []).append(s)
        prompt_texts = list(by_prompt)
        rewards = {}

        def rollout(prompts, trainer):
            seen: dict[str, int] = {}
            out = {"prompt_ids": [], "completion_ids": [], "logprobs": []}
            for p in prompts:
                s = by_prompt[p][seen.get(p, 0) % len(by_prompt[p])]
                seen[p] = seen.get(p, 0) + 1
                start = s.loss_mask.index(1)
                out["prompt_ids"].append(s.input_ids[:start])
                out["completion_ids"].append(s.input_ids[start:])
                out["logprobs"].append([0.0] * (len(s) - start))
                rewards[(p, tuple(s.input_ids[start:]))] = s.reward
            return out

        def reward(prompts, completions, completion_ids, **kw):
            return [rewards.get((p, tuple(ids)), 0.0) for p, ids in zip(prompts, completion_ids)]

        n = len(seqs)
        cfg = GRPOConfig(per_device_train_batch_size=min(args.micro, n), gradient_accumulation_steps=max(1, n // args.micro),
                         num_generations=g, max_completion_length=max(len(s) for s in seqs), num_iterations=1,
                         loss_type="dapo", beta=0.0, epsilon=0.2, epsilon_high=0.28, learning_rate=1e-5,
                         shuffle_dataset=False, **common)
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, processing_class=tok, peft_config=lora,
                              train_dataset=Dataset.from_dict({"prompt": prompt_texts}), rollout_func=rollout,
                              callbacks=[Timer()])
        trainer.train()
        tokens = sum(len(s) for s in seqs)
    return {"step_s": statistics.median(times[1:] if args.steps else times),
            "cpu_s": statistics.median(cpu[1:] if args.steps else cpu), "tokens": tokens, "trained": sum(s.trained_tokens for s in seqs),
            "rss_loaded_mib": rss_loaded, "peak_rss_mib": _rss_mib(), "precision": "bfloat16" if bf16 else "float32"}


# --- rollouts -------------------------------------------------------------------------------------------

ROLLOUT_SIDES = {"main": "today: one at a time (the code of --baseline-rev)", "evolve": "batched groups",
                 "trained": "trained version (GGUF Q8_0), batched"}


def run_rollout_side(args) -> dict:
    """One rollout side, in its own process: the group sampled once after a warm-up (model load, first eval)."""
    from agent.policy import SamplingParams, load_policy
    from tasks.toolcall import ToolCallSuite
    from tasks.toolcall.prompt import build_messages

    insts = ToolCallSuite().instances(split="test")[:args.rollout_prompts]
    convs = [build_messages(i) for i in insts for _ in range(args.group)]
    params = SamplingParams(max_tokens=args.max_tokens, temperature=1.0, seed=0)
    policy = load_policy(args.rollout_spec, **({"n_threads": args.threads} if args.threads else {}))
    policy.generate(convs[:1], params.model_copy(update={"max_tokens": 2}))
    if hasattr(policy, "reset_caches"):
        policy.reset_caches()
    t0, c0 = time.perf_counter(), time.process_time()
    gens = policy.generate(convs, params)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    policy.close()
    return {"spec": args.rollout_spec, "seconds": seconds, "cpu_s": cpu, "per_instance": seconds / len(insts),
            "tokens": sum(g.completion_tokens for g in gens), "threads": policy.threads}


def run_rollouts(args, gguf: Path | None, base: Path) -> list[dict]:
    """Today's path (the baseline code: one completion at a time, every core), the batched path and the trained
    version, each in its own process with the environment the bench started with (OpenMP's wait policy as each
    side's code sets it)."""
    sides = [("main", base, "llamacpp:gemma3-270m"), ("evolve", ROOT, "llamacpp:gemma3-270m")]
    if gguf is not None:
        sides.append(("trained", ROOT, f"llamacpp:{gguf}"))
    rows = []
    for which, code, spec in sides:
        r = spawn(args, f"rollout:{which}", code, [f"--rollout-spec={spec}"])
        if "error" in r:
            print(f"  rollout:{which}: FAILED {r['error']}", flush=True)
            continue
        rows.append(r | {"label": ROLLOUT_SIDES[which]})
        print(f"  rollout:{which}: {r['seconds']:.1f} s ({r['cpu_s']:.1f} CPU-s), {r['tokens']} tokens, "
              f"{r['threads']} threads, load {os.getloadavg()[0]:.1f}", flush=True)
    return rows


# --- driver ---------------------------------------------------------------------------------------------

def side_threads(args, side: str) -> int:
    """``--threads``, else each side's own default: Evolve measures the cores other processes leave free
    (`agent.policy.threads`); today's code and TRL leave torch's default, every core."""
    if args.threads:
        return args.threads
    if side == "evolve":
        from agent.policy.threads import free_cores

        return free_cores()
    return len(os.sched_getaffinity(0))


def child(args) -> None:
    kind, side = args.side.split(":")
    if side != "main":
        import agent  # noqa: F401 - as Evolve's CLI does (evolve/__init__): OpenMP's wait policy before torch loads
    if kind == "rollout":
        print("RESULT " + json.dumps(run_rollout_side(args)))
        return
    import torch

    threads = side_threads(args, side)
    torch.set_num_threads(threads)
    result = run_side(args)
    dtype = "bfloat16" if "bfloat16" in result["precision"] else "float32"
    result.update(threads=threads, peak_flops=peak_flops(dtype), peak_dtype=dtype)  # same process, threads, load
    print("RESULT " + json.dumps(result))


def baseline_code(rev: str) -> Path:
    """This repository's code at ``rev``, extracted once into a temporary directory."""
    full = subprocess.run(["git", "-C", str(ROOT), "rev-parse", rev], capture_output=True, text=True,
                          check=True).stdout.strip()
    out = Path(tempfile.gettempdir()) / f"evolve-baseline-{full[:12]}"
    if not (out / "evolve").is_dir():
        tmp = Path(tempfile.mkdtemp(dir=out.parent))
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", full], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        os.replace(tmp, out)
    return out


def spawn(args, side: str, code: Path, extra: list[str] | None = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side] + [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
        if k not in ("side", "rollouts", "train", "baseline_rev", "save_adapter", "rollout_spec") and v is not None
    ] + (extra or [])
    env = {**ENV0, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(code))
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:  # reported, and the other sides still run
        sys.stderr.write(f"--- {side} failed ---\n" + proc.stdout[-2000:] + proc.stderr[-4000:])
        why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        if proc.returncode == -9:
            why += " (the kernel's out-of-memory killer, most likely)"
        return {"error": f"{why}: " + (proc.stderr.strip().splitlines() or ["no output"])[-1][-300:]}
    return json.loads(line[7:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2, help="timed steps per side after one warm-up step (0: time one cold step)")
    p.add_argument("--batch", type=int, default=4, help="SFT: trajectories per step")
    p.add_argument("--turns", type=int, default=4, help="SFT: tool calls per agent trajectory")
    p.add_argument("--prompts", type=int, default=2, help="GRPO: prompts per step")
    p.add_argument("--group", type=int, default=8, help="GRPO / rollouts: completions per prompt")
    p.add_argument("--micro", type=int, default=8, help="sequences per forward/backward pass")
    p.add_argument("--max-len", type=int, default=2048)
    p.add_argument("--threads", type=int, default=None,
                   help="threads of every side (default: each side's own: Evolve measures the free cores, today's "
                        "code and TRL use every core)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sides", default="main,evolve,trl")
    p.add_argument("--kinds", default="sft,grpo")
    p.add_argument("--baseline-rev", default=BASELINE_REV)
    p.add_argument("--train", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--rollouts", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--rollout-prompts", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--side", default=None, help=argparse.SUPPRESS)
    p.add_argument("--save-adapter", default=None, help=argparse.SUPPRESS)
    p.add_argument("--rollout-spec", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        return child(args)
    sys.path.insert(0, str(ROOT))
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs, "
          f"threads: {args.threads or 'each side its own default'})")
    adapter = Path(tempfile.mkdtemp()) / "sft-adapter"
    results: dict[str, dict] = {}
    if args.train:
        base = baseline_code(args.baseline_rev)
        for kind in args.kinds.split(","):
            for side in args.sides.split(","):
                code = base if side == "main" else ROOT
                extra = [f"--save-adapter={adapter}"] if (kind, side) == ("sft", "evolve") else []
                r = spawn(args, f"{kind}:{side}", code, extra)
                if "error" in r:
                    print(f"  {kind}:{side}: FAILED {r['error']}", flush=True)
                    continue
                results[f"{kind}:{side}"] = r
                print(f"  {kind}:{side}: {r['step_s']:.1f} s/step ({r['cpu_s']:.1f} CPU-s), {r['tokens']} tokens, loss {r.get('loss')}, "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
        report_training(args, results)
    if args.rollouts:
        gguf = None
        if adapter.exists():
            gguf = export_trained(adapter)
        rows = run_rollouts(args, gguf, baseline_code(args.baseline_rev))
        report_rollouts(args, rows)
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def export_trained(adapter: Path) -> Path:
    import torch

    from agent.policy.embedded import embedded_gguf
    from evolve.train.gguf_export import export_gguf
    from evolve.train.modeling import load_for_training

    model, tok = load_for_training("hf:gemma3-270m", adapter=str(adapter), lora=None, device=torch.device("cpu"),
                                   dtype=torch.float32, trainable=False)
    out = adapter.parent / "trained-q8_0.gguf"
    t0 = time.perf_counter()
    export_gguf(model.state_dict(), embedded_gguf("gemma3-270m"), out, chat_template=tok.chat_template)
    print(f"exported the trained (merged) SFT version to {out.name} in {time.perf_counter() - t0:.0f} s")
    return out


def report_training(args, results: dict[str, dict]) -> None:
    from rich.console import Console
    from rich.table import Table
    from transformers import AutoConfig

    from evolve.train.modeling import model_dir

    config = AutoConfig.from_pretrained(model_dir("hf:gemma3-270m"))
    console = Console(width=200)
    for kind in args.kinds.split(","):
        ev = results.get(f"{kind}:evolve")
        t = Table(title=f"{kind.upper()} update of Gemma 3 270M (LoRA r=16), {ev['tokens'] if ev else '?'} tokens/step "
                        f"({ev['trained'] if ev else '?'} trained)")
        for c in ("side", "threads", "precision", "s/step", "CPU-s/step", "tokens/s", "vs main (wall, CPU)", "vs TRL",
                  "MFU", "peak GFLOP/s", "RSS loaded MiB", "peak RSS MiB", "loss (steps)"):
            t.add_column(c, justify="left" if c in ("side", "precision", "loss (steps)") else "right")
        mine = {k.split(":")[1]: r for k, r in results.items() if k.startswith(kind + ":")}
        tps = {side: r["tokens"] / r["step_s"] for side, r in mine.items()}
        tpc = {side: r["tokens"] / r["cpu_s"] for side, r in mine.items()}
        flops = step_flops(config, ev["lens"], ev["trained"], ev["n_body"]) if ev else None
        for side in args.sides.split(","):
            r = mine.get(side)
            if r is None:
                continue
            mfu = f"{flops / r['step_s'] / r['peak_flops']:.1%}" if flops else ""
            t.add_row(side, str(r["threads"]), r["precision"], f"{r['step_s']:.2f}", f"{r['cpu_s']:.2f}",
                      f"{tps[side]:.0f}",
                      f"{tps[side] / tps['main']:.2f}x, {tpc[side] / tpc['main']:.2f}x" if "main" in tps else "",
                      f"{tps[side] / tps['trl']:.2f}x" if "trl" in tps else "", mfu,
                      f"{r['peak_flops'] / 1e9:.0f} {r['peak_dtype'][:4]}", f"{r['rss_loaded_mib']:.0f}",
                      f"{r['peak_rss_mib']:.0f}", " ".join(f"{x:.3f}" for x in r.get("loss", [])))
        console.print(t)
        if flops:
            console.print(f"{kind}: {flops / 1e9:.0f} GFLOP of model work per step (every sequence computed alone); MFU "
                          "= that / step time / the peak rate of a 2048^3 matmul measured by the same process, in its "
                          "precision and threads, right after its steps")


def report_rollouts(args, rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"tool-calling rollouts: {args.rollout_prompts} test prompts x group {args.group}, "
                    f"<= {args.max_tokens} tokens, temperature 1")
    for c in ("policy", "path", "threads", "seconds", "CPU-s", "s per instance (group)", "sampled tokens/s",
              "vs today (wall, CPU)"):
        t.add_column(c, justify="left" if c in ("policy", "path") else "right")
    if not rows:
        return
    base = rows[0]
    for r in rows:
        t.add_row(r["spec"].split("/")[-1], r["label"], str(r["threads"]), f"{r['seconds']:.1f}", f"{r['cpu_s']:.1f}",
                  f"{r['per_instance']:.2f}", f"{r['tokens'] / r['seconds']:.1f}",
                  f"{base['per_instance'] / r['per_instance']:.2f}x, "
                  f"{base['cpu_s'] / base['tokens'] / (r['cpu_s'] / r['tokens']):.2f}x")
    Console(width=160).print(t)


if __name__ == "__main__":
    main()
