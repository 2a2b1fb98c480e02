"""One generation of `evolve loop toolcall`, its time split by stage, and the share that is the policy's own compute.

Two generations run; the second is measured (the first also pays the process's one-time costs: importing torch,
transformers and Evolve's modules, about 20 s on a loaded 2-core machine; its numbers are printed too).

The policy's own compute is what a faster model or machine would shrink: sampling (the time the policies
spend in `generate`, measured around each loaded policy; a batch counts once) and training (each optimiser step's time,
its tokens over its tokens/s). Model loading (timed around every policy load) and the trainings' other work
(loading weights, building sequences, checkpoints) are shown apart. Everything else in the wall time (the
scheduler, the store, the gate's arithmetic, scoring, bookkeeping) is Evolve's own overhead; the target is under
5% of a generation.

Run: `.venv/bin/python bench/bench_loop.py [--model hf:PATH|tiny] [--config loop.yaml] [--out DIR]`. The default
model is the tests' tiny Llama warm-started on three toolcall answers (`tests/loop_helpers.py`), with the tests'
config (`tiny_config`): a generation's mechanics, not a learning run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="`tiny` (the tests' warm tiny model) or a policy spec")
    ap.add_argument("--config", type=Path, default=None, help="loop.yaml on top of the toolcall default")
    ap.add_argument("--out", type=Path, default=None, help="run directory (default: a temporary one)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from evolve.loop.config import load_loop_config
    from evolve.loop.run import run_loop
    from evolve.loop.state import STAGES, LoopState
    from evolve.store import RunStore

    tmp = tempfile.TemporaryDirectory()
    out = args.out or Path(tmp.name) / "loop"
    if args.model == "tiny":
        from loop_helpers import tiny_config, warm_tiny_model

        model = warm_tiny_model(Path.home() / ".cache" / "evolve" / "tests" / "loop-warm")
        cfg = tiny_config(model, generations=2, warm_start__enabled=False, sft__min_reward=4.0)
        label = f"tiny Llama (hidden 64, 2 layers) warm-started, tests' config"
    else:
        cfg = load_loop_config("toolcall", args.config, **{"policies.policy": args.model, "generations": 2,
                                                           "warm_start.enabled": False})
        label = args.model
    started = time.perf_counter()
    run_loop(cfg, out)
    wall = time.perf_counter() - started
    console = Console()
    result = {}
    for g in (1, 2):
        result[g] = report(console, out, g, label, wall if g == 1 else None)
    print(json.dumps(result, default=float))


def report(console, out: Path, g: int, label: str, wall: float | None) -> dict:
    from evolve.loop.state import STAGES, LoopState
    from evolve.store import RunStore

    rows = []
    with RunStore(out, readonly=True) as store:
        state = LoopState(store, out.resolve().name)
        nodes = [n for n in state.nodes() if n.info.get("generation") == g]
        for name in STAGES:
            rec = state.stage(g, name)
            c = rec.cost if rec else {}
            rows.append((name, rec.seconds if rec else 0.0, c.get("policy_seconds", 0.0), c.get("train_seconds", 0.0),
                         c.get("sandbox_seconds", 0.0), c.get("load_seconds", 0.0)))
    train_wall = sum(float(n.info.get("training", {}).get("wall_seconds", 0.0)) for n in nodes)
    sampling = sum(r[2] for r in rows)
    training = sum(r[3] for r in rows)
    sandbox = sum(r[4] for r in rows)
    loading = sum(r[5] for r in rows)
    train_other = max(train_wall - training, 0.0)
    stages_wall = sum(r[1] for r in rows)
    own = max(stages_wall - sampling - training - sandbox - loading - train_other, 0.0)
    t = Table(title=f"bench_loop: generation {g} of evolve loop toolcall · {label}")
    for col in ("stage", "wall s", "sampling s", "training s", "loading s", "sandbox s", "rest s"):
        t.add_column(col, justify="right" if col != "stage" else "left")
    for name, sec, pol, tr, sb, ld in rows:
        t.add_row(name, f"{sec:.1f}", f"{pol:.1f}", f"{tr:.1f}", f"{ld:.1f}", f"{sb:.1f}",
                  f"{max(sec - pol - tr - sb - ld, 0):.1f}")
    t.add_row("[bold]generation[/]", f"{stages_wall:.1f}", f"{sampling:.1f}", f"{training:.1f}", f"{loading:.1f}",
              f"{sandbox:.1f}", f"{max(stages_wall - sampling - training - sandbox - loading, 0):.1f}")
    console.print(t)
    share = {"policy compute (sampling + optimiser steps)": sampling + training,
             "model loading (policies)": loading, "training's other work (weights, data, checkpoints)": train_other,
             "sandbox": sandbox, "Evolve's own (scheduler, store, gate, scoring, bookkeeping)": own}
    s = Table(title=f"where generation {g}'s {stages_wall:.1f} s went"
                    + (f" (process wall {wall:.1f} s for both)" if wall else ""))
    s.add_column("part")
    s.add_column("seconds", justify="right")
    s.add_column("share", justify="right")
    for k, v in share.items():
        s.add_row(k, f"{v:.1f}", f"{v / stages_wall:.1%}" if stages_wall else "")
    console.print(s)
    verdict = own / stages_wall if stages_wall else 0.0
    console.print(f"generation {g}: Evolve's own overhead {verdict:.1%} (target < 5%): "
                  + ("[green]met[/]" if verdict < 0.05 else "[red]not met[/]")
                  + (" · includes the process's one-time imports" if g == 1 else ""))
    return {"stages": rows, "share": share, "overhead": verdict}


if __name__ == "__main__":
    main()
