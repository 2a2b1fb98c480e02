"""One Agent-R iteration on the tool-calling suite with a tiny real model, measured: held-out (test split) greedy
ToolRL total before and after. The starting policy is the tiny model SFT-trained on gold answers as in
`tests/test_train_sft_learns.py` (built once under --base): it has the format, its calls are seldom right.
Search: one level of n_gen sampled answers per training instance, pairs with alpha = 0.3 (ToolRL's total
rescaled to [0, 1] puts "right format, wrong calls" at 0.14), splices whose `undo` withdraws the bad answer,
replay check, export, SFT with the existing trainer.

    .venv/bin/python bench/bench_agent_r_toolcall.py [--base /tmp/agent-r-toolcall] [--train 48]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_train_sft_learns import MAX_ANSWER, request_only, toolcall_sft  # noqa: E402

from evolve.agent_r.build import build_instance  # noqa: E402
from evolve.agent_r.config import AgentRConfig  # noqa: E402
from evolve.agent_r.export import export_sft_data  # noqa: E402
from evolve.agent_r.toolcall import ToolcallWorld  # noqa: E402
from evolve.agent_r.verifier import policy_ask  # noqa: E402


def per_instance(policy, instances) -> list[float]:
    from agent.policy.base import SamplingParams
    from rewards.toolrl import score

    gens = policy.generate([request_only(i) for i in instances], SamplingParams(max_tokens=MAX_ANSWER, temperature=0.0))
    return [score(g.text, i.extra["answer"]).total for g, i in zip(gens, instances)]


def main() -> None:
    from agent.policy import load_policy
    from evolve.train.sft import SFTConfig, train_sft
    from evolve.train.versions import resolve_policy

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=Path("/tmp/agent-r-toolcall"))
    parser.add_argument("--train", type=int, default=48)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sft = toolcall_sft(args.base)
    start = f"hf:{sft['version'].path}"
    train, test = sft["train"][:args.train], sft["test"]
    cfg = AgentRConfig(rollouts=1, n_gen=6, max_depth=1, alpha=0.3, beta=0.2)
    data, kept = [], 0
    with load_policy(start, device="cpu") as policy:
        before = per_instance(policy, test)
        for n, inst in enumerate(train):
            world = ToolcallWorld(inst, policy, request_only, temperature=0.7, max_tokens=MAX_ANSWER, seed=n)
            res = build_instance(world, cfg, policy_ask(policy), instance_id=inst.instance_id, rng=random.Random(n))
            kept += len(res.splices)
            data += res.splices + res.good
    out = export_sft_data(data, args.base / "agent-r-data", "agent-r-toolcall")
    version = train_sft(SFTConfig(policy=start, lora=None, lr=args.lr, batch_size=8, micro_batch_size=8,
                                  max_steps=args.steps, max_len=400, pack=False, device="cpu"), [out],
                        args.base / f"agent-r-sft-{args.steps}-{args.lr}")
    spec, options = resolve_policy(f"version:{version.id}", args.base)
    with load_policy(spec, device="cpu", **options) as trained:
        after = per_instance(trained, test)
    diffs = [a - b for a, b in zip(after, before)]
    table = Table("data", "held-out ToolRL total before", "after", "paired difference (+- s.e.)")
    table.add_row(f"{kept} splices + {len(data) - kept} good from {len(train)} instances",
                  f"{statistics.fmean(before):.2f}", f"{statistics.fmean(after):.2f}",
                  f"{statistics.fmean(diffs):+.2f} +- {statistics.stdev(diffs) / len(diffs) ** 0.5:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
