"""The Loop view of an `evolve loop` run: the stage now running and its progress, every generation (the gate's
decision, the held-out score with its interval, what won, the cost), the held-out curve with its intervals, and
the stages. `t` opens the tree of (variant, policy version) nodes, `d` the run's trajectories.

It reads the loop's store records as plain documents (`loop:generation`, `loop:stage`) and tree nodes of kind
`loop`, as `evolve/loop/state.py` describes them."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Static
from textual_plotext import PlotextPlot

from evolve.store import owner_alive
from tui.fast_table import FastTable
from tui.screens.base import LiveScreen
from tui.screens.dashboard import DashboardScreen
from tui.screens.documents import DocumentsScreen
from tui.screens.tree import TreeScreen
from tui.source import RunRef
from tui.text import age, duration
from tui.widgets import fill_table

GEN_COLUMNS = ("gen", "champion", "candidate", "gate", "held-out", "diff [interval]", "p worse", "winner", "tokens",
               "time", "sandbox")
STAGE_COLUMNS = ("gen", "stage", "status", "progress", "time", "cpu", "tokens", "tries")


def interval(d: dict, key: str = "mean", low: str = "low", high: str = "high") -> str:
    if not d or key not in d:
        return "-"
    return f"{d[key]:.2f} [{d.get(low, d[key]):.2f}–{d.get(high, d[key]):.2f}]"


def short(node: str) -> str:
    return str(node).rsplit(":", 1)[-1][-12:]


class HeldOutPlot(PlotextPlot):
    """The champion's held-out mean per generation, with its interval drawn as two faint lines."""

    points: list[tuple[int, float, float, float]] = []

    def show(self, points: list[tuple[int, float, float, float]]) -> None:
        self.points = list(points)
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        if not points:
            plt.title("held-out: no generation finished yet")
        else:
            xs = [p[0] for p in points]
            plt.plot(xs, [p[2] for p in points], color="gray", marker="braille")
            plt.plot(xs, [p[3] for p in points], color="gray", marker="braille")
            plt.plot(xs, [p[1] for p in points], color="cyan", marker="hd")
            plt.title(f"held-out score of the champion (g{points[-1][0]}: {points[-1][1]:.3f})")
            plt.xlabel("generation")
        self.refresh()


class LoopScreen(LiveScreen):
    BINDINGS = [
        Binding("t", "tree", "Tree"),
        Binding("d", "dashboard", "Trajectories"),
        Binding("D", "documents", "Documents"),
        Binding("s", "stop", "Stop run", show=False),
        Binding("tab", "focus_next", "Focus", show=False),
        Binding("escape", "back", "Back"),
        Binding("q", "app.quit", "Quit", show=False),
    ]

    def __init__(self, run: RunRef) -> None:
        super().__init__()
        self.run = run
        self.generations: list[dict] = []
        self.stages: list[dict] = []
        self.nodes: dict[str, object] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="loop-now")
        yield FastTable(id="generations", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="loop-bottom"):
            yield FastTable(id="stages", cursor_type="row", zebra_stripes=True)
            yield HeldOutPlot(id="heldout")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.title = f"loop {self.run.run_id}"
        super().on_mount()
        self.set_interval(1.0, self.show_now)
        self.query_one("#generations").focus()

    def watched_stores(self):
        return [self.evolve.source.store(self.run.store_dir)]

    def fetch(self):
        store = self.evolve.source.background_store(self.run.store_dir)
        gens = sorted((d for _, d in store.documents("loop:generation", run_id=self.run.run_id)),
                      key=lambda d: d.get("generation", 0))
        stages = [d for _, d in store.documents("loop:stage", run_id=self.run.run_id)]
        stages.sort(key=lambda d: (d.get("generation", 0), d.get("started_at", 0)))
        nodes = {n.id: n for n in store.tree(tree_id=self.run.run_id, kind="loop")}
        status = next((r["status"] for r in store.runs() if r["id"] == self.run.run_id), self.run.status)
        if status == "running" and owner_alive(self.run.store_dir) is False:
            status = "dead"
        return gens, stages, nodes, status

    def apply(self, data) -> None:
        self.generations, self.stages, self.nodes, self.status = data
        rows = []
        for g in self.generations:
            gate, held, winner, cost = g.get("gate") or {}, g.get("held_out") or {}, g.get("winner") or {}, \
                g.get("cost") or {}
            decision = Text("accepted", style="bold green") if g.get("accepted") else Text("kept", style="yellow")
            what = winner.get("kind", "-")
            if winner.get("training"):
                what += f" {winner['training'].get('version') or ''}"
            elif winner.get("label"):
                what += f" {winner['label']}"
            rows.append((g.get("generation"), f"{short(g.get('champion_in', ''))}→{short(g.get('champion_out', ''))}",
                         short(g.get("candidate", "")), decision, interval(held),
                         interval(gate, "diff", "ci_low", "ci_high"),
                         f"{gate['p_worse']:.3f}" if "p_worse" in gate else "-", what,
                         int(cost.get("tokens", 0)), duration(cost.get("seconds")),
                         duration(cost.get("sandbox_seconds")) if cost.get("sandbox_seconds") else "-"))
        table = self.query_one("#generations", DataTable)
        fill_table(table, GEN_COLUMNS, rows, [str(g.get("generation")) for g in self.generations], flex="winner")
        self.resort(table)
        table.border_title = f"generations: {len(rows)} finished"
        srows = []
        for s in self.stages:
            prog = s.get("progress") or {}
            done = f"{prog.get('done')}/{prog.get('total')} {prog.get('what', '')}".strip() if prog else "-"
            cost = s.get("cost") or {}
            style = {"started": "bold cyan", "done": "green", "skipped": "dim"}.get(s.get("status"), "")
            srows.append((s.get("generation"), s.get("stage"), Text(s.get("status", ""), style=style), done,
                          duration(s.get("seconds")), duration(s.get("cpu_seconds")), int(cost.get("tokens", 0)),
                          s.get("attempts", 0)))
        st = self.query_one("#stages", DataTable)
        fill_table(st, STAGE_COLUMNS, srows, [f"{s.get('generation')}/{s.get('stage')}" for s in self.stages],
                   flex="progress")
        self.resort(st)
        st.border_title = "stages"
        points = [(g["generation"], (g.get("held_out") or {}).get("mean", 0.0),
                   (g.get("held_out") or {}).get("low", 0.0), (g.get("held_out") or {}).get("high", 0.0))
                  for g in self.generations if (g.get("held_out") or {}).get("n")]
        self.query_one("#heldout", HeldOutPlot).show(points)
        self.show_now()

    status = ""

    def running_stage(self) -> dict | None:
        live = [s for s in self.stages if s.get("status") == "started"]
        return live[-1] if live else None

    def show_now(self) -> None:
        now = self.evolve.clock()
        kinds: dict[str, int] = {}
        for n in self.nodes.values():
            kind = n.info.get("node_kind", "?")
            kinds[kind] = kinds.get(kind, 0) + 1
        text = Text()
        text.append(f"{self.status or self.run.status}", style="bold green" if self.status == "running" else "yellow")
        stage = self.running_stage()
        if stage is not None and self.status == "running":
            prog = stage.get("progress") or {}
            text.append(f" · generation {stage.get('generation')} · stage {stage.get('stage')}", style="bold")
            if prog:
                text.append(f" {prog.get('done')}/{prog.get('total')} {prog.get('what', '')}")
            text.append(f" · started {age(stage.get('started_at'), now)}")
        elif self.generations:
            last = self.generations[-1]
            text.append(f" · {len(self.generations)} generations · champion {short(last.get('champion_out', ''))}")
        text.append(f"\ntree: {len(self.nodes)} nodes" + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
                                                         + ")" if kinds else "") + " · t: open")
        self.query_one("#loop-now", Static).update(text)

    def action_tree(self) -> None:
        self.app.push_screen(TreeScreen(self.run.store_dir))

    def action_dashboard(self) -> None:
        self.app.push_screen(DashboardScreen(self.run))

    def action_documents(self) -> None:
        self.app.push_screen(DocumentsScreen(self.run))

    def action_stop(self) -> None:
        self.evolve.confirm_stop(self.run, self.status or self.run.status)

    def action_back(self) -> None:
        self.app.pop_screen()
