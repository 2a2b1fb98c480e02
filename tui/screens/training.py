"""The training screen: the tree of policy versions (from every store under the root) and, for the chosen
version, its curves of loss, reward, KL, entropy, clip fraction and tokens/s (textual-plotext)."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal
from textual.widgets import Footer, Header, Static, Tree

from records import PolicyVersion
from tui.screens.base import LiveScreen
from tui.widgets import MetricPlot

METRICS = ("loss", "reward", "kl", "entropy", "clip_fraction", "tokens_per_s")


class TrainingScreen(LiveScreen):
    BINDINGS = [Binding("escape", "back", "Back"), Binding("q", "app.quit", "Quit", show=False)]

    def __init__(self) -> None:
        super().__init__()
        self.versions: dict[str, PolicyVersion] = {}
        self.home: dict[str, Path] = {}
        """The store holding each version's training steps (or the version itself)."""
        self.widgets: dict[str, object] = {}
        self.selected: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="train-main"):
            tree: Tree = Tree("policy versions", id="versions")
            tree.show_root = False
            yield tree
            with Grid(id="plots"):
                for m in METRICS:
                    yield MetricPlot(id=f"plot-{m}")
        yield Static(id="version-detail", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "training · policy versions"
        super().on_mount()
        self.query_one("#versions", Tree).focus()

    def watched_stores(self):
        return self.evolve.source.stores()

    def fetch(self) -> tuple[dict[str, PolicyVersion], dict[str, Path]]:
        src = self.evolve.source
        versions, home = dict(self.versions), dict(self.home)
        for d in src.run_dirs():
            try:
                store = src.background_store(d)
                found = store.policy_versions()
            except Exception:  # noqa: BLE001 - a store still being created: next poll
                continue
            for v in found:
                versions[v.id] = v
                if v.id not in home or store.train_step_count(v.id):
                    home[v.id] = d
        return versions, home

    def apply(self, data) -> None:
        self.versions, self.home = data
        tree = self.query_one("#versions", Tree)
        pending = sorted(self.versions.values(), key=lambda v: v.created_at)
        while pending:
            later = []
            for v in pending:
                label = Text(f"{v.kind} {v.id}", style="bold" if v.kind == "base" else "")
                if v.metrics:
                    label.append(" " + " ".join(f"{k}={x:.3g}" for k, x in list(v.metrics.items())[:2]), style="dim")
                if v.id in self.widgets:
                    self.widgets[v.id].set_label(label)
                    continue
                parent = self.widgets.get(v.parent_id) if v.parent_id else tree.root
                if parent is None and v.parent_id in self.versions:
                    later.append(v)
                    continue
                self.widgets[v.id] = (parent or tree.root).add(label, data=v.id, expand=True)
            if len(later) == len(pending):
                for v in later:
                    self.widgets[v.id] = tree.root.add(Text(f"{v.kind} {v.id}"), data=v.id, expand=True)
                later = []
            pending = later
        for w in self.widgets.values():
            w.allow_expand = bool(w.children)
        if self.selected is None:  # start on the newest trained version
            trained = [v for v in self.versions.values() if v.kind != "base"] or list(self.versions.values())
            if trained:
                newest = max(trained, key=lambda v: v.created_at)
                self.selected = newest.id
                self.call_after_refresh(tree.move_cursor, self.widgets[newest.id])
        self.show_version()

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        if event.node.data and (self.selected is None or event.node.data != self.selected):
            self.selected = event.node.data
            self.show_version()

    def show_version(self) -> None:
        detail = self.query_one("#version-detail", Static)
        if self.selected is None or self.selected not in self.versions:
            detail.update(Text("no policy versions stored under this root (yet)"))
            for m in METRICS:
                self.query_one(f"#plot-{m}", MetricPlot).show(m, [], [])
            return
        self.run_worker(lambda: self._read_curves(self.selected), thread=True, exclusive=True, group="curves")

    def _read_curves(self, version_id: str) -> None:
        steps = self.evolve.source.background_store(self.home[version_id]).train_steps(version_id)
        self.app.call_from_thread(self._draw, version_id, steps)

    def _draw(self, version_id: str, steps: list) -> None:
        if version_id != self.selected:
            return
        v = self.versions[version_id]
        self.query_one("#version-detail", Static).update(Text(
            f"{v.kind} {v.id} · from {v.parent_id or '-'} · base {v.base} · {len(steps)} steps · "
            f"{'adapter' if v.adapter else 'weights'} {v.path or '-'} · data {', '.join(v.data) or '-'}"))
        for m in METRICS:
            pts = [(s.step, s.metrics[m]) for s in steps if m in s.metrics]
            self.query_one(f"#plot-{m}", MetricPlot).show(m, [p[0] for p in pts], [p[1] for p in pts])

    def action_back(self) -> None:
        self.app.pop_screen()
