"""The run dashboard: progress of completed work and an ETA that counts down, final statuses (stopped episodes
apart from the agent's errors and the infrastructure's), a paged trajectory table (filter by status or name, sort by
any column), the run's events in words and a reward histogram."""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Input, ProgressBar, RichLog, Static

from evolve.store import owner_alive
from tui.fast_table import FastTable
from tui.events import event_line, for_runs
from tui.screens.base import LiveScreen
from tui.screens.events import EventsScreen
from tui.screens.inspector import InspectorScreen, Nav
from tui.source import RunRef
from tui.summary import AGENT_FAIL, CUT, INFRA, STOPPED, eta_seconds, progress
from tui.text import duration
from tui.widgets import RewardHistogram, fill_table, fit

MIN_PAGE, MAX_PAGE = 10, 100
"""A page of the trajectory table is the rows that fit in it, within these bounds: drawing only what is seen
keeps `]`/`[` fast (redrawing 100 rows cost ~60 ms of CPU, most of a key's 100 ms)."""
TABLE_COLUMNS = ("instance", "status", "steps", "tokens", "time", "res", "reward")
SHORT = {"budget_exhausted": "budget", "context_exceeded": "context", "infra_error": "INFRA",
         "interrupted": "stopped"}
STATUS_FILTERS = (None, "running", "submitted", "budget_exhausted", "context_exceeded", "error", "interrupted",
                  "infra_error")
"""What `f` cycles through: every status, one at a time (None: all)."""
SORTS = (None, "instance", "status", "steps", "tokens", "time", "res", "reward")
"""What `o` cycles through (None: the order they were stored); a click on a column's header sorts by it."""
RATE_WINDOW = 60.0
"""Seconds over which the generation rate (tokens/s) is measured."""
WIDE = 100
"""Columns from which the reward histogram is shown beside the event log (below it the log takes the width)."""


def status_counts(trajs: dict[str, int]) -> Text:
    """Final statuses grouped: finished, cut by a budget, agent failures, stopped by the user, infrastructure
    errors, the rest."""
    out = Text()

    def part(label: str, n: int, style: str) -> None:
        if n:
            out.append(f"{label} {n}  ", style=style)

    part("submitted", trajs.get("submitted", 0), "green")
    for s in sorted(CUT):
        part(s.replace("_", " "), trajs.get(s, 0), "yellow")
    part("agent errors", sum(trajs.get(s, 0) for s in AGENT_FAIL), "bold red")
    part("stopped", sum(trajs.get(s, 0) for s in STOPPED), "dim yellow")
    part("INFRA errors", sum(trajs.get(s, 0) for s in INFRA), "bold magenta")
    part("running", trajs.get("running", 0), "cyan")
    known = {"submitted", "running"} | CUT | AGENT_FAIL | INFRA | STOPPED
    for s, n in sorted(trajs.items()):
        if s not in known:
            part(s, n, "")
    return out if out.plain else Text("no trajectories yet")


def tokens(n: float) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else f"{n:.0f}"


def cost_text(cost: dict) -> str:
    """`│ 12.3k tok · 41 tok/s · sandbox 3m20s`: what the run used (tokens/s: generated in the last minute)."""
    out = f"│ {tokens(cost['prompt'] + cost['completion'])} tok"
    if cost.get("rate"):
        out += f" · {cost['rate']:.1f} tok/s" if cost["rate"] < 10 else f" · {cost['rate']:.0f} tok/s"
    if cost.get("sandbox_seconds"):
        out += f" · sandbox {duration(cost['sandbox_seconds'])}"
    return out


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


def took(row: dict, now: float) -> str:
    """How long the episode ran (a running one: until `now`, so the cell keeps counting)."""
    return duration(((row["finished_at"] or now) - row["created_at"]) if row["created_at"] else None)


def table_row(r: dict, now: float, family: bool) -> tuple:
    shown = r.get("shown") or r["status"]
    res = "-" if r["resolved"] is None else ("yes" if r["resolved"] else "no")
    row = (r["instance_id"], Text(SHORT.get(shown, shown), style=_style(shown)), r["steps"], r["tokens"],
           took(r, now), res, reward_cell(r["rewards"]))
    return row + (r["run_id"],) if family else row


class TrajectoryTable(FastTable):
    """The dashboard's table; tells its screen when its size changes (a Resize event does not bubble)."""

    def on_resize(self, event) -> None:
        self.screen.call_after_refresh(self.screen.fit_page)


class DashboardScreen(LiveScreen):
    BINDINGS = [
        Binding("enter", "inspect", "Inspect"),
        Binding("right_square_bracket", "page(1)", "Page", key_display="]/["),
        Binding("left_square_bracket", "page(-1)", "Previous page", show=False, key_display="["),
        Binding("slash", "search", "Filter", key_display="/"),
        Binding("f", "status_filter", "Status"),
        Binding("o", "sort", "Sort"),
        Binding("O", "reverse", "Reverse sort", show=False),
        Binding("e", "events", "Events"),
        Binding("t", "tree", "Tree", show=False),
        Binding("v", "training", "Training", show=False),
        Binding("d", "documents", "Documents", show=False),
        Binding("s", "stop", "Stop run", show=False),
        Binding("escape", "back", "Back"),
        Binding("q", "app.quit", "Quit", show=False),
    ]

    def __init__(self, run: RunRef) -> None:
        super().__init__()
        self.run = run
        self.store = None
        self.family: list[str] = [run.run_id]
        """The run ids whose trajectories are this run's (Agent-R keeps each iteration's under `RUN-itK`)."""
        self.page_offset = 0
        self.page_size = MIN_PAGE
        """Rows per page: as many as the table shows (`fit_page`), recomputed when it is resized."""
        self.total = 0
        self.search = ""
        self.status: str | None = None
        self.sort: str | None = None
        self.descending = False
        self.rows: list[dict] = []
        self.last_event = 0
        self.ov: dict | None = None
        self.cost: dict | None = None
        self.costs: dict[str, tuple[int, int, float, float]] = {}
        """(prompt, completion, policy s, sandbox s) of finished trajectories, read once (the worker's cache)."""
        self.alive: bool | None = None
        self.stats_shown = 0.0
        """When the aggregates were last drawn (tests wait for it)."""
        self.pages: dict[tuple, tuple[int, list[dict]]] = {}
        """Pages already read, by (filter, status, sort, descending, offset, size): the current one's neighbours are
        read ahead in a worker, so `]` and `[` only redraw. Cleared whenever the store changes."""
        self.generation = 0
        """Counts the store changes seen; a page read ahead before the latest one is dropped."""
        self.shown_key: tuple | None = None
        """The page key of the rows on screen (they stay while a costly page is read: `pending`)."""
        self.pending: tuple | None = None
        """The page key being read in a worker (a sort, a status filter or a search scans the run), else None."""
        self.wanted = 0
        """Counts the pages asked of the worker; only the latest answer is drawn."""

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="progress-row"):
            yield ProgressBar(id="progress", show_eta=False)
            yield Static(id="eta")
        yield Static(id="counts")
        yield TrajectoryTable(id="trajs", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="dash-bottom"):
            yield RichLog(id="events", max_lines=500, wrap=False, markup=False)
            yield RewardHistogram(id="hist")
        yield Input(id="filter", placeholder="filter by instance or trajectory id (enter: apply, esc: clear)")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.store = self.evolve.source.store(self.run.store_dir)
        self.family = self.store.run_family(self.run.run_id)
        self.title = f"{self.run.kind} {self.run.run_id}" + (f" · {self.run.place}" if self.run.place != "." else "")
        self.last_event = max(0, self.store.last_event_id() - 200)
        self.query_one("#events", RichLog).border_title = "events · e: all, filter, follow"
        super().on_mount()
        self.set_interval(1.0, self.tick)
        self.query_one("#trajs").focus()

    def on_resize(self, event) -> None:
        self.query_one("#hist").display = self.size.width >= WIDE

    def watched_stores(self):
        return [self.store]

    def reload(self) -> None:
        """The page of the table now; the aggregates (progress, statuses, histogram, events) in a worker
        thread on its own connection, so a key is never kept waiting behind them."""
        self.pages.clear()  # the store changed: pages read before may be stale
        self.generation += 1
        self.show_page()
        self.run_worker(self.read_stats, thread=True, exclusive=True, group="stats")

    def read_stats(self) -> None:
        store = self.evolve.source.background_store(self.run.store_dir)
        family = store.run_family(self.run.run_id)
        ov = store.run_overview(family)
        totals = store.reward_totals(family)
        events = store.events(after_id=self.last_event, limit=500)
        alive = owner_alive(self.run.store_dir) if ov.get("status") == "running" else None
        cost = self.read_cost(store, family)
        self.app.call_from_thread(self.show_stats, family, ov, totals, events, alive, cost)

    def read_cost(self, store, family: list[str]) -> dict:
        """Tokens, policy and sandbox seconds of the run, and its generation rate over the last minute (worker
        thread). A finished trajectory's sums never change: they are read once and kept."""
        new = [t for t in store.finished_ids(family) if t not in self.costs]
        self.costs.update(store.trajectory_costs(new))
        live = store.trajectory_costs(store.running_ids(family))
        sums = [sum(c[k] for c in [*self.costs.values(), *live.values()]) for k in range(4)]
        now = time.time()
        window = max(1.0, min(RATE_WINDOW, now - (self.run.created_at or now)))
        recent = store.recent_completion_tokens(family, now - window) if live else 0
        return dict(prompt=sums[0], completion=sums[1], policy_seconds=sums[2], sandbox_seconds=sums[3],
                    rate=recent / window if live else 0.0)

    def run_status(self) -> str:
        status = (self.ov or {}).get("status") or self.run.status
        return "dead" if status == "running" and self.alive is False else status

    def show_stats(self, family: list[str], ov: dict, totals: dict, events: list[dict], alive: bool | None,
                   cost: dict | None = None) -> None:
        if family != self.family:
            self.family = family
            self.pages.clear()
            self.show_page()
        self.ov, self.alive = ov, alive
        prog = progress(ov)
        self.query_one("#progress", ProgressBar).update(total=max(prog.total, 1), progress=prog.done + prog.failed)
        self.show_eta()
        counts = status_counts(ov["trajectories"])
        if cost:
            self.cost = cost
            counts.append(cost_text(cost), style="dim")
        self.query_one("#counts", Static).update(counts)
        name = "combined" if "combined" in totals else next(iter(totals), None)
        self.query_one("#hist", RewardHistogram).show(name, totals.get(name, []) if name else [])
        log = self.query_one("#events", RichLog)
        mine = set(self.family)
        for ev in events:
            if ev["id"] <= self.last_event:
                continue
            self.last_event = ev["id"]
            if for_runs(ev, mine):
                log.write(event_line(ev, who_width=max(16, min(40, (log.size.width or 80) // 2 - 10))))
        self.stats_shown = time.time()

    def show_eta(self) -> None:
        """The progress line; called on every store change and every second (the ETA counts down)."""
        if self.ov is None:
            return
        ov, prog, status = self.ov, progress(self.ov), self.run_status()
        eta = eta_seconds(ov, prog, self.evolve.clock(), status)
        text = Text(f" {prog.text()}")
        if eta is not None:
            text.append(f" · ETA {duration(eta)}" if eta >= 1 else " · ETA overdue")
        if ov["graded"]:
            text.append(f" · resolved {ov['resolved']}/{ov['graded']}")
        if status != "running":
            text.append(f" · {status}", style="bold red" if status == "dead" else "yellow")
        self.query_one("#eta", Static).update(text)

    def tick(self) -> None:
        """Every second: the ETA and the running episodes' times move on without a store write."""
        if not self.is_current:
            return
        if (self.ov or {}).get("status") == "running":  # a killed run writes nothing more: ask its lock
            self.alive = owner_alive(self.run.store_dir)
        self.show_eta()
        table = self.query_one("#trajs", DataTable)
        now = self.evolve.clock()
        for r in self.rows:
            if r["status"] == "running" and r["id"] in table.rows:
                width = table.columns["time"].width
                table.update_cell(r["id"], "time", fit(took(r, now), width))

    def fit_page(self) -> None:
        """Page size = the rows the table shows now; on a change the page is re-cut so that the row under the
        cursor stays on it."""
        size = rows_that_fit(self.query_one("#trajs", DataTable))
        if self.store is None:
            return
        if size == self.page_size:
            self.load_page()  # the width may have changed: the columns are fitted again
            return
        table = self.query_one("#trajs", DataTable)
        at = self.page_offset + (table.cursor_row if self.rows else 0)
        self.page_size, self.page_offset = size, at - at % size
        self.load_page()
        if self.rows:
            table.move_cursor(row=min(at - self.page_offset, len(self.rows) - 1))

    def page_key(self, offset: int | None = None) -> tuple:
        return (self.search, self.status, self.sort, self.descending,
                self.page_offset if offset is None else offset, self.page_size)

    def read_page(self, store, key: tuple) -> tuple[int, list[dict]]:
        """One page of the table: (total, store rows)."""
        search, status, sort, desc, offset, size = key
        return store.trajectory_page(self.family, search=search, status=status, sort=sort, descending=desc,
                                     offset=offset, limit=size)

    @staticmethod
    def costly(key: tuple) -> bool:
        """A page that scans the whole run to be cut (a search, a status filter, a sort: a sort by tokens sums every
        step's, seconds on a large run); a page in stored order is an indexed range (a few ms)."""
        search, status, sort = key[:3]
        return bool(search or status or sort)

    def show_page(self, cursor_top: bool = False) -> None:
        """The page the screen's state asks for: drawn now when it was read before or is cheap to read; a costly one
        is read in a worker (on its own connection) while the rows on screen stay and the title says so, then drawn,
        so no key waits for a scan of the run."""
        key = self.page_key()
        if key in self.pages or not self.costly(key):
            self.pending = None
            self.load_page()
            if cursor_top and self.rows:
                self.query_one("#trajs", DataTable).move_cursor(row=0)
            return
        self.pending, self.wanted = key, self.wanted + 1
        table = self.query_one("#trajs", DataTable)
        title = (table.border_title or "").split(" · reading")[0]
        table.border_title = f"{title} · reading {self.describe(key)}…"
        asked, generation = self.wanted, self.generation
        self.run_worker(lambda: self._read_wanted(key, asked, generation, cursor_top), thread=True, group="wanted")

    def _read_wanted(self, key: tuple, asked: int, generation: int, cursor_top: bool) -> None:
        page = self.read_page(self.evolve.source.background_store(self.run.store_dir, lane="wanted"), key)
        self.app.call_from_thread(self._got_wanted, key, page, asked, generation, cursor_top)

    def _got_wanted(self, key: tuple, page: tuple, asked: int, generation: int, cursor_top: bool) -> None:
        if generation == self.generation:
            self.pages[key] = page
        if asked != self.wanted or key != self.page_key():  # the user asked for another page meanwhile
            return
        self.pending = None
        self.load_page(page=page)
        if cursor_top and self.rows:
            self.query_one("#trajs", DataTable).move_cursor(row=0)

    @staticmethod
    def describe(key: tuple) -> str:
        search, status, sort, desc = key[:4]
        how = [f"matching {search!r}"] if search else []
        how += [f"status {SHORT.get(status, status)}"] if status else []
        how += [f"by {sort}{' ↓' if desc else ' ↑'}"] if sort else []
        return " · ".join(how)

    def load_page(self, page: tuple | None = None) -> None:
        """Draw the page of the screen's state: `page` when given, else the one read before, else read now."""
        table = self.query_one("#trajs", DataTable)
        key = self.page_key()
        if page is None:
            page = self.pages.get(key) or self.read_page(self.store, key)
            self.pages[key] = page
        self.shown_key = key
        self.total, self.rows = page
        many = len(self.family) > 1
        columns = TABLE_COLUMNS + (("run",) if many else ())
        now = self.evolve.clock()
        fill_table(table, columns, [table_row(r, now, many) for r in self.rows], [r["id"] for r in self.rows],
                   flex="instance", least=12)
        last = min(self.page_offset + self.page_size, self.total)
        how = self.describe(key)
        table.border_title = (f"trajectories {self.page_offset + 1 if self.total else 0}-{last} of {self.total}"
                              + (" " + how if how else ""))
        size = self.page_size
        ahead = [self.page_key(o) for o in (self.page_offset + size, self.page_offset - size)
                 if 0 <= o < self.total and self.page_key(o) not in self.pages]
        if ahead:
            gen = self.generation
            self.call_after_refresh(  # after this page is drawn: the reading never competes with the drawing
                self.run_worker, lambda: self._read_ahead(ahead, gen), thread=True, exclusive=True, group="pages")

    def _read_ahead(self, keys: list[tuple], generation: int) -> None:
        """Read the neighbouring pages on their own background connection (a worker thread)."""
        store = self.evolve.source.background_store(self.run.store_dir, lane="pages")
        read = {key: self.read_page(store, key) for key in keys}
        self.app.call_from_thread(self._keep_pages, read, generation)

    def _keep_pages(self, read: dict, generation: int) -> None:
        if generation == self.generation:  # no change was seen meanwhile: the pages are current
            for key, page in read.items():
                if key[-1] == self.page_size:  # read before a resize: cut to another size, never shown
                    self.pages.setdefault(key, page)
        if len(self.pages) > 50:  # a long walk through a large run keeps only the pages near the current one
            for key in sorted(self.pages, key=lambda k: abs(k[-2] - self.page_offset))[20:]:
                del self.pages[key]

    def action_page(self, delta: int) -> None:
        new = self.page_offset + delta * self.page_size
        if 0 <= new < max(self.total, 1):
            self.page_offset = new
            self.show_page(cursor_top=True)

    def _requery(self) -> None:
        self.page_offset = 0
        self.show_page(cursor_top=True)

    def action_status_filter(self) -> None:
        self.status = STATUS_FILTERS[(STATUS_FILTERS.index(self.status) + 1) % len(STATUS_FILTERS)]
        self._requery()

    def action_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self._requery()

    def action_reverse(self) -> None:
        self.descending = not self.descending
        self._requery()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        """A click on a column's header sorts by it; a second click reverses the order."""
        column = str(event.column_key.value)
        if column not in SORTS and column != "run":
            return
        if self.sort == column:
            self.descending = not self.descending
        else:
            self.sort, self.descending = column, False
        self._requery()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_inspect()

    def action_inspect(self) -> None:
        table = self.query_one("#trajs", DataTable)
        if not self.rows or self.shown_key is None:
            return
        search, status, sort, descending, offset, _ = self.shown_key  # the rows on screen (another may be read)
        nav = Nav(self.family, search, offset + table.cursor_row, self.total, status=status, sort=sort,
                  descending=descending)
        self.app.push_screen(InspectorScreen(self.store, self.rows[table.cursor_row]["id"], nav))

    def action_search(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.search, self.page_offset = event.value.strip(), 0
        event.input.display = False
        self.query_one("#trajs").focus()
        self.show_page(cursor_top=True)

    def action_back(self) -> None:
        box = self.query_one("#filter", Input)
        if box.display or self.search or self.status:  # escape clears an active filter before it leaves the screen
            box.value, box.display, self.search, self.status, self.page_offset = "", False, "", None, 0
            self.query_one("#trajs").focus()
            self.show_page(cursor_top=True)
        else:
            self.app.pop_screen()

    def action_events(self) -> None:
        self.app.push_screen(EventsScreen(self.run.store_dir, set(self.family), f"{self.run.kind} {self.run.run_id}"))

    def action_tree(self) -> None:
        self.evolve.open_tree(self.run.store_dir)

    def action_training(self) -> None:
        self.evolve.open_training(self.run.store_dir)

    def action_documents(self) -> None:
        self.evolve.open_documents(self.run)

    def action_stop(self) -> None:
        self.evolve.confirm_stop(self.run, self.run_status())


def _style(status: str) -> str:
    if status in INFRA:
        return "bold magenta"
    if status in AGENT_FAIL:
        return "bold red"
    if status in STOPPED:
        return "dim yellow"
    if status in CUT:
        return "yellow"
    return {"submitted": "green", "running": "cyan"}.get(status, "")
