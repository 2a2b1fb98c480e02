"""`?` / F1: every key of the screen underneath (its own, its focused widget's and the app's), with what it does."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Static

from tui.fast_table import FastTable
from tui.widgets import cell

KEY_NAMES = {"question_mark": "?", "slash": "/", "dollar_sign": "$", "left_square_bracket": "[",
             "right_square_bracket": "]", "escape": "esc", "enter": "enter"}


WIDGET_NAMES = {"DataTable": "table", "Tree": "tree", "RichLog": "log", "VerticalScroll": "pane", "Input": "input",
                "TrajectoryTable": "table", "FastTable": "table", "VersionTree": "tree", "TabbedContent": "tabs",
                "Tabs": "tabs"}


def key_label(key: str) -> str:
    return ", ".join(KEY_NAMES.get(k, k) for k in key.split(","))


def screen_keys(screen: Screen) -> list[tuple[str, str, str]]:
    """(keys, what, where) of every binding active on `screen`: the screen's, its focused widget's, the app's.
    Bindings that share an action are listed once with all their keys."""
    rows: dict[tuple[str, str], list[str]] = {}
    where: dict[tuple[str, str], str] = {}
    chain = screen._modal_binding_chain  # (node, bindings) from the focused widget up to the app (textual 8.2)
    for node, bindings in chain:
        for key, b in bindings:
            if screen.app._check_action_state(b.action, node) is False:
                continue
            what = b.description or b.action.replace("_", " ")
            ident = (b.action, what)
            label = b.key_display or KEY_NAMES.get(key, key)
            if label not in rows.setdefault(ident, []):
                rows[ident].append(label)
            where.setdefault(ident, "app" if node is screen.app else "screen" if node is screen else
                             WIDGET_NAMES.get(type(node).__name__, type(node).__name__.lower()))
    order = {"screen": 0, "app": 2}
    out = [(", ".join(keys), what, where[ident]) for ident, keys in rows.items() for what in [ident[1]]]
    return sorted(out, key=lambda r: (order.get(r[2], 1), r[1].lower()))


class HelpScreen(ModalScreen[None]):
    """The keys of the screen it was opened over; any of esc, q, ? or F1 closes it."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss(None)", "Close")]

    def __init__(self, under: Screen) -> None:
        super().__init__()
        self.under = under
        self.rows = screen_keys(under)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="help"):
            name = (under_title(self.under) or type(self.under).__name__)
            yield Static(Text(f"keys of {name}", style="bold"))
            yield FastTable(id="help-keys", cursor_type="row", zebra_stripes=True)
            yield Static(Text("esc, q, ? or F1: close", style="dim"))

    def on_mount(self) -> None:
        table = self.query_one("#help-keys", DataTable)
        for col, width in (("key", 16), ("does", 30), ("of", 6)):
            table.add_column(col, key=col, width=width)
        for keys, what, where in self.rows:
            table.add_row(cell(keys), cell(what), cell(where))
        table.focus()


def under_title(screen: Screen) -> str:
    return str(screen.title or "") if getattr(screen, "title", None) else ""
