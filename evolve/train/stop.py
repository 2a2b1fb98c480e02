"""Stopping a training between two optimiser steps: Ctrl-C or a caller's stop request (the TUI's stop button).

While a training runs in the main thread, the first Ctrl-C only raises a flag: the step in flight finishes, a
checkpoint is written, the version is marked `stopped` and the training returns; the same command resumes it.
The first Ctrl-C says so at once on stderr. A second Ctrl-C interrupts at once, as usual.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable, Optional

ShouldStop = Callable[[], Optional[str]]
"""Returns why the training should stop now (e.g. "stop requested"), or None to go on."""


class StopAtStep:
    """Context manager: `reason()` says why to stop after the current step (Ctrl-C, or `should_stop`'s answer)."""

    def __init__(self, should_stop: ShouldStop | None = None):
        self.should_stop = should_stop
        self.hit = False
        self._previous = None

    def _handler(self, signum, frame) -> None:
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True
        try:  # said at once: a step of a real model can take a minute, and a silent Ctrl-C looks ignored
            os.write(2, b"\nCtrl-C: stopping after the step in flight, with a checkpoint (Ctrl-C again: at once, "
                        b"from the last checkpoint)\n")
        except OSError:  # no stderr to write to: the flag is what matters
            pass

    def __enter__(self) -> "StopAtStep":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def reason(self) -> str | None:
        if self.hit:
            return "Ctrl-C"
        return self.should_stop() if self.should_stop is not None else None
