"""Live: another process runs a real episode (run_swe, Docker sandbox, scripted policy) and appends steps;
the inspector shows each new step within two seconds; the stop key asks the run to stop and it does."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evolve.store import DB_NAME, RunStore, StoreError
from tui.app import EvolveApp
from tui.screens.dashboard import DashboardScreen
from tui.screens.inspector import InspectorScreen
from tui.screens.dialogs import ConfirmScreen

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

SLOW_RUN = """
import json, sys
from agent.replay import ScriptedPolicy
from evolve.run.runner import RunConfig, run_swe
from tasks.registry import get_suite
suite = get_suite("bundled")
suite.build_images()
inst = suite.instances()[0]
step = '<think>wait</think>\\n<tool_call>\\n' + json.dumps({"name": "bash", "parameters": {"command": "sleep 0.7; echo tick"}}) + '\\n</tool_call>'
cfg = RunConfig(suite="bundled", instances=[inst.instance_id], out=sys.argv[1], workers=1, max_steps=200, stop_grace=5)
report = run_swe(cfg, [inst], ScriptedPolicy([step] * 150))
print("STOPPED:", report.get("stopped"))
"""


def wait_for(cond, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _opened(out: Path) -> RunStore | None:
    try:
        return RunStore(out, readonly=True)
    except StoreError:
        return None


def test_new_steps_show_within_two_seconds_and_stop_request_stops_the_run(tmp_path: Path):
    out = tmp_path / "live"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (out / DB_NAME).exists(), 120, "the run store")
        watcher = wait_for(lambda: _opened(out), 30, "the run store's schema")  # the file comes before its tables

        def n_steps() -> int:
            ids = watcher.trajectory_ids(status="running")
            return len(watcher.get_trajectory(ids[0]).steps) if ids else 0

        wait_for(lambda: n_steps() >= 1, 120, "the first step")
        asyncio.run(_watch(out, watcher, n_steps, proc))
        output = proc.communicate(timeout=120)[0]
        assert proc.returncode == 0, output
        assert "STOPPED: stop requested" in output
        assert {r["id"]: r["status"] for r in watcher.runs()}["live"] == "stopped"
        watcher.close()
    finally:
        if proc.poll() is None:
            proc.kill()


async def _watch(out: Path, watcher: RunStore, n_steps, proc) -> None:
    app = EvolveApp(out, poll=0.5)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        dash = app.screen
        assert isinstance(dash, DashboardScreen)
        end = time.time() + 10
        while not dash.rows and time.time() < end:  # the first page is read when the screen first polls
            await pilot.pause(0.1)
        await pilot.press("enter")
        await pilot.pause()
        insp = app.screen
        assert isinstance(insp, InspectorScreen) and insp.loaded_status == "running"
        lags = []
        for _ in range(3):  # three new steps, each on screen within two seconds of being stored
            seen = n_steps()
            end = time.time() + 30
            while n_steps() == seen and time.time() < end:
                await pilot.pause(0.05)
            stored_at, now_stored = time.time(), n_steps()
            assert now_stored > seen, "the run stopped appending steps"
            while insp.query_one("#steps").row_count < now_stored and time.time() - stored_at < 5:
                await pilot.pause(0.05)
            lags.append(time.time() - stored_at)
            assert insp.query_one("#steps").row_count >= now_stored
            assert insp.step_idx == insp.query_one("#steps").row_count - 1  # follows the newest step
        print("new step on screen after (s):", [round(x, 2) for x in lags])
        assert max(lags) < 2.0, lags
        await pilot.press("escape", "s")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await pilot.pause()
        assert watcher.stop_requested("live")
        start = time.time()
        while proc.poll() is None and time.time() - start < 90:
            await pilot.pause(0.2)
        assert proc.poll() is not None, "the run did not stop after the stop request"
        end = time.time() + 5  # the dashboard picks up the end of the run
        while "running" in str(dash.query_one("#counts").render()) and time.time() < end:
            await pilot.pause(0.2)
        assert "running" not in str(dash.query_one("#counts").render())
