"""The engine for any `Policy` (openai:, vllm:, replay:, or a policy built in code): whole completions from
`Policy.generate`, batched.

Requests that arrive together with the same sampling settings run as one `generate` call (they wait at most
`batch_wait_s` for company); a request's `n` choices are `n` copies of its conversation in that call, so a
backend that batches or caches prompts evaluates the shared prompt once. Tokens come out when the
completion is done (streamed then), top log-probs and raw prompts are not available, and a client that
leaves is dropped before its batch starts (a running `generate` cannot be stopped).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

from agent.policy.base import Generation, Policy
from agent.policy.serve.engine import Done, Engine, EngineError, Failed, Finish, Job, Prompt, Token
from records.trajectory import Message


class PolicyEngine(Engine):
    def __init__(self, policy: Policy, name: str = "", batch_wait_s: float = 0.01, max_batch: int = 16) -> None:
        self.policy, self.name = policy, name
        self.batch_wait_s, self.max_batch = batch_wait_s, max_batch
        self.tokenizer = getattr(policy, "tokenizer", None)
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name=f"policy-batcher-{name}", daemon=True)
        self.thread.start()

    @property
    def context_length(self) -> int:
        return self.policy.context_length

    def prepare(self, job: Job) -> None:
        if job.messages is None:
            raise EngineError(f"{self.name} ({type(self.policy).__name__}) takes chat messages only; "
                              "raw prompts (/v1/completions) need a llama.cpp or transformers model")
        if job.top_logprobs or job.prompt_logprobs:
            raise EngineError(f"{self.name} ({type(self.policy).__name__}) cannot report top log-probs or prompt "
                              "log-probs; only the sampled tokens' log-probs")

    def count_tokens(self, messages: list[Message]) -> int:
        return self.policy.count_tokens(messages)

    def submit(self, job: Job) -> None:
        self.queue.put(job)

    def token_text(self, token_id: int) -> tuple[str, bytes]:
        if self.tokenizer is None:
            return "", b""
        if hasattr(self.tokenizer, "decode"):
            text = self.tokenizer.decode([token_id])
            return text, text.encode()
        return "", b""

    def encode(self, text: str) -> list[int]:
        raise EngineError(f"{self.name} has no tokenizer here")

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids) if self.tokenizer is not None else ""

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=10)

    @staticmethod
    def _key(job: Job) -> str:
        return job.params.model_dump_json() + json.dumps(job.tools, sort_keys=True) + str(job.ignore_eos)

    def _loop(self) -> None:
        pending: list[Job] = []
        while True:
            if not pending:
                item = self.queue.get()
                if item is None:
                    return
                pending.append(item)
            deadline = time.monotonic() + self.batch_wait_s
            while sum(j.n for j in pending) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                try:
                    item = self.queue.get(timeout=left)
                except queue.Empty:
                    break
                if item is None:
                    self.queue.put(None)
                    break
                pending.append(item)
            key = self._key(pending[0])
            group, size = [], 0
            for j in pending:
                if self._key(j) == key and (not group or size + j.n <= self.max_batch):
                    group.append(j)
                    size += j.n
            pending = [j for j in pending if not any(j is g for g in group)]
            group = [j for j in group if not j.cancelled.is_set()]  # their clients left: dropped
            if group:
                self._run(group)

    def _run(self, group: list[Job]) -> None:
        first = group[0]
        conversations = [j.messages or [] for j in group for _ in range(j.n)]
        try:
            gens = self.policy.generate(conversations, first.params, first.tools)
        except Exception as e:  # noqa: BLE001 - handed to each waiting request
            for j in group:
                j.events.put(Failed(e))
            return
        i = 0
        for j in group:
            mine, i = gens[i: i + j.n], i + j.n
            j.events.put(Prompt([], None, j.first_index))
            for index, gen in enumerate(mine):
                self._emit(j, j.first_index + index, gen)
            j.events.put(Done(mine[0].prompt_tokens if mine else 0, sum(g.completion_tokens for g in mine)))

    @staticmethod
    def _emit(job: Job, index: int, gen: Generation) -> None:
        text, stop = gen.text, None
        if gen.finish_reason == "stop":
            stop = next((s for s in job.params.stop if text.endswith(s)), None)
            if stop is not None and not job.include_stop:
                text = text[: len(text) - len(stop)]
        ids, lps = gen.token_ids or [], gen.logprobs or []
        for tid, lp in zip(ids, lps):
            job.events.put(Token(index, tid, lp, [], ""))
        job.events.put(Finish(index, gen.finish_reason, stop, text))
