"""One process per run directory: an exclusive `flock` on `<run dir>/evolve.lock`.

Two runs writing one directory would both do every instance and mark each other's live trajectories as
interrupted. The lock is the kernel's: it goes away when its process ends in any way (SIGKILL included),
so a crashed run never leaves a stale lock behind. Readers (the TUI, `evolve trajectories`) do not lock.

    with RunLock(out, "evolve run bundled"):
        ...  # this process alone writes `out`
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path

from evolve.store import LOCK_NAME, StoreError


class RunLocked(StoreError):
    """Another live process holds the run directory."""


_held: dict[str, list] = {}
"""Lock files this process holds: real path -> [fd, count]. Nested locks in one process share the fd, so a
command that locks its --out and then calls a function that locks it again does not lock itself out."""
_held_lock = threading.Lock()


class RunLock:
    """An exclusive, non-blocking lock on a run directory, held from `acquire` (or `with`) to `release`.
    Exclusive between processes; re-entrant within one process."""

    def __init__(self, run_dir: str | Path, what: str = "evolve"):
        self.dir = Path(run_dir)
        self.path = self.dir / LOCK_NAME
        self.what = what
        self._key: str | None = None

    def acquire(self) -> "RunLock":
        """Take the lock or raise `RunLocked` naming the holder."""
        if self._key is not None:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        key = os.path.realpath(self.path)
        with _held_lock:
            if key in _held:
                _held[key][1] += 1
                self._key = key
                return self
            self._take(key)
        return self

    def _take(self, key: str) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(fd)
            os.close(fd)
            raise RunLocked(f"{self.dir} is in use by another Evolve process ({holder}); wait for it to "
                            "finish (or stop it), or give another --out directory") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "what": self.what, "since": time.time()}).encode())
        _held[key] = [fd, 1]
        self._key = key

    def release(self) -> None:
        """Let go (the file stays; only the kernel lock matters). Safe to call twice."""
        if self._key is None:
            return
        key, self._key = self._key, None
        with _held_lock:
            entry = _held[key]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                fcntl.flock(entry[0], fcntl.LOCK_UN)
                os.close(entry[0])

    @property
    def held(self) -> bool:
        return self._key is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe(fd: int) -> str:
    """Who holds the lock, from what it wrote into the lock file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"pid {info['pid']}, `{info['what']}`, since {started}"
    except (ValueError, KeyError, TypeError, OSError):
        return "holder unknown"
