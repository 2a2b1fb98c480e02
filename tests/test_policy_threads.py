"""The measured default thread count (`agent.policy.threads`): other processes' busy cores are not offered."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from agent.policy.threads import busy_elsewhere, free_cores


def test_cores_kept_busy_by_other_processes_leave_one_thread():
    """One spinning process per core (and one more): nothing is free, so a model gets the minimum, 1 thread, and
    the cores counted busy are (nearly) all of them; when they stop, the count comes from the rest of the load."""
    n = len(os.sched_getaffinity(0)) + 1
    spin = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.3)
        assert busy_elsewhere() >= len(os.sched_getaffinity(0)) - 0.5
        assert free_cores() == 1
    finally:
        for p in spin:
            p.kill()
            p.wait()


def test_this_process_own_work_is_not_counted_as_others():
    """The sample subtracts this process's CPU time: a thread of ours spinning through it does not count (at most
    what other processes add on a shared machine, which the bound leaves room for)."""
    import threading

    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    baseline = busy_elsewhere()
    t = threading.Thread(target=spin)
    t.start()
    try:
        during = busy_elsewhere()
    finally:
        stop.set()
        t.join()
    assert during <= max(baseline, 0.0) + 0.75 * len(os.sched_getaffinity(0))
