"""The runs screen: every run under the root, with kind, status (`dead` when its process is gone), progress,
score, policy and times; filtered by status, sorted by any column, the times moving on every second."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from evolve.store import owner_alive
from tui.fast_table import FastTable
from tui.screens.base import LiveScreen
from tui.source import RunRef
from tui.summary import run_summary
from tui.text import age, clock
from tui.widgets import fill_table, fit

COLUMNS = ("run", "kind", "status", "progress", "score", "policy", "started", "updated")
STATUSES = (None, "running", "dead", "stopped", "finished", "done", "error")
"""What `f` cycles through (None: every run)."""
SORTS = (None, "run", "kind", "status", "progress", "score", "policy", "started", "updated")
"""What `o` cycles through (None: oldest first); a click on a column's header sorts by it."""


def tail(text: str, width: int) -> str:
    """The end of `text` in `width` cells, an ellipsis in front when cut (a policy's file name is at its end)."""
    return text if len(text) <= width else "…" + text[-(width - 1):]


class RunsScreen(LiveScreen):
    """List pane (the runs) over a detail pane (the highlighted run's summary)."""

    BINDINGS = [
        Binding("enter", "open", "Open"),
        Binding("t", "tree", "Tree"),
        Binding("v", "training", "Training"),
        Binding("f", "status_filter", "Status"),
        Binding("o", "sort", "Sort"),
        Binding("O", "reverse", "Reverse sort", show=False),
        Binding("s", "stop", "Stop run"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.all: list[tuple[RunRef, dict]] = []
        self.runs: list[RunRef] = []
        self.summaries: dict[str, dict] = {}
        self.status: str | None = None
        self.sort: str | None = None
        self.descending = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield FastTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static(id="run-detail", classes="detail")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        super().on_mount()
        self.title = f"Evolve · runs under {self.evolve.source.path}"
        self.set_interval(1.0, self.tick)

    def watched_stores(self):
        return self.evolve.source.stores()

    def poll(self, force: bool = False) -> None:
        """Also re-read when the set of run directories changed (a new run's store appeared), and when a running
        run's process is gone (a killed run writes nothing more: its store alone would never say so)."""
        if self.is_current and not force:
            dirs = tuple(self.evolve.source.run_dirs())
            force = dirs != self.dirs_seen or any(
                r.status == "running" and owner_alive(r.store_dir) is False for r, _ in self.all)
            self.dirs_seen = dirs
        super().poll(force)

    dirs_seen: tuple = ()

    def fetch(self) -> list[tuple[RunRef, dict]]:
        src = self.evolve.source
        return [(run, run_summary(src.background_store(run.store_dir), run)) for run in src.runs()]

    def apply(self, data: list[tuple[RunRef, dict]]) -> None:
        self.all = data
        for run, s in data:
            self.summaries[run.key] = s
        self.show_rows()

    def label(self, run: RunRef) -> str:
        """The run's id, with its directory when another run has the same id (two stores, one id)."""
        same = sum(r.run_id == run.run_id for r, _ in self.all)
        return run.run_id if same < 2 else f"{run.run_id} ({run.place})"

    def sort_key(self, item: tuple[RunRef, dict]):
        run, s = item
        return {"run": self.label(run), "kind": run.kind, "status": run.status, "progress": s["progress"],
                "score": s["score"], "policy": str(run.config.get("policy") or run.config.get("base") or ""),
                "started": run.created_at, "updated": s["last_update"] or 0}.get(self.sort or "", run.created_at)

    def show_rows(self) -> None:
        shown = [(r, s) for r, s in self.all if self.status is None or r.status == self.status]
        if self.sort is not None:
            shown.sort(key=self.sort_key, reverse=self.descending)
        self.runs = [run for run, _ in shown]
        now = self.evolve.clock()
        rows = [(self.label(run), run.kind, Text(run.status, style=_status_style(run.status)), s["progress"],
                 s["score"], tail(str(run.config.get("policy") or run.config.get("base") or "-"), 28),
                 clock(run.created_at), age(s["last_update"], now)) for run, s in shown]
        table = self.query_one("#runs", DataTable)
        fill_table(table, COLUMNS, rows, [r.key for r in self.runs], flex="run", least=10,
                   cut={"policy": "start", "score": "end"})
        how = ([f"status {self.status}"] if self.status else []) + \
            ([f"by {self.sort}{' ↓' if self.descending else ' ↑'}"] if self.sort else [])
        table.border_title = f"runs: {len(rows)}" + (f" of {len(self.all)}" if len(rows) != len(self.all) else "") + \
            (" · " + " · ".join(how) if how else "")
        self.show_detail()

    def tick(self) -> None:
        """Every second: the "updated … ago" cells move on without a store write."""
        if not self.is_current or not self.runs:
            return
        table = self.query_one("#runs", DataTable)
        if "updated" not in table.columns:
            return
        width, now = table.columns["updated"].width, self.evolve.clock()
        for run in self.runs:
            s = self.summaries.get(run.key)
            if s is not None and run.key in table.rows:
                table.update_cell(run.key, "updated", fit(age(s["last_update"], now), width))

    def current(self) -> RunRef | None:
        table = self.query_one("#runs", DataTable)
        if not self.runs or table.cursor_row >= len(self.runs):
            return None
        return self.runs[table.cursor_row]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        column = str(event.column_key.value)
        if self.sort == column:
            self.descending = not self.descending
        else:
            self.sort, self.descending = column, False
        self.show_rows()

    def show_detail(self) -> None:
        run = self.current()
        detail = self.query_one("#run-detail", Static)
        if run is None:
            detail.update(Text(f"no run stores under {self.evolve.source.path} yet (waiting for one)"
                               if not self.all else f"no {self.status} run (f: another status)"))
            return
        s = self.summaries.get(run.key, {})
        dead = (" · its process is gone (killed or crashed): rerun its command to resume it"
                if run.status == "dead" else "")
        detail.update(Text("\n".join([f"{run.run_id} · {run.kind} · {run.status} · {run.store_dir}{dead}",
                                      s.get("detail", "")])))

    def action_open(self) -> None:
        run = self.current()
        if run is not None:
            self.evolve.open_run(run)

    def action_tree(self) -> None:
        run = self.current()
        if run is not None:
            self.evolve.open_tree(run.store_dir)

    def action_training(self) -> None:
        self.evolve.open_training()

    def action_status_filter(self) -> None:
        self.status = STATUSES[(STATUSES.index(self.status) + 1) % len(STATUSES)]
        self.show_rows()

    def action_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self.show_rows()

    def action_reverse(self) -> None:
        self.descending = not self.descending
        self.show_rows()

    def action_stop(self) -> None:
        run = self.current()
        if run is not None:
            self.evolve.confirm_stop(run)


def _status_style(status: str) -> str:
    return {"running": "bold green", "finished": "cyan", "done": "cyan", "stopped": "yellow", "dead": "bold red",
            "error": "bold red", "failed": "bold red"}.get(status, "")
