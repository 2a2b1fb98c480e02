"""OpenMP's wait policy on a shared CPU: spinning (`OMP_WAIT_POLICY=ACTIVE`) against sleeping (`PASSIVE`, what
Evolve sets by default in `agent/__init__.py`), for the two compute paths of the embedded model on the CPU.

Rows: a torch matmul of the embedded model's MLP shape (2 threads: training and `hf:` sampling) and llama.cpp
decoding of the embedded GGUF (2 threads: `llamacpp:` sampling), each measured with the machine as it is and
with `--hog N` processes spinning beside it (default: one per core, i.e. the machine used twice over). Each cell is
a fresh subprocess: OpenMP reads the policy when it loads. The ratio is PASSIVE / ACTIVE (> 1: passive is faster).

    .venv/bin/python bench/bench_threads.py [--hog 2] [--seconds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hog import Hog  # noqa: E402

TORCH = """
import json, time, torch
torch.set_num_threads(2)
a, w = torch.randn(256, 640), torch.randn(640, 2048)
for _ in range(3): a @ w
t, n = time.perf_counter(), 0
while time.perf_counter() - t < {seconds}:
    for _ in range(20): a @ w
    n += 20
print(json.dumps({{"rate": n / (time.perf_counter() - t), "unit": "matmul/s"}}))
"""

LLAMA = """
import json, time
from llama_cpp import Llama
m = Llama(model_path={path!r}, n_ctx=1024, n_threads=2, n_threads_batch=2, verbose=False)
toks = m.tokenize(b"The quick brown fox jumps over the lazy dog. " * 20)
m.eval(toks)
t, n = time.perf_counter(), 0
for tok in m.generate(toks, temp=0.0, reset=False):
    n += 1
    if n >= 64 or time.perf_counter() - t > {seconds}: break
print(json.dumps({{"rate": n / (time.perf_counter() - t), "unit": "tokens/s"}}))
"""


def cell(code: str, policy: str) -> float:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"a {policy} cell failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["rate"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hog", type=int, default=os.cpu_count() or 1, help="spinning processes beside (0: none)")
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time per cell")
    args = parser.parse_args()
    from agent.policy.embedded import embedded_gguf

    rows = [("torch matmul 256x640x2048, 2 threads", TORCH.format(seconds=args.seconds)),
            ("llama.cpp decode, embedded GGUF, 2 threads", LLAMA.format(path=str(embedded_gguf("gemma3-270m")),
                                                                         seconds=args.seconds))]
    table = Table(title=f"OpenMP wait policy on {os.cpu_count()} cores: PASSIVE (Evolve's default) vs ACTIVE")
    for col in ("path", "machine", "load avg", "ACTIVE", "PASSIVE", "PASSIVE / ACTIVE"):
        table.add_column(col, justify="left" if col in ("path", "machine") else "right")
    for name, code in rows:
        for label, hog in (("as it is", 0), (f"+{args.hog} spinning", args.hog)):
            with Hog(hog) if hog else nullcontext():
                load = os.getloadavg()[0]
                active, passive = cell(code, "ACTIVE"), cell(code, "PASSIVE")
            unit = "tok/s" if "llama" in name else "/s"
            table.add_row(name, label, f"{load:.1f}", f"{active:.1f} {unit}", f"{passive:.1f} {unit}",
                          f"{passive / active:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
