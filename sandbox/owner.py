"""Who owns a sandbox: the owning process's pid, start time, host boot id and host name.

Recorded on every container and snapshot image (labels) and every local workspace (`owner.json`), so
`evolve sandbox prune` removes only what a dead process left: a pid alone is not enough (pids are reused,
and a reboot resets them), so a process counts as the owner only when its start time and the boot match.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from typing import Literal

PID, START, BOOT, HOST = "evolve.owner_pid", "evolve.owner_start", "evolve.owner_boot", "evolve.owner_host"

OwnerState = Literal["alive", "dead", "unknown"]


@lru_cache(maxsize=1)
def boot_id() -> str:
    """This boot of this host (changes at every reboot)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat); '' if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return ""
    return stat[stat.rfind(b")") + 2:].split()[19].decode()  # fields after the command name start at 3


def owner_labels() -> dict[str, str]:
    """The labels that name the current process as owner."""
    pid = os.getpid()
    return {PID: str(pid), START: start_time(pid), BOOT: boot_id(), HOST: socket.gethostname()}


def owner_state(labels: dict[str, str]) -> OwnerState:
    """`alive` when the recorded owner process still runs, `dead` when it surely does not, `unknown` when
    it ran on another host (a shared daemon) or nothing was recorded."""
    pid = labels.get(PID, "")
    if not pid.isdigit():
        return "unknown"
    boot = labels.get(BOOT, "")
    if not boot:  # recorded by an older Evolve: the pid is all there is
        return "alive" if start_time(int(pid)) else "dead"
    if boot != boot_id():
        # another boot of this host (its processes are all gone), or another host sharing the daemon
        return "dead" if labels.get(HOST) == socket.gethostname() else "unknown"
    started = start_time(int(pid))
    return "alive" if started and started == labels.get(START, started) else "dead"
