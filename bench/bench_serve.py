"""`evolve serve` against llama.cpp's own `llama-server` on the same model, prompts and settings.

Both servers run as their own processes on this machine with the embedded Gemma 3 270M Q4_K_M GGUF, all
cores, 32,768 KV cells shared by up to 16 (llama-server: `-np 16 -kvu`) or 32 (Evolve) sequences, batch
512. Clients send text completions whose prompt is the same token ids for both servers (a chat prompt
rendered by Evolve's template), `max_tokens` tokens each with `ignore_eos` (every completion is exactly
that long), temperature 1 and a seed per request.

Table 1: for 1, 4 and 16 concurrent clients (each sending `--requests` requests one after another),
requests/s and completion tokens/s of each server, and Evolve / llama-server. Target: >= 0.9x.
Table 2: a GRPO group: n = 8 samples of one agent prompt (the default variant's system prompt and tools, a
task and one tool call with its 40-line output) as one request, against the same eight samples as eight separate requests sent
at once, and one after another, on each server. Target: Evolve's n=8 >= 3x the tokens/s of eight
separate requests.

Each measurement is taken `--repeats` times, the servers alternating, and the best kept (other processes
share the CPU).

llama-server is built from the llama.cpp sources vendored in the llama-cpp-python sdist Evolve pins
(the same llama.cpp as `llamacpp:` runs), with the same portable flags:

    pip download llama-cpp-python==0.3.36 --no-binary :all: --no-deps -d /tmp/lcp && cd /tmp/lcp &&
    tar xzf llama_cpp_python-0.3.36.tar.gz && cd llama_cpp_python-0.3.36/vendor/llama.cpp &&
    cmake -B build -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DCMAKE_BUILD_TYPE=Release &&
    cmake --build build --target llama-server -j2      # minutes

    python bench/bench_serve.py --llama-server /tmp/lcp/.../build/bin/llama-server [--tokens 64]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

os.environ.setdefault("HF_HUB_OFFLINE", "1")

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
KV_TOKENS = 32768


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


OBSERVATION = "\n".join(f"src/module_{i}.py:{i * 7}: def helper_{i}(value): return value + {i}" for i in range(40))
CALL = '<tool_call>\n{"name": "bash", "parameters": {"command": "grep -rn helper src/ | head -40"}}\n</tool_call>'


def prompt_ids(fresh: int) -> tuple[list[list[int]], list[list[int]]]:
    """(the short chat prompts, `fresh` agent prompts), rendered by Evolve's template and tokenized once: the
    same ids go to both servers. An agent prompt is the default variant's real system prompt and tools, a task
    and one turn of 40-line tool output (an episode's state where a GRPO group samples); each starts with
    its own run number, so no server has any of it cached before its measurement."""
    from agent.graph import Agent
    from agent.policy import load_policy
    from agent.replay import ScriptedPolicy
    from agent.variant import AgentVariant
    from records import TaskInstance
    from records.trajectory import Message

    task = TaskInstance(instance_id="bench", repo="bench", base_commit="0", problem_statement=(
        "The parser drops the last field of a CSV line that ends with a comma."))
    base = Agent(ScriptedPolicy([]), AgentVariant.load()).prompt(task, "/testbed")
    turns = [m for _ in range(1) for m in (Message(role="assistant", content=CALL), Message(role="tool", content=OBSERVATION))]
    policy = load_policy("llamacpp:gemma3-270m", n_ctx=8192, slots=1)
    try:
        short = [policy.prompt_ids([Message(role="user", content=p)]) for p in PROMPTS]
        agent = [policy.prompt_ids([Message(role="system", content=f"Run {k}.\n" + base[0].content), base[1], *turns])
                 for k in range(fresh)]
        return short, agent
    finally:
        policy.close()


class Server:
    def __init__(self, name: str, argv: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}/v1"
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{name} exited: {self.proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"{name} did not start in 300 s")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def complete(client: httpx.Client, server: Server, prompt: list[int], tokens: int, n: int, seed: int) -> int:
    body = {"prompt": prompt, "max_tokens": tokens, "temperature": 1.0, "seed": seed, "ignore_eos": True, "n": n}
    r = client.post(f"{server.url}/completions", json=body, timeout=1200)
    r.raise_for_status()
    data = r.json()
    assert len(data["choices"]) == n and all(c["finish_reason"] == "length" for c in data["choices"]), data
    return n * tokens  # ignore_eos: every choice is exactly `tokens` long (llama-server's usage counts one choice)


def load(server: Server, prompts: list[list[int]], clients: int, requests: int, tokens: int,
         n: int = 1) -> tuple[float, int, int]:
    """(seconds, completion tokens, requests) for `clients` clients each sending `requests` requests in turn."""

    def one_client(c: int) -> int:
        with httpx.Client() as client:
            done = 0
            for r in range(requests):
                k = (c * requests + r) % len(prompts)
                done += complete(client, server, prompts[k], tokens, n, seed=1000 * c + r)
            return done

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        total = sum(pool.map(one_client, range(clients)))
    return time.perf_counter() - start, total, clients * requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llama-server", default=os.environ.get("LLAMA_SERVER") or shutil.which("llama-server"),
                        help="llama-server binary (see the module docstring to build it)")
    parser.add_argument("--tokens", type=int, default=64, help="completion tokens per request")
    parser.add_argument("--requests", type=int, default=2, help="requests per client at each concurrency")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--repeats", type=int, default=2, help="measurements per cell (best kept)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    console = Console()
    if not args.llama_server or not Path(args.llama_server).exists():
        raise SystemExit("no llama-server binary: build it as the module docstring says and pass --llama-server")
    from agent.policy.embedded import embedded_gguf

    gguf = embedded_gguf("gemma3-270m")
    prompts, agents = prompt_ids(3 * 2 * args.repeats)
    console.print(f"short prompts: {min(map(len, prompts))}-{max(map(len, prompts))} tokens; agent prompt: "
                  f"{len(agents[0])} tokens")
    t = str(args.threads)
    evolve = Server("evolve serve", [sys.executable, "-m", "evolve.cli", "serve", "--port", str(port := free_port()),
                                     "--threads", t],
                    port, env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    llama = Server("llama-server", [args.llama_server, "-m", str(gguf), "--port", str(lport := free_port()),
                                    "-np", "16", "-kvu", "-c", str(KV_TOKENS), "-b", "512", "-ub", "512", "-t", t,
                                    "-tb", t, "--no-webui"], lport)
    servers = [evolve, llama]
    try:
        for s in servers:  # warm-up: weights paged in, first allocations done
            load(s, prompts, 2, 1, 8)
        levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
        results: dict[tuple[str, str], tuple[float, int, int]] = {}

        def measure(key: str, prompts: list[list[int]] | None = None, **kw) -> None:
            for _ in range(args.repeats):
                for s in servers:
                    got = load(s, [agents.pop()] if prompts is None else prompts, tokens=args.tokens, **kw)
                    best = results.get((s.name, key))
                    if best is None or got[1] / got[0] > best[1] / best[0]:
                        results[(s.name, key)] = got
                    console.print(f"  {s.name:13s} {key:22s} {got[1] / got[0]:7.1f} tok/s ({got[0]:.1f} s)")

        for c in levels:
            measure(f"{c} clients", prompts=prompts, clients=c, requests=args.requests)
        measure("n=8, one request", clients=1, requests=1, n=8)
        measure("8 requests at once", clients=8, requests=1)
        measure("8 requests in turn", clients=1, requests=8)

        table = Table(title=f"bench_serve: Gemma 3 270M Q4_K_M, {args.tokens} tokens per completion, {args.threads} threads")
        for col in ("workload", "Evolve req/s", "Evolve tok/s", "llama-server req/s", "llama-server tok/s", "ratio"):
            table.add_column(col, justify="right" if col != "workload" else "left")
        for key in [f"{c} clients" for c in levels] + ["n=8, one request", "8 requests at once", "8 requests in turn"]:
            e, l = results[(evolve.name, key)], results[(llama.name, key)]
            table.add_row(key, f"{e[2] / e[0]:.2f}", f"{e[1] / e[0]:.1f}", f"{l[2] / l[0]:.2f}", f"{l[1] / l[0]:.1f}",
                          f"{(e[1] / e[0]) / (l[1] / l[0]):.2f}x")
        console.print(table)
        rate = {k: v[1] / v[0] for k, v in results.items()}
        for s in servers:
            n8 = rate[(s.name, "n=8, one request")]
            console.print(f"{s.name}: n=8 in one request {n8:.1f} tok/s = "
                          f"{n8 / rate[(s.name, '8 requests at once')]:.2f}x eight separate requests at once, "
                          f"{n8 / rate[(s.name, '8 requests in turn')]:.2f}x eight in turn")
    finally:
        for s in servers:
            s.close()


if __name__ == "__main__":
    main()
