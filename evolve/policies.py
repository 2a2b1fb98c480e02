"""Loading policies for a command or a worker: `agent.policy.load_policy` with the specs only run directories can
resolve, `version:ID|latest` (a trained version stored in a run under the root) and `replay:RUN_DIR` (a run's
stored trajectories), looked up under a runs root (`RunsRoot`).

    load = policy_loader(out.parent)
    policy, judge = load_policies(out.parent, "hf:...", judge_spec)  # the same spec twice: one policy
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from agent.policy import load_policy
from agent.policy.base import Policy
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


def policy_loader(runs_root: Path) -> Callable[[str], Policy]:
    """`spec -> Policy`, every spec `load_policy` knows, `version:` and `replay:` found under `runs_root`."""
    runs = RunsRoot(runs_root)
    return lambda spec: load_policy(spec, runs=runs)


def load_policies(runs_root: Path, *specs: str | None) -> list[Policy | None]:
    """One policy per spec, in order (`policy_loader(runs_root)`): a spec given twice is loaded once and shared
    (a judge or a meta policy that is the agent's own costs no second model); None for a spec that is None."""
    load = policy_loader(runs_root)
    loaded: dict[str, Policy] = {}
    for spec in specs:
        if spec is not None and spec not in loaded:
            loaded[spec] = load(spec)
    return [None if spec is None else loaded[spec] for spec in specs]
