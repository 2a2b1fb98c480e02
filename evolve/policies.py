"""Policy specs that only run directories can resolve, for `agent.policy.load_policy(spec, runs=RunsRoot(...))`:
`version:ID|latest` (a trained version stored in a run under the root) and `replay:RUN_DIR` (a run's stored
trajectories)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evolve.store import DB_NAME
from evolve.train.versions import canonical_spec, get_version, version_spec
from evolve.trajectories import load_stored_trajectories
from records import Trajectory


class RunsRoot:
    """The run directories under `root` (itself and up to `evolve.train.versions.SEARCH_DEPTH` levels below), as
    `agent.policy.RunStores`."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def version(self, version_id: str) -> tuple[str, dict[str, Any]]:
        """`TrainError` for an unknown version, or for `latest` when none was trained."""
        return version_spec(get_version(version_id, self.root))

    def label(self, version_id: str) -> str:
        """The spec outputs record for a version: `version:ID` (`latest` resolved to the id it names now)."""
        return canonical_spec(f"version:{version_id}", self.root)

    def run_trajectories(self, path: Path) -> list[Trajectory] | None:
        return load_stored_trajectories(path) if (Path(path) / DB_NAME).exists() else None
