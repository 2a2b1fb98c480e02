"""The TUI's numbers are right and move (issue 22, items 1-5): progress counts completed work only, the ETA comes from
completed episodes and counts down between store writes, time cells move on their own and "updated" sees new steps,
stopped episodes are not agent errors, and a run whose process died shows `dead`. Stores are written through the
store API as the runner writes them; the dead run is a real process holding the run lock, then SIGKILLed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from evolve.store import RunStore
from records import Message, Step, TaskInstance, Trajectory, TrajectoryStatus
from records.trajectory import INTERRUPTED
from tests.tui_fixtures import settle
from tui.app import EvolveApp
from tui.screens.dashboard import DashboardScreen
from tui.screens.runs import RunsScreen

T0 = 1767225600.0


def step(i: int, at: float) -> Step:
    return Step(index=i, response=Message(role="assistant", content=f"step {i}"), started_at=at, policy_seconds=1.0,
                tool_seconds=0.5, prompt_tokens=10, completion_tokens=5)


def episode(store: RunStore, run_id: str, iid: str, status: str, start: float, seconds: float | None,
            error: str | None = None, steps: int = 2) -> Trajectory:
    t = Trajectory(run_id=run_id, instance_id=iid, status=TrajectoryStatus(status), created_at=start, error=error,
                   finished_at=None if seconds is None else start + seconds,
                   steps=[step(i, start + i) for i in range(steps)])
    store.put_trajectory(t)
    return t


def instances(store: RunStore, run_id: str, states: dict[str, str]) -> None:
    for iid, state in states.items():
        store.put_instance(run_id, TaskInstance(instance_id=iid, suite="bundled", problem_statement="x"), state)


def run_app(path: Path, body, clock=None, size=(100, 30), **kw) -> None:
    async def go():
        app = EvolveApp(path, poll=0.2, clock=clock or (lambda: T0), **kw)
        app.animation_level = "none"
        async with app.run_test(size=size) as pilot:
            await settle(app, pilot)
            await body(app, pilot)
    asyncio.run(go())


async def wait_until(app, pilot, cond, what: str, timeout: float = 20.0):
    end = time.time() + timeout
    while time.time() < end:
        got = cond()
        if got:
            return got
        await pilot.pause(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def text_of(screen, selector: str) -> str:
    return str(screen.query_one(selector).render())


def cells(table) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def test_progress_counts_only_finished_work_and_stopped_episodes_are_not_agent_errors(tmp_path: Path):
    """A stopped run: one instance done, one interrupted (its episode cut), one never started. The old dashboard said
    "3/3 done" (everything not pending or running) and counted the cut episode as an agent error."""
    out = tmp_path / "stopped"
    with RunStore(out) as store:
        store.put_run("stopped", "run", {"workers": 2}, status="stopped")
        instances(store, "stopped", {"a": "done", "b": "interrupted", "c": "pending"})
        episode(store, "stopped", "a", "submitted", T0 - 300, 100)
        episode(store, "stopped", "b", "error", T0 - 250, 40, error=INTERRUPTED)
        episode(store, "stopped", "c", "error", T0 - 200, 30, error="the agent crashed")

    async def body(app, pilot):
        dash = app.screen
        assert isinstance(dash, DashboardScreen)
        await wait_until(app, pilot, lambda: dash.ov is not None, "the aggregates")
        eta = text_of(dash, "#eta")
        assert "1/3 done" in eta and "1 queued" in eta and "1 interrupted" in eta, eta
        assert "ETA" not in eta and "stopped" in eta, eta  # nothing runs: no estimate
        bar = dash.query_one("#progress")
        assert bar.progress == 1 and bar.total == 3
        counts = text_of(dash, "#counts")
        assert "agent errors 1" in counts and "stopped 1" in counts, counts
        rows = {r[0]: r for r in cells(dash.query_one("#trajs"))}
        assert rows["b"][1] == "stopped" and rows["c"][1] == "error"
        await pilot.press("escape")
        await settle(app, pilot)
        runs = app.screen
        assert isinstance(runs, RunsScreen)
        assert cells(runs.query_one("#runs"))[0][3] == "1/3"
    run_app(out, body)


def test_eta_from_completed_work_counts_down_and_times_move_without_store_writes(tmp_path: Path):
    """Two completed episodes of 60 s, one interrupted after 1 s (no measure of the work), one running for 20 s, two
    queued, one worker: 40 s + 2 x 60 s = 160 s left. Ten seconds later, with no store write, 150 s, and the running
    episode's time cell says 30 s. The old ETA (the pace of recent finishes, interrupted ones included) froze."""
    out = tmp_path / "live"
    now = [T0]
    with RunStore(out) as store:
        store.put_run("live", "run", {"workers": 1})
        instances(store, "live", {"a": "done", "b": "done", "c": "running", "d": "pending", "e": "interrupted"})
        episode(store, "live", "a", "submitted", T0 - 200, 60)
        episode(store, "live", "b", "submitted", T0 - 130, 60)
        episode(store, "live", "e", "error", T0 - 60, 1, error=INTERRUPTED)
        episode(store, "live", "c", "running", T0 - 20, None)

    async def body(app, pilot):
        dash = app.screen
        await wait_until(app, pilot, lambda: dash.ov is not None, "the aggregates")
        assert "ETA 2m40s" in text_of(dash, "#eta"), text_of(dash, "#eta")
        running = next(i for i, r in enumerate(dash.rows) if r["instance_id"] == "c")
        assert str(dash.query_one("#trajs").get_row_at(running)[4]) == "20.0s"
        now[0] += 10
        await wait_until(app, pilot, lambda: "ETA 2m30s" in text_of(dash, "#eta"), "the ETA to count down")
        await wait_until(app, pilot, lambda: str(dash.query_one("#trajs").get_row_at(running)[4]) == "30.0s",
                         "the running time to move on")
    run_app(out, body, clock=lambda: now[0])


def test_a_finished_run_shows_no_eta(tmp_path: Path):
    out = tmp_path / "done"
    with RunStore(out) as store:
        store.put_run("done", "run", {"workers": 1}, status="finished")
        instances(store, "done", {"a": "done", "b": "done"})
        episode(store, "done", "a", "submitted", T0 - 200, 60)
        episode(store, "done", "b", "submitted", T0 - 130, 60)

    async def body(app, pilot):
        dash = app.screen
        await wait_until(app, pilot, lambda: dash.ov is not None, "the aggregates")
        assert "2/2 done" in text_of(dash, "#eta") and "ETA" not in text_of(dash, "#eta")
        await pilot.press("s")  # the stop dialog is not offered for a finished run
        await pilot.pause()
        assert isinstance(app.screen, DashboardScreen)
    run_app(out, body)


def test_updated_sees_new_steps_and_moves_on_its_own(tmp_path: Path):
    """"updated … ago" of the runs list: from the newest step of a running episode (steps were not counted), and it
    moves with the clock between store writes."""
    out = tmp_path / "steps"
    now = [T0]
    with RunStore(out) as store:
        store.put_run("steps", "run", {})
        store._write("UPDATE runs SET created_at=?, updated_at=?", (T0 - 500, T0 - 500))
        instances(store, "steps", {"a": "running"})
        store._write("UPDATE instances SET updated_at=?", (T0 - 500,))
        t = episode(store, "steps", "a", "running", T0 - 400, None, steps=1)

    def updated(app) -> str:
        return cells(app.screen.query_one("#runs"))[0][7]

    async def body(app, pilot):
        assert updated(app) == "6m38s ago"  # the step that started at T0-400 ended 1.5 s later
        with RunStore(out) as store:
            store.append_step(t.id, step(1, T0 - 12))
        await wait_until(app, pilot, lambda: updated(app) == "10.5s ago", "a new step to count as activity")
        now[0] += 5
        await wait_until(app, pilot, lambda: updated(app) == "15.5s ago", "the age to move on")
    run_app(out, body, clock=lambda: now[0], open_single=False)


HOLDER = """
import sys, time
from evolve.run.run_lock import RunLock
from evolve.store import RunStore
out = sys.argv[1]
with RunLock(out, "evolve run bundled"), RunStore(out) as store:
    store.put_run("held", "run", {"workers": 1})
    print("ready", flush=True)
    time.sleep(600)
"""


def test_a_run_whose_process_died_shows_dead(tmp_path: Path):
    """A real process holds the run lock and says `running`; SIGKILLed, its store still says `running` (nothing
    could write otherwise): the runs list and the dashboard say `dead`, and the stop dialog is not offered."""
    out = tmp_path / "held"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert proc.stdout.readline().strip() == "ready"

        async def body(app, pilot):
            runs = app.screen
            assert cells(runs.query_one("#runs"))[0][2] == "running"
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            await wait_until(app, pilot, lambda: cells(runs.query_one("#runs"))[0][2] == "dead", "dead")
            await pilot.press("enter")
            await settle(app, pilot)
            dash = app.screen
            await wait_until(app, pilot, lambda: "dead" in text_of(dash, "#eta"), "dead on the dashboard")
            await pilot.press("s")
            await pilot.pause()
            assert isinstance(app.screen, DashboardScreen)
        run_app(out, body, open_single=False)
    finally:
        if proc.poll() is None:
            proc.kill()
    with RunStore(out, readonly=True) as store:
        assert store.runs()[0]["status"] == "running"  # the store alone cannot tell


def test_generation_rate_is_live(tmp_path: Path):
    """tokens/s of generation: the completion tokens of the last minute's steps of running episodes, on the dashboard
    while the run generates (the store's real times: steps that started seconds ago)."""
    out = tmp_path / "rate"
    now = time.time()
    with RunStore(out) as store:
        store.put_run("rate", "run", {"workers": 1})
        store._write("UPDATE runs SET created_at=?", (now - 30,))
        instances(store, "rate", {"a": "running"})
        t = Trajectory(run_id="rate", instance_id="a", created_at=now - 30,
                       steps=[step(i, now - 20 + i) for i in range(3)])
        store.put_trajectory(t)

    async def body(app, pilot):
        dash = app.screen
        await wait_until(app, pilot, lambda: dash.cost is not None, "the costs")
        # 15 completion tokens in the run's 30 s (and the seconds this test took to read them: at most 10 here)
        assert 15 / 40 < dash.cost["rate"] <= 15 / 30
        assert f"{dash.cost['rate']:.1f} tok/s" in text_of(dash, "#counts")
    run_app(out, body, clock=time.time)
