"""A DataTable whose one-line text cells skip Rich's layout pass.

DataTable renders every cell through `Console.render_lines(Styled(Padding(cell)))`: measuring, wrapping, padding and
cropping, ~0.25 ms a cell. A page of the trajectory table (30 rows x 7 columns) cost ~50 ms of CPU on every page
flip, sort or filter, most of a key's 100 ms on a busy machine. The TUI's cells are `Text` already cut to their
column (`tui.widgets.fit`), one line each: their segments are the text's own, padded, with the same styles layered
on (the cell's style under the text's, the cursor's over it), which is what the long path produces for them. Any
other cell (a header, a label, a renderable, a multi-line text) takes DataTable's own path. The screens' snapshot
tests compare the drawn screens with the committed SVGs: they are the same with either path."""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.widgets import DataTable

NULL = Style.null()


class FastTable(DataTable):
    def _render_cell(self, row_index: int, column_index: int, base_style: Style, width: int, cursor: bool = False,
                     hover: bool = False):
        if row_index < 0 or column_index < 0 or row_index < self.fixed_rows or column_index < self.fixed_columns:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        key = (row_key, column_key, base_style, cursor, hover, self._show_hover_cursor, self._update_count,
               self._pseudo_class_state)
        cached = self._cell_render_cache.get(key)
        if cached is not None:
            return cached
        row = self.rows.get(row_key)
        cells = self._get_row_renderables(row_index).cells
        cell = cells[column_index] if column_index < len(cells) else None
        if row is None or row.height != 1 or not isinstance(cell, Text) or "\n" in cell.plain \
                or "\t" in cell.plain:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        component_style, post_style = self._get_styles_to_render_cell(
            False, False, False, hover, cursor, self.show_cursor, self._show_hover_cursor,
            self.cursor_foreground_priority == "css", self.cursor_background_priority == "css")
        pre = base_style + Style.from_meta({"row": row_index, "column": column_index}) + component_style
        pad = self.cell_padding
        console = self.app.console
        own = cell.render(console, end="")  # the spans' styles; the text's own style goes under them, as Rich does
        if cell.style:
            own = Segment.apply_style(own, style=console.get_style(cell.style))
        body = Segment.adjust_line_length(list(own), max(0, width - 2 * pad), style=NULL, pad=True)
        line = [Segment(" " * pad, NULL), *body, Segment(" " * pad, NULL)] if pad else body
        lines = [list(Segment.apply_style(line, style=pre, post_style=post_style))]
        self._cell_render_cache[key] = lines
        return lines
