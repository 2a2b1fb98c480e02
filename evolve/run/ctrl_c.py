"""Ctrl-C as a graceful stop: the first one asks the running work to stop after what is in flight, a second one
interrupts at once (KeyboardInterrupt)."""

from __future__ import annotations

import signal
import threading


class FirstCtrlCStops:
    """While active (in the main thread), the first Ctrl-C only sets `hit`, which the caller's loop turns into a
    stop (the handler itself takes no lock, so it cannot deadlock with a store write it interrupted); a second
    one raises KeyboardInterrupt as usual. Outside the main thread it does nothing (signals go to the main one)."""

    def __init__(self) -> None:
        self.previous = None
        self.hit = False

    def _handler(self, signum, frame) -> None:
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def __enter__(self) -> "FirstCtrlCStops":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
