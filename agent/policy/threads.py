"""How many threads a CPU-bound model (llama.cpp decoding, torch training) should use: the cores others leave free.

Both llama.cpp and torch split each operation over their threads and wait at a barrier for the slowest one. When
other processes keep the cores busy, a thread that the scheduler has put aside holds every barrier up: on the
shared 2-core machine (load average 5-11) two threads ran 2.5x slower than one, for llama.cpp batched decoding
(131 s against 50.6 s for a group of 8 x 64 tokens) and for an SFT step of Gemma 3 270M (50 s against 39 s).
On an idle machine two threads are faster. So the default thread count is measured: the cores this process may
use, less those other processes kept busy over a short sample.
"""

from __future__ import annotations

import math
import os
import time

import psutil

SAMPLE_S = 0.5
"""Seconds of CPU accounting behind `free_cores`."""


def busy_elsewhere(sample_s: float = SAMPLE_S) -> float:
    """Cores' worth of CPU time that processes other than this one used per second over ``sample_s``."""
    me = psutil.Process()
    sys0, me0 = psutil.cpu_times(), me.cpu_times()
    time.sleep(sample_s)
    sys1, me1 = psutil.cpu_times(), me.cpu_times()

    def busy(t: object) -> float:
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)  # steal (a hypervisor's other guests) counts as busy

    mine = (me1.user + me1.system) - (me0.user + me0.system)
    return max(0.0, busy(sys1) - busy(sys0) - mine) / sample_s


def free_cores(sample_s: float = SAMPLE_S) -> int:
    """Threads for this process: the cores it may use minus the cores others kept busy (rounded so that a core
    more than 70% busy counts as taken), at least 1."""
    mine = len(os.sched_getaffinity(0))
    free = psutil.cpu_count() - busy_elsewhere(sample_s)
    return max(1, min(mine, math.floor(free + 0.3)))
