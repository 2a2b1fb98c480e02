"""What the TUI shows is readable and reachable (issue 22, items 8-13, 15, 17): the event log in words, followed and
filtered; HGM node details in words with the meta-agent's edit and the smoke episode openable; the evolution
layer's documents; 80x24 without silent cuts; scrolling, clicking a step, search highlights, literal `<think>`; two
runs with one id told apart; the tree's first open; the help screen; costs; sorting and filters. Stores are written
through the store API the way the runner, HGM, SE-Agent and Agent-R write them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from evolve.store import RunStore
from records import Message, Reward, Step, TaskInstance, TestReport, ToolCall, Trajectory, TrajectoryStatus, TreeNode
from tests.tui_fixtures import settle
from tui.app import EvolveApp
from tui.screens.dashboard import DashboardScreen
from tui.screens.documents import DocumentsScreen
from tui.screens.events import EventsScreen
from tui.screens.help import HelpScreen
from tui.screens.inspector import InspectorScreen
from tui.screens.runs import RunsScreen
from tui.screens.tree import TreeScreen

T0 = 1767225600.0
LONG = "astropy__astropy-{}-a-rather-long-instance-name-that-differs-at-the-end-{}"


def step(i: int, content: str, tool: float = 0.5) -> Step:
    return Step(index=i, response=Message(role="assistant", content=content),
                tool_calls=[ToolCall(name="bash", arguments={"command": f"echo {i}"})],
                observation=Message(role="tool", name="bash", content="line\n" * 80 + f"result {i}"),
                prompt_tokens=100, completion_tokens=20, policy_seconds=2.0, tool_seconds=tool, started_at=T0 + i)


def make_run(out: Path, run_id: str = "run") -> list[str]:
    """Three finished episodes with long instance names, rewards with several parts, a test report, a patch; events
    as the runner stores them."""
    ids = []
    with RunStore(out) as store:
        store.put_run(run_id, "run", {"workers": 2, "policy": "hf:/models/some/very/long/path/to/gemma3-270m"},
                      status="finished")
        for k in range(3):
            iid = LONG.format(k, k)
            store.put_instance(run_id, TaskInstance(instance_id=iid, suite="bundled", problem_statement="x"), "done")
            steps = [step(0, "<think>look first</think>\nI will list files"),
                     step(1, "I will run `echo '<think>'` to check the parser"),
                     step(2, "the needle is HERE in step three")]
            t = Trajectory(run_id=run_id, instance_id=iid, status=TrajectoryStatus.submitted, created_at=T0,
                           prompt=[Message(role="system", content="rule\n" * 100)],
                           finished_at=T0 + 30 + k, steps=steps,
                           patch="diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n"
                                 "-def add(a, b): return a - b\n+def add(a, b): return a + b\n" + " x = 1\n" * 60)
            store.put_trajectory(t)
            ids.append(t.id)
            store.put_reward(t.id, Reward(name="swe", total=float(k % 2), parts={"resolved": float(k % 2)}))
            store.put_reward(t.id, Reward(name="combined", total=0.5, parts={"swe": 1.0, "judge": 0.25},
                                          info={f"note{n}": "a long explanation " * 5 for n in range(40)}))
            store.put_test_report(t.id, TestReport(
                instance_id=iid, trajectory_id=t.id, patch_applied=True, resolved=bool(k % 2),
                fail_to_pass_success=[f"tests/test_calc.py::test_add_{n}" for n in range(40)],
                fail_to_pass_failure=["tests/test_calc.py::test_sub"]))
            for what in ("starting sandbox", "step 1", "step 2", "grading", "retrying after an infra error (1/2)"):
                store.log_event("progress", run_id=run_id, instance_id=iid, text=what)
        store.log_event("hgm", run_id=run_id, what="expand hgm-run:n1 -> hgm-run:n4: accepted")
    return ids


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


def render(widget) -> str:
    return str(widget.render())


def test_event_log_in_words_followed_and_filtered(tmp_path: Path):
    out = tmp_path / "run"
    make_run(out)

    async def body(app, pilot):
        dash = app.screen
        assert isinstance(dash, DashboardScreen)
        await until(pilot, lambda: dash.ov is not None, "the aggregates")
        log = "\n".join(line.text for line in dash.query_one("#events").lines)
        assert "starting sandbox" in log and "{" not in log, log
        assert len({line.split()[1] for line in log.splitlines() if "astropy" in line}) == 3, log  # told apart
        await pilot.press("e")
        await settle(app, pilot)
        events = app.screen
        assert isinstance(events, EventsScreen)
        await until(pilot, lambda: len(events.events) == 16, "every event")
        text = "\n".join(line.text for line in events.query_one("#event-log").lines)
        assert "node hgm-run:n1 expanded into hgm-run:n4:" in text  # (the line wraps on a narrow screen)
        assert "retrying after an infra error" in text
        await pilot.press("slash", *"grading", "enter")
        await settle(app, pilot)
        shown = [line.text for line in events.query_one("#event-log").lines if line.text.strip()]
        assert len(shown) == 3 and all("grading" in s for s in shown), shown
        assert events.follow
        await pilot.press("k")  # scrolling back stops following
        assert not events.follow and "paused" in events.sub_title
        await pilot.press("f")
        assert events.follow
        with RunStore(out) as store:
            store.log_event("progress", run_id="run", instance_id="x", text="grading again (1/2)")
        await until(pilot, lambda: any("grading again" in line.text for line in events.query_one("#event-log").lines),
                    "a new event to show live")
    run_app(out, body)


def test_80x24_cuts_with_an_ellipsis_and_the_footer_is_labelled(tmp_path: Path):
    out = tmp_path / "run"
    make_run(out)

    async def body(app, pilot):
        dash = app.screen
        await until(pilot, lambda: dash.ov is not None, "the aggregates")
        table = dash.query_one("#trajs")
        names = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
        assert all("…" in n for n in names) and len(set(names)) == 3 or \
            len(set(names)) == 3 and all(LONG.format(k, k) in names for k in range(3)), names
        assert sum(table.columns[c].width + 2 for c in table.columns) <= table.size.width  # nothing past the edge
        screen = app.export_screenshot()
        assert "palette" not in screen and "lette" not in screen
        await pilot.press("escape")
        await settle(app, pilot)
        runs = app.screen
        assert isinstance(runs, RunsScreen)
        policy = str(runs.query_one("#runs").get_row_at(0)[5])
        assert policy.startswith("…") and policy.endswith("-270m"), policy  # a spec is named by its end
    run_app(out, body, size=(80, 24))


def test_inspector_scrolls_every_view_clicks_steps_highlights_search_and_keeps_literal_think(tmp_path: Path):
    out = tmp_path / "run"
    make_run(out)

    async def body(app, pilot):
        dash = app.screen
        await until(pilot, lambda: dash.rows, "the table")
        await pilot.press("enter")
        await settle(app, pilot)
        insp = app.screen
        assert isinstance(insp, InspectorScreen)
        await pilot.click("#steps", offset=(2, 3))  # the header, then steps 1, 2: the third row is step 2
        await pilot.pause()
        assert insp.step_idx == 1
        response = render(insp.query_one("#response"))
        assert "echo '<think>'" in response, response  # a literal <think> is the response's own text
        await pilot.press("0")
        assert "look first" in render(insp.query_one("#thinking")) and "<think>" not in render(insp.query_one("#response"))
        for view in ("rewards", "tests", "patch", "info"):
            await pilot.press("v")
            await settle(app, pilot)
            assert insp.query_one("#views").active == view
            scroller = insp.scroller()
            for key, down in (("j", True), ("pagedown", True), ("k", False), ("pageup", False)):
                before = scroller.scroll_y  # each key on its own: the view shown scrolls
                await pilot.press(key)
                await pilot.pause()
                assert (scroller.scroll_y > before) if down else (scroller.scroll_y < before), (view, key)
        await pilot.press("v", "slash", *"needle", "enter")
        await settle(app, pilot)
        assert insp.step_idx == 2
        box = insp.query_one("#response")
        shown = box.render()
        hit = next(s for s in shown.spans if "yellow" in str(s.style))
        assert shown.plain[hit.start:hit.end].lower() == "needle"
    run_app(out, body)


def test_tests_view_filters_failures_and_keeps_columns_apart(tmp_path: Path):
    out = tmp_path / "run"
    make_run(out)

    async def body(app, pilot):
        dash = app.screen
        await until(pilot, lambda: dash.rows, "the table")
        await pilot.press("enter")
        await settle(app, pilot)
        insp = app.screen
        await pilot.press("v", "v")
        await settle(app, pilot)
        table = insp.query_one("#test-table")
        assert table.row_count == 41
        assert table.cell_padding >= 1  # a space between the columns
        await pilot.press("f")
        await settle(app, pilot)
        assert table.row_count == 1 and "test_sub" in str(table.get_row_at(0)[2])
    run_app(out, body)


def test_dashboard_sorts_and_filters_by_status_and_shows_costs(tmp_path: Path):
    out = tmp_path / "run"
    make_run(out)
    with RunStore(out) as store:
        store.put_trajectory(Trajectory(run_id="run", instance_id="zz-cut", status=TrajectoryStatus.budget_exhausted,
                                        created_at=T0, finished_at=T0 + 500, steps=[step(0, "x", tool=100.0)]))

    async def body(app, pilot):
        dash = app.screen
        await until(pilot, lambda: dash.cost is not None, "the costs")
        counts = render(dash.query_one("#counts"))
        assert "tok" in counts and "sandbox" in counts, counts
        assert dash.cost["sandbox_seconds"] == 3 * 1.5 + 100.0
        assert dash.cost["prompt"] + dash.cost["completion"] == 3 * 3 * 120 + 120
        await pilot.press("f", "f", "f")  # all -> running -> submitted -> budget_exhausted
        await settle(app, pilot)
        assert dash.status == "budget_exhausted" and [r["instance_id"] for r in dash.rows] == ["zz-cut"]
        await pilot.press("escape")
        await settle(app, pilot)
        await pilot.click("#trajs", offset=(4, 1))  # the header of a column (under the border): sorted by it
        await settle(app, pilot)
        assert dash.sort == "instance"
        await pilot.press("o")  # or cycle with o
        await settle(app, pilot)
        dash.sort, dash.descending = "time", True
        dash.load_page()
        assert dash.rows[0]["instance_id"] == "zz-cut"
        dash.descending = False
        dash.load_page()
        assert dash.rows[-1]["instance_id"] == "zz-cut"
    run_app(out, body)


def test_two_runs_with_one_id_are_told_apart(tmp_path: Path):
    make_run(tmp_path / "a" / "train")
    make_run(tmp_path / "b" / "train")
    with RunStore(tmp_path / "a" / "train") as s:
        s.put_run("run", "run", {}, status="finished")

    async def body(app, pilot):
        table = app.screen.query_one("#runs")
        labels = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
        assert sorted(labels) == ["run (a/train)", "run (b/train)"], labels
    run_app(tmp_path, body, open_single=False, size=(120, 30))


def test_hgm_node_details_in_words_and_its_edit_smoke_and_diagnosis_open(tmp_path: Path):
    out = tmp_path / "hgm"
    with RunStore(out) as store:
        store.put_run("hgm", "hgm", {}, status="finished")
        meta = Trajectory(run_id="hgm", instance_id="hgm-edit-n1", origin="hgm:meta", status=TrajectoryStatus.submitted,
                          steps=[step(0, "I edit the prompt")])
        smoke = Trajectory(run_id="hgm", instance_id="task-1", origin="hgm:smoke", status=TrajectoryStatus.submitted,
                           steps=[step(0, "smoke test")])
        store.put_trajectory(meta)
        store.put_trajectory(smoke)
        store.put_tree_node(TreeNode(id="hgm:n0", tree_id="hgm", kind="hgm", label="root", status="accepted"))
        store.put_tree_node(TreeNode(
            id="hgm:n1", parent_id="hgm:n0", tree_id="hgm", kind="hgm", label="retry failing tests", status="accepted",
            info={"diff": "--- a/prompts/system.md\n+++ b/prompts/system.md\n@@ -1 +1 @@\n-old\n+new\n",
                  "diagnosis": "The agent never reruns the tests.", "latency": 75.5, "started_at": T0,
                  "finished_at": T0 + 75.5, "tokens": 1234, "meta_trajectory_id": meta.id,
                  "validation": {"smoke": {"trajectory_id": smoke.id, "status": "submitted"}}}))
        store.put_document("hgm:diagnosis", "hgm:n1", {
            "parent": "hgm:n0", "topic": "task", "prompt": [{"role": "system", "content": "You diagnose agents."},
                                                            {"role": "user", "content": "Why did task-1 fail?"}],
            "reply": "It never reran the tests.", "problem_statement": "rerun tests"}, run_id="hgm")

    async def body(app, pilot):
        await pilot.press("t")
        await settle(app, pilot)
        tree = app.screen
        assert isinstance(tree, TreeScreen)
        first = render(tree.query_one("#node-text"))
        assert "hgm tree hgm: 2 nodes" in first  # the first open shows the first tree, not an empty pane
        tree.query_one("#tree").move_cursor(tree.widgets["hgm:n1"])
        await settle(app, pilot)
        text = render(tree.query_one("#node-text"))
        assert "latency: 1m16s" in text and "2026-01-01" in text and str(int(T0)) not in text, text
        assert "(m: open)" in text and "(x: open)" in text
        await pilot.press("v", "v")
        diag = render(tree.query_one("#diagnosis-text"))
        assert "[user]" in diag and "Why did task-1 fail?" in diag and "It never reran the tests." in diag, diag
        await pilot.press("m")
        await settle(app, pilot)
        assert isinstance(app.screen, InspectorScreen) and app.screen.tid == meta.id
        await pilot.press("escape", "x")
        await settle(app, pilot)
        assert isinstance(app.screen, InspectorScreen) and app.screen.tid == smoke.id
    run_app(out, body, open_single=False)


def test_documents_of_se_agent_and_agent_r_are_readable_and_open_their_trajectories(tmp_path: Path):
    out = tmp_path / "ar"
    with RunStore(out) as store:
        store.put_run("ar", "agent-r", {}, status="finished")
        low = Trajectory(run_id="ar-it1", instance_id="i1", status=TrajectoryStatus.error, steps=[step(0, "bad")])
        high = Trajectory(run_id="ar-it1", instance_id="i1", status=TrajectoryStatus.submitted, steps=[step(0, "good")])
        store.put_trajectory(low)
        store.put_trajectory(high)
        store.put_document("agent-r:pair", "ar-it1/i1/0", {"low": low.id, "high": high.id, "branch": 1,
                                                           "rewards": [0.0, 1.0]}, run_id="ar-it1")
        store.put_document("agent-r:verdict", "ar-it1/i1/x/1", {"replies": ["Judgment: Bad"], "k": 1}, run_id="ar-it1")
        store.put_document("se-agent:operator", "i1/02", {"operator": "revision", "instance_id": "i1",
                                                         "text": "Try reading the failing test first.\nThen fix.",
                                                         "sources": [low.id]}, run_id="ar")

    async def body(app, pilot):
        dash = app.screen
        assert isinstance(dash, DashboardScreen)
        await until(pilot, lambda: dash.total == 2, "the iteration's trajectories on the run's dashboard")
        await pilot.press("d")
        await settle(app, pilot)
        docs = app.screen
        assert isinstance(docs, DocumentsScreen)
        assert set(docs.kinds) == {"agent-r:pair", "agent-r:verdict", "se-agent:operator"}
        tree = docs.query_one("#doc-tree")
        tree.move_cursor(docs.groups["se-agent:operator"])
        await pilot.press("enter")  # expand: the documents of the kind
        await settle(app, pilot)
        await pilot.press("down")
        await settle(app, pilot)
        text = render(docs.query_one("#doc-text"))
        assert "Try reading the failing test first." in text and "operator: revision" in text, text
        await pilot.press("o")
        await settle(app, pilot)
        assert isinstance(app.screen, InspectorScreen) and app.screen.tid == low.id
    run_app(out, body)


def test_help_lists_the_keys_of_the_screen_it_opens_on(tmp_path: Path):
    out = tmp_path / "run"
    make_run(out)

    async def body(app, pilot):
        await pilot.press("question_mark")
        await settle(app, pilot)
        helper = app.screen
        assert isinstance(helper, HelpScreen)
        does = {r[1] for r in helper.rows}
        assert {"Status", "Sort", "Events", "Inspect", "Help"} <= does, does
        await pilot.press("escape", "enter")
        await settle(app, pilot)
        await pilot.press("f1")
        await settle(app, pilot)
        assert isinstance(app.screen, HelpScreen)
        assert {"Next step", "Search", "Export step"} <= {r[1] for r in app.screen.rows}
        await pilot.press("f1")
        assert isinstance(app.screen, InspectorScreen)
    run_app(out, body)
