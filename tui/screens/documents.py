"""The evolution layer's documents of a run, readable: SE-Agent's operator texts, summaries and selections,
Agent-R's pairs, verdicts and splices, HGM's diagnosis prompts and decisions (and any other kind). A document that
names trajectories opens them (`o`)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Footer, Header, Static, Tree

from tui.readable import in_words, readable, trajectory_ids, when
from tui.screens.base import LiveScreen
from tui.screens.dialogs import PickScreen
from tui.screens.inspector import InspectorScreen
from tui.source import RunRef

MOST_KEYS = 2000
"""Documents listed per kind (the newest); a kind with more says how many are left out."""
WHAT = {"se-agent:operator": "operator outputs (the strategy text an operator wrote)",
        "se-agent:summary": "attempt summaries", "se-agent:selection": "selections", "se-agent:slot": "attempt slots",
        "se-agent:baseline": "baselines", "agent-r:pair": "bad/good pairs", "agent-r:verdict": "verifier verdicts",
        "agent-r:splice": "revision splices", "agent-r:instance": "searched instances",
        "agent-r:iteration": "iterations", "agent-r:eval": "held-out evaluations", "agent-r:report": "report",
        "hgm:diagnosis": "diagnosis prompts and replies", "hgm:decision": "scheduler decisions"}


class DocumentsScreen(LiveScreen):
    BINDINGS = [
        Binding("o", "open", "Open trajectory"),
        Binding("tab", "focus_next", "Focus", show=False),
        Binding("j", "scroll(1)", "Down", show=False),
        Binding("k", "scroll(-1)", "Up", show=False),
        Binding("escape", "back", "Back"),
        Binding("q", "app.quit", "Quit", show=False),
    ]

    def __init__(self, run: RunRef) -> None:
        super().__init__()
        self.run = run
        self.family: list[str] = [run.run_id]
        self.kinds: dict[str, int] = {}
        self.groups: dict[str, object] = {}
        self.filled: set[str] = set()
        self.doc: dict | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="docs-main"):
            tree: Tree = Tree("documents", id="doc-tree")
            tree.show_root = False
            yield tree
            with VerticalScroll(id="doc-scroll"):
                yield Static(id="doc-text", markup=False)
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        store = self.evolve.source.store(self.run.store_dir)
        self.family = store.run_family(self.run.run_id)
        self.title = f"documents · {self.run.kind} {self.run.run_id}"
        super().on_mount()
        self.query_one("#doc-tree", Tree).focus()

    def watched_stores(self):
        return [self.evolve.source.store(self.run.store_dir)]

    def fetch(self) -> dict[str, int]:
        return self.evolve.source.background_store(self.run.store_dir).document_kinds(self.family)

    def apply(self, kinds: dict[str, int]) -> None:
        self.kinds = kinds
        tree = self.query_one("#doc-tree", Tree)
        for kind, n in kinds.items():
            label = Text(f"{kind} ({n})", style="bold")
            if kind in WHAT:
                label.append(f" {WHAT[kind]}", style="dim")
            if kind not in self.groups:
                self.groups[kind] = tree.root.add(label, data=("kind", kind), allow_expand=True)
            else:
                self.groups[kind].set_label(label)
                if kind in self.filled:  # new documents of an open kind: listed again
                    self.filled.discard(kind)
                    if self.groups[kind].is_expanded:
                        self.fill(kind)
        if not kinds:
            self.query_one("#doc-text", Static).update(Text("no documents stored for this run (yet)"))
        elif tree.cursor_node is None or tree.cursor_line < 0:
            tree.move_cursor(next(iter(self.groups.values())))

    def fill(self, kind: str) -> None:
        keys = self.evolve.source.store(self.run.store_dir).document_keys(kind, self.family)
        node = self.groups[kind]
        node.remove_children()
        for key, _ in keys[-MOST_KEYS:]:
            node.add_leaf(Text(key), data=("doc", kind, key))
        if len(keys) > MOST_KEYS:
            node.add_leaf(Text(f"… {len(keys) - MOST_KEYS} older not listed", style="dim"), data=None)
        self.filled.add(kind)

    def on_tree_node_expanded(self, event: Tree.NodeExpanded) -> None:
        data = event.node.data
        if data and data[0] == "kind" and data[1] not in self.filled:
            self.fill(data[1])

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        self.show(event.node.data)

    def show(self, data) -> None:
        text = self.query_one("#doc-text", Static)
        self.doc = None
        if not data:
            return
        if data[0] == "kind":
            text.update(Text(f"{data[1]}: {self.kinds.get(data[1], 0)} documents"
                             + (f" ({WHAT[data[1]]})" if data[1] in WHAT else "") + "\nenter: list them"))
            return
        _, kind, key = data
        doc = self.evolve.source.store(self.run.store_dir).document(kind, key)
        self.doc = doc
        head = Text(f"{kind} · {key}\n", style="bold")
        said = in_words(kind, doc)
        if said:
            head.append(said + "\n", style="cyan")
        ids = trajectory_ids(doc)
        if ids:
            head.append(f"names {len(ids)} trajectories (o: open)\n", style="dim")
        text.update(head + readable(doc))
        self.query_one("#doc-scroll").scroll_home(animate=False)

    def action_scroll(self, delta: int) -> None:
        self.query_one("#doc-scroll").scroll_relative(y=delta * 3, animate=False)

    def action_open(self) -> None:
        ids = trajectory_ids(self.doc) if self.doc else []
        store = self.evolve.source.store(self.run.store_dir)
        known = []
        for tid in ids:
            try:
                t = store.get_trajectory(tid)
            except KeyError:
                continue
            known.append((tid, f"{t.instance_id} · {t.origin} · {t.status.value} · {len(t.steps)} steps · "
                               f"{when(t.created_at)} · {tid}"))
        if not known:
            self.notify("this document names no stored trajectory", timeout=2)
            return
        if len(known) == 1:
            self.app.push_screen(InspectorScreen(store, known[0][0]))
            return

        def opened(tid: str | None) -> None:
            if tid:
                self.app.push_screen(InspectorScreen(store, tid))

        self.app.push_screen(PickScreen("trajectories this document names", known), opened)

    def action_back(self) -> None:
        self.app.pop_screen()
