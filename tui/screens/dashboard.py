"""The run dashboard: progress and ETA, final statuses (infrastructure errors apart from agent failures),
a paged trajectory table, a live event log and a reward histogram."""

from __future__ import annotations

import json
import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Input, ProgressBar, RichLog, Static

from tui.screens.base import LiveScreen
from tui.screens.inspector import InspectorScreen, Nav
from tui.source import RunRef
from tui.summary import AGENT_FAIL, CUT, INFRA, eta_seconds, progress
from tui.text import duration
from tui.widgets import RewardHistogram, fill_table

MIN_PAGE, MAX_PAGE = 10, 100
"""A page of the trajectory table is the rows that fit in it, within these bounds: drawing only what is seen
keeps `]`/`[` fast (redrawing 100 rows cost ~60 ms of CPU, most of a key's 100 ms)."""
TABLE_COLUMNS = ("instance", "status", "steps", "tokens", "time", "res", "reward")
SHORT = {"budget_exhausted": "budget", "context_exceeded": "context", "infra_error": "INFRA"}


def status_counts(trajs: dict[str, int]) -> Text:
    """Final statuses grouped: finished, cut by a budget, agent failures, infrastructure errors, the rest."""
    out = Text()

    def part(label: str, n: int, style: str) -> None:
        if n:
            out.append(f"{label} {n}  ", style=style)

    part("submitted", trajs.get("submitted", 0), "green")
    for s in sorted(CUT):
        part(s.replace("_", " "), trajs.get(s, 0), "yellow")
    part("agent errors", sum(trajs.get(s, 0) for s in AGENT_FAIL), "bold red")
    part("INFRA errors", sum(trajs.get(s, 0) for s in INFRA), "bold magenta")
    part("running", trajs.get("running", 0), "cyan")
    known = {"submitted", "running"} | CUT | AGENT_FAIL | INFRA
    for s, n in sorted(trajs.items()):
        if s not in known:
            part(s, n, "")
    return out if out.plain else Text("no trajectories yet")


def reward_cell(rewards: dict) -> str:
    if not rewards:
        return "-"
    main = rewards.get("combined") or next(iter(rewards.values()))
    parts = [f"{k}={v['total']:.2g}" for k, v in rewards.items() if k != "combined"]
    if len(rewards) == 1:
        parts = [f"{k}={v:.2g}" for k, v in main["parts"].items()][:3]
    return f"{main['total']:.2f} " + " ".join(parts)


def rows_that_fit(table: DataTable) -> int:
    """The page size for `table`: the data rows its visible region holds, within [MIN_PAGE, MAX_PAGE]."""
    seen = table.scrollable_content_region.height - (table.header_height if table.show_header else 0)
    return max(MIN_PAGE, min(MAX_PAGE, seen))


class TrajectoryTable(DataTable):
    """The dashboard's table; tells its screen when its size changes (a Resize event does not bubble)."""

    def on_resize(self, event) -> None:
        self.screen.call_after_refresh(self.screen.fit_page)


class DashboardScreen(LiveScreen):
    BINDINGS = [
        Binding("enter", "inspect", "Inspect"),
        Binding("right_square_bracket", "page(1)", "Next page"),
        Binding("left_square_bracket", "page(-1)", "Prev page"),
        Binding("slash", "search", "Filter"),
        Binding("t", "tree", "Tree"),
        Binding("s", "stop", "Stop run"),
        Binding("escape", "back", "Back"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, run: RunRef) -> None:
        super().__init__()
        self.run = run
        self.store = None
        self.page_offset = 0
        self.page_size = MIN_PAGE
        """Rows per page: as many as the table shows (`fit_page`), recomputed when it is resized."""
        self.total = 0
        self.search = ""
        self.rows: list[dict] = []
        self.last_event = 0
        self.stats_shown = 0.0
        """When the aggregates were last drawn (tests wait for it)."""
        self.pages: dict[tuple[str, int, int], tuple[int, list[dict], list[tuple]]] = {}
        """Pages already read, by (filter, offset, size): the current one's neighbours are read ahead in a worker,
        so `]` and `[` only redraw. Cleared whenever the store changes."""
        self.generation = 0
        """Counts the store changes seen; a page read ahead before the latest one is dropped."""

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="progress-row"):
            yield ProgressBar(id="progress", show_eta=False)
            yield Static(id="eta")
        yield Static(id="counts")
        with Horizontal(id="dash-main"):
            yield TrajectoryTable(id="trajs", cursor_type="row", zebra_stripes=True)
            with Vertical(id="dash-side"):
                yield RewardHistogram(id="hist")
                yield RichLog(id="events", max_lines=500, wrap=True, markup=False)
        yield Input(id="filter", placeholder="filter by instance or trajectory id (enter: apply, esc: clear)")
        yield Footer()

    def on_mount(self) -> None:
        self.store = self.evolve.source.store(self.run.store_dir)
        self.title = f"{self.run.kind} {self.run.run_id}"
        self.last_event = max(0, self.store.last_event_id() - 200)
        super().on_mount()
        self.query_one("#trajs").focus()

    def watched_stores(self):
        return [self.store]

    def reload(self) -> None:
        """The page of the table now; the aggregates (progress, statuses, histogram, events) in a worker
        thread on its own connection, so a key is never kept waiting behind them."""
        self.pages.clear()  # the store changed: pages read before may be stale
        self.generation += 1
        self.load_page()
        self.run_worker(self.read_stats, thread=True, exclusive=True, group="stats")

    def read_stats(self) -> None:
        store = self.evolve.source.background_store(self.run.store_dir)
        ov = store.run_overview(self.run.run_id)
        totals = store.reward_totals(self.run.run_id)
        events = store.events(after_id=self.last_event, limit=500)
        self.app.call_from_thread(self.show_stats, ov, totals, events)

    def show_stats(self, ov: dict, totals: dict, events: list[dict]) -> None:
        done, total, running = progress(ov)
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=max(total, 1), progress=done)
        eta = eta_seconds(ov, total - done)
        self.query_one("#eta", Static).update(Text(
            f" {done}/{total} done · {running} running · ETA {duration(eta) if eta else '-'}"
            + (f" · resolved {ov['resolved']}/{ov['graded']}" if ov["graded"] else "")))
        self.query_one("#counts", Static).update(status_counts(ov["trajectories"]))
        name = "combined" if "combined" in totals else next(iter(totals), None)
        self.query_one("#hist", RewardHistogram).show(name, totals.get(name, []) if name else [])
        log = self.query_one("#events", RichLog)
        for ev in events:
            if ev["id"] <= self.last_event:
                continue
            self.last_event = ev["id"]
            rest = {k: v for k, v in ev.items() if k not in ("id", "ts", "kind")}
            log.write(Text(f"{time.strftime('%H:%M:%S', time.localtime(ev['ts']))} {ev['kind']} "
                           f"{json.dumps(rest, default=str)[:200]}"))
        self.stats_shown = time.time()

    def fit_page(self) -> None:
        """Page size = the rows the table shows now; on a change the page is re-cut so that the row under the
        cursor stays on it."""
        size = rows_that_fit(self.query_one("#trajs", DataTable))
        if size == self.page_size or self.store is None:
            return
        table = self.query_one("#trajs", DataTable)
        at = self.page_offset + (table.cursor_row if self.rows else 0)
        self.page_size, self.page_offset = size, at - at % size
        self.load_page()
        if self.rows:
            table.move_cursor(row=min(at - self.page_offset, len(self.rows) - 1))

    def read_page(self, store, search: str, offset: int, size: int) -> tuple[int, list[dict], list[tuple]]:
        """One page of the table: (total, store rows, table rows)."""
        total, found = store.trajectory_page(self.run.run_id, search=search, offset=offset, limit=size)
        now, rows = self.evolve.clock(), []
        for r in found:
            took = ((r["finished_at"] or now) - r["created_at"]) if r["created_at"] else None
            res = "-" if r["resolved"] is None else ("yes" if r["resolved"] else "no")
            rows.append((r["instance_id"], Text(SHORT.get(r["status"], r["status"]), style=_style(r["status"])),
                         r["steps"], r["tokens"], duration(took), res, reward_cell(r["rewards"])))
        return total, found, rows

    def load_page(self) -> None:
        table = self.query_one("#trajs", DataTable)
        size = self.page_size
        key = (self.search, self.page_offset, size)
        page = self.pages.get(key) or self.read_page(self.store, *key)
        self.pages[key] = page
        self.total, self.rows, rows = page
        fill_table(table, TABLE_COLUMNS, rows, [r["id"] for r in self.rows])
        last = min(self.page_offset + size, self.total)
        table.border_title = (f"trajectories {self.page_offset + 1 if self.total else 0}-{last} of {self.total}"
                              + (f" matching {self.search!r}" if self.search else "") + "  [ ] page")
        ahead = [(self.search, o, size) for o in (self.page_offset + size, self.page_offset - size)
                 if 0 <= o < self.total and (self.search, o, size) not in self.pages]
        if ahead:
            gen = self.generation
            self.call_after_refresh(  # after this page is drawn: the reading never competes with the drawing
                self.run_worker, lambda: self._read_ahead(ahead, gen), thread=True, exclusive=True, group="pages")

    def _read_ahead(self, keys: list[tuple[str, int, int]], generation: int) -> None:
        """Read the neighbouring pages on their own background connection (a worker thread)."""
        store = self.evolve.source.background_store(self.run.store_dir, lane="pages")
        read = {key: self.read_page(store, *key) for key in keys}
        self.app.call_from_thread(self._keep_pages, read, generation)

    def _keep_pages(self, read: dict, generation: int) -> None:
        if generation == self.generation:  # no change was seen meanwhile: the pages are current
            for key, page in read.items():
                if key[2] == self.page_size:  # read before a resize: cut to another size, never shown
                    self.pages.setdefault(key, page)
        if len(self.pages) > 50:  # a long walk through a large run keeps only the pages near the current one
            for key in sorted(self.pages, key=lambda k: abs(k[1] - self.page_offset))[20:]:
                del self.pages[key]

    def action_page(self, delta: int) -> None:
        new = self.page_offset + delta * self.page_size
        if 0 <= new < max(self.total, 1):
            self.page_offset = new
            self.load_page()
            self.query_one("#trajs", DataTable).move_cursor(row=0)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_inspect()

    def action_inspect(self) -> None:
        table = self.query_one("#trajs", DataTable)
        if not self.rows:
            return
        pos = self.page_offset + table.cursor_row
        nav = Nav(self.run.run_id, self.search, pos, self.total)
        self.app.push_screen(InspectorScreen(self.store, self.rows[table.cursor_row]["id"], nav))

    def action_search(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.search, self.page_offset = event.value.strip(), 0
        event.input.display = False
        self.query_one("#trajs").focus()
        self.load_page()

    def action_back(self) -> None:
        box = self.query_one("#filter", Input)
        if box.display or self.search:  # escape clears an active filter before it leaves the screen
            box.value, box.display, self.search, self.page_offset = "", False, "", 0
            self.query_one("#trajs").focus()
            self.load_page()
        else:
            self.app.pop_screen()

    def action_tree(self) -> None:
        self.evolve.open_tree(self.run.store_dir)

    def action_stop(self) -> None:
        self.evolve.confirm_stop(self.run)


def _style(status: str) -> str:
    if status in INFRA:
        return "bold magenta"
    if status in AGENT_FAIL:
        return "bold red"
    if status in CUT:
        return "yellow"
    return {"submitted": "green", "running": "cyan"}.get(status, "")
