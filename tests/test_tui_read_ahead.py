"""What keeps keys fast on a large store must never show stale data: pages and trajectories read ahead in
workers are dropped when the store changes, and the full garbage collection the app defers to idle moments
does run (cyclic garbage does not pile up)."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref

from evolve.store import RunStore
from records import TrajectoryStatus
from tests.tui_fixtures import settle, write_synthetic_run
from tui.app import EvolveApp
from tui.screens.dashboard import DashboardScreen
from tui.screens.inspector import InspectorScreen


async def _until(pred, seconds: float = 5.0) -> None:
    end = time.time() + seconds
    while not pred():
        if time.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def test_read_ahead_is_dropped_when_the_store_changes(tmp_path):
    asyncio.run(_read_ahead(tmp_path))


async def _read_ahead(tmp_path):
    run_dir = tmp_path / "run"
    with RunStore(run_dir) as store:
        write_synthetic_run(store, "r", 250, 2)
    app = EvolveApp(run_dir, poll=0.1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        size = screen.page_size
        await _until(lambda: ("", None, None, False, size, size) in screen.pages)  # the next page was read ahead
        ahead_first = screen.pages[("", None, None, False, size, size)][1][0]
        with RunStore(run_dir) as store:  # another process changes a row of that page
            traj = store.get_trajectory(ahead_first["id"])
            traj.status = TrajectoryStatus.infra_error
            store.put_trajectory(traj)
        gen = screen.generation
        await _until(lambda: screen.generation > gen)  # the poll saw the change
        await pilot.press("right_square_bracket")
        await settle(app, pilot)
        assert screen.rows[0]["id"] == ahead_first["id"] and screen.rows[0]["status"] == "infra_error"

        await pilot.press("left_square_bracket", "enter")  # inspector on the first trajectory
        await settle(app, pilot)
        insp = app.screen
        assert isinstance(insp, InspectorScreen)
        nxt = screen.rows[1]["id"]
        await _until(lambda: nxt in insp.ahead)  # the next trajectory was read ahead, and where it sits in the list
        assert insp.neighbours[(0, 1)] == (nxt, 250)
        with RunStore(run_dir) as store:
            store.append_step(nxt, store.get_trajectory(nxt).steps[0].model_copy(update={"index": 2}))
        gen = insp.generation
        await _until(lambda: insp.generation > gen)
        assert nxt not in insp.ahead and not insp.neighbours  # the copy read before the change is gone
        await pilot.press("L")
        await settle(app, pilot)
        with RunStore(run_dir, readonly=True) as store:
            assert insp.traj.id == nxt and len(insp.traj.steps) == len(store.get_trajectory(nxt).steps) == 3


def test_full_collection_runs_once_the_user_pauses(tmp_path):
    asyncio.run(_idle_gc(tmp_path))


async def _idle_gc(tmp_path):
    with RunStore(tmp_path / "run") as store:
        write_synthetic_run(store, "r", 5, 2)
    threshold = gc.get_threshold()
    app = EvolveApp(tmp_path / "run", poll=0.1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert gc.get_threshold()[2] > threshold[2]  # no automatic full collection while the app runs

        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: only the collector frees it
        gone = weakref.ref(a)
        for _ in range(3):  # push the cycle into the oldest generation, as a long-lived cache would be
            gc.collect(1)
        del a, b
        assert gone() is not None
        await pilot.press("down")  # input: the collection waits for a pause
        await _until(lambda: gone() is None, seconds=3 + app.IDLE_GC_AFTER)
    assert gc.get_threshold() == threshold  # restored when the app ends
