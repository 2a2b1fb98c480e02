"""Plot widgets (textual-plotext) the dashboard and the training screen use."""

from __future__ import annotations

from typing import Any, Sequence

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable
from textual_plotext import PlotextPlot


def cell(value: Any) -> Text:
    """A table cell as Text: a plain string would be parsed as Rich markup (a test id like `t[bold]` would
    lose its brackets), and Text skips that parse."""
    return value if isinstance(value, Text) else Text(str(value), no_wrap=True, end="")


def fill_table(table: DataTable, columns: Sequence[str], rows: Sequence[Sequence[Any]], keys: Sequence[str],
               most: int = 40) -> None:
    """Replace a table's rows, with column widths measured here from the rows (capped at `most`).

    Fixed widths keep the table from resizing its columns on a later idle pass; that pass can leave lines
    drawn at the old widths in the table's line cache (seen at 80x24 when a render lands in between)."""
    widths = [len(c) for c in columns]
    for row in rows:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], value.cell_len if isinstance(value, Text) else cell_len(str(value)))
    keep = table.cursor_row
    table.clear(columns=True)
    for name, width in zip(columns, widths):
        table.add_column(name, key=name, width=min(width, most))
    for row, key in zip(rows, keys):
        table.add_row(*map(cell, row), key=key)
    if rows:
        table.move_cursor(row=min(keep, len(rows) - 1))


class RewardHistogram(PlotextPlot):
    """Histogram of one reward's totals over a run's trajectories."""

    values: list[float] = []

    def show(self, name: str | None, values: list[float]) -> None:
        self.values = list(values)
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        if not values:
            plt.title("rewards: none yet")
        else:
            plt.hist(values, bins=min(20, max(5, len(set(values)))))
            plt.title(f"{name} (n={len(values)})")
        self.refresh()


def downsample(steps: list[int], values: list[float], most: int = 200) -> tuple[list[float], list[float]]:
    """At most `most` points: bucket means of both axes (a terminal plot has fewer columns than that)."""
    n = len(values)
    if n <= most:
        return list(steps), list(values)
    xs, ys = [], []
    for k in range(most):
        lo, hi = k * n // most, (k + 1) * n // most
        xs.append(sum(steps[lo:hi]) / (hi - lo))
        ys.append(sum(values[lo:hi]) / (hi - lo))
    return xs, ys


class MetricPlot(PlotextPlot):
    """One training metric against the optimiser step."""

    steps: list[int] = []
    values: list[float] = []

    def show(self, name: str, steps: list[int], values: list[float]) -> None:
        self.steps, self.values = list(steps), list(values)
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        if values:
            plt.plot(*downsample(steps, values), marker="braille")
            plt.title(f"{name} {values[-1]:.3g}")
        else:
            plt.title(f"{name}: not logged")
        self.refresh()
