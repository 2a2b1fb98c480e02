"""`evolve trajectories RUN_DIR`: list a run's trajectories, or export them for `--policy replay:FILE`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from evolve.markup import cells, esc
from evolve.store import RunStore

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


def export_trajectories(store: RunStore, path: Path, instance: str | None = None,
                        include_infra: bool = False) -> int:
    """Write the store's trajectories (of one instance, or all) as JSONL, atomically. Returns how many.
    Infrastructure errors and interrupted episodes are left out unless `include_infra`.

    `ConfigError` when `path` cannot be that file (a directory, a file above it, no permission); nothing
    is left behind then."""
    from evolve.errors import ConfigError

    if path.is_dir():
        raise ConfigError(f"--export {path} is a directory; give a file name, e.g. {path / 'trajectories.jsonl'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--export {path}: cannot create {path.parent}: {e.strerror or e}") from None
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    n = 0
    try:
        with tmp.open("w") as f:
            for traj in store.trajectories(instance_id=instance):
                if traj.infra_failure and not include_infra:
                    continue
                f.write(traj.model_dump_json() + "\n")
                n += 1
        tmp.replace(path)
    except OSError as e:
        raise ConfigError(f"--export {path}: {e.strerror or e}") from None
    finally:
        try:  # nothing is left behind; where nothing could be made (a read-only file system) there is nothing to remove
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return n


def load_stored_trajectories(run_dir: Path) -> list:
    """Every trajectory of a run directory, for `replay:RUN_DIR`, except infrastructure errors and
    interrupted episodes (replaying a cut episode would not reproduce the run)."""
    with RunStore(run_dir, readonly=True) as store:
        return [t for t in store.trajectories() if not t.infra_failure]
