"""Every TUI screen against stores made by real runs of the project's own code: `run_swe` (Docker sandboxes,
graded in fresh ones) with a scripted policy, `run_toolcall` with scripted answers, plus tree nodes, outcomes
and training steps written through the store API as HGM, Agent-R, SE-Agent and the trainer write them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from evolve.store import RunStore
from tests.tui_fixtures import real_runs, settle
from tui.app import EvolveApp
from tui.screens.dashboard import DashboardScreen
from tui.screens.inspector import InspectorScreen
from tui.screens.dialogs import PickScreen
from tui.screens.runs import RunsScreen
from tui.screens.training import METRICS, TrainingScreen
from tui.screens.tree import TreeScreen
from tui.stats import hgm_stats

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("runs")
    return root, real_runs(root)


def run_app(root: Path, body, size=(100, 32), **kw) -> None:
    async def go():
        app = EvolveApp(root, poll=0.2, open_single=False, **kw)
        app.animation_level = "none"
        async with app.run_test(size=size) as pilot:
            await settle(app, pilot)
            await body(app, pilot)
    asyncio.run(go())


async def open_run(app, pilot, run_id: str):
    runs = app.screen
    assert isinstance(runs, RunsScreen)
    runs.query_one("#runs").move_cursor(row=[r.run_id for r in runs.runs].index(run_id))
    await pilot.press("enter")
    await settle(app, pilot)
    return app.screen


def cells(table) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def test_runs_screen_lists_every_run_with_progress_and_score(root):
    path, made = root

    async def body(app, pilot):
        rows = {r[0]: r for r in cells(app.screen.query_one("#runs"))}
        assert set(rows) == {"swe", "hgm-run", "toolcall", "train"}
        assert rows["swe"][1] == "run" and rows["swe"][3] == "2/2" and rows["swe"][4] == "1/2 resolved"
        assert made["report"]["resolved"] == 1
        assert rows["toolcall"][3] == "6/6" and rows["toolcall"][4].startswith("toolrl ")
        assert rows["train"][1] == "train" and rows["train"][3] == "30 steps"
    run_app(path, body)


def test_dashboard_shows_progress_statuses_table_histogram_and_events(root):
    path, made = root

    async def body(app, pilot):
        dash = await open_run(app, pilot, "swe")
        assert isinstance(dash, DashboardScreen)
        await settle(app, pilot)
        assert "2/2 done" in str(dash.query_one("#eta").render())
        with RunStore(path / "swe", readonly=True) as store:
            want = {r["id"]: r for r in store.trajectory_page("swe")[1]}
        table = cells(dash.query_one("#trajs"))
        assert len(table) == len(want) == 3  # two episodes and the SE-Agent revision
        resolved = [r for r in table if r[5] == "yes"]
        assert len(resolved) == 1 and resolved[0][0] == made["gold"].instance_id
        assert "submitted" in str(dash.query_one("#counts").render())
        hist = dash.query_one("#hist")
        combined = sorted(r["rewards"]["combined"]["total"] for r in want.values() if "combined" in r["rewards"])
        assert len(combined) == 2 and sorted(hist.values) == combined  # each graded episode's combined reward
        log = "\n".join(str(line.text) for line in dash.query_one("#events").lines)
        for inst in {r["instance_id"] for r in want.values()}:  # what the CLI printed, in words (issue 22, item 8)
            mine = [line for line in log.splitlines() if inst in line]
            assert any(line.endswith("starting sandbox") for line in mine) and any("grading" in line for line in mine)
            assert any(line.endswith("done") for line in mine), log
    run_app(path, body)


def test_inspector_steps_keys_tabs_search_export_and_branches(root, tmp_path):
    path, made = root

    async def body(app, pilot):
        dash = await open_run(app, pilot, "swe")
        dash.query_one("#trajs").move_cursor(row=[r["instance_id"] for r in dash.rows].index(made["gold"].instance_id))
        await pilot.press("enter")
        await settle(app, pilot)
        insp = app.screen
        assert isinstance(insp, InspectorScreen)
        traj = insp.traj
        assert [s.tool_calls[0].name for s in traj.steps] == ["create", "bash", "submit"]
        assert insp.query_one("#steps").row_count == 3 and "Step 1/3" in insp.title
        await pilot.press("l")
        assert insp.step_idx == 1 and "git apply" in str(insp.query_one("#calls").render())
        await pilot.press("dollar_sign")
        assert insp.step_idx == 2
        await pilot.press("0")
        assert insp.step_idx == 0
        await pilot.press("h")  # already first: stays
        assert insp.step_idx == 0
        await pilot.press("slash", *"git status", "enter")
        await settle(app, pilot)
        assert insp.step_idx == 1
        await pilot.press("e", "E")
        await settle(app, pilot)
        step_file = tmp_path / "exp" / f"{traj.id}.step002.md"
        assert "git apply /tmp/fix.diff" in step_file.read_text()
        doc = json.loads((tmp_path / "exp" / f"{traj.id}.json").read_text())
        assert doc["rewards"]["swe"]["total"] == 1.0 and doc["test_report"]["resolved"] is True
        assert len(doc["trajectory"]["steps"]) == 3
        await pilot.press("v")  # rewards
        assert [r[0] for r in cells(insp.query_one("#reward-table")) if r[0]] == ["swe", "combined"] or \
            {r[0] for r in cells(insp.query_one("#reward-table")) if r[0]} == {"swe", "combined"}
        await pilot.press("v")  # tests: each FAIL_TO_PASS / PASS_TO_PASS test with its status
        tests = insp.test_rows  # (group, test, status); a cell may show a long name cut in its middle
        gold = made["gold"]
        assert {t[1] for t in tests if t[0] == "FAIL_TO_PASS"} == set(gold.FAIL_TO_PASS)
        assert all(t[2] == "PASSED" for t in tests)
        assert len(cells(insp.query_one("#test-table"))) == len(tests)
        await pilot.press("v")  # patch
        assert "+++" in str(insp.query_one("#patch-text").render())
        await pilot.press("b")  # the SE-Agent revision branches from this trajectory
        await settle(app, pilot)
        assert isinstance(app.screen, PickScreen)
        await pilot.press("enter")
        await settle(app, pilot)
        child = app.screen
        assert isinstance(child, InspectorScreen) and child.traj.id == "revision-1"
        assert child.traj.parent_id == traj.id and child.query_one("#steps").row_count == 2
        await pilot.press("p")
        await settle(app, pilot)
        assert isinstance(app.screen, InspectorScreen) and app.screen.traj.id == traj.id
        await pilot.press("escape", "escape")
        await settle(app, pilot)
        assert app.screen is insp
        await pilot.press("L")  # next trajectory of the run list
        await settle(app, pilot)
        assert insp.traj.id != traj.id and insp.nav.pos == 1
        await pilot.press("H")
        await settle(app, pilot)
        assert insp.traj.id == traj.id
    run_app(path, body, export_dir=tmp_path / "exp")


def test_tree_screen_hgm_counts_best_belief_and_drill_down(root):
    path, made = root

    async def body(app, pilot):
        app.open_tree(path / "swe")
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, TreeScreen)
        with RunStore(path / "swe", readonly=True) as store:
            hgm = store.tree(kind="hgm")
            st = hgm_stats(hgm, store.outcomes())
        best = max((s.quantile, nid) for nid, s in st.items() if s.own_s + s.own_f)[1]
        assert screen.best["hgm-run"] == best == "n-a"  # 5/6 beats the root's 6/10 at the 1% quantile
        labels = {nid: str(w.label) for nid, w in screen.widgets.items()}
        assert labels["n-a"].startswith("★ add undo tool 5/6 (8/9)")
        assert "6/10 (16/25)" in labels["n-root"] and "rejected" in labels["n-d"]
        assert {"m-1", "m-2", "se-0", "se-1"} <= set(labels) and "0/2 terminal" in labels["m-2"]
        tree = screen.query_one("#tree")
        tree.move_cursor(screen.widgets["n-d"])
        await settle(app, pilot)
        assert "variant.yaml: unknown field" in str(screen.query_one("#node-text").render())
        tree.move_cursor(screen.widgets["n-a"])
        await settle(app, pilot)
        assert "CMP estimate 0.889" in str(screen.query_one("#node-text").render())
        assert "+tools: [bash, undo]" in str(screen.query_one("#diff-text").render())
        assert "give it undo" in str(screen.query_one("#diagnosis-text").render())
        assert screen.query_one("#eval-table").row_count == 6
        tree.move_cursor(screen.widgets["n-root"])
        await settle(app, pilot)
        await pilot.press("o")  # the root has no own trajectory: o focuses its evaluations
        await settle(app, pilot)
        await pilot.press("enter")  # the first evaluation opens its (real) trajectory
        await settle(app, pilot)
        assert isinstance(app.screen, InspectorScreen) and app.screen.traj.id == made["trajectory_ids"][0]
        await pilot.press("escape")
        await settle(app, pilot)
        tree.move_cursor(screen.widgets["se-1"])  # an SE-Agent node opens its trajectory
        await settle(app, pilot)
        await pilot.press("o")
        await settle(app, pilot)
        assert isinstance(app.screen, InspectorScreen) and app.screen.traj.id == "revision-1"
    run_app(path, body)


def test_training_screen_plots_each_metric_of_the_version(root):
    path, made = root

    async def body(app, pilot):
        await open_run(app, pilot, "train")
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, TrainingScreen) and screen.selected == made["version"].id
        with RunStore(path / "train", readonly=True) as store:
            steps = store.train_steps(made["version"].id)
        for m in METRICS:
            plot = screen.query_one(f"#plot-{m}")
            label, xs, ys = plot.series[0]
            assert label == made["version"].id and ys == [s.metrics[m] for s in steps] and xs == list(range(30))
        assert set(screen.widgets) == {"base-tiny", "v-grpo1"}
        assert screen.widgets["v-grpo1"].parent is screen.widgets["base-tiny"]
    run_app(path, body)
