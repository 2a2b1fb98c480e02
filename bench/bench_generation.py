"""CPU generation throughput of the embedded default model (Gemma 3 270M) on each backend, in one run.

For each policy spec (default: `hf:gemma3-270m`, transformers on the dequantised weights, and
`llamacpp:gemma3-270m`, llama.cpp on the Q4_K_M file) it generates the same N conversations one at a
time (batch 1) and in one batched `generate` call, and prints tokens/s of each; the baseline is
transformers batched (the previous default). It also checks the log-probs a trainer will see: for the
llama.cpp completions, the mean |difference| between llama.cpp's recorded raw log-probs and the ones
the transformers model recomputes with one forward pass (what GRPO's ratio starts from).

A second table runs an agent-like workload on each backend: 2 episodes in parallel (batched, as
`evolve run --workers 2` does), each starting from the default agent variant's real system prompt and a
task, for `--turns` turns of `--tokens` tokens, each turn adding the completion and a 40-line tool
observation to the conversation. Prompt evaluation dominates on a CPU, so this is where a backend that
keeps each episode's KV cache (llama.cpp slots) differs from one that re-reads the whole prompt.

    python bench/bench_generation.py [--tokens 64] [--batch-size 8] [--repeats 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from agent.policy import SamplingParams, load_policy  # noqa: E402
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


def run(policy, convs, params):
    started = time.perf_counter()
    gens = policy.generate(convs, params)
    return gens, sum(g.completion_tokens for g in gens), time.perf_counter() - started


def measure(spec: str, convs, params, repeats: int) -> dict:
    started = time.perf_counter()
    policy = load_policy(spec)
    load_s = time.perf_counter() - started
    policy.generate(convs[:1], params.model_copy(update={"max_tokens": 4}))  # warm-up
    singles, batches, gens = [], [], []
    for _ in range(repeats):  # modes alternate so a change of machine load hits both
        runs = [run(policy, [conv], params) for conv in convs]
        gens = [g for r in runs for g in r[0]]
        singles.append(sum(r[1] for r in runs) / sum(r[2] for r in runs))
        _, tokens, seconds = run(policy, convs, params)
        batches.append(tokens / seconds)
    out = {"spec": spec, "load": load_s, "single": max(singles), "batched": max(batches), "gens": gens,
           "prompts": [policy.prompt_ids(c) for c in convs] if hasattr(policy, "prompt_ids") else None,
           "device": getattr(policy, "device", "cpu")}
    policy.close()
    return out


OBSERVATION = "\n".join(f"src/module_{i}.py:{i * 7}: def helper_{i}(value): return value + {i}" for i in range(40))


def agent_workload(spec: str, turns: int, tokens: int) -> dict:
    from agent.variant import AgentVariant

    variant = AgentVariant.load()
    system = variant.system_template.replace("{tools}", "bash, view, str_replace, create, search, submit")
    tasks = ["The parser drops the last field of a CSV line that ends with a comma.",
             "Caching decorator ignores keyword arguments when building its key."]
    convs = [[Message(role="system", content=system.replace("{workdir}", "/testbed")),
              Message(role="user", content=variant.instance_template.format(problem_statement=t, workdir="/testbed"))]
             for t in tasks]
    policy = load_policy(spec)
    params = SamplingParams(max_tokens=tokens, temperature=0.0)
    prompt_tokens = generated = 0
    started = time.perf_counter()
    for _ in range(turns):
        prompt_tokens += sum(policy.count_tokens(c) for c in convs)
        gens = policy.generate(convs, params)
        generated += sum(g.completion_tokens for g in gens)
        convs = [c + [g.message(), Message(role="tool", content=OBSERVATION)] for c, g in zip(convs, gens)]
    seconds = time.perf_counter() - started
    policy.close()
    return {"spec": spec, "seconds": seconds, "prompt_tokens": prompt_tokens, "generated": generated}


def logprob_gap(hf_spec: str, prompts: list[list[int]], gens) -> tuple[float, float]:
    """Mean and max |recorded - recomputed| log-prob of the recorded completions under the hf model."""
    import torch

    policy = load_policy(hf_spec, device="cpu", dtype="float32")
    diffs = []
    with torch.inference_mode():
        for prompt, g in zip(prompts, gens):
            ids = torch.tensor([prompt + g.token_ids])
            logp = torch.log_softmax(policy.model(ids).logits[0, len(prompt) - 1:-1].float(), -1)
            again = logp.gather(1, torch.tensor(g.token_ids)[:, None]).squeeze(1)
            diffs += (again - torch.tensor(g.logprobs)).abs().tolist()
    policy.close()
    return sum(diffs) / len(diffs), max(diffs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default="hf:gemma3-270m,llamacpp:gemma3-270m", help="comma-separated specs")
    parser.add_argument("--tokens", type=int, default=64, help="tokens to generate per sequence")
    parser.add_argument("--batch-size", type=int, default=8, help="conversations per batched call")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two modes this many times; best of each")
    parser.add_argument("--turns", type=int, default=4, help="turns of the agent-like workload (0: skip it)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")

    params = SamplingParams(max_tokens=args.tokens, temperature=args.temperature, seed=0)
    convs = conversations(args.batch_size)
    results = [measure(spec, convs, params, args.repeats) for spec in args.policies.split(",")]
    base = next((r for r in results if r["spec"].startswith("hf:")), results[0])

    table = Table(title=f"generation throughput, {args.batch_size} conversations x {args.tokens} tokens "
                        f"(temperature {args.temperature}), {os.cpu_count()} CPUs, best of {args.repeats}")
    for column in ("policy", "load s", "one at a time tok/s", f"batched ({args.batch_size}) tok/s",
                   f"best vs {base['spec']} batched"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for r in results:
        best = max(r["single"], r["batched"])
        table.add_row(f"{r['spec']} ({r['device']})", f"{r['load']:.1f}", f"{r['single']:.1f}", f"{r['batched']:.1f}",
                      f"{best / base['batched']:.2f}x")
    console = Console(width=max(Console().width, 120))
    console.print(table)
    if args.turns:
        agent = [agent_workload(spec, args.turns, args.tokens) for spec in args.policies.split(",")]
        table = Table(title=f"agent-like workload: 2 parallel episodes x {args.turns} turns x {args.tokens} tokens, "
                            "real system prompt, 40-line observations")
        for column in ("policy", "prompt tokens (sum over turns)", "generated tokens", "seconds",
                       f"speed-up vs {agent[0]['spec']}"):
            table.add_column(column, justify="left" if column == "policy" else "right")
        for r in agent:
            table.add_row(r["spec"], str(r["prompt_tokens"]), str(r["generated"]), f"{r['seconds']:.1f}",
                          f"{agent[0]['seconds'] / r['seconds']:.2f}x")
        console.print(table)
    for r in results:
        if r["spec"].startswith("llamacpp:") and base["spec"].startswith("hf:") and r["prompts"]:
            mean, worst = logprob_gap(base["spec"], r["prompts"], r["gens"])
            console.print(f"{r['spec']} log-probs vs {base['spec']} recomputed (float32): mean |diff| {mean:.4f}, "
                          f"max {worst:.3f} over {sum(len(g.token_ids) for g in r['gens'])} tokens")


if __name__ == "__main__":
    main()
