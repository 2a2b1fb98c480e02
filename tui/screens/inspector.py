"""The trajectory inspector: steps (thinking, tool calls, observation, timings, tokens, log-probs), rewards
with their parts, the test report per test, the patch; parents and branches; search; export to a file.

Keys follow mini-swe-agent's inspector where it has one: h/l (←/→) step, 0/$ first/last, j/k scroll,
H/L trajectory, e/E export step/trajectory, r thinking; plus / n N search, p parent, b branches, v views."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Footer, Header, Input, Static, TabbedContent, TabPane

from evolve.store import RunStore
from records import Step, TestReport, Trajectory
from tui.fast_table import FastTable
from tui.diff import diff_text
from tui.screens.base import LiveScreen
from tui.screens.dialogs import PickScreen
from tui.step_list import StepList
from tui.text import (clean, clip, duration, logprob_summary, report_lines, split_thinking, step_text, tool_names,
                      trajectory_export)
from tui.widgets import cell, fill_table

VIEWS = ("step", "rewards", "tests", "patch", "info")


@dataclass
class Nav:
    """Where the trajectory sits in the list it was opened from, so H/L move through that list."""

    run_id: str | list[str] | None
    search: str
    pos: int
    total: int
    status: str | None = None
    sort: str | None = None
    descending: bool = False

    def neighbour(self, store: RunStore, delta: int) -> str | None:
        pos = self.pos + delta
        if not 0 <= pos < self.total:
            return None
        self.total, rows = store.trajectory_page(self.run_id, search=self.search, status=self.status, sort=self.sort,
                                                 descending=self.descending, offset=pos, limit=1)
        if not rows:
            return None
        self.pos = pos
        return rows[0]["id"]


class InspectorScreen(LiveScreen):
    BINDINGS = [
        Binding("l,right", "step(1)", "Next step", key_display="l/→"),
        Binding("h,left", "step(-1)", "Prev step", key_display="h/←"),
        Binding("0,home", "first", "First", show=False),
        Binding("dollar_sign,end", "last", "Last", show=False),
        Binding("L", "traj(1)", "Next traj"),
        Binding("H", "traj(-1)", "Prev traj"),
        Binding("j,down", "scroll(1)", "Down", show=False),
        Binding("k,up", "scroll(-1)", "Up", show=False),
        Binding("pagedown,space", "page(1)", "Page down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("slash", "search", "Search"),
        Binding("n", "find(1)", "Next match", show=False),
        Binding("N", "find(-1)", "Prev match", show=False),
        Binding("e", "export_step", "Export step"),
        Binding("E", "export_traj", "Export traj", show=False),
        Binding("r", "thinking", "Thinking", show=False),
        Binding("v", "view", "View"),
        Binding("f", "failures", "Failures only", show=False),
        Binding("p", "parent", "Parent", show=False),
        Binding("b", "branches", "Branches", show=False),
        Binding("escape", "back", "Back"),
        Binding("q", "app.quit", "Quit", show=False),
    ]

    def __init__(self, store: RunStore, trajectory_id: str, nav: Nav | None = None) -> None:
        super().__init__()
        self.store = store
        self.tid = trajectory_id
        self.nav = nav
        self.traj: Trajectory | None = None
        self.step_idx = 0
        self.thinking = True
        self.failures_only = False
        self.test_rows: list[tuple[str, str, str]] = []
        """(group, test, status) of the rows of the Tests view (their cells may be cut; the highlighted one's name is
        shown whole)."""
        self.query_text = ""
        self.branch_rows: list[dict] = []
        self.loaded_status = ""
        self.filled: set[str] = set()
        self.ahead: dict[str, Trajectory] = {}
        """The finished trajectories next to this one in the list (H/L), read ahead in a worker thread."""
        self.neighbours: dict[tuple[int, int], tuple[str, int]] = {}
        """(position in the list, ±1) -> (the neighbour's id, the list's length), found by the same worker: `H`/`L`
        need no query of the list (a sorted or filtered list is a scan of the run)."""
        self.generation = 0
        """Counts the store changes seen; a trajectory read ahead before the latest one is dropped."""

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="insp-main"):
            yield StepList([("#", 3), ("tool", 7), ("tok", 5), ("time", 5)], id="steps")  # fixed: rows arrive live
            with TabbedContent(id="views", initial="step"):
                with TabPane("Step", id="step"):
                    with VerticalScroll(id="step-scroll"):
                        yield Static(id="step-head", markup=False)
                        yield Static(id="thinking", classes="box", markup=False)
                        yield Static(id="response", classes="box", markup=False)
                        yield Static(id="calls", classes="box", markup=False)
                        yield Static(id="observation", classes="box", markup=False)
                with TabPane("Rewards", id="rewards"):
                    yield FastTable(id="reward-table", cursor_type="row")
                with TabPane("Tests", id="tests"):
                    yield Static(id="test-head", markup=False)
                    yield Static(id="test-name", markup=False)
                    yield FastTable(id="test-table", cursor_type="row")
                with TabPane("Patch", id="patch"):
                    with VerticalScroll(id="patch-scroll"):
                        yield Static(id="patch-text", markup=False)
                with TabPane("Info", id="info"):
                    with VerticalScroll(id="info-scroll"):
                        yield Static(id="info-text", markup=False)
        yield Input(id="search", placeholder="search steps (enter: find, esc: close)")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        super().on_mount()
        for table, cols in (("#reward-table", (("reward", 10), ("total", 7), ("part", 16), ("value", 60))),
                            ("#test-table", (("group", 12), ("status", 8), ("test", 120)))):
            for col, width in cols:
                self.query_one(table, DataTable).add_column(col, key=col, width=width)
        self.query_one("#step-scroll").focus()

    def watched_stores(self):
        return [self.store]

    # --- loading ---------------------------------------------------------------------------------------
    def reload(self) -> None:
        """First load, or a live update: a running trajectory gets its new steps appended."""
        self.ahead.clear()
        self.neighbours.clear()
        self.generation += 1
        if self.traj is not None and self.traj.id == self.tid and self.loaded_status != "running":
            return
        self.load(keep_step=self.traj is not None and self.traj.id == self.tid)

    def load(self, keep_step: bool = False) -> None:
        try:
            traj = self.ahead.pop(self.tid, None) or self.store.get_trajectory(self.tid)
        except Exception as e:  # a header this version cannot read: say so instead of crashing the UI
            self.notify(f"cannot read trajectory {self.tid}: {e}", severity="error")
            return
        at_end = self.traj is not None and self.step_idx >= len(self.traj.steps) - 1
        old_len = len(self.traj.steps) if keep_step and self.traj else 0
        self.traj, self.loaded_status = traj, traj.status.value
        table = self.query_one("#steps", StepList)
        if not keep_step:
            table.clear()
            old_len = 0
        table.add_rows((s.index + 1, tool_names(s), s.prompt_tokens + s.completion_tokens,
                        duration(s.policy_seconds + s.tool_seconds)) for s in traj.steps[old_len:])
        if not keep_step:  # a running trajectory opens on its newest step and follows it while you stay there
            self.step_idx = len(traj.steps) - 1 if traj.status.value == "running" else 0
            self.branch_rows = []
            self.run_worker(lambda: self._read_branches(traj.id), thread=True, exclusive=True, group="branches")
            if self.nav is not None:
                nav, gen = Nav(**vars(self.nav)), self.generation
                self.call_after_refresh(  # after this trajectory is drawn, so the reading never delays it
                    self.run_worker, lambda: self._read_ahead(nav, gen), thread=True, exclusive=True, group="ahead")
            self.filled = set()  # the other views are filled when first shown
            self.fill_view()
        elif at_end:  # following a live trajectory: stay on its newest step
            self.step_idx = max(0, len(traj.steps) - 1)
        self.filled.discard("info")
        self.fill_view()
        self.show_step()

    def _read_branches(self, tid: str) -> None:
        """Trajectories that branch from this one (a scan of the table: off the UI thread)."""
        rows = self.evolve.source.background_store(self.store.dir).trajectory_page(parent_id=tid, limit=200)[1]
        self.app.call_from_thread(self._show_branches, tid, rows)

    def _read_ahead(self, nav: Nav, generation: int) -> None:
        """Read the previous and next trajectories of the list on their own connection (a worker thread)."""
        store = self.evolve.source.background_store(self.store.dir, lane="trajectories")
        read, found = {}, {}
        for delta in (1, -1):
            moved = Nav(**vars(nav))
            tid = moved.neighbour(store, delta)
            if tid is not None:
                found[(nav.pos, delta)] = (tid, moved.total)
            if tid is not None and tid not in self.ahead:
                read[tid] = store.get_trajectory(tid)
        self.app.call_from_thread(self._keep_ahead, read, generation, found)

    def _keep_ahead(self, read: dict[str, Trajectory], generation: int, found: dict | None = None) -> None:
        if generation != self.generation:  # the store changed meanwhile: read again when needed
            return
        if len(self.neighbours) > 500:
            self.neighbours.clear()
        self.neighbours.update(found or {})
        keep = {tid: t for tid, t in read.items() if t.status.value != "running"}  # a running one still grows
        self.ahead = {**{k: v for k, v in self.ahead.items() if k in keep}, **keep}

    def _show_branches(self, tid: str, rows: list[dict]) -> None:
        if self.traj is not None and self.traj.id == tid:
            self.branch_rows = rows
            self.filled.discard("info")
            self.fill_view()

    def fill_view(self) -> None:
        """Fill the visible view if it is not filled for this trajectory yet."""
        view = self.query_one("#views", TabbedContent).active
        if view in self.filled or view == "step" or self.traj is None:
            return
        self.filled.add(view)
        {"rewards": self.fill_rewards, "tests": self.fill_tests, "patch": self.fill_patch,
         "info": self.fill_info}[view]()
        if view == "tests":  # its columns are fitted to the table's width, known once the view is laid out
            self.call_after_refresh(self.fill_tests)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.fill_view()
        self.scroller().focus()  # the keys that scroll (arrows, PageDown, j/k) act on the view now shown

    SCROLLERS = {"step": "#step-scroll", "rewards": "#reward-table", "tests": "#test-table", "patch": "#patch-scroll",
                 "info": "#info-scroll"}

    def scroller(self):
        """The scrollable widget of the view shown."""
        return self.query_one(self.SCROLLERS[self.query_one("#views", TabbedContent).active])

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """A test's full name shows under the Tests view's head."""
        if event.data_table.id == "test-table" and 0 <= event.cursor_row < len(self.test_rows):
            self.query_one("#test-name", Static).update(Text(self.test_rows[event.cursor_row][1], style="bold"))

    def on_step_list_clicked(self, event: StepList.Clicked) -> None:
        """A click on a step in the list shows that step."""
        if self.traj is not None and 0 <= event.row < len(self.traj.steps):
            self.step_idx = event.row
            self.show_step()

    def update_title(self) -> None:
        t = self.traj
        pos = f"Trajectory {self.nav.pos + 1}/{self.nav.total}" if self.nav else "Trajectory"
        n = len(t.steps) if t else 0
        self.title = f"{pos} · {t.instance_id if t else self.tid} · Step {min(self.step_idx + 1, n)}/{n}"
        self.sub_title = t.status.value if t else ""

    def current_step(self) -> Step | None:
        if self.traj is None or not self.traj.steps:
            return None
        self.step_idx = max(0, min(self.step_idx, len(self.traj.steps) - 1))
        return self.traj.steps[self.step_idx]

    def show_step(self) -> None:
        self.update_title()
        step = self.current_step()
        head = self.query_one("#step-head", Static)
        boxes = {k: self.query_one(f"#{k}", Static) for k in ("thinking", "response", "calls", "observation")}
        if step is None:
            head.update(Text("no steps yet" + (" (running: new steps appear live)" if self.loaded_status == "running"
                                               else "")))
            for b in boxes.values():
                b.display = False
            return
        self.query_one("#steps", StepList).move_cursor(self.step_idx)
        head.update(Text(f"step {step.index + 1}/{len(self.traj.steps)} · policy {duration(step.policy_seconds)} · "
                         f"tools {duration(step.tool_seconds)} · prompt {step.prompt_tokens} · completion "
                         f"{step.completion_tokens} tok\nlog-probs: {logprob_summary(step.response.logprobs)}"))
        think, said = split_thinking(clean(step.response.content))
        self._box(boxes["thinking"], "thinking", think if self.thinking else "")
        self._box(boxes["response"], "response", said or "(empty)")
        calls = "\n".join(f"{c.name}({json.dumps(c.arguments, ensure_ascii=False)[:2000]})" for c in step.tool_calls)
        if step.parse_error:
            calls += ("\n" if calls else "") + "parse error: " + clean(step.parse_error)
        self._box(boxes["calls"], "tool calls", calls)
        obs = step.observation
        self._box(boxes["observation"], "observation" + (f" · {obs.name}" if obs and obs.name else ""),
                  clean(obs.content) if obs else "")
        scroll = self.query_one("#step-scroll")
        scroll.scroll_home(animate=False)
        hit = next((b for b in boxes.values() if b.display and self.query_text
                    and self.query_text.lower() in getattr(b, "source_text", "").lower()), None)
        if hit is not None:  # the searched text: its box in view
            self.call_after_refresh(scroll.scroll_to_widget, hit, animate=False, top=True)

    def _box(self, box: Static, title: str, text: str) -> None:
        box.display = bool(text)
        box.border_title = title
        box.source_text = text
        if text:
            shown = Text.from_ansi(clip(text)) if "\x1b[" in text else Text(clip(text))
            if self.query_text:  # the search's matches stand out
                shown.highlight_words([self.query_text], style="bold black on yellow", case_sensitive=False)
            box.update(shown)

    def fill_rewards(self) -> None:
        table = self.query_one("#reward-table", DataTable)
        table.clear()
        for name, r in self.store.rewards(self.tid).items():
            table.add_row(*map(cell, (name, f"{r.total:.3f}", "", "")))
            for part, v in r.parts.items():
                table.add_row(*map(cell, ("", "", part, f"{v:.3f}")))
            for k, v in r.info.items():
                table.add_row(*map(cell, ("", "", k, str(v)[:200])))
        if not table.row_count:
            table.add_row(*map(cell, ("no rewards stored", "", "", "")))

    def fill_tests(self) -> None:
        report: TestReport | None = self.store.test_report(self.tid)
        table = self.query_one("#test-table", DataTable)
        head = self.query_one("#test-head", Static)
        if report is None:
            table.clear()
            head.update(Text("not graded"))
            return
        head.update(Text(f"{'RESOLVED' if report.resolved else 'not resolved'} · patch "
                         f"{'applied' if report.patch_applied else 'did not apply'}"
                         + (" · empty patch" if report.empty_patch else "")
                         + (f" · error: {report.error}" if report.error else "") + f" · {duration(report.seconds)}"
                         + (" · failures only (f: all)" if self.failures_only else " · f: failures only")))
        self.test_rows = [(group, name, status) for group, name, status in report_lines(report)
                          if not self.failures_only or status not in ("PASSED", "XFAIL")]
        rows = [(group, Text(status, style="green" if status in ("PASSED", "XFAIL") else "bold red"), name)
                for group, name, status in self.test_rows]
        fill_table(table, ("group", "status", "test"), rows, [str(i) for i in range(len(rows))], flex="test", most=200)

    def action_failures(self) -> None:
        """The Tests view: only the tests that did not pass, or all of them."""
        self.failures_only = not self.failures_only
        self.filled.discard("tests")
        self.query_one("#views", TabbedContent).active = "tests"
        self.fill_view()

    def fill_patch(self) -> None:
        self.query_one("#patch-text", Static).update(diff_text(self.traj.patch or "(no patch)"))

    def fill_info(self) -> None:
        t = self.traj
        lines = [f"id {t.id} · run {t.run_id} · instance {t.instance_id}",
                 f"status {t.status.value}" + (f" · error: {t.error}" if t.error else ""),
                 f"policy {t.policy or '-'} · variant {t.agent_variant or '-'} · origin {t.origin}",
                 f"tokens: prompt {t.prompt_tokens} · completion {t.completion_tokens}" + (
                     f" · generation {t.completion_tokens / policy_s:.1f} tok/s" if (policy_s := sum(
                         s.policy_seconds for s in t.steps)) > 0 else ""),
                 f"time: policy {duration(policy_s)} · sandbox {duration(sum(s.tool_seconds for s in t.steps))} · "
                 f"wall {duration(((t.finished_at or self.evolve.clock()) - t.created_at))}",
                 f"parent {t.parent_id or '-'}" + (f" (branches after step {t.branch_step})" if t.branch_step is not None
                                                  else "") + " · p: open parent",
                 f"branches {len(self.branch_rows)}" + (" · b: choose one" if self.branch_rows else ""), ""]
        if t.answer:
            lines += ["answer:", clip(clean(t.answer), 2000), ""]
        for m in t.prompt:
            lines += [f"[{m.role}]", clip(clean(m.content), 4000), ""]
        self.query_one("#info-text", Static).update(Text("\n".join(lines)))

    # --- actions ---------------------------------------------------------------------------------------
    def action_step(self, delta: int) -> None:
        self.step_idx += delta
        self.show_step()

    def action_first(self) -> None:
        self.step_idx = 0
        self.show_step()

    def action_last(self) -> None:
        self.step_idx = len(self.traj.steps) - 1 if self.traj else 0
        self.show_step()

    def action_traj(self, delta: int) -> None:
        known = self.neighbours.get((self.nav.pos, delta)) if self.nav else None
        if known is not None:  # found by the read-ahead: no query on this key
            tid, self.nav.total = known
            self.nav.pos += delta
        else:
            tid = self.nav.neighbour(self.store, delta) if self.nav else None
        if tid is None:
            self.notify("no more trajectories this way", timeout=2)
            return
        self.tid = tid
        self.load()

    def action_scroll(self, delta: int) -> None:
        self.scroller().scroll_relative(y=delta * 3, animate=False)

    def action_page(self, delta: int) -> None:
        view = self.scroller()
        view.scroll_relative(y=delta * max(1, view.scrollable_content_region.height - 2), animate=False)

    def action_thinking(self) -> None:
        self.thinking = not self.thinking
        self.show_step()

    def action_view(self) -> None:
        tabs = self.query_one("#views", TabbedContent)
        tabs.active = VIEWS[(VIEWS.index(tabs.active) + 1) % len(VIEWS)]

    def action_search(self) -> None:
        box = self.query_one("#search", Input)
        box.display = True
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_text = event.value.strip()
        event.input.display = False
        self.query_one("#step-scroll").focus()
        self.action_find(1, include_current=True)

    def action_find(self, delta: int, include_current: bool = False) -> None:
        if not self.query_text or self.traj is None or not self.traj.steps:
            return
        needle, n = self.query_text.lower(), len(self.traj.steps)
        start = 0 if include_current else delta
        for k in range(start, start + n * (1 if delta > 0 else -1), 1 if delta > 0 else -1):
            i = (self.step_idx + k) % n
            if needle in step_text(self.traj.steps[i]).lower():
                self.step_idx = i
                self.query_one("#views", TabbedContent).active = "step"
                self.show_step()
                return
        self.notify(f"{self.query_text!r} is in no step", timeout=2)

    def _export_path(self, name: str) -> Path:
        out = Path(self.evolve.export_dir)
        out.mkdir(parents=True, exist_ok=True)
        return out / name

    def action_export_step(self) -> None:
        step = self.current_step()
        if step is None:
            return
        path = self._export_path(f"{self.tid}.step{step.index + 1:03d}.md")
        path.write_text(step_text(step, len(self.traj.steps)))
        self.notify(f"step written to {path}", timeout=4)

    def action_export_traj(self) -> None:
        if self.traj is None:
            return
        path = self._export_path(f"{self.tid}.json")
        doc = trajectory_export(self.traj, self.store.rewards(self.tid), self.store.test_report(self.tid))
        path.write_text(json.dumps(doc, indent=2, ensure_ascii=False))
        self.notify(f"trajectory written to {path}", timeout=4)

    def action_parent(self) -> None:
        if self.traj is None or not self.traj.parent_id:
            self.notify("this trajectory has no parent", timeout=2)
            return
        self.app.push_screen(InspectorScreen(self.store, self.traj.parent_id))

    def action_branches(self) -> None:
        if not self.branch_rows:
            self.notify("no trajectory branches from this one", timeout=2)
            return
        options = [(c["id"], f"{c['instance_id']} · {c['status']} · {c['steps']} steps · {c['id']}")
                   for c in self.branch_rows]

        def opened(tid: str | None) -> None:
            if tid:
                self.app.push_screen(InspectorScreen(self.store, tid))

        self.app.push_screen(PickScreen("branches of this trajectory", options), opened)

    def action_back(self) -> None:
        box = self.query_one("#search", Input)
        if box.display:
            box.display = False
            self.query_one("#step-scroll").focus()
        else:
            self.app.pop_screen()
