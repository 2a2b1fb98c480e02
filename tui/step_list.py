"""The inspector's list of steps, drawn with Textual's line API: one line per step (number, tools, tokens, time) under a
fixed header, zebra stripes and a cursor. Switching trajectories (`H`/`L`) replaces every row; a DataTable rendered
each of its cells through Rich again (~30 ms of CPU per trajectory, most of a key's budget on a busy machine), here a
line is a few segments."""

from __future__ import annotations

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip


def fit_cell(text: str, width: int) -> str:
    """`text` in exactly `width` cells: padded, or cut with an ellipsis (never silently)."""
    if cell_len(text) > width:
        text = set_cell_size(text, max(0, width - 1)) + "…"
    return set_cell_size(text, width)


class StepList(ScrollView, can_focus=False):
    """Rows of fixed-width cells; `move_cursor` highlights one and keeps it in view; a click says which (`Clicked`)."""

    COMPONENT_CLASSES = {"step-list--header", "step-list--cursor", "step-list--odd"}
    DEFAULT_CSS = """
    StepList { background: $surface; }
    StepList > .step-list--header { text-style: bold; background: $panel; color: $foreground; }
    StepList > .step-list--cursor { background: $block-cursor-blurred-background; text-style: bold; }
    StepList > .step-list--odd { background: $surface-lighten-1 10%; }
    """

    class Clicked(Message):
        """The user clicked step row `row` (0-based)."""

        def __init__(self, row: int) -> None:
            super().__init__()
            self.row = row

    def __init__(self, columns: list[tuple[str, int]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.columns = columns
        self.rows: list[list[str]] = []
        """Each row's cells, already fitted to the columns (with their padding)."""
        self.cursor_row = 0

    @property
    def row_count(self) -> int:
        return len(self.rows)

    def _line(self, cells) -> list[str]:
        """One text per cell (a segment each, as DataTable draws them: an SVG screenshot places each exactly)."""
        return [" " + fit_cell(str(c), w) + " " for c, (_, w) in zip(cells, self.columns)]

    def clear(self) -> None:
        self.rows = []
        self.cursor_row = 0
        self._resize()

    def add_rows(self, rows) -> None:
        self.rows += [self._line(r) for r in rows]
        self._resize()

    def _resize(self) -> None:
        width = sum(w + 2 for _, w in self.columns)
        self.virtual_size = Size(width, len(self.rows) + 1)  # the header's line, then the rows
        self.refresh()

    def move_cursor(self, row: int) -> None:
        """Highlight `row` and scroll it into view (below the fixed header)."""
        row = max(0, min(row, len(self.rows) - 1))
        old, self.cursor_row = self.cursor_row, row
        if old != row:
            self._refresh_row(old)
            self._refresh_row(row)
        top, height = int(self.scroll_y), max(1, self.scrollable_content_region.height - 1)
        if row < top:
            self.scroll_to(y=row, animate=False)
        elif row >= top + height:
            self.scroll_to(y=row - height + 1, animate=False)

    def _refresh_row(self, row: int) -> None:
        y = row + 1 - int(self.scroll_y)
        if 0 < y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    _styles: dict[str, Style] | None = None

    def notify_style_update(self) -> None:
        self._styles = None  # the theme or the CSS changed: the line styles are worked out again
        super().notify_style_update()

    def line_styles(self) -> dict[str, Style]:
        """The styles of a line (base, header, odd row, cursor), worked out once (per line they cost ~0.3 ms)."""
        if self._styles is None:
            base = self.rich_style
            odd = base + self.get_component_rich_style("step-list--odd")
            cursor = self.get_component_rich_style("step-list--cursor")
            self._styles = {"base": base, "header": self.get_component_rich_style("step-list--header"), "odd": odd,
                            "cursor": base + cursor, "odd-cursor": odd + cursor}
        return self._styles

    def render_line(self, y: int) -> Strip:
        width, styles = self.size.width, self.line_styles()
        if y == 0:
            text, style = self._line(name for name, _ in self.columns), styles["header"]
        else:
            row = y - 1 + int(self.scroll_y)
            if row >= len(self.rows):
                return Strip.blank(width, styles["base"])
            text = self.rows[row]
            style = styles[_style_key(row, self.cursor_row)]
        x = int(self.scroll_x)
        strip = Strip([Segment(cell, style) for cell in text])
        return strip.crop(x, x + width).extend_cell_length(width, styles["base"])

    def on_click(self, event) -> None:
        at = event.get_content_offset(self)
        if at is None or at.y == 0:
            return
        row = at.y - 1 + int(self.scroll_y)
        if 0 <= row < len(self.rows):
            self.post_message(self.Clicked(row))


def _style_key(row: int, cursor: int) -> str:
    if row == cursor:
        return "odd-cursor" if row % 2 else "cursor"
    return "odd" if row % 2 else "base"
