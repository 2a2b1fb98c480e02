"""`evolve tui [RUN_DIR | RUNS_ROOT]`."""

from __future__ import annotations

from pathlib import Path

import typer

from evolve.store import StoreError


def tui_cmd(path: Path = typer.Argument(Path("runs"), help="A run directory, or a directory of run directories."),
            poll: float = typer.Option(0.5, min=0.1, help="Seconds between checks for new data."),
            export_dir: Path = typer.Option(Path("evolve-exports"), help="Where e/E write steps and trajectories.")
            ) -> None:
    """Watch runs live: runs, dashboard, trajectory inspector, trees (HGM/MCTS/SE-Agent), training curves."""
    if path.exists() and not path.is_dir():  # checked before the screen opens, like a missing path
        raise StoreError(f"{path} is a file, not a run directory: give a run directory or a directory of runs")
    from tui.app import EvolveApp  # imports textual: only when the TUI opens

    EvolveApp(path, poll=poll, export_dir=export_dir).run()
