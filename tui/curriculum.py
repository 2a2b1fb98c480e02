"""The Self-Evolving Curriculum's category weights over time (issue 21), as `evolve train grpo --curriculum` stores
them: one document of kind `curriculum` per update (key `RUN:UPDATE`, evolve/curriculum_log.py) holding the arms'
values `q`, the drawing `weights`, the `last_rewards` and the optimiser `step`. Read incrementally (a long training
stores thousands; each poll reads only the new ones) and drawn as one line per category."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from rich.text import Text
from textual_plotext import PlotextPlot

from evolve.store import RunStore
from tui.widgets import COLORS, downsample

KIND = "curriculum"
"""The documents' kind (evolve/curriculum_log.py writes them; the TUI may import only the store)."""
LINES = 6
"""Categories drawn as lines (the heaviest now); every category is in the table."""


@dataclass
class Update:
    """The curriculum's state after one update."""

    key: str
    at: float
    """When it was stored (seconds since the epoch)."""
    step: int
    """The optimiser step it drew the groups of."""
    weights: dict[str, float]
    q: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    """The arms' rewards of this update (mean absolute advantage of the category's groups just trained on)."""
    mode: str = "sec"


def read_updates(store: RunStore, known: Iterable[str] = ()) -> list[Update]:
    """The stored updates whose keys are not in `known`, in update order (a worker thread: its own connection)."""
    seen = set(known)
    out = []
    for key, at in store.document_keys(KIND):
        if key in seen:
            continue
        doc: dict[str, Any] | None = store.document(KIND, key)
        if not doc or not isinstance(doc.get("weights"), dict):
            continue
        out.append(Update(key=key, at=at, step=int(doc.get("step", doc.get("updates", 0)) or 0),
                          weights={str(c): float(w) for c, w in doc["weights"].items()},
                          q={str(c): float(v) for c, v in (doc.get("q") or {}).items()},
                          last={str(c): float(v) for c, v in (doc.get("last_rewards") or {}).items()},
                          mode=str(doc.get("mode", "sec"))))
    return out


def merge(have: list[Update], new: list[Update]) -> list[Update]:
    """`have` with `new` added, ordered by key (`RUN:00000012`: the update number)."""
    if not new:
        return have
    return sorted({u.key: u for u in [*have, *new]}.values(), key=lambda u: u.key)


def heaviest(updates: list[Update], n: int = LINES) -> list[str]:
    """The `n` categories with the largest weight now (ties by name)."""
    if not updates:
        return []
    now = updates[-1].weights
    return sorted(now, key=lambda c: (-now[c], c))[:n]


def table_rows(updates: list[Update]) -> list[tuple]:
    """(category, weight now, change since the first update, Q, last reward, times rewarded) per category, heaviest
    first."""
    if not updates:
        return []
    first, now = updates[0].weights, updates[-1]
    fed = {c: sum(c in u.last for u in updates) for c in now.weights}
    rows = []
    for c in sorted(now.weights, key=lambda c: (-now.weights[c], c)):
        change = now.weights[c] - first.get(c, now.weights[c])
        rows.append((c, f"{now.weights[c]:.3f}", Text(f"{change:+.3f}", style="green" if change > 0 else
                                                       "red" if change < 0 else "dim"),
                     f"{now.q.get(c, 0.0):.3f}", f"{now.last[c]:.3f}" if c in now.last else "-", fed[c]))
    return rows


class CurriculumPlot(PlotextPlot):
    """The heaviest categories' weights against the step (or the seconds since the first update)."""

    lines: dict[str, tuple[list[float], list[float]]] = {}

    def show(self, updates: list[Update], by_time: bool = False) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        self.lines = {}
        if not updates:
            plt.title("curriculum: none stored for this version")
            self.refresh()
            return
        t0 = updates[0].at
        xs = [(u.at - t0) if by_time else float(u.step) for u in updates]
        for k, c in enumerate(heaviest(updates)):
            ys = [u.weights.get(c, 0.0) for u in updates]
            self.lines[c] = (xs, ys)
            plt.plot(*downsample(xs, ys), marker="braille", color=COLORS[k % len(COLORS)], label=c[-24:])
        now = updates[-1]
        plt.title(f"curriculum ({now.mode}) weights · {len(updates)} updates · step {now.step}"
                  + (" · by seconds" if by_time else ""))
        plt.ylim(0, 1)
        self.refresh()
