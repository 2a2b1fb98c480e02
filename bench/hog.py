"""A CPU hog for the benchmarks' "under load" rows: `n` processes spinning on a core each while a block runs."""

from __future__ import annotations

import multiprocessing
import time


def _spin() -> None:
    while True:
        pass


class Hog:
    """`n` processes that spin on a CPU each while the block runs (the load a busy machine puts beside the work)."""

    def __init__(self, n: int) -> None:
        self.procs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(n)]

    def __enter__(self) -> "Hog":
        for p in self.procs:
            p.start()
        time.sleep(1.0)
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.terminate()
            p.join(5)
