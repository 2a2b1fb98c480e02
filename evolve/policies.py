"""Policy specs that only run directories can resolve, for `agent.policy.load_policy(spec, runs=RunsRoot(...))`:
`version:ID|latest` (a trained version stored in a run under the root) and `replay:RUN_DIR` (a run's stored
trajectories)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evolve.store import DB_NAME
from evolve.train.versions import get_version, version_spec
from evolve.trajectories import load_stored_trajectories
from records import Trajectory


class RunsRoot:
    """The run directories under `root` (itself, its children and grandchildren), as `agent.policy.RunStores`."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def version(self, version_id: str) -> tuple[str, dict[str, Any]]:
        """`TrainError` for an unknown version, or for `latest` when none was trained."""
        return version_spec(get_version(version_id, self.root))

    def run_trajectories(self, path: Path) -> list[Trajectory] | None:
        return load_stored_trajectories(path) if (Path(path) / DB_NAME).exists() else None
