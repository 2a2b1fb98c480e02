"""A generation's training data: which stored trajectories each kind of weight child learns from.

Made at the end of the evolution stage and stored as the `loop:data` document of the generation (trajectory
references by run directory), so every weight child of the generation, and a resumed loop, trains on exactly it:

- `sft` (rejection sampling): the rollouts with at least `sft.min_reward`, SE-Agent's retries that the hidden
  tests resolved, Agent-R's revision splices (their bad prefix masked out, `Message.train`) and good paths.
- `grpo`: every scored rollout, grouped by instance (the k attempts of one instance are one group).

Never: infrastructure errors, interrupted episodes, HGM's meta-agent or smoke episodes (`evolve.train.data.trainable`).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from evolve.store import RunStore
from records import Trajectory

Ref = tuple[str, str, float | None]
"""(run directory relative to the loop's --out, trajectory id, reward)."""


class GenerationData:
    """The `loop:data` document of one generation, and its trajectories loaded on first use (thread-safe)."""

    def __init__(self, out: Path, doc: dict[str, Any]):
        self.out, self.doc = Path(out), doc
        self._loaded: dict[str, list[tuple[Trajectory, float | None]]] = {}
        self._lock = threading.Lock()

    def _load(self, use: str) -> list[tuple[Trajectory, float | None]]:
        with self._lock:
            if use not in self._loaded:
                items: list[tuple[Trajectory, float | None]] = []
                by_dir: dict[str, list[tuple[str, float | None]]] = {}
                for run_dir, tid, reward in self.doc.get(use, []):
                    by_dir.setdefault(run_dir, []).append((tid, reward))
                for run_dir, refs in by_dir.items():
                    with RunStore(self.out / run_dir, readonly=True) as store:
                        items += [(store.get_trajectory(tid), reward) for tid, reward in refs]
                if use == "sft":  # every turn of a good path is learned; splices keep their masks
                    for traj, _ in items:
                        if traj.origin == "agent-r:good":
                            for s in traj.steps:
                                s.response.train = True
                self._loaded[use] = items
            return self._loaded[use]

    def sft_items(self) -> list[tuple[Trajectory, float | None]]:
        return self._load("sft")

    def grpo_items(self) -> list[tuple[Trajectory, float | None]]:
        return self._load("grpo")

    def summary(self, use: str) -> dict[str, Any]:
        return dict(self.doc.get("counts", {}).get(use, {}))


def refs(run_dir: Path, out: Path, rows: list[tuple[str, float | None]]) -> list[list[Any]]:
    rel = str(Path(run_dir).resolve().relative_to(Path(out).resolve()))
    return [[rel, tid, reward] for tid, reward in rows]
