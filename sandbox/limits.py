"""Process and memory limits for a local sandbox, with the strongest mechanism the host offers.

1. cgroup v2 (a writable delegated cgroup with the memory and pids controllers): `memory.max` (swap 0)
   and `pids.max` hold the whole sandbox.
2. cgroup v1 memory (writable, e.g. as root on a v1 host): `memory.limit_in_bytes` (swap included) holds
   the whole sandbox's memory; processes are held by RLIMIT_NPROC as in 3.
3. rlimits: RLIMIT_NPROC (processes of the sandbox's host uid; when Evolve runs as root every sandbox
   gets a uid of its own, so this is exactly `pids_limit`) and RLIMIT_AS (per process: a sandbox can hold
   up to `pids_limit` x `memory`).

`describe` says which one a sandbox got.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _own_cgroup(controller: str) -> str | None:
    """This process's cgroup path in the hierarchy holding `controller` ('' for the v2 unified one)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers.split(",") == [controller] or (controller == "" and controllers == ""):
            return path
    return None


def _write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


class Limits:
    """The limits of one sandbox: `child_setup()` runs in the sandbox's first process before exec,
    `cleanup()` after it ended."""

    def __init__(self, name: str, memory: int, pids: int, host_uid: int | None):
        self.memory, self.pids, self.host_uid = memory, pids, host_uid
        self.cgroup: Path | None = None
        self.kind = "rlimit"
        self.nproc = pids if host_uid is not None else pids + _processes_of(os.getuid())
        try:
            if self._cgroup_v2(name):
                self.kind = "cgroup2"
            elif self._cgroup_v1_memory(name):
                self.kind = "cgroup1-memory"
        except OSError as e:  # not writable after all: the rlimits still hold
            log.debug("sandbox cgroup not usable (%s); using rlimits", e)
            self.cleanup()
            self.cgroup, self.kind = None, "rlimit"

    @property
    def describe(self) -> str:
        """Human-readable: which mechanism holds memory and processes."""
        return {
            "cgroup2": f"cgroup v2: memory.max {self.memory >> 20} MiB and pids.max {self.pids} for the sandbox",
            "cgroup1-memory": f"cgroup v1: {self.memory >> 20} MiB for the sandbox; RLIMIT_NPROC {self.nproc}",
            "rlimit": f"rlimits only: RLIMIT_AS {self.memory >> 20} MiB per process, RLIMIT_NPROC {self.nproc}"
                      + ("" if self.host_uid is not None else " (counts all of this user's processes)"),
        }[self.kind]

    def _cgroup_v2(self, name: str) -> bool:
        own = _own_cgroup("")
        if own is None or not (CGROUP_ROOT / "cgroup.controllers").exists():
            return False
        parent = CGROUP_ROOT / own.lstrip("/") / "evolve-sandboxes"
        if not parent.is_dir():
            parent.mkdir()
        have = set((parent / "cgroup.controllers").read_text().split())
        if not {"memory", "pids"} <= have:
            return False  # the parent did not delegate them (enabling them there needs it to be empty)
        _write(parent / "cgroup.subtree_control", "+memory +pids")
        cg = parent / name
        cg.mkdir()
        self.cgroup = cg
        _write(cg / "memory.max", str(self.memory))
        if (cg / "memory.swap.max").exists():
            _write(cg / "memory.swap.max", "0")
        _write(cg / "pids.max", str(self.pids))
        return True

    def _cgroup_v1_memory(self, name: str) -> bool:
        own = _own_cgroup("memory")
        base = CGROUP_ROOT / "memory"
        if own is None or not (base / "memory.limit_in_bytes").exists():
            return False
        cg = base / own.lstrip("/") / f"evolve-{name}"
        cg.mkdir()
        self.cgroup = cg
        _write(cg / "memory.limit_in_bytes", str(self.memory))
        if (cg / "memory.memsw.limit_in_bytes").exists():
            _write(cg / "memory.memsw.limit_in_bytes", str(self.memory))
        return True

    def oom_kills(self) -> int | None:
        """Processes of the sandbox the kernel killed for want of memory so far; None where no cgroup counts them."""
        if self.cgroup is None:
            return None
        name = "memory.events" if self.kind == "cgroup2" else "memory.oom_control"
        try:
            for line in (self.cgroup / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return None

    def child_setup(self) -> None:
        """In the sandbox's first process, before exec (still with the host's privileges)."""
        if self.cgroup is not None:
            _write(self.cgroup / "cgroup.procs", "0")
        if self.kind != "cgroup2":
            resource.setrlimit(resource.RLIMIT_NPROC, (self.nproc, self.nproc))
            resource.setrlimit(resource.RLIMIT_AS, (self.memory, self.memory))

    def cleanup(self) -> None:
        """Kill what is left in the cgroup and remove it."""
        cg, self.cgroup = self.cgroup, None
        if cg is None or not cg.exists():
            return
        for _ in range(50):
            try:
                pids = [int(p) for p in (cg / "cgroup.procs").read_text().split()]
            except OSError:
                pids = []
            if not pids:
                break
            if (cg / "cgroup.kill").exists():
                _write(cg / "cgroup.kill", "1")
            else:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            time.sleep(0.02)
        try:
            cg.rmdir()
        except OSError as e:
            log.debug("could not remove cgroup %s: %s", cg, e)


def prune_cgroups() -> int:
    """Remove the empty cgroups of sandboxes whose owner was killed before `cleanup()`; returns how many.
    A live sandbox's cgroup holds processes, so the kernel refuses to remove it."""
    removed = 0
    places = []
    own2, own1 = _own_cgroup(""), _own_cgroup("memory")
    if own2 is not None and (CGROUP_ROOT / "cgroup.controllers").exists():
        places.append(CGROUP_ROOT / own2.lstrip("/") / "evolve-sandboxes")
    if own1 is not None:
        places.append(CGROUP_ROOT / "memory" / own1.lstrip("/"))
    for place in places:
        for cg in place.glob("*sb-*") if place.is_dir() else []:
            try:
                cg.rmdir()
                removed += 1
            except OSError:
                pass
    return removed


def _processes_of(uid: int) -> int:
    n = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.stat(f"/proc/{p}").st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n
