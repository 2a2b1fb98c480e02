"""`evolve trajectories RUN_DIR`: list a run's trajectories, or export them for `--policy replay:FILE`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from evolve.markup import cells, esc
from evolve.store import RunStore
from evolve.trajectories import export_trajectories

console = Console()


def trajectories_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory (the --out of `evolve run`)."),
    instance: Optional[str] = typer.Option(None, help="Only this instance's trajectories."),
    export: Optional[Path] = typer.Option(None, help="Write the trajectories to this JSONL file (for replay:FILE)."),
    all_: bool = typer.Option(False, "--all", help="Export infrastructure errors and interrupted episodes too "
                              "(left out by default: they are not the agent's behaviour)."),
) -> None:
    """List a run's trajectories (status, steps, resolved, rewards), or export them as JSONL."""
    with RunStore(run_dir, readonly=True) as store:
        if export is not None:
            n = export_trajectories(store, export, instance, include_infra=all_)
            console.print(f"{n} trajectories written to {esc(export)}; replay them with --policy "
                          f"replay:{esc(export)}")
            return
        columns = ("id", "instance", "status", "steps", "resolved", "rewards", "parent")
        rows = [(r["id"], r["instance_id"], r["status"], str(r["steps"]), str(r["resolved"]),
                 " ".join(f"{k}={v.total:.2f}" for k, v in sorted(r["rewards"].items())), r["parent_id"] or "")
                for r in store.trajectory_summaries() if instance is None or r["instance_id"] == instance]
    if not console.is_terminal:  # piped: one tab-separated line per trajectory
        for row in (columns, *rows):
            console.out("\t".join(row), highlight=False)
        return
    t = Table(title=f"trajectories in {esc(run_dir)}")
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*cells(*row))
    console.print(t)
