"""What every stage of a running loop shares: the config, the store, the splits, the policies, the progress hook."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from evolve.loop.config import LoopConfig
from evolve.loop.policies import Policies
from evolve.loop.splits import Splits
from evolve.loop.state import LoopState, gkey
from evolve.run.ctrl_c import FirstCtrlCStops
from evolve.store import RunStore

Progress = Callable[[str, str, dict[str, Any]], None]
"""`progress(stage, event, detail)`: called as work finishes (the CLI's live line; tests kill the loop here)."""


@dataclass
class LoopContext:
    cfg: LoopConfig
    out: Path
    run_id: str
    store: RunStore
    splits: Splits
    policies: Policies
    kind: str
    """The suite's kind: `toolcall` or `swe`."""
    start_node: str
    """Id of the node the loop started from."""
    start_spec: str
    """Its policy spec (resolved: `version:latest` recorded as its id)."""
    start_variant: str
    """Its agent variant directory ('' for toolcall)."""
    progress: Progress = lambda stage, event, detail: None
    started: float = field(default_factory=time.time)
    train_lock: threading.Lock = field(default_factory=threading.Lock)
    """One training at a time (memory; the CPU has few cores)."""
    ctrl_c: FirstCtrlCStops = field(default_factory=FirstCtrlCStops)
    """The first Ctrl-C is a stop request (see `stop_requested`)."""

    @property
    def state(self) -> LoopState:
        return LoopState(self.store, self.run_id)

    def stop_requested(self) -> bool:
        """A stop asked for from the TUI (`evolve stop`) since the loop started, or a first Ctrl-C."""
        return self.ctrl_c.hit or self.store.stop_requested(self.run_id, since=self.started)

    def run_dir(self, g: int, what: str) -> Path:
        """The sub-run directory of a stage of generation `g` (an ordinary run directory)."""
        return self.out / "runs" / f"{gkey(g)}-{what}"

    def search_id(self, g: int) -> str:
        """The HGM search of generation `g`: its decisions, outcomes and evaluation trajectories."""
        return f"{self.run_id}:{gkey(g)}"

    def held_out_run(self) -> str:
        return f"{self.run_id}-held-out"

    def node_spec(self, node_id: str) -> str:
        return str(self.state.node(node_id).info.get("policy") or self.start_spec)

    def node_variant(self, node_id: str) -> str:
        return self.state.node(node_id).variant_dir or self.start_variant
