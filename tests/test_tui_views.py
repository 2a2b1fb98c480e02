"""The Resources view (issue 22, item 14: the machine, each running run's process, its live sandboxes) and the Loop
view (item 18: generations with the gate's numbers, the held-out curve, the stage now running, the tree's node
kinds). The resources test runs a real process holding a run lock and a real Docker sandbox labelled with its run;
the loop's records are written through the store API as `evolve loop` writes them (evolve/loop/state.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evolve.store import RunStore
from records import TreeNode
from tests.tui_fixtures import settle
from tui.app import EvolveApp
from tui.screens.loop import LoopScreen
from tui.screens.resources import ResourcesScreen
from tui.screens.tree import TreeScreen

HOLDER = """
import sys, time
from evolve.run.run_lock import RunLock
from evolve.store import RunStore
from sandbox import SandboxConfig, start_sandbox
out = sys.argv[1]
with RunLock(out, "evolve run bundled"), RunStore(out) as store:
    store.put_run("res-" + sys.argv[2], "run", {"workers": 1})
    with start_sandbox(SandboxConfig(run_id="res-" + sys.argv[2])) as sb:
        print("ready", flush=True)
        time.sleep(600)
"""


async def until(pilot, cond, what: str, timeout: float = 30.0):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        await pilot.pause(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def cells(table) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
def test_resources_show_the_machine_each_running_run_and_its_live_sandboxes(tmp_path: Path):
    tag = str(os.getpid())
    out = tmp_path / f"res-{tag}"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), tag], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert proc.stdout.readline().strip() == "ready"

        async def go():
            app = EvolveApp(tmp_path, poll=0.2, open_single=False)
            app.animation_level = "none"
            async with app.run_test(size=(120, 36)) as pilot:
                await settle(app, pilot)
                await pilot.press("R")
                res = app.screen
                assert isinstance(res, ResourcesScreen)
                await until(pilot, lambda: res.read_at and res.query_one("#run-res").row_count, "a reading")
                machine = str(res.query_one("#machine").render())
                assert "CPU" in machine and "memory" in machine and "GiB" in machine
                row = cells(res.query_one("#run-res"))[0]
                assert row[0] == f"res-{tag}" and row[2] == str(proc.pid) and row[8].startswith("1 live"), row
                boxes = [r for r in cells(res.query_one("#sandboxes")) if r[1] == f"res-{tag}"]
                assert len(boxes) == 1 and boxes[0][2] == "running" and boxes[0][3].endswith("s"), boxes
        asyncio.run(go())
    finally:
        proc.terminate()
        proc.wait(60)


T0 = 1767225600.0


def write_loop(out: Path) -> None:
    """Two finished generations and a third in its search stage, as evolve/loop/state.py lays them out."""
    with RunStore(out) as store:
        store.put_run("loop", "loop", {"suite": "toolcall", "generations": 3})
        nodes = [("n0", None, "start", "accepted", {}), ("n1", "n0", "sft", "accepted", {"training": {"version": "v1"}}),
                 ("n2", "n0", "code", "rejected", {"diff": "+x\n", "reason": "smoke failed"}),
                 ("n3", "n1", "grpo", "expanding", {})]
        for nid, parent, kind, status, info in nodes:
            store.put_tree_node(TreeNode(id=f"loop:{nid}", parent_id=f"loop:{parent}" if parent else None,
                                         tree_id="loop", kind="loop", label=f"{kind} child", status=status,
                                         info={"node_kind": kind, "generation": 1, **info}))
        for g, (mean, low, high, accepted) in enumerate([(0.20, 0.10, 0.30, True), (0.35, 0.25, 0.45, True)]):
            store.put_document("loop:generation", f"g{g:02d}", {
                "generation": g, "champion_in": "loop:n0", "candidate": f"loop:n{g}", "champion_out": f"loop:n{g}",
                "accepted": accepted, "gate": {"n": 20, "diff": 0.15, "ci_low": 0.05, "ci_high": 0.25, "p_worse": 0.01,
                                               "accepted": accepted, "reason": "not worse"},
                "held_out": {"n": 20, "mean": mean, "low": low, "high": high},
                "winner": {"kind": "sft", "training": {"version": "v1"}},
                "cost": {"tokens": 1200 * (g + 1), "seconds": 300.0, "sandbox_seconds": 0.0}}, run_id="loop")
            for stage in ("rollouts", "evolution", "search", "gate"):
                store.put_document("loop:stage", f"g{g:02d}/{stage}", {
                    "generation": g, "stage": stage, "status": "done", "started_at": T0 + g * 100,
                    "seconds": 20.0, "cpu_seconds": 15.0, "attempts": 1, "cost": {"tokens": 300}}, run_id="loop")
        store.put_document("loop:stage", "g02/rollouts", {"generation": 2, "stage": "rollouts", "status": "done",
                                                          "started_at": T0 + 200, "seconds": 20.0}, run_id="loop")
        store.put_document("loop:stage", "g02/search", {
            "generation": 2, "stage": "search", "status": "started", "started_at": T0 + 250,
            "progress": {"done": 3, "total": 8, "what": "evaluations"}}, run_id="loop")


def test_loop_view_shows_generations_the_held_out_curve_and_the_stage_now_running(tmp_path: Path):
    out = tmp_path / "loop"
    write_loop(out)

    async def go():
        app = EvolveApp(out, poll=0.2, clock=lambda: T0 + 400)
        app.animation_level = "none"
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(app, pilot)
            loop = app.screen
            assert isinstance(loop, LoopScreen)
            await until(pilot, lambda: loop.query_one("#generations").row_count == 2, "the generations")
            rows = cells(loop.query_one("#generations"))
            assert rows[1][3] == "accepted" and rows[1][4] == "0.35 [0.25–0.45]" and rows[1][5] == "0.15 [0.05–0.25]" and rows[1][6] == "0.010", rows
            assert rows[1][8:] == ["2400", "5m00s", "-"], rows  # item 15: tokens, time and sandbox time per generation
            assert loop.query_one("#heldout").points == [(0, 0.2, 0.1, 0.3), (1, 0.35, 0.25, 0.45)]
            table = loop.query_one("#generations")  # item 17: a click on a header sorts any table by that column
            x = 2 + sum(c.width + 2 for c in list(table.columns.values())[:list(table.columns).index("gen")])
            await pilot.click("#generations", offset=(x, 1))
            await pilot.click("#generations", offset=(x, 1))
            await pilot.pause()
            assert [r[0] for r in cells(table)] == ["1", "0"]  # the second click: descending
            now = str(loop.query_one("#loop-now").render())
            assert "generation 2 · stage search 3/8 evaluations" in now and "started 2m30s ago" in now, now
            assert "code 1" in now and "sft 1" in now and "grpo 1" in now
            await pilot.press("t")
            await settle(app, pilot)
            tree = app.screen
            assert isinstance(tree, TreeScreen)
            assert "[grpo]" in str(tree.widgets["loop:n3"].label) and "[code]" in str(tree.widgets["loop:n2"].label)
    asyncio.run(go())


@pytest.mark.slow
def test_loop_view_on_a_real_loop(loop_warm_model, tmp_path: Path):
    """A real `evolve loop toolcall` of two generations with the tiny model (tests/test_loop_toolcall.py's config),
    then the Loop view on its directory: every generation with its gate's numbers, the held-out curve, both kinds of
    node in the tree."""
    import torch

    from evolve.loop.run import run_loop
    from tests.loop_helpers import tiny_config

    torch.set_num_threads(1)
    out = tmp_path / "runs" / "loop"
    report = run_loop(tiny_config(loop_warm_model), out)
    gens = report["generations"]

    async def go():
        app = EvolveApp(out, poll=0.2)
        app.animation_level = "none"
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(app, pilot)
            loop = app.screen
            assert isinstance(loop, LoopScreen)
            await until(pilot, lambda: loop.query_one("#generations").row_count == len(gens), "the generations")
            rows = cells(loop.query_one("#generations"))
            for row, g in zip(rows, gens):
                assert row[0] == str(g["generation"]) and row[3] == ("accepted" if g["accepted"] else "kept"), row
            assert len(loop.query_one("#heldout").points) == len(gens)
            assert "finished" in str(loop.query_one("#loop-now").render())
            kinds = {n.info.get("node_kind") for n in loop.nodes.values()}
            assert {"sft", "grpo"} & kinds, kinds
            await pilot.press("t")
            await settle(app, pilot)
            tree = app.screen
            assert isinstance(tree, TreeScreen)
            labels = [str(w.label) for w in tree.widgets.values()]
            assert any("[sft]" in lbl or "[grpo]" in lbl for lbl in labels), labels
    asyncio.run(go())
