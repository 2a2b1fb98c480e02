"""Generation throughput of a policy (default: the embedded hf:gemma3-270m on CPU): batched vs one at a time.

Baseline: the same N conversations generated one by one (batch 1). Project: one batched `generate`
call. Prints tokens/s of each and the ratio. The first run converts the embedded GGUF (minutes).

    python bench/bench_generation.py --tokens 64 --batch-size 8
"""

from __future__ import annotations

import argparse
import logging
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from agent.policy import DEFAULT_POLICY, SamplingParams, load_policy  # noqa: E402
from records.trajectory import Message  # noqa: E402

PROMPTS = [
    "Write a Python function that reverses a string.",
    "Explain what a hash map is in two sentences.",
    "List three uses of the `git bisect` command.",
    "What does HTTP status code 429 mean?",
    "Write a haiku about compilers.",
    "How do I read a JSON file in Python?",
    "Summarise the rules of chess in one paragraph.",
    "Why is the sky blue?",
]


def conversations(n: int) -> list[list[Message]]:
    return [[Message(role="user", content=PROMPTS[i % len(PROMPTS)] + f" (#{i})")] for i in range(n)]


def run(policy, convs, params) -> tuple[int, float]:
    started = time.perf_counter()
    gens = policy.generate(convs, params)
    return sum(g.completion_tokens for g in gens), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default=DEFAULT_POLICY, help="policy spec (default: %(default)s)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens to generate per sequence")
    parser.add_argument("--batch-size", type=int, default=8, help="conversations per batched call")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two modes this many times; best of each")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    policy = load_policy(args.policy)
    load_s = time.perf_counter() - started
    params = SamplingParams(max_tokens=args.tokens, temperature=args.temperature, seed=0)
    convs = conversations(args.batch_size)
    policy.generate(convs[:1], params.model_copy(update={"max_tokens": 4}))  # warm-up

    singles, batches = [], []  # (tokens, seconds) per repeat; modes alternate so load changes hit both
    for _ in range(args.repeats):
        runs = [run(policy, [conv], params) for conv in convs]
        singles.append((sum(t for t, _ in runs), sum(s for _, s in runs)))
        batches.append(run(policy, convs, params))
    (single_tokens, single_s), (batch_tokens, batch_s) = (max(r, key=lambda r: r[0] / r[1]) for r in (singles, batches))

    single_tps, batch_tps = single_tokens / single_s, batch_tokens / batch_s
    table = Table(title=f"generation throughput: {args.policy}, {args.batch_size} conversations x {args.tokens} tokens, "
                        f"{getattr(policy, 'device', '?')}, {torch.get_num_threads()} threads, best of {args.repeats}")
    for column in ("mode", "tokens", "seconds", "tokens/s"):
        table.add_column(column, justify="right" if column != "mode" else "left")
    table.add_row("baseline: one at a time (batch 1)", f"{single_tokens:.0f}", f"{single_s:.1f}", f"{single_tps:.1f}")
    table.add_row(f"evolve: batched (batch {args.batch_size})", f"{batch_tokens:.0f}", f"{batch_s:.1f}", f"{batch_tps:.1f}")
    table.add_row("ratio (batched / one at a time)", "", "", f"{batch_tps / single_tps:.2f}x")
    console = Console()
    console.print(table)
    console.print(f"policy load: {load_s:.1f} s (includes the one-time GGUF conversion on a first run)")
    policy.close()


if __name__ == "__main__":
    main()
