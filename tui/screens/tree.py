"""The tree screen: HGM's tree of self-modified agents, Agent-R's MCTS trees, SE-Agent's lineages and the loop's
tree of (variant, policy version) nodes in one Tree widget. An HGM node shows its own and clade counts, the CMP
estimate, the 1% quantile of Beta(1+s, 1+f), its status and the best-belief mark; a node shows its details in
words, its diff (syntax-highlighted hunks), its diagnosis (the meta-agent's prompt and reply) and its evaluations;
`o` opens its trajectory (or an evaluation's), `m` the meta-agent's edit trajectory, `x` the smoke episode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane, Tree

from records import TreeNode
from tui.fast_table import FastTable
from tui.screens.base import LiveScreen
from tui.diff import diff_text
from tui.readable import readable, when
from tui.screens.inspector import InspectorScreen
from tui.stats import NodeStats, best_belief, hgm_stats
from tui.text import clean, clip, duration
from tui.widgets import cell

VIEWS = ("node", "diff", "diagnosis", "evals")
STATUS_STYLE = {"evaluating": "yellow", "expanding": "cyan", "rejected": "red", "failed": "red",
                "accepted": "green", "terminal": "bold", "best": "bold green"}


def node_label(node: TreeNode, st: NodeStats | None, best: bool) -> Text:
    text = Text()
    if best:
        text.append("★ ", style="bold yellow")
    if node.kind == "loop" and node.info.get("node_kind"):
        kind = str(node.info["node_kind"])
        text.append(f"[{kind}] ", style={"code": "magenta", "sft": "cyan", "grpo": "blue"}.get(kind, "dim"))
    label = clean(node.label or node.id)
    text.append(label if len(label) <= 28 else label[:27] + "…")
    if node.kind == "hgm" and st is not None:
        text.append(f" {st.own_s}/{st.own_s + st.own_f}", style="bold")
        text.append(f" ({st.clade_s}/{st.clade_s + st.clade_f})", style="dim")
    elif node.trials:
        text.append(f" {node.successes}/{node.trials}", style="bold")
    if node.status:
        text.append(f" {node.status}", style=STATUS_STYLE.get(node.status, "dim"))
    return text


class TreeScreen(LiveScreen):
    BINDINGS = [
        Binding("o", "open", "Open trajectory"),
        Binding("m", "meta", "Edit trajectory"),
        Binding("x", "smoke", "Smoke episode", show=False),
        Binding("v", "view", "View"),
        Binding("j", "scroll(1)", "Down", show=False),
        Binding("k", "scroll(-1)", "Up", show=False),
        Binding("tab", "focus_next", "Focus", show=False),
        Binding("escape", "back", "Back"),
        Binding("q", "app.quit", "Quit", show=False),
    ]

    def __init__(self, store_dir: Path) -> None:
        super().__init__()
        self.store_dir = store_dir
        self.store = None
        self.nodes: dict[str, TreeNode] = {}
        self.stats: dict[str, NodeStats] = {}
        self.best: dict[str, str | None] = {}
        self.widgets: dict[str, object] = {}
        self.groups: dict[str, object] = {}
        self.evals: list[dict] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="tree-main"):
            tree: Tree = Tree("trees", id="tree")
            tree.show_root = False
            yield tree
            with TabbedContent(id="tree-views", initial="node"):
                with TabPane("Node", id="node"):
                    with VerticalScroll():
                        yield Static(id="node-text", markup=False)
                with TabPane("Diff", id="diff"):
                    with VerticalScroll():
                        yield Static(id="diff-text", markup=False)
                with TabPane("Diagnosis", id="diagnosis"):
                    with VerticalScroll():
                        yield Static(id="diagnosis-text", markup=False)
                with TabPane("Evaluations", id="evals"):
                    yield FastTable(id="eval-table", cursor_type="row")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.store = self.evolve.source.store(self.store_dir)
        self.title = f"trees · {self.store_dir.name}"
        for col, width in (("task", 28), ("status", 11), ("resolved", 8), ("time", 7), ("trajectory", 18)):
            self.query_one("#eval-table", DataTable).add_column(col, key=col, width=width)
        super().on_mount()
        self.query_one("#tree", Tree).focus()

    def watched_stores(self):
        return [self.store]

    def fetch(self) -> tuple[list[TreeNode], dict[str, NodeStats], dict[str, str | None]]:
        store = self.evolve.source.background_store(self.store_dir)
        nodes = store.tree_nodes()
        hgm = [n for n in nodes if n.kind == "hgm"]
        stats = hgm_stats(hgm, store.outcomes()) if hgm else {}
        by_tree: dict[str, dict[str, NodeStats]] = {}
        for n in hgm:
            by_tree.setdefault(n.tree_id, {})[n.id] = stats[n.id]
        for st in stats.values():
            _ = st.quantile  # computed here, off the UI thread (cached)
        return nodes, stats, {tid: best_belief(st) for tid, st in by_tree.items()}

    def apply(self, data) -> None:
        nodes, self.stats, self.best = data
        self.nodes = {n.id: n for n in nodes}
        tree = self.query_one("#tree", Tree)
        pending = list(nodes)
        while pending:  # parents first, whatever order the rows came in
            later = []
            for n in pending:
                group_key = f"{n.kind}:{n.tree_id}"
                if group_key not in self.groups:
                    self.groups[group_key] = tree.root.add(Text(f"{n.kind} · {n.tree_id or '-'}", style="bold"),
                                                           data=None, expand=True)
                parent = self.widgets.get(n.parent_id) if n.parent_id else self.groups[group_key]
                if parent is None and n.parent_id in self.nodes:
                    later.append(n)
                    continue
                label = node_label(n, self.stats.get(n.id), self.best.get(n.tree_id) == n.id)
                w = self.widgets.get(n.id)
                if w is None:
                    self.widgets[n.id] = (parent or self.groups[group_key]).add(label, data=n.id, expand=True)
                else:
                    w.set_label(label)
            if len(later) == len(pending):  # parents that never arrive (a cycle): show them at the top
                for n in later:
                    self.widgets[n.id] = self.groups[f"{n.kind}:{n.tree_id}"].add(
                        node_label(n, self.stats.get(n.id), False), data=n.id, expand=True)
                later = []
            pending = later
        for w in [*self.widgets.values(), *self.groups.values()]:
            w.allow_expand = bool(w.children)
        if not nodes:
            self.query_one("#node-text", Static).update(Text("no tree nodes stored in this run (yet)"))
            return
        if tree.cursor_node is None:  # the first open: start on the first tree's first node, shown at once
            first = next(iter(self.widgets.values()))
            tree.move_cursor(first)
            self.call_after_refresh(self.show_node)
        self.show_node()

    def current(self) -> TreeNode | None:
        cur = self.query_one("#tree", Tree).cursor_node
        return self.nodes.get(cur.data) if cur is not None and cur.data else None

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        self.show_node()

    def show_node(self) -> None:
        node = self.current()
        if node is None:
            self.show_group()
            return
        st = self.stats.get(node.id)
        lines = [f"{node.kind} node {node.id} · tree {node.tree_id} · parent {node.parent_id or '-'}",
                 f"label: {clean(node.label)}", f"status: {node.status or '-'}"]
        reason = node.info.get("reason") or node.info.get("rejection_reason") or node.info.get("error")
        if reason:
            lines.append(f"reason: {clean(str(reason))}")
        if st is not None:
            cmp_ = "-" if st.cmp is None else f"{st.cmp:.3f}"
            lines += [f"own: {st.own_s} pass / {st.own_f} fail" + (f" / {st.own_other} not judged" if st.own_other else ""),
                      f"clade: {st.clade_s} pass / {st.clade_f} fail · CMP estimate {cmp_}",
                      f"1% quantile of Beta(1+s, 1+f): {st.quantile:.4f}"
                      + ("  ★ best belief" if self.best.get(node.tree_id) == node.id else "")]
        elif node.trials or node.successes:
            lines.append(f"successes/value {node.successes} · trials/visits {node.trials}")
        if node.variant_dir:
            lines.append(f"variant: {node.variant_dir}")
        if node.trajectory_id:
            lines.append(f"trajectory: {node.trajectory_id} (o: open)")
        if meta_trajectory(node):
            lines.append(f"the meta-agent's edit: trajectory {meta_trajectory(node)} (m: open)")
        if smoke_trajectory(node):
            lines.append(f"smoke episode: trajectory {smoke_trajectory(node)} (x: open)")
        lines.append(f"stored {when(node.created_at)}")
        extra = {k: v for k, v in node.info.items() if k not in ("diff", "diagnosis", "reason")}
        text = Text("\n".join(lines) + "\n")
        if extra:
            text.append("\n")
            text.append_text(readable(extra))
        self.query_one("#node-text", Static).update(text)
        self.query_one("#diff-text", Static).update(diff_text(str(node.info.get("diff") or "(no diff)")))
        self.query_one("#diagnosis-text", Static).update(self.diagnosis(node))
        self.evals = self.store.outcomes(node_id=node.id)
        table = self.query_one("#eval-table", DataTable)
        table.clear()
        for row in self.evals:
            res = "-" if row["resolved"] is None else ("yes" if row["resolved"] else "no")
            table.add_row(*map(cell, (row["task_id"], row["status"], res,
                                      duration(row["finished_at"] - row["started_at"]), row["trajectory_id"] or "-")))
        table.border_title = f"{len(self.evals)} evaluations (enter: open trajectory)"

    def diagnosis(self, node: TreeNode) -> Text:
        """The node's diagnosis, then what the meta-agent was asked and answered (the `hgm:diagnosis` document)."""
        out = Text()
        diag = node.info.get("diagnosis")
        if diag:
            out.append("diagnosis\n", style="bold")
            out.append_text(readable(diag) if not isinstance(diag, str) else Text(clip(clean(diag)) + "\n"))
        doc = self.store.document("hgm:diagnosis", node.id) if node.kind in ("hgm", "loop") else None
        if doc:
            out.append("\nthe diagnosis call (hgm:diagnosis)\n", style="bold")
            out.append_text(readable(doc))
        return out if out.plain else Text("(no diagnosis)")

    def show_group(self) -> None:
        """A tree's own line: its size and, for HGM, the best-belief node."""
        cur = self.query_one("#tree", Tree).cursor_node
        key = next((k for k, w in self.groups.items() if w is cur), None)
        if key is None:
            return
        kind, tree_id = key.split(":", 1)
        members = [n for n in self.nodes.values() if n.kind == kind and n.tree_id == tree_id]
        lines = [f"{kind} tree {tree_id}: {len(members)} nodes"]
        for status in sorted({n.status for n in members if n.status}):
            lines.append(f"  {status}: {sum(n.status == status for n in members)}")
        best = self.best.get(tree_id) if kind == "hgm" else None
        if best:
            st = self.stats[best]
            lines.append(f"best belief ★ {self.nodes[best].label or best}: {st.own_s}/{st.own_s + st.own_f} own, "
                         f"1% quantile {st.quantile:.4f}")
        self.query_one("#node-text", Static).update(Text("\n".join(lines)))
        self.query_one("#diff-text", Static).update(Text(""))
        self.query_one("#diagnosis-text", Static).update(Text(""))
        self.evals = []
        self.query_one("#eval-table", DataTable).clear()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "eval-table" and event.cursor_row < len(self.evals):
            self.open_trajectory(self.evals[event.cursor_row]["trajectory_id"])

    def action_open(self) -> None:
        node = self.current()
        if node is None:
            return
        if node.trajectory_id:
            self.open_trajectory(node.trajectory_id)
        elif self.evals:
            self.query_one("#tree-views", TabbedContent).active = "evals"
            self.query_one("#eval-table").focus()
        else:
            self.notify("this node has no trajectory and no evaluations yet", timeout=2)

    def action_meta(self) -> None:
        node = self.current()
        tid = meta_trajectory(node) if node else None
        if not tid:
            self.notify("this node has no edit trajectory (only an HGM child made by the meta-agent has one)", timeout=3)
            return
        self.open_trajectory(tid)

    def action_smoke(self) -> None:
        node = self.current()
        tid = smoke_trajectory(node) if node else None
        if not tid:
            self.notify("this node has no smoke episode", timeout=3)
            return
        self.open_trajectory(tid)

    def action_scroll(self, delta: int) -> None:
        tabs = self.query_one("#tree-views", TabbedContent)
        pane = tabs.query_one(f"#{tabs.active}")
        scroll = pane.query(VerticalScroll).first() if pane.query(VerticalScroll) else pane.query_one(DataTable)
        scroll.scroll_relative(y=delta * 3, animate=False)

    def open_trajectory(self, tid: str | None) -> None:
        if not tid:
            self.notify("no trajectory stored for this", timeout=2)
            return
        self.app.push_screen(InspectorScreen(self.store, tid))

    def action_view(self) -> None:
        tabs = self.query_one("#tree-views", TabbedContent)
        tabs.active = VIEWS[(VIEWS.index(tabs.active) + 1) % len(VIEWS)]

    def action_back(self) -> None:
        if self.query_one("#eval-table").has_focus:
            self.query_one("#tree").focus()
        else:
            self.app.pop_screen()



def meta_trajectory(node: TreeNode) -> str | None:
    """The meta-agent's trajectory that made this node's edit (HGM's `info.meta_trajectory_id`)."""
    return node.info.get("meta_trajectory_id") or None


def smoke_trajectory(node: TreeNode) -> str | None:
    """The smoke episode that validated this node's variant (`info.validation.smoke.trajectory_id`)."""
    validation: Any = node.info.get("validation") or {}
    smoke = validation.get("smoke") if isinstance(validation, dict) else None
    return (smoke or {}).get("trajectory_id") if isinstance(smoke, dict) else None
