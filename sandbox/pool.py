"""A warm pool: pre-started sandboxes of one image, handed out reset, replaced when one dies."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

from sandbox.base import Sandbox, SandboxError

log = logging.getLogger(__name__)


class SandboxPool:
    """Keeps `size` started sandboxes ready. `acquire()` hands one out; `release()` resets it and puts it
    back (or replaces it when it died). Starting and resetting happen on background threads."""

    def __init__(self, factory: Callable[[], Sandbox], size: int = 2):
        if size < 1:
            raise ValueError("a sandbox pool needs size >= 1")
        self.factory = factory
        self.size = size
        self._idle: queue.Queue[Sandbox] = queue.Queue()
        self._closed = False
        self._errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []
        self._made: list[Sandbox] = []  # every sandbox this pool started, stopped on close()
        for _ in range(size):
            self._spawn()

    def _background(self, fn: Callable[[], None]) -> None:
        t = threading.Thread(target=fn, daemon=True)
        t.start()
        self._threads = [x for x in self._threads if x.is_alive()] + [t]

    def _spawn(self) -> None:
        def start() -> None:
            try:
                sb = self.factory()
            except BaseException as e:  # surfaced to the next acquire()
                self._errors.append(e)
                return
            self._made.append(sb)
            if self._closed:
                sb.stop()
            else:
                self._idle.put(sb)

        self._background(start)

    def acquire(self, timeout: float | None = 300) -> Sandbox:
        """A ready, reset sandbox. Dead ones found on the way are stopped and replaced."""
        while True:
            if self._errors:
                raise SandboxError(f"the sandbox pool could not start a sandbox: {self._errors.pop()}")
            try:
                sb = self._idle.get(timeout=0.5 if timeout is None else min(timeout, 0.5))
            except queue.Empty:
                if timeout is not None:
                    timeout -= 0.5
                    if timeout <= 0:
                        raise SandboxError("timed out waiting for a sandbox from the pool") from None
                continue
            if sb.alive():
                return sb
            log.warning("pool: sandbox %s died while idle; replacing it", getattr(sb, "id", "?"))
            self._discard(sb)

    def release(self, sb: Sandbox) -> None:
        """Give a sandbox back: reset it in the background and make it available again."""

        def recycle() -> None:
            try:
                sb.reset()
            except SandboxError as e:
                log.warning("pool: could not reset sandbox %s (%s); replacing it", getattr(sb, "id", "?"), e)
                self._discard(sb)
                return
            if self._closed:
                sb.stop()
            else:
                self._idle.put(sb)

        self._background(recycle)

    def _discard(self, sb: Sandbox) -> None:
        if sb in self._made:
            self._made.remove(sb)
        try:
            sb.stop()
        except Exception as e:  # a dead sandbox may fail to stop cleanly; it is gone either way
            log.debug("pool: stop failed: %s", e)
        if not self._closed:
            self._spawn()

    def close(self) -> None:
        """Stop every sandbox the pool started, idle or handed out."""
        self._closed = True
        for t in list(self._threads):
            t.join(timeout=60)
        for sb in self._made:
            try:
                sb.stop()
            except Exception as e:  # already gone: nothing left to stop
                log.debug("pool: stop failed: %s", e)

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
