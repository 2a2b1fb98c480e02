"""CPU time spent by synthesis, whatever else loads the machine: the sandboxes' cgroups plus the driver process.

On a shared, loaded machine wall time says little; CPU-seconds per validated task do not depend on the load,
and 2 cores / (CPU-seconds per task) is what an idle 2-core machine would make. `CpuSampler` reads each
`evolve-synth-*` container's cpuacct (cgroup v1) or cpu.stat (v2) every few seconds (a container removed
between two reads loses at most that interval) and the driver's own utime + stime.

    python bench/synth_cpu.py PID SUITE.jsonl SECONDS   # sample a running synthesis from outside
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import docker


def container_ns(cid: str) -> int | None:
    for path in (f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage",):
        try:
            return int(Path(path).read_text())
        except OSError:
            pass
    for path in (f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat", f"/sys/fs/cgroup/docker/{cid}/cpu.stat"):
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith("usage_usec"):
                    return int(line.split()[1]) * 1000
        except OSError:
            pass
    return None


def process_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuSampler(threading.Thread):
    """Sums the CPU of synthesis sandboxes (from their first sighting) and of process ``pid``."""

    def __init__(self, pid: int, interval: float = 3.0, prefix: str = "evolve-synth-src-"):
        super().__init__(daemon=True)
        self.pid, self.interval, self.prefix = pid, interval, prefix
        self.first: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self.proc0 = process_seconds(pid)
        self.proc1 = self.proc0
        self.done = threading.Event()
        self.client = docker.from_env()

    def sample(self) -> None:
        for c in self.client.api.containers(filters={"label": "evolve.sandbox"}):
            if not str(c.get("Image", "")).startswith(self.prefix):
                continue
            ns = container_ns(c["Id"])
            if ns is not None:
                self.first.setdefault(c["Id"], 0)  # seen first after the start: all its CPU is ours
                self.last[c["Id"]] = ns
        try:
            self.proc1 = process_seconds(self.pid)
        except OSError:
            pass

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.sample()

    def seconds(self) -> tuple[float, float]:
        """(sandboxes' CPU seconds, the driver's CPU seconds) since the start."""
        boxes = sum(self.last[c] - self.first.get(c, 0) for c in self.last) / 1e9
        return boxes, self.proc1 - self.proc0


def main() -> None:
    pid, suite, seconds = int(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    count = lambda: suite.read_text().count("\n") if suite.exists() else 0  # noqa: E731
    s = CpuSampler(pid)
    s.sample()
    for cid, ns in s.last.items():  # containers already running: count from now
        s.first[cid] = ns
    n0, t0, load0 = count(), time.time(), os.getloadavg()[0]
    s.start()
    time.sleep(seconds)
    s.sample()
    s.done.set()
    boxes, driver = s.seconds()
    n = count() - n0
    cpu = boxes + driver
    print(f"{n} tasks in {time.time() - t0:.0f} s wall; CPU: sandboxes {boxes:.0f} s + driver {driver:.0f} s = "
          f"{cpu:.0f} s; {cpu / max(n, 1):.2f} CPU-s per task -> {2 * 3600 / (cpu / max(n, 1)):.0f} tasks/hour on 2 "
          f"idle cores (wall rate here {n / (time.time() - t0) * 3600:.0f}/h; load {load0:.1f} -> "
          f"{os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
