"""Micro-batching: episodes running in parallel threads share one batched `generate` call.

On a CPU or GPU, one batched call of N conversations costs far less than N calls. Each thread calls
`generate` as usual; the first waiting thread becomes the leader, waits up to `max_wait` seconds for
the other active episodes to ask too, then runs one call for everyone with the same sampling settings.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from agent.policy.base import Generation, Policy, PolicyWrapper, SamplingParams
from records import Message


@dataclass
class _Request:
    conversations: list[list[Message]]
    params: SamplingParams
    tools: list[dict[str, Any]] | None
    result: list[Generation] | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class BatchingPolicy(PolicyWrapper):
    """Wraps a policy so concurrent `generate` calls from several threads run as one batch."""

    def __init__(self, inner: Policy, max_batch: int = 8, max_wait: float = 0.2):
        super().__init__(inner)
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.active = 1
        """Episodes currently running; the leader stops waiting once that many have asked."""
        self._lock = threading.Condition()
        self._queue: list[_Request] = []
        self._leading = False
        self.calls = 0

    def generate(self, conversations: list[list[Message]], params: SamplingParams,
                 tools: list[dict[str, Any]] | None = None) -> list[Generation]:
        req = _Request(conversations, params, tools)
        with self._lock:
            self._queue.append(req)
            self._lock.notify_all()
        while not req.done.is_set():
            with self._lock:
                if self._leading or req not in self._queue:
                    self._lock.wait(0.05)
                    continue
                self._leading = True
            try:
                self._lead()
            finally:
                with self._lock:
                    self._leading = False
                    self._lock.notify_all()
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    def _lead(self) -> None:
        deadline = time.monotonic() + self.max_wait
        with self._lock:
            while len(self._queue) < min(self.active, self.max_batch) and time.monotonic() < deadline:
                self._lock.wait(max(deadline - time.monotonic(), 0.001))
            first = self._queue[0]
            batch = [r for r in self._queue if r.params == first.params and r.tools == first.tools][: self.max_batch]
            for r in batch:
                self._queue.remove(r)
        convs = [c for r in batch for c in r.conversations]
        try:
            results = self.inner.generate(convs, first.params, first.tools)
            self.calls += 1
        except BaseException as e:  # every waiting episode sees the failure
            for r in batch:
                r.error = e
                r.done.set()
            return
        i = 0
        for r in batch:
            r.result = results[i: i + len(r.conversations)]
            i += len(r.conversations)
            r.done.set()

    def close(self) -> None:
        self.inner.close()
