"""The training screen: the tree of policy versions (from every store under the root, or under one run's directory)
and, for the chosen version, its curves of loss, reward, KL, entropy, clip fraction and tokens/s, live while it
trains (the version is stored when its training starts). Curves can be smoothed, other versions overlaid, and drawn
against the step or the time. A GRPO training with a curriculum (`--curriculum sec|uniform`) shows its category
weights over time in place of the curves (`w`)."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Static, Tree

from records import PolicyVersion, TrainStep
from tui.fast_table import FastTable
from tui.curriculum import CurriculumPlot, Update, merge, read_updates, table_rows
from tui.screens.base import LiveScreen
from tui.text import duration
from tui.widgets import MetricPlot, fill_table

METRICS = ("loss", "reward", "kl", "entropy", "clip_fraction", "tokens_per_s")
SMOOTHING = (0.0, 0.6, 0.9, 0.99)
"""What `s` cycles through: the weight of the exponential moving average (TensorBoard's slider)."""
SPARE = ("grad_norm", "lr", "epoch", "trained_tokens", "ratio", "format", "correctness")
"""Metrics drawn in the place of one a version does not log (SFT logs no reward, KL, entropy or clip fraction)."""
STATUS_STYLE = {"training": "bold cyan", "stopped": "yellow", "failed": "bold red"}


def curve(steps: list[TrainStep], metric: str, by_time: bool) -> tuple[list[float], list[float]]:
    """(xs, ys) of one metric: x is the step, or the seconds since the training's first stored step."""
    pts = [(s, s.metrics[metric]) for s in steps if metric in s.metrics]
    if not pts:
        return [], []
    t0 = steps[0].created_at
    return [(s.created_at - t0) if by_time else float(s.step) for s, _ in pts], [v for _, v in pts]


class VersionTree(Tree):
    """The versions; remembers when the user moved its cursor (keys or a click), so the screen stops following."""

    user_moved = False

    def _moved(self) -> None:
        self.user_moved = True

    def action_cursor_up(self) -> None:
        self._moved()
        super().action_cursor_up()

    def action_cursor_down(self) -> None:
        self._moved()
        super().action_cursor_down()

    def action_page_up(self) -> None:
        self._moved()
        super().action_page_up()

    def action_page_down(self) -> None:
        self._moved()
        super().action_page_down()

    def action_scroll_home(self) -> None:
        self._moved()
        super().action_scroll_home()

    def action_scroll_end(self) -> None:
        self._moved()
        super().action_scroll_end()

    async def _on_click(self, event) -> None:
        self._moved()
        await super()._on_click(event)


class TrainingScreen(LiveScreen):
    BINDINGS = [
        Binding("s", "smoothing", "Smoothing"),
        Binding("a", "overlay", "Overlay"),
        Binding("x", "axis", "Step/time"),
        Binding("w", "curriculum", "Curriculum"),
        Binding("c", "clear_overlay", "Clear overlay", show=False),
        Binding("escape", "back", "Back"),
        Binding("q", "app.quit", "Quit", show=False),
    ]

    def __init__(self, under: Path | None = None) -> None:
        super().__init__()
        self.under = Path(under) if under is not None else None
        """Only the stores at and below this directory (a run's own trainings); None: every store."""
        self.versions: dict[str, PolicyVersion] = {}
        self.home: dict[str, Path] = {}
        """The store holding each version's training steps (or the version itself)."""
        self.widgets: dict[str, object] = {}
        self.selected: str | None = None
        self.picked = False
        """The user moved to a version: stay there. Until then the screen follows the newest trained version."""
        self.overlay: list[str] = []
        self.smoothing = 0.0
        self.by_time = False
        self.steps: dict[str, list[TrainStep]] = {}
        self.curricula: dict[Path, list[Update]] = {}
        """The curriculum updates stored in each store (a GRPO training's with `--curriculum`), read incrementally."""
        self.show_curriculum = False
        """`w`: the chosen version's curriculum weights in place of its curves."""

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="train-main"):
            tree: Tree = VersionTree("policy versions", id="versions")
            tree.show_root = False
            yield tree
            with Grid(id="plots"):
                for m in METRICS:
                    yield MetricPlot(id=f"plot-{m}")
            with Vertical(id="curriculum"):
                yield CurriculumPlot(id="curriculum-plot")
                yield FastTable(id="curriculum-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="version-detail", markup=False)
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.title = "training · policy versions" + (f" · {self.under.name}" if self.under else "")
        super().on_mount()
        self.query_one("#versions", Tree).focus()

    def dirs(self) -> list[Path]:
        found = self.evolve.source.run_dirs()
        if self.under is None:
            return found
        return [d for d in found if d == self.under or self.under in d.parents]

    def watched_stores(self):
        src = self.evolve.source
        return [src.store(d) for d in self.dirs()]

    def fetch(self) -> tuple[dict[str, PolicyVersion], dict[str, Path], dict[str, list[TrainStep]], dict]:
        src = self.evolve.source
        versions, home = {}, dict(self.home)
        for d in self.dirs():
            try:
                store = src.background_store(d)
                found = store.policy_versions()
            except Exception:  # noqa: BLE001 - a store still being created: next poll
                continue
            for v in found:
                old = versions.get(v.id)
                if old is None or (old.status != "ready" and v.status == "ready") or store.train_step_count(v.id):
                    versions[v.id] = v
                if v.id not in home or store.train_step_count(v.id):
                    home[v.id] = d
        selected = self.selected if self.picked else self.newest(versions)
        steps = {vid: src.background_store(home[vid]).train_steps(vid)
                 for vid in dict.fromkeys([selected, *self.overlay]) if vid in home}
        return versions, home, steps, self._read_curriculum(home.get(selected))

    def _read_curriculum(self, store_dir: Path | None) -> dict[Path, list[Update]]:
        """The curriculum updates of `store_dir` not read yet (worker thread)."""
        if store_dir is None:
            return {}
        known = [u.key for u in list(self.curricula.get(store_dir, []))]
        try:
            return {store_dir: read_updates(self.evolve.source.background_store(store_dir), known)}
        except Exception:  # noqa: BLE001 - a store still being created: next poll
            return {}

    @staticmethod
    def newest(versions: dict[str, PolicyVersion]) -> str | None:
        """The version to follow: the newest one being trained, else the newest trained one, else any."""
        live = [v for v in versions.values() if v.status == "training"]
        trained = live or [v for v in versions.values() if v.kind != "base"] or list(versions.values())
        return max(trained, key=lambda v: v.created_at).id if trained else None

    def apply(self, data) -> None:
        self.versions, self.home, steps, curricula = data
        self.steps.update(steps)
        self._keep_curricula(curricula)
        tree = self.query_one("#versions", Tree)
        pending = sorted(self.versions.values(), key=lambda v: v.created_at)
        while pending:
            later = []
            for v in pending:
                label = self.label(v)
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
                    self.widgets[v.id] = tree.root.add(self.label(v), data=v.id, expand=True)
                later = []
            pending = later
        for w in self.widgets.values():
            w.allow_expand = bool(w.children)
        follow = self.newest(self.versions)
        if not self.picked and follow is not None and follow != self.selected:  # a newer version appeared: follow it
            self.selected = follow
            self.call_after_refresh(tree.move_cursor, self.widgets[follow])
        self.show_version()

    def label(self, v: PolicyVersion) -> Text:
        label = Text(f"{v.kind} {v.id}", style="bold" if v.kind == "base" else "")
        if v.status != "ready":
            label.append(f" {v.status}", style=STATUS_STYLE.get(v.status, "dim"))
        if v.id in self.overlay:
            label.append(" +", style="bold magenta")
        if v.metrics:
            label.append(" " + " ".join(f"{k}={x:.3g}" for k, x in list(v.metrics.items())[:2]), style="dim")
        return label

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        if event.node.data and event.node.data != self.selected:
            if not event.control.user_moved:  # the tree's own first highlight, not the user's choice
                return
            self.picked = True  # the user chose this one: no more following
            self.selected = event.node.data
            self.show_version(read=True)

    def show_version(self, read: bool = False) -> None:
        detail = self.query_one("#version-detail", Static)
        if self.selected is None or self.selected not in self.versions:
            detail.update(Text("no policy versions stored under this root (yet)"))
            for m in METRICS:
                self.query_one(f"#plot-{m}", MetricPlot).show(m, [])
            return
        wanted = [self.selected, *[o for o in self.overlay if o != self.selected]]
        if read or any(v not in self.steps for v in wanted):
            self.run_worker(lambda: self._read_curves(wanted), thread=True, exclusive=True, group="curves")
            return
        self._draw()

    def _read_curves(self, wanted: list[str]) -> None:
        src = self.evolve.source
        steps = {v: src.background_store(self.home[v]).train_steps(v) for v in wanted if v in self.home}
        self.app.call_from_thread(self._got, steps, self._read_curriculum(self.home.get(wanted[0])))

    def _got(self, steps: dict[str, list[TrainStep]], curricula: dict | None = None) -> None:
        self.steps.update(steps)
        self._keep_curricula(curricula or {})
        self._draw()

    def _keep_curricula(self, new: dict[Path, list[Update]]) -> None:
        for d, updates in new.items():
            self.curricula[d] = merge(self.curricula.get(d, []), updates)

    def curriculum(self) -> list[Update]:
        """The chosen version's curriculum updates (those of the store it was trained in)."""
        home = self.home.get(self.selected) if self.selected else None
        return self.curricula.get(home, []) if home is not None else []

    def _draw(self) -> None:
        vid = self.selected
        if vid is None or vid not in self.versions:
            return
        v = self.versions[vid]
        steps = self.steps.get(vid, [])
        took = steps[-1].created_at - steps[0].created_at if len(steps) > 1 else None
        cur = self.curriculum()
        self.query_one("#version-detail", Static).update(Text(
            f"{v.kind} {v.id} · {v.status} · from {v.parent_id or '-'} · base {v.base} · {len(steps)} steps"
            + (f" in {duration(took)}" if took else "") + f" · {'adapter' if v.adapter else 'weights'} "
            f"{v.path or '-'} · data {', '.join(v.data) or '-'}"
            + (f"\noverlay: {', '.join(self.overlay)}" if self.overlay else "")
            + f"\nsmoothing {self.smoothing:g} (s) · x: {'time' if self.by_time else 'step'} (x) · a: overlay"
            + (f" · w: curriculum of {len(cur[-1].weights)} categories, {len(cur)} updates" if cur else "")))
        self.query_one("#plots").display = not self.show_curriculum
        self.query_one("#curriculum").display = self.show_curriculum
        if self.show_curriculum:
            self._draw_curriculum(cur)
            return
        shown = [vid] + [o for o in self.overlay if o != vid]
        logged = {k for s in steps for k in s.metrics}
        spare = [m for m in SPARE if m in logged]
        for m in METRICS:
            drawn = m if m in logged or not spare else spare.pop(0)
            series = [(o, *curve(self.steps.get(o, []), drawn, self.by_time)) for o in shown]
            self.query_one(f"#plot-{m}", MetricPlot).show(drawn, series, self.smoothing,
                                                          "seconds" if self.by_time else "step")

    def _draw_curriculum(self, cur: list[Update]) -> None:
        self.query_one("#curriculum-plot", CurriculumPlot).show(cur, self.by_time)
        table = self.query_one("#curriculum-table", DataTable)
        rows = table_rows(cur)
        fill_table(table, ("category", "weight", "change", "Q", "last reward", "rewarded"), rows,
                   [str(r[0]) for r in rows], flex="category", cut={"category": "start"})
        self.resort(table)
        table.border_title = (f"{len(rows)} categories · update {len(cur)} at step {cur[-1].step}" if cur else
                              "no curriculum stored for this version (evolve train grpo --curriculum sec)")

    def action_curriculum(self) -> None:
        """The chosen version's curriculum weights over time in place of its curves (and back)."""
        self.show_curriculum = not self.show_curriculum
        self._draw()

    def action_smoothing(self) -> None:
        self.smoothing = SMOOTHING[(SMOOTHING.index(self.smoothing) + 1) % len(SMOOTHING)]
        self._draw()

    def action_axis(self) -> None:
        self.by_time = not self.by_time
        self._draw()

    def action_overlay(self) -> None:
        """Add the highlighted version to the overlay (or take it out): its curves are drawn over the chosen one's."""
        cur = self.query_one("#versions", Tree).cursor_node
        vid = cur.data if cur is not None else None
        if not vid:
            return
        if vid in self.overlay:
            self.overlay.remove(vid)
        else:
            self.overlay.append(vid)
        if vid in self.widgets and vid in self.versions:
            self.widgets[vid].set_label(self.label(self.versions[vid]))
        self.show_version(read=True)

    def action_clear_overlay(self) -> None:
        for vid in self.overlay:
            if vid in self.widgets and vid in self.versions:
                self.overlay = [o for o in self.overlay if o != vid]
                self.widgets[vid].set_label(self.label(self.versions[vid]))
        self.overlay = []
        self._draw()

    def action_back(self) -> None:
        self.app.pop_screen()
