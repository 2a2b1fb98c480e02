"""A run's stored trajectories as files and lists: the JSONL export that `replay:FILE` reads, and the
trajectories `replay:RUN_DIR` replays."""

from __future__ import annotations

import os
from pathlib import Path

from evolve.errors import ConfigError
from evolve.store import RunStore
from records import Trajectory


def export_trajectories(store: RunStore, path: Path, instance: str | None = None,
                        include_infra: bool = False) -> int:
    """Write the store's trajectories (of one instance, or all) as JSONL, atomically. Returns how many.
    Infrastructure errors and interrupted episodes are left out unless `include_infra`.

    `ConfigError` when `path` cannot be that file (a directory, a file above it, no permission), and when there
    is nothing to export (no trajectory, or only infrastructure errors and interrupted episodes, which `--all`
    exports); nothing is written or left behind then."""
    chosen = [t for t in store.trajectories(instance_id=instance) if include_infra or not t.infra_failure]
    if not chosen:
        held = store.trajectory_ids(instance_id=instance)
        what = f"instance {instance!r} of {store.dir}" if instance else str(store.dir)
        if held:
            raise ConfigError(f"nothing exported: {what} holds only infrastructure errors or interrupted episodes "
                              f"({len(held)}), which are not the agent's behaviour; --all exports them")
        raise ConfigError(f"nothing exported: {what} holds no trajectories")
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
            for traj in chosen:
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


def load_stored_trajectories(run_dir: Path) -> list[Trajectory]:
    """Every trajectory of a run directory, for `replay:RUN_DIR`, except infrastructure errors and
    interrupted episodes (replaying a cut episode would not reproduce the run)."""
    with RunStore(run_dir, readonly=True) as store:
        return [t for t in store.trajectories() if not t.infra_failure]
