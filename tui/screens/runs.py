"""The runs screen: every run under the root, with kind, status, progress, score, policy and times."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from tui.screens.base import LiveScreen
from tui.source import RunRef
from tui.summary import run_summary
from tui.text import age, clock
from tui.widgets import fill_table

COLUMNS = ("run", "kind", "status", "progress", "score", "policy", "started", "updated")


class RunsScreen(LiveScreen):
    """List pane (the runs) over a detail pane (the highlighted run's summary)."""

    BINDINGS = [
        Binding("enter", "open", "Open"),
        Binding("t", "tree", "Tree"),
        Binding("v", "training", "Training"),
        Binding("s", "stop", "Stop run"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[RunRef] = []
        self.summaries: dict[str, dict] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static(id="run-detail", classes="detail")
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        self.title = f"Evolve · runs under {self.evolve.source.path}"

    def watched_stores(self):
        return self.evolve.source.stores()

    def fetch(self) -> list[tuple[RunRef, dict]]:
        src = self.evolve.source
        return [(run, run_summary(src.background_store(run.store_dir), run)) for run in src.runs()]

    def apply(self, data: list[tuple[RunRef, dict]]) -> None:
        self.runs = [run for run, _ in data]
        rows = []
        for run, s in data:
            self.summaries[run.key] = s
            rows.append((run.run_id, run.kind, Text(run.status, style=_status_style(run.status)), s["progress"],
                         s["score"], str(run.config.get("policy") or run.config.get("base") or "-")[-24:],
                         clock(run.created_at), age(s["last_update"], self.evolve.clock())))
        fill_table(self.query_one("#runs", DataTable), COLUMNS, rows, [r.key for r in self.runs])
        self.show_detail()

    def current(self) -> RunRef | None:
        table = self.query_one("#runs", DataTable)
        if not self.runs or table.cursor_row >= len(self.runs):
            return None
        return self.runs[table.cursor_row]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def show_detail(self) -> None:
        run = self.current()
        detail = self.query_one("#run-detail", Static)
        if run is None:
            detail.update(Text(f"no run stores under {self.evolve.source.path} yet (waiting for one)"))
            return
        s = self.summaries.get(run.key, {})
        detail.update(Text("\n".join([f"{run.run_id} · {run.kind} · {run.status} · {run.store_dir}",
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

    def action_stop(self) -> None:
        run = self.current()
        if run is not None:
            self.evolve.confirm_stop(run)


def _status_style(status: str) -> str:
    return {"running": "bold green", "finished": "cyan", "done": "cyan", "stopped": "yellow",
            "error": "bold red", "failed": "bold red"}.get(status, "")
