"""`evolve tui` on a large store: 10,000 trajectories and 300,000 steps (plus a 200-node HGM tree with 2,000
outcome rows and a 2,000-step training curve). Times the first screen and every key of a walk through
the dashboard, the inspector, the tree and the training screen, on this machine.

Targets: first screen under 1 s; every key answered in under 100 ms (median and max reported), on the idle machine.
Baseline, same store: what a dashboard built on the store's older `trajectory_summaries` (every row, one
rewards query per trajectory) would spend before it could draw anything, against one `trajectory_page`.

Under load (`--hog N`, default one per core): the same walk again with N processes spinning beside it, and
mini-swe-agent's inspector (`pip install .[bench]`) on the same trajectories (exported as its `.traj.json` files)
given the same stepping keys, idle and under the hog, side by side with Evolve's inspector as a ratio.

    .venv/bin/python bench/bench_tui.py [--trajectories 10000] [--steps 30] [--out /tmp/evolve-bench-tui] [--hog 2]
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hog import Hog  # noqa: E402

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


class KeyTimer:
    """Key -> the repaint that shows its answer, timed inside an app: each key event goes straight to the driver and
    the time is taken when the compositor hands over the first frame drawn once the answer is there (Pilot's own idle
    waits are not counted). A dashboard page the screen reads in a worker (a sort, a filter, a search) is there when
    the screen has drawn it (its `pending` is None), not when the title first says it is being read."""

    def __init__(self, app) -> None:
        self.app = app
        self.times: dict[str, list[float]] = defaultdict(list)
        self.cpu: dict[str, list[float]] = defaultdict(list)
        self.frames: list[float] = []
        self.frame_cpu: list[float] = []
        self.answered: list[bool] = []
        real_display = app._display

        def display(screen, renderable):
            self.frames.append(time.perf_counter())
            self.frame_cpu.append(time.process_time())
            self.answered.append(getattr(app.screen, "pending", None) is None)
            return real_display(screen, renderable)

        app._display = display  # type: ignore[method-assign]

    async def key(self, pilot, label: str, *keys: str) -> None:
        from textual import events

        for k in keys:
            await pilot.pause()  # settle first (not timed)
            await asyncio.sleep(0.05)
            char = k if len(k) == 1 else {"dollar_sign": "$", "slash": "/", "right_square_bracket": "]",
                                          "left_square_bracket": "[", "question_mark": "?"}.get(k)
            name = {"$": "dollar_sign", "/": "slash", " ": "space", "?": "question_mark"}.get(k, k)
            self.frames.clear()
            self.frame_cpu.clear()
            self.answered.clear()
            c = time.process_time()
            t = time.perf_counter()
            self.app._driver.send_message(events.Key(name, char))
            while not any(self.answered) and time.perf_counter() - t < 10:
                await asyncio.sleep(0.001)
            at = self.answered.index(True) if any(self.answered) else None
            self.times[label].append((self.frames[at] if at is not None else float("inf")) - t)
            self.cpu[label].append((self.frame_cpu[at] if at is not None else float("inf")) - c)


INSPECTOR_KEYS = (("l/h step", ["l"] * 15 + ["h"] * 5), ("L/H trajectory", ["L"] * 10 + ["H"] * 5),
                  ("0/$ first/last", ["dollar_sign", "0"] * 2))
"""The keys both inspectors have (mini-swe-agent's are the anchor: the same letters do the same there). Scrolling
(j/k) is left out: where a step fits the screen it changes nothing, and no frame follows to be timed."""


async def walk(out: Path) -> tuple[float, dict[str, list[float]], dict[str, list[float]]]:
    t0, c0 = time.perf_counter(), time.process_time()
    app = EvolveApp(out, poll=0.5)
    app.animation_level = "none"
    timer = KeyTimer(app)
    times, cpu, frames, frame_cpu = timer.times, timer.cpu, timer.frames, timer.frame_cpu
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
            await timer.key(pilot, label, *keys)

        await key("dashboard: down", *["down"] * 20)
        await key("dashboard: ] next page", *["right_square_bracket"] * 10)
        await key("dashboard: [ prev page", *["left_square_bracket"] * 5)
        await key("dashboard: / filter (typing + enter)", "slash", *"inst-0042", "enter")
        await key("escape (clear filter / back)", "escape")
        await key("dashboard: f status filter", "f", "f")
        await key("dashboard: o sort (instance, status)", "o", "o")
        await key("dashboard: o sort (steps)", "o")
        await key("dashboard: o sort (tokens)", "o")  # each trajectory's stored total (it summed every step's JSON)
        await key("dashboard: o sort (time, res, reward, none)", *["o"] * 4)
        await key("dashboard: o sort (instance, status again)", "o", "o")
        await key("escape (clear filter / back)", "escape")
        await key("dashboard: ? help", "question_mark")
        await key("escape (clear filter / back)", "escape")
        await key("dashboard: e events", "e")
        await key("escape (clear filter / back)", "escape")
        await key("dashboard: enter opens inspector", "enter")
        for label, keys in INSPECTOR_KEYS:
            await key(f"inspector: {label}", *keys)
        await key("inspector: v view", *["v"] * 5)
        await key("inspector: / search + n", "slash", *"echo 17", "enter", "n", "n")
        await key("escape (clear filter / back)", "escape")
        await key("dashboard: t opens tree", "t")
        await key("tree: down", *["down"] * 30)
        await key("tree: v view", *["v"] * 4)
        await key("escape (clear filter / back)", "escape", "escape")
        await key("runs: v opens training", "v")
        for _ in range(3):  # the training screen's first reading ends before the app does
            await pilot.pause()
            await app.workers.wait_for_complete()
    return first, times, cpu


def export_mini(store_dir: Path, out: Path, n: int = 20) -> list[Path]:
    """The store's first `n` trajectories as mini-swe-agent's trajectory files (`{"messages": [...]}`)."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    files = []
    with RunStore(store_dir, readonly=True) as store:
        for tid in store.trajectory_ids(run_id="bench")[:n]:
            traj = store.get_trajectory(tid)
            path = out / f"{tid}.traj.json"
            path.write_text(json.dumps({"messages": [{"role": m.role, "content": m.content} for m in traj.messages()],
                                        "info": {}}))
            files.append(path)
    return files


async def walk_mini(files: list[Path]) -> dict[str, list[float]]:
    """mini-swe-agent's inspector on the same trajectories, the same keys, timed the same way."""
    from minisweagent.run.utilities.inspector import TrajectoryInspector

    app = TrajectoryInspector(files)
    app.animation_level = "none"
    timer = KeyTimer(app)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        for label, keys in INSPECTOR_KEYS:
            await timer.key(pilot, f"inspector: {label}", *keys)
    return timer.times


def ms(ts: list[float]) -> str:
    return f"{statistics.median(ts) * 1000:.0f} / {max(ts) * 1000:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectories", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("/tmp/evolve-bench-tui"))
    parser.add_argument("--hog", type=int, default=os.cpu_count() or 1,
                        help="Spinning processes beside the second walk (0: no walk under load).")
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
    if args.hog <= 0:
        return
    try:
        import minisweagent  # noqa: F401 - the anchor's inspector, from the bench extra

        files = export_mini(out, args.out / "mini-trajectories")
    except ImportError:
        files = []
        console.print("mini-swe-agent is not installed (pip install .[bench]): its column is left out")
    mini_idle = asyncio.run(walk_mini(files)) if files else {}
    with Hog(args.hog):
        hog_load = os.getloadavg()[0]
        hog_first, hog_times, _ = asyncio.run(walk(out))
        mini_hog = asyncio.run(walk_mini(files)) if files else {}
    side = Table(title=f"under load: the same walk with {args.hog} spinning process(es) beside it (load average "
                       f"{hog_load:.1f} when it started), against mini-swe-agent's inspector on the same trajectories",
                 caption="median / max ms, key sent -> first repaint; ratio: Evolve's median over mini-swe-agent's")
    for col in ("what", "Evolve idle", "mini idle", "ratio idle", "Evolve + hog", "mini + hog", "ratio + hog",
                "target ms"):
        side.add_column(col, justify="right" if col != "what" else "left")
    side.add_row("first screen", f"{first * 1000:.0f}", "", "", f"{hog_first * 1000:.0f}", "", "", "1000")
    for label, ts in hog_times.items():
        idle, m0, m1 = times.get(label), mini_idle.get(label), mini_hog.get(label)
        side.add_row(label, ms(idle) if idle else "", ms(m0) if m0 else "",
                     f"{statistics.median(idle) / statistics.median(m0):.2f}x" if idle and m0 else "",
                     ms(ts), ms(m1) if m1 else "",
                     f"{statistics.median(ts) / statistics.median(m1):.2f}x" if m1 else "", "100")
    console.print(side)
    hog_worst = max(max(ts) for ts in hog_times.values())
    console.print(f"under the hog: worst key {hog_worst * 1000:.0f} ms, first screen {hog_first * 1000:.0f} ms")


if __name__ == "__main__":
    main()
