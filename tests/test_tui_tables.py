"""Gaps the audit of issue 22 found untested: the runs list's status filter and sorting (item 17), syntax-highlighted
diffs in the patch view and the tree's diff view (item 17), the Tests view at 80x24 (item 11: long test names cut
with an ellipsis where they differ, columns apart, the highlighted test's name whole), each trajectory's tokens/s
and sandbox time (item 15), and HGM's scheduler decisions of a real (simulated-world) search said in words
(item 10). Stores are written through the store API as the runner writes them, or by the project's own HGM
search."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rich.text import Text as RichText
from textual.color import Color
from textual.content import Content

from evolve.hgm.config import HGMConfig
from evolve.hgm.search import open_search, run_search
from evolve.hgm.sim import MismatchWorld
from evolve.store import RunStore
from records import Message, Step, TaskInstance, TestReport, ToolCall, Trajectory, TrajectoryStatus, TreeNode
from tests.tui_fixtures import settle
from tui.app import EvolveApp
from tui.diff import ADDED, REMOVED
from tui.screens.dashboard import DashboardScreen
from tui.screens.documents import DocumentsScreen
from tui.screens.inspector import InspectorScreen
from tui.screens.runs import RunsScreen
from tui.screens.tree import TreeScreen

T0 = 1767225600.0
PATCH = ("diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n@@ -1,3 +1,3 @@ def add\n"
         "-def add(a, b):  # adds\n+def add(a: int, b: int) -> int:  # adds\n     return a + b\n")
TEST = "tests/unit/test_a_rather_long_module_name_for_the_parser.py::TestTheParser::test_case_{:02d}"


def step(i: int) -> Step:
    return Step(index=i, response=Message(role="assistant", content=f"step {i}"),
                tool_calls=[ToolCall(name="bash", arguments={"command": f"echo {i}"})],
                observation=Message(role="tool", name="bash", content=f"{i}"), prompt_tokens=100,
                completion_tokens=30, policy_seconds=2.0, tool_seconds=0.25, started_at=T0 + i)


def one_run(out: Path, run_id: str, status: str, created: float, n_done: int = 1) -> Trajectory:
    """A run of `n_done` finished episodes (the last with a patch and a long test report)."""
    with RunStore(out) as store:
        store.put_run(run_id, "run", {"workers": 1, "policy": f"hf:{run_id}"}, status=status)
        store._write("UPDATE runs SET created_at=?, updated_at=?", (created, created))
        for k in range(n_done):
            iid = f"{run_id}-task-{k}"
            store.put_instance(run_id, TaskInstance(instance_id=iid, suite="bundled", problem_statement="x"), "done")
            t = Trajectory(run_id=run_id, instance_id=iid, status=TrajectoryStatus.submitted, created_at=T0,
                           finished_at=T0 + 40, steps=[step(i) for i in range(4)], patch=PATCH)
            store.put_trajectory(t)
        store.put_test_report(t.id, TestReport(
            instance_id=iid, trajectory_id=t.id, patch_applied=True, resolved=False,
            fail_to_pass_success=[TEST.format(n) for n in range(12)], fail_to_pass_failure=[TEST.format(99)]))
    return t


def run_app(path: Path, body, size=(100, 30), **kw) -> None:
    async def go():
        app = EvolveApp(path, poll=0.2, clock=lambda: T0 + 120, **kw)
        app.animation_level = "none"
        async with app.run_test(size=size) as pilot:
            await settle(app, pilot)
            await body(app, pilot)
    asyncio.run(go())


async def until(pilot, cond, what: str, timeout: float = 20.0):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def column(table, k: int) -> list[str]:
    return [str(table.get_row_at(i)[k]) for i in range(table.row_count)]


def test_runs_list_filters_by_status_and_sorts_by_any_column(tmp_path: Path):
    one_run(tmp_path / "b-stopped", "b-stopped", "stopped", T0 - 300, n_done=2)
    one_run(tmp_path / "c-finished", "c-finished", "finished", T0 - 200, n_done=3)
    one_run(tmp_path / "a-finished", "a-finished", "finished", T0 - 100, n_done=1)

    async def body(app, pilot):
        runs = app.screen
        assert isinstance(runs, RunsScreen)
        table = runs.query_one("#runs")
        assert column(table, 0) == ["b-stopped", "c-finished", "a-finished"]  # oldest first
        await pilot.press("f")  # running: none
        assert table.row_count == 0 and "no running run" in str(runs.query_one("#run-detail").render())
        await pilot.press("f", "f")  # dead, stopped
        assert runs.status == "stopped" and column(table, 0) == ["b-stopped"]
        assert table.border_title.startswith("runs: 1 of 3 · status stopped")
        await pilot.press("f")  # finished
        assert column(table, 0) == ["c-finished", "a-finished"]
        await pilot.press("f", "f", "f")  # done, error, every status
        assert runs.status is None and table.row_count == 3
        await pilot.press("o")  # by run id
        assert column(table, 0) == ["a-finished", "b-stopped", "c-finished"]
        await pilot.press("O")  # reversed
        assert column(table, 0) == ["c-finished", "b-stopped", "a-finished"]
        x = 2 + sum(c.width + 2 for c in list(table.columns.values())[:3])  # the "progress" header
        await pilot.click("#runs", offset=(x, 1))
        await pilot.pause()
        assert runs.sort == "progress" and column(table, 3) == ["1/1", "2/2", "3/3"]
        await pilot.click("#runs", offset=(x, 1))  # a second click reverses
        await pilot.pause()
        assert column(table, 3) == ["3/3", "2/2", "1/1"]
    run_app(tmp_path, body, open_single=False)


def line_of(text, start: str) -> tuple[int, int]:
    """(start, end) offsets of the first line of `text` that starts with `start`."""
    plain = text.plain
    at = plain.index("\n" + start) + 1
    return at, plain.index("\n", at)


def styles_over(text, lo: int, hi: int) -> list:
    return [s.style for s in text.spans if s.start < hi and s.end > lo]


def rgb(colour) -> tuple | None:
    return None if colour is None else (colour.r, colour.g, colour.b, colour.ansi)


def assert_highlighted(shown) -> None:
    """Added and removed lines tinted, their code coloured by token (several colours in a line), hunk headers apart
    (`shown`: what a Static renders, Textual's Content)."""
    text = Content.from_rich_text(shown) if isinstance(shown, RichText) else shown
    for sign, tint in (("+def add", ADDED), ("-def add", REMOVED)):
        lo, hi = line_of(text, sign)
        styles = styles_over(text, lo, hi)
        want = Color.parse(tint.split()[-1])
        assert any(rgb(s.background) == rgb(want) for s in styles), (sign, styles)
        colours = {rgb(s.foreground) for s in styles if s.foreground is not None}
        assert len(colours) >= 3, (sign, colours)  # the sign, keywords, names, comments: each its colour
    lo, hi = line_of(text, "@@ -1,3")
    assert any(s.foreground is not None and s.foreground.ansi == 6 for s in styles_over(text, lo, hi))  # cyan


def test_patches_and_variant_diffs_are_syntax_highlighted(tmp_path: Path):
    out = tmp_path / "run"
    one_run(out, "run", "finished", T0)
    with RunStore(out) as store:
        store.put_tree_node(TreeNode(id="hgm:n1", tree_id="hgm", kind="hgm", label="typed add", status="accepted",
                                     info={"diff": PATCH}))

    async def body(app, pilot):
        dash = app.screen
        await until(pilot, lambda: dash.rows, "the table")
        await pilot.press("enter")
        await settle(app, pilot)
        insp = app.screen
        assert isinstance(insp, InspectorScreen)
        await pilot.press("v", "v", "v")
        await settle(app, pilot)
        assert insp.query_one("#views").active == "patch"
        assert_highlighted(insp.query_one("#patch-text").render())
        await pilot.press("escape", "t")
        await settle(app, pilot)
        tree = app.screen
        assert isinstance(tree, TreeScreen)
        tree.query_one("#tree").move_cursor(tree.widgets["hgm:n1"])
        await pilot.press("v")
        await settle(app, pilot)
        assert_highlighted(tree.query_one("#diff-text").render())
    run_app(out, body)


def test_tests_view_at_80x24_cuts_names_where_they_differ_and_names_the_highlighted_test_whole(tmp_path: Path):
    out = tmp_path / "run"
    t = one_run(out, "run", "finished", T0)

    async def body(app, pilot):
        dash = app.screen
        await until(pilot, lambda: dash.rows, "the table")
        await pilot.press("enter")
        await settle(app, pilot)
        insp = app.screen
        await pilot.press("v", "v")
        await settle(app, pilot)
        table = insp.query_one("#test-table")
        names = column(table, 2)
        assert len(names) == 13 and len(set(names)) == 13, names  # every row told apart
        assert all("…" in n for n in names) and len({n[-2:] for n in names}) == 13, names  # cut mid-name: the ends kept
        widths = [c.width for c in table.columns.values()]
        assert sum(w + 2 * table.cell_padding for w in widths) <= table.scrollable_content_region.width
        text = [table.render_line(y).text for y in range(table.size.height)]
        assert any("FAIL_TO_PASS  PASSED" in line for line in text), text  # columns apart (they touched)
        await pilot.press("down", "down")
        await pilot.pause()
        whole = str(insp.query_one("#test-name").render())
        assert table.cursor_row == 2 and whole == insp.test_rows[2][1] and whole == TEST.format(int(names[2][-2:]))
        await pilot.press("v", "v")  # info: the trajectory's generation rate and sandbox time
        await settle(app, pilot)
        info = str(insp.query_one("#info-text").render())
        assert f"completion {4 * 30}" in info and "generation 15.0 tok/s" in info, info  # 120 tokens in 8 s
        assert "sandbox 1.0s" in info, info  # four tool calls of 0.25 s
    run_app(out, body, size=(80, 24))


def test_hgm_decisions_of_a_real_search_are_said_in_words(tmp_path: Path):
    """The project's HGM search over a simulated world (no model, no Docker), journaled into a run store as `evolve
    hgm` journals it: each `hgm:decision` document opens with what was decided, in words."""
    out = tmp_path / "sim"
    with RunStore(out) as store:
        store.put_run("sim", "hgm", {"budget": 12}, status="finished")
        world = MismatchWorld(5, n_tasks=6)
        sched = open_search(HGMConfig(budget=12, seed=5), world, store, "sim")
        run_search(sched, world, workers=1)
        decisions = store.documents("hgm:decision", run_id="sim")
    expand = next(d for _, d in decisions if d["kind"] == "expand")
    evaluate = next(d for _, d in decisions if d["kind"] == "evaluate")

    async def body(app, pilot):
        dash = app.screen
        assert isinstance(dash, DashboardScreen)
        await pilot.press("d")
        await settle(app, pilot)
        docs = app.screen
        assert isinstance(docs, DocumentsScreen)
        assert docs.kinds["hgm:decision"] == len(decisions)
        group = docs.groups["hgm:decision"]
        docs.query_one("#doc-tree").move_cursor(group)
        await pilot.press("enter")
        await settle(app, pilot)
        leaves = {str(leaf.data[2]): leaf for leaf in group.children if leaf.data}
        for d, said in ((expand, f"expand node {expand['node'].rsplit(':', 1)[-1]} into a new child "
                                 f"{expand['child'].rsplit(':', 1)[-1]}"),
                        (evaluate, f"evaluate node {evaluate['node'].rsplit(':', 1)[-1]} on task {evaluate['task']}")):
            docs.query_one("#doc-tree").move_cursor(leaves[f"sim:{d['seq']:07d}"])
            await settle(app, pilot)
            text = str(docs.query_one("#doc-text").render())
            assert f"decision {d['seq']}: {said}" in text, text
    run_app(out, body)
