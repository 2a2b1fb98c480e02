"""TUI on a deterministic store written through the store API: paging, per-screen snapshots (Textual's own
SVG screenshots compared with the committed ones), 80x24 layout. Real runs: test_tui_real_runs.py."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from evolve.store import RunStore
from tests.tui_fixtures import build, settle, write_synthetic_run
from tui.app import EvolveApp
from tui.screens.dashboard import MIN_PAGE, DashboardScreen
from tui.screens.inspector import InspectorScreen
from tui.screens.training import TrainingScreen
from tui.screens.tree import TreeScreen

SNAPSHOTS = Path(__file__).parent / "snapshots" / "tui"
T0 = 1767225600.0  # 2026-01-01 00:00 UTC


@pytest.fixture(scope="module")
def fixed_store(tmp_path_factory) -> Path:
    os.environ["TZ"] = "UTC"
    time.tzset()
    d = build(tmp_path_factory.mktemp("tui") / "synthetic")
    with RunStore(d) as store:  # fixed times, so screenshots do not change from run to run
        store._write("UPDATE runs SET created_at=?, updated_at=?", (T0, T0 + 60))
        store._write("UPDATE events SET ts=?", (T0 + 30,))
        store._write("UPDATE trajectories SET created_at=created_at-(SELECT MIN(created_at) FROM trajectories)+?, "
                     "finished_at=finished_at-(SELECT MIN(created_at) FROM trajectories)+?", (T0, T0))
        store._write("UPDATE instances SET updated_at=?", (T0,))
        store._write("UPDATE outcomes SET started_at=?, finished_at=?", (T0, T0 + 5))
        store._write("UPDATE tree_nodes SET created_at=?, data=json_set(data, '$.created_at', ?)", (T0, T0))
        store._write("UPDATE policy_versions SET created_at=?, data=json_set(data, '$.created_at', ?)", (T0, T0))
        store._write("UPDATE train_steps SET data=json_set(data, '$.created_at', ?)", (T0,))
    return d


def app_for(path: Path) -> EvolveApp:
    app = EvolveApp(path, open_single=False, clock=lambda: T0 + 120, poll=0.2)
    app.animation_level = "none"  # a tab underline caught mid-slide would make screenshots differ
    return app


async def check_snapshot(app: EvolveApp, pilot, name: str, tmp_path: Path) -> None:
    """The screen equals the committed SVG. Widgets settle on idle (a table sizes its columns then), so a
    differing screenshot is retaken for up to 3 s before the test fails: a real change stays different."""
    want = SNAPSHOTS / f"{name}.svg"
    if os.environ.get("UPDATE_TUI_SNAPSHOTS") or not want.exists():
        await settle(app, pilot)
        await pilot.pause(0.5)
        want.parent.mkdir(parents=True, exist_ok=True)
        want.write_text(app.export_screenshot(title=name))
        if not os.environ.get("UPDATE_TUI_SNAPSHOTS"):
            pytest.fail(f"wrote the missing snapshot {want}; check it and commit it")
    expected = want.read_text()
    end = time.time() + 3
    while True:
        svg = app.export_screenshot(title=name)
        if svg == expected or time.time() > end:
            break
        await pilot.pause(0.2)
    if svg != expected:
        (tmp_path / f"{name}.svg").write_text(svg)
        pytest.fail(f"screen {name} differs from {want}: see {tmp_path / (name + '.svg')} "
                    "(UPDATE_TUI_SNAPSHOTS=1 rewrites the snapshots after a deliberate change)")


def test_every_screen_at_80x24_matches_its_snapshot(fixed_store, tmp_path, monkeypatch):
    monkeypatch.chdir(fixed_store.parent)  # a relative path: the screens show it, and it is the same every run
    asyncio.run(_every_screen(Path(fixed_store.name), tmp_path))


async def _every_screen(fixed_store, tmp_path):
    app = app_for(fixed_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await check_snapshot(app, pilot, "runs", tmp_path)
        app.screen.query_one("#runs").move_cursor(row=[r.run_id for r in app.screen.runs].index("synthetic"))
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, DashboardScreen)
        await settle(app, pilot)
        await check_snapshot(app, pilot, "dashboard", tmp_path)
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, InspectorScreen)
        await pilot.press("l")
        await settle(app, pilot)
        await check_snapshot(app, pilot, "inspector", tmp_path)
        for view in ("rewards", "tests", "patch"):
            await pilot.press("v")
            await settle(app, pilot)
            await check_snapshot(app, pilot, f"inspector-{view}", tmp_path)
        await pilot.press("escape", "t")
        await settle(app, pilot)
        assert isinstance(app.screen, TreeScreen)
        await pilot.press("down", "down")
        await settle(app, pilot)
        await check_snapshot(app, pilot, "tree", tmp_path)
        await pilot.press("escape", "escape", "v")
        await settle(app, pilot)
        assert isinstance(app.screen, TrainingScreen)
        await check_snapshot(app, pilot, "training", tmp_path)


def test_paging_and_filter_over_many_trajectories(tmp_path):
    asyncio.run(_paging(tmp_path))


async def _paging(tmp_path):
    with RunStore(tmp_path / "big") as store:
        write_synthetic_run(store, "big", 250, 3)
    app = EvolveApp(tmp_path / "big", poll=0.2)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, DashboardScreen)  # one run: opened straight away
        table = screen.query_one("#trajs")

        def fills_the_table() -> bool:  # a page is exactly the rows the table shows: none hidden, none missing
            return table.virtual_size.height == table.scrollable_content_region.height

        size = screen.page_size
        assert MIN_PAGE <= size < 100 and fills_the_table() and table.row_count == size and screen.total == 250
        last = (249 // size) * size  # the offset of the last page
        await pilot.press(*["right_square_bracket"] * (last // size))
        await settle(app, pilot)
        assert screen.rows[0]["id"] == f"t{last:06d}" and table.row_count == 250 - last
        assert table.border_title.startswith(f"trajectories {last + 1}-250 of 250")
        await pilot.press("right_square_bracket")  # past the end: stays
        await settle(app, pilot)
        assert screen.rows[0]["id"] == f"t{last:06d}"
        await pilot.press("left_square_bracket", "down", "down")
        await settle(app, pilot)
        assert screen.rows[0]["id"] == f"t{last - size:06d}" and table.row_count == size
        under_cursor = screen.rows[table.cursor_row]["id"]
        await pilot.resize_terminal(100, 50)  # a taller table: larger pages, the row under the cursor kept
        await settle(app, pilot)
        assert screen.page_size > size and fills_the_table() and table.row_count == screen.page_size
        assert screen.page_offset % screen.page_size == 0 and screen.rows[table.cursor_row]["id"] == under_cursor
        await pilot.resize_terminal(100, 8)  # too short for MIN_PAGE rows: pages keep the minimum, scrolled
        await settle(app, pilot)
        assert screen.page_size == MIN_PAGE and table.row_count == MIN_PAGE
        await pilot.resize_terminal(100, 30)
        await settle(app, pilot)
        assert screen.page_size == size
        await pilot.press("slash", *"inst-0007", "enter")
        await settle(app, pilot)
        assert {r["instance_id"] for r in screen.rows} == {"inst-0007"} and table.row_count == 1
        await pilot.press("enter")
        await settle(app, pilot)
        insp = app.screen
        assert isinstance(insp, InspectorScreen) and insp.traj.id == "t000007"
        await pilot.press("L")  # next trajectory within the filtered list: none
        await settle(app, pilot)
        assert insp.traj.id == "t000007"
        await pilot.press("escape", "escape")  # back to the dashboard; escape again clears the filter
        await settle(app, pilot)
        assert screen.total == 250 and screen.search == ""


def test_cli_registers_tui_and_a_bad_path_is_one_line_exit_2(tmp_path):
    import subprocess
    import sys

    helped = subprocess.run([sys.executable, "-m", "evolve.cli", "tui", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "run directory" in helped.stdout
    bad = subprocess.run([sys.executable, "-m", "evolve.cli", "tui", str(tmp_path / "nope")], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr


def test_root_with_a_store_still_being_created_and_a_new_run_appearing(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "evolve.db").write_bytes(b"")  # a run that has not written its schema yet
    with RunStore(tmp_path / "first") as store:
        write_synthetic_run(store, "first", 3, 2)

    async def go():
        app = EvolveApp(tmp_path, poll=0.2, open_single=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app, pilot)
            assert [r.run_id for r in app.screen.runs] == ["first"]
            with RunStore(tmp_path / "second") as store:  # a new run directory appears under the root
                write_synthetic_run(store, "second", 2, 2)
            end = time.time() + 5
            while len(app.screen.runs) < 2 and time.time() < end:
                await pilot.pause(0.2)
                await app.workers.wait_for_complete()
            assert sorted(r.run_id for r in app.screen.runs) == ["first", "second"]
    asyncio.run(go())
