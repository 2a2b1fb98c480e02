"""Drivers of the scheduler: a thread pool for real worlds, a discrete-event loop for simulated ones.

Both do the same thing: keep up to `workers` actions in flight, asking `Scheduler.decide` whenever a worker
is free and handing each result to `Scheduler.complete`. The simulated driver computes a result at once and
delivers it after its `latency` on a virtual clock, so hundreds of runs take seconds.
"""

from __future__ import annotations

import heapq
import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable

from evolve.hgm.scheduler import Action, Scheduler
from evolve.hgm.world import Evaluation, Expansion, World

log = logging.getLogger(__name__)

Listener = Callable[[Action, Expansion | Evaluation, float, float], None]
"""Called after each completion with (action, result, started_at, finished_at)."""


def execute(world: World, sched: Scheduler, action: Action) -> Expansion | Evaluation:
    """Run one action in `world`; a crash of the world is the infrastructure's, never a node's failure."""
    try:
        if action.kind == "expand":
            if action.expansion:  # a world with several kinds of expansion (`evolve loop`)
                return world.expand(sched.view(action.node), action.child, kind=action.expansion)  # type: ignore[call-arg]
            return world.expand(sched.view(action.node), action.child)
        return world.evaluate(sched.view(action.node), action.task)
    except Exception as e:  # noqa: BLE001 - the search goes on; the error is stored with the action
        log.exception("%s of %s failed", action.kind, action.node)
        if action.kind == "expand":
            return Expansion(accepted=False, reason=f"expansion crashed: {type(e).__name__}: {e}")
        return Evaluation(status="infra_error", info={"error": f"{type(e).__name__}: {e}"})


def run_simulated(sched: Scheduler, world: World, workers: int = 1, on_complete: Listener | None = None) -> float:
    """Run to the end on a virtual clock; returns the virtual time taken."""
    heap: list[tuple[float, int, Action, Expansion | Evaluation, float]] = []
    now, n = 0.0, 0
    while True:
        action = None
        while len(heap) < workers:
            action = sched.decide(now)
            if action.kind in ("wait", "done"):
                break
            result = execute(world, sched, action)
            heapq.heappush(heap, (now + max(result.latency, 0.0), n, action, result, now))
            n += 1
        if not heap:
            if action is not None and action.kind == "wait":
                raise RuntimeError("the scheduler waits with nothing in flight")
            return now
        now, _, done_action, result, started = heapq.heappop(heap)
        sched.complete(done_action, result)
        if on_complete is not None:
            on_complete(done_action, result, started, now)


def run_threads(sched: Scheduler, world: World, workers: int = 1, on_complete: Listener | None = None,
                should_stop: Callable[[], bool] = lambda: False, clock: Callable[[], float] = time.time) -> None:
    """Run with real threads until the scheduler is done or `should_stop()`; in-flight work is finished."""
    futures: dict[Future, tuple[Action, float]] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hgm") as pool:
        while True:
            action = None
            while len(futures) < workers and not should_stop():
                action = sched.decide(clock())
                if action.kind in ("wait", "done"):
                    break
                futures[pool.submit(execute, world, sched, action)] = (action, clock())
            if not futures:
                if action is not None and action.kind == "wait":
                    raise RuntimeError("the scheduler waits with nothing in flight")
                return
            finished, _ = wait(list(futures), timeout=1.0, return_when=FIRST_COMPLETED)
            for fut in finished:
                action, started = futures.pop(fut)
                result = fut.result()
                sched.complete(action, result)
                if on_complete is not None:
                    on_complete(action, result, started, clock())
