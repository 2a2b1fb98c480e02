"""One search, start to end: a scheduler over a world, journaled to a run store, resumed when it exists."""

from __future__ import annotations

import time
from typing import Callable

from evolve.hgm.config import HGMConfig
from evolve.hgm.drivers import Listener, run_simulated, run_threads
from evolve.hgm.journal import StoreJournal
from evolve.hgm.scheduler import Scheduler
from evolve.hgm.world import World
from evolve.store import RunStore


def open_search(cfg: HGMConfig, world: World, store: RunStore | None = None, run_id: str = "hgm") -> Scheduler:
    """A scheduler for `world`; with a store, every step is journaled and a stored run is resumed."""
    journal = StoreJournal(store, run_id) if store is not None else None
    prefix = f"{run_id}:" if store is not None else ""
    sched = Scheduler(cfg, list(world.task_ids), world.root(), id_prefix=prefix,
                      on_decision=(lambda a: journal.decided(sched, a)) if journal else None)
    sched.journal = journal  # type: ignore[attr-defined]
    if journal is not None:
        journal.root(sched)
        history = journal.load_history()
        if history:
            sched.restore(history)
    return sched


def run_search(sched: Scheduler, world: World, workers: int = 1, simulated: bool = False,
               should_stop: Callable[[], bool] = lambda: False, on_complete: Listener | None = None) -> None:
    """Drive `sched` to the end (or until `should_stop`); results are journaled before listeners see them."""
    journal: StoreJournal | None = getattr(sched, "journal", None)

    def listener(action, result, started, finished) -> None:
        if journal is not None:
            journal.completed(sched, action, result, started, finished)
        if on_complete is not None:
            on_complete(action, result, started, finished)

    if simulated:
        run_simulated(sched, world, workers, listener)
    else:
        run_threads(sched, world, workers, listener, should_stop=should_stop, clock=time.time)
