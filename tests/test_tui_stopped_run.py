"""A real `evolve run bundled` (run_swe, Docker sandboxes, a scripted policy) stopped while its first episode runs,
then resumed, as the TUI shows it (issue 22, items 1 and 4): the queued instance never started and stays `pending`
(it was stored as `interrupted`), the cut episode is `stopped`, not an agent error, and progress counts neither as
done; after the resume both are done."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from evolve.run.runner import RunConfig, run_swe
from evolve.store import RunStore
from tests.test_run_robustness import pair, policy_for, when_sleeping  # noqa: F401 - `pair` is a fixture
from tests.tui_fixtures import settle
from tui.app import EvolveApp
from tui.screens.dashboard import DashboardScreen

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]


async def _dashboard(out: Path) -> tuple[str, str, tuple[float, float], list[str]]:
    app = EvolveApp(out, poll=0.2)
    app.animation_level = "none"
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        dash = app.screen
        assert isinstance(dash, DashboardScreen)
        end = time.time() + 20
        while dash.ov is None and time.time() < end:
            await pilot.pause(0.1)
        bar = dash.query_one("#progress")
        statuses = [str(dash.query_one("#trajs").get_row_at(i)[1]) for i in range(dash.query_one("#trajs").row_count)]
        return (str(dash.query_one("#eta").render()), str(dash.query_one("#counts").render()),
                (bar.progress, bar.total), statuses)


def test_a_stopped_run_keeps_its_queued_instance_pending_and_shows_nothing_as_done(pair, tmp_path: Path):  # noqa: F811
    a, b = pair
    out = tmp_path / f"stop-{uuid.uuid4().hex[:8]}"
    policy = policy_for(pair, sleepers=[a.instance_id])

    def request(container) -> None:
        with RunStore(out) as other:
            other.request_stop(out.name)

    requester = when_sleeping(policy, out.name, request)
    cfg = RunConfig(instances=[a.instance_id, b.instance_id], out=str(out), workers=1, stop_grace=20)
    report = run_swe(cfg, list(pair), policy)
    requester.join(5)
    assert report["stopped"] == "stop requested"
    with RunStore(out, readonly=True) as store:
        assert store.instance_status(out.name) == {a.instance_id: "interrupted", b.instance_id: "pending"}
    eta, counts, (done, total), statuses = asyncio.run(_dashboard(out))
    assert "0/2 done" in eta and "1 queued" in eta and "1 interrupted" in eta and "ETA" not in eta, eta
    assert (done, total) == (0, 2)
    assert "stopped 1" in counts and "agent errors" not in counts, counts
    assert statuses == ["stopped"]
    again = run_swe(cfg, list(pair), policy_for(pair))
    assert again["resolved"] == 2
    eta, counts, (done, total), statuses = asyncio.run(_dashboard(out))
    assert "2/2 done" in eta and (done, total) == (2, 2), eta
    assert sorted(statuses) == ["stopped", "submitted", "submitted"]
