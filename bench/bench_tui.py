"""`evolve tui` on a large store: 10,000 trajectories and 300,000 steps (plus a 200-node HGM tree with 2,000
outcome rows and a 2,000-step training curve). Times the first screen and every key of a walk through
the dashboard, the inspector, the tree and the training screen, on this machine.

Targets: first screen under 1 s; every key answered in under 100 ms (median and max reported).
Baseline, same store: what a dashboard built on the store's older `trajectory_summaries` (every row, one
rewards query per trajectory) would spend before it could draw anything, against one `trajectory_page`.

    .venv/bin/python bench/bench_tui.py [--trajectories 10000] [--steps 30] [--out /tmp/evolve-bench-tui]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evolve.store import DB_NAME, RunStore  # noqa: E402
from records import TrainStep, TreeNode  # noqa: E402
from tests.tui_fixtures import write_synthetic_run  # noqa: E402
from tui.app import EvolveApp  # noqa: E402
from tui.screens.dashboard import MAX_PAGE, rows_that_fit  # noqa: E402

console = Console(width=150)


def build(out: Path, n: int, steps: int) -> Path:
    marker = out / f"built-{n}x{steps}"
    if marker.exists():
        return out
    if (out / DB_NAME).exists():
        for p in out.glob(DB_NAME + "*"):
            p.unlink()
    t = time.perf_counter()
    rng = random.Random(0)
    with RunStore(out) as store:
        write_synthetic_run(store, "bench", n, steps)
        ids = [f"h{k:03d}" for k in range(200)]
        for k, nid in enumerate(ids):
            store.put_tree_node(TreeNode(id=nid, parent_id=ids[rng.randrange(k)] if k else None, tree_id="hgm",
                                         kind="hgm", label=f"modification {k}", status="evaluating"))
        now = time.time()
        for _ in range(2000):
            ok = rng.random() < 0.4
            store.put_outcome("hgm", rng.choice(ids), f"task-{rng.randrange(60)}", "pass" if ok else "fail", ok,
                              f"t{rng.randrange(n):06d}", now - 3, now)
        for s in range(2000):
            store.put_train_step(TrainStep(policy_version_id="v-bench", step=s, metrics={
                "loss": 1 / (1 + s), "reward": s / 2000, "kl": 0.001 * s, "entropy": 1.0, "clip_fraction": 0.1,
                "tokens_per_s": 900.0}))
        from records import PolicyVersion

        store.put_policy_version(PolicyVersion(id="v-bench", base="hf:tiny", kind="grpo"))
    marker.touch()
    console.print(f"built {n} trajectories x {steps} steps in {time.perf_counter() - t:.1f} s "
                  f"({(out / DB_NAME).stat().st_size / 1e6:.0f} MB)")
    return out


async def walk(out: Path) -> tuple[float, dict[str, list[float]], dict[str, list[float]]]:
    """Key -> first repaint, timed inside the app: each key event goes straight to the driver and the time
    is taken when the compositor hands over the next frame (Pilot's own idle waits are not counted)."""
    from textual import events

    times: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    frames: list[float] = []
    frame_cpu: list[float] = []
    t0, c0 = time.perf_counter(), time.process_time()
    app = EvolveApp(out, poll=0.5)
    app.animation_level = "none"
    real_display = app._display

    def display(screen, renderable):
        frames.append(time.perf_counter())
        frame_cpu.append(time.process_time())
        return real_display(screen, renderable)

    app._display = display  # type: ignore[method-assign]
    async with app.run_test(size=(120, 36)) as pilot:
        def page_shown() -> bool:  # the first page, cut to the rows the table shows, is drawn
            if not app.screen.query("#trajs"):
                return False
            table = app.screen.query_one("#trajs")
            return table.row_count == app.screen.page_size == rows_that_fit(table) and table.row_count > 0

        while not (page_shown() and frames and frames[-1] > t0):
            await asyncio.sleep(0.005)
            if time.perf_counter() - t0 > 60:
                raise SystemExit("the dashboard did not show its first page within 60 s")
        first = frames[-1] - t0
        cpu["first"].append(frame_cpu[-1] - c0)

        async def key(label: str, *keys: str) -> None:
            for k in keys:
                await pilot.pause()  # settle first (not timed)
                await asyncio.sleep(0.05)
                char = k if len(k) == 1 else {"dollar_sign": "$", "slash": "/", "right_square_bracket": "]",
                                              "left_square_bracket": "["}.get(k)
                name = {"$": "dollar_sign", "/": "slash", " ": "space"}.get(k, k)
                frames.clear()
                frame_cpu.clear()
                c = time.process_time()
                t = time.perf_counter()
                app._driver.send_message(events.Key(name, char))
                while not frames and time.perf_counter() - t < 5:
                    await asyncio.sleep(0.001)
                times[label].append((frames[0] if frames else float("inf")) - t)
                cpu[label].append((frame_cpu[0] if frame_cpu else float("inf")) - c)

        await key("dashboard: down", *["down"] * 20)
        await key("dashboard: ] next page", *["right_square_bracket"] * 10)
        await key("dashboard: [ prev page", *["left_square_bracket"] * 5)
        await key("dashboard: / filter (typing + enter)", "slash", *"inst-0042", "enter")
        await key("escape (clear filter / back)", "escape")
        await key("dashboard: enter opens inspector", "enter")
        await key("inspector: l/h step", *["l"] * 15, *["h"] * 5)
        await key("inspector: 0/$ first/last", "dollar_sign", "0", "dollar_sign", "0")
        await key("inspector: L/H trajectory", *["L"] * 10, *["H"] * 5)
        await key("inspector: v view", *["v"] * 5)
        await key("inspector: / search + n", "slash", *"echo 17", "enter", "n", "n")
        await key("escape (clear filter / back)", "escape")
        await key("dashboard: t opens tree", "t")
        await key("tree: down", *["down"] * 30)
        await key("tree: v view", *["v"] * 4)
        await key("escape (clear filter / back)", "escape", "escape")
        await key("runs: v opens training", "v")
    return first, times, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectories", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("/tmp/evolve-bench-tui"))
    args = parser.parse_args()
    out = build(args.out, args.trajectories, args.steps)
    with RunStore(out, readonly=True) as store:
        t = time.perf_counter()
        store.trajectory_summaries("bench")
        naive = time.perf_counter() - t
        t = time.perf_counter()
        store.trajectory_page("bench", limit=MAX_PAGE)
        paged = time.perf_counter() - t
    load = os.getloadavg()[0]
    first, times, cpu = asyncio.run(walk(out))
    table = Table(caption=f"wall: key sent -> first repaint; CPU: this process's CPU time in that interval; "
                          f"load average {load:.1f} on {os.cpu_count()} cores when the walk started",
                  title=f"evolve tui on {args.trajectories:,} trajectories x {args.steps} steps "
                        f"({args.trajectories * args.steps:,} steps)")
    for col in ("what", "n", "median ms", "max ms", "CPU median ms", "CPU max ms", "target ms", "ok"):
        table.add_column(col, justify="right" if col not in ("what",) else "left")
    table.add_row("first screen (app start to dashboard drawn)", "1", f"{first * 1000:.0f}", f"{first * 1000:.0f}",
                  f"{cpu['first'][0] * 1000:.0f}", f"{cpu['first'][0] * 1000:.0f}", "1000", "yes" if first < 1.0 else "NO")
    worst = 0.0
    for label, ts in times.items():
        if label == "first":
            continue
        worst = max(worst, max(ts))
        cs = cpu[label]
        table.add_row(label, str(len(ts)), f"{statistics.median(ts) * 1000:.1f}", f"{max(ts) * 1000:.1f}",
                      f"{statistics.median(cs) * 1000:.1f}", f"{max(cs) * 1000:.1f}", "100",
                      "yes" if max(ts) < 0.1 else "NO")
    console.print(table)
    base = Table(title="baseline: rows a dashboard reads before it can draw")
    for col in ("query", "ms", "ratio"):
        base.add_column(col)
    base.add_row("trajectory_summaries (all rows, N+1 rewards queries)", f"{naive * 1000:.0f}", f"{naive / paged:.0f}x")
    base.add_row(f"trajectory_page (one page of {MAX_PAGE}, the largest, evolve tui)", f"{paged * 1000:.1f}", "1x")
    console.print(base)
    console.print(f"all keys under 100 ms: {'yes' if worst < 0.1 else 'NO'} (worst {worst * 1000:.0f} ms); "
                  f"first screen under 1 s: {'yes' if first < 1 else 'NO'}")


if __name__ == "__main__":
    main()
