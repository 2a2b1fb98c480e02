"""Plot widgets (textual-plotext) the dashboard and the training screen use."""

from __future__ import annotations

from textual_plotext import PlotextPlot


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
