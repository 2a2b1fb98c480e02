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


def fit(value: Any, width: int, where: str = "end") -> Text:
    """A cell cut to `width` cells with an ellipsis, never silently. `where` the cut is: `end`; `start` (a path or a
    policy spec, whose end names it); `middle` (ids such as `django__django-11099`, which differ at their end)."""
    text = cell(value).copy()
    if text.cell_len <= width:
        return text
    width = max(1, width)
    if where == "end" or width < 3:
        text.truncate(width, overflow="ellipsis")
        return text
    n = len(text.plain)
    if where == "start":
        out = Text("…", style=text.style, end="", no_wrap=True)
        out.append_text(text[n - (width - 1):])
        return out
    head = (width - 1) // 2
    out = text[:head]
    out.append("…")
    out.append_text(text[n - (width - 1 - head):])
    return out


def fit_widths(widths: list[int], natural: list[int], columns: list[str], room: int, pad: int,
               flex: str | None, least: int) -> None:
    """Fit the columns into `room` cells (in place): the `flex` column takes what the others leave (at least
    `least`); when even that does not fit, the widest other columns give way, down to their header's width."""
    k = columns.index(flex) if flex in columns else None
    if k is not None:
        others = sum(w + pad for i, w in enumerate(widths) if i != k)
        widths[k] = max(least, min(room - others - pad, natural[k]))
    while sum(w + pad for w in widths) > room:
        shrinkable = [i for i in range(len(widths)) if i != k and widths[i] > max(len(columns[i]), 4)]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1


def fill_table(table: DataTable, columns: Sequence[str], rows: Sequence[Sequence[Any]], keys: Sequence[str],
               most: int = 40, flex: str | None = None, least: int = 8, cut: dict[str, str] | None = None) -> None:
    """Replace a table's rows, with column widths measured here from the rows (capped at `most`); a cell wider than
    its column shows an ellipsis where it was cut (`cut`: column -> `end`, `start` or `middle`; the `flex` column is cut
    in the middle). The `flex` column takes the width the others leave in the table (at least `least`), so the names
    that tell rows apart get all the room there is.

    Fixed widths keep the table from resizing its columns on a later idle pass; that pass can leave lines
    drawn at the old widths in the table's line cache (seen at 80x24 when a render lands in between)."""
    widths = [len(c) for c in columns]
    for row in rows:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], value.cell_len if isinstance(value, Text) else cell_len(str(value)))
    natural = list(widths)
    widths = [min(w, most) for w in widths]
    if table.size.width:
        fit_widths(widths, natural, list(columns), table.scrollable_content_region.width - 1,
                   2 * table.cell_padding, flex, least)
    keep = table.cursor_row
    table.clear(columns=True)
    for name, width in zip(columns, widths):
        table.add_column(name, key=name, width=width)
    where = [(cut or {}).get(c, "middle" if c == flex else "end") for c in columns]
    for row, key in zip(rows, keys):
        table.add_row(*(fit(v, w, at) for v, w, at in zip(row, widths, where)), key=key)
    if rows:
        table.move_cursor(row=min(keep, len(rows) - 1))


def sort_key(value: Any) -> tuple:
    """A cell's order: numbers (`12`, `0.35`, `30.0s`, `12%`) by value before text, text by its letters."""
    text = (value.plain if isinstance(value, Text) else str(value)).strip()
    try:
        return (0, float(text.rstrip("s%x").split()[0]), "")
    except (ValueError, IndexError):
        return (1, 0.0, text.lower())


def sort_by_header(table: DataTable, column_key, state: dict) -> None:
    """Sort a table's rows by the clicked column (a second click on it reverses): any table's rows, in place."""
    reverse = state.get("column") == column_key and not state.get("reverse", False)
    state.update(column=column_key, reverse=reverse)
    table.sort(column_key, key=sort_key, reverse=reverse)


def resort(table: DataTable, state: dict | None) -> None:
    """After a table is filled again: the order its header click chose, if any."""
    if state and state.get("column") is not None and state["column"] in table.columns:
        table.sort(state["column"], key=sort_key, reverse=state.get("reverse", False))


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


def smooth(values: Sequence[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average with its start-up bias removed (`weight` 0: none)."""
    if weight <= 0:
        return list(values)
    out, last, n = [], 0.0, 0
    for v in values:
        n += 1
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight ** n))
    return out


COLORS = ("cyan", "orange", "green", "magenta", "yellow", "blue")


class MetricPlot(PlotextPlot):
    """One training metric of one or more versions (an overlay), against the optimiser step or the time."""

    series: list[tuple[str, list[float], list[float]]] = []
    """What `show` was given: (label, xs, ys) per version, raw."""
    drawn: list[list[float]] = []
    """The lines drawn, per version shown (smoothed, downsampled)."""

    def show(self, name: str, series: list[tuple[str, list[float], list[float]]], smoothing: float = 0.0,
             xlabel: str = "step") -> None:
        """`series`: (label, xs, ys) per version, the first the one chosen; drawn smoothed (the raw curve of the
        chosen version stays beside the smoothed one, faint)."""
        self.series = [(label, list(xs), list(ys)) for label, xs, ys in series]
        self.drawn = []
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        drawn = [(label, xs, ys) for label, xs, ys in self.series if ys]
        if not drawn:
            plt.title(f"{name}: not logged")
            self.refresh()
            return
        for k, (label, xs, ys) in enumerate(drawn):
            color = COLORS[k % len(COLORS)]
            if k == 0 and smoothing > 0:
                plt.plot(*downsample(xs, ys), marker="braille", color="gray")
            xs_drawn, ys_drawn = downsample(xs, smooth(ys, smoothing))
            self.drawn.append(ys_drawn)
            plt.plot(xs_drawn, ys_drawn, marker="braille", color=color, label=label if len(drawn) > 1 else None)
        last = drawn[0][2][-1]
        plt.title(f"{name} {last:.3g}" + (f" ~{smoothing:g}" if smoothing > 0 else "")
                  + (f" by {xlabel}" if xlabel != "step" else ""))
        self.refresh()
