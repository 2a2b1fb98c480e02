"""Engines: what turns a validated request into a stream of sampled tokens.

A `Job` is one request's prompt and settings; the engine that runs it puts events on `job.events`:
`Prompt` (the prompt's token ids, and their log-probs when asked), then per choice `Token`s and one
`Finish`, then `Done` (usage) or `Failed`. The HTTP side turns these into a JSON body or SSE chunks.
`job.cancel()` (the client left) stops its choices at the next step and frees their slots.

`TokenEngine` is continuous batching over a token-level `Backend` (llama.cpp, transformers): each step
runs one forward pass over every running choice's last token plus chunks of waiting prompts, so new
requests join a running batch at once and finished ones leave it. `n` choices share one prompt
evaluation: the prompt is evaluated once into one sequence, its KV cache is copied into the others, and
every choice samples its first token from the same logits with its own generator. Requests that arrive
while the same prompt is being evaluated (a client sending a GRPO group as separate requests) wait for
that evaluation and copy its cache in the same way. A new prompt reuses the longest prefix cached by an
idle sequence (an agent's next prompt extends its last one).
"""

from __future__ import annotations

import codecs
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.policy.base import SamplingParams
from agent.policy.serve.sampling import log_normaliser, sample_row, top_logprobs
from records.trajectory import Message

log = logging.getLogger(__name__)


# ---- events ------------------------------------------------------------------------------------


@dataclass
class Prompt:
    """The prompt as the model saw it; `logprobs[i]` is (log-prob, top alternatives) of token i (None for
    the first token), present when the request asked for prompt log-probs (`echo` with `logprobs`)."""

    token_ids: list[int]
    logprobs: list[tuple[float, list[tuple[int, float]]] | None] | None = None
    first_index: int = 0
    """Index of the job's first choice in the response (requests with several prompts run several jobs)."""


@dataclass
class Token:
    """One sampled token of choice `index`; `text` is the visible text it released ("" while held back
    because it may start a stop string, or for special tokens)."""

    index: int
    token_id: int | None
    logprob: float | None
    top: list[tuple[int, float]]
    text: str


@dataclass
class Finish:
    """Choice `index` ended: `reason` is stop / length; `stop` the stop string that ended it; `text` the
    visible text released at the end."""

    index: int
    reason: str
    stop: str | None = None
    text: str = ""


@dataclass
class Done:
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Failed:
    error: BaseException


# ---- jobs --------------------------------------------------------------------------------------


@dataclass
class Job:
    """One request for an engine."""

    params: SamplingParams
    n: int = 1
    messages: list[Message] | None = None
    """Chat requests: the conversation (rendered by the engine's chat template)."""
    tools: list[dict[str, Any]] | None = None
    prompt_ids: list[int] | None = None
    """Raw completions (and chat requests once rendered): the prompt's token ids."""
    logprobs: bool = False
    top_logprobs: int = 0
    prompt_logprobs: bool = False
    ignore_eos: bool = False
    include_stop: bool = False
    first_index: int = 0
    """Index of this job's first choice in the response; its events carry indices from here."""
    events: queue.Queue = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def max_new(self) -> int:
        return self.params.max_tokens


class EngineError(RuntimeError):
    """The engine cannot run a request (answered with the message; 400 when the request is at fault)."""


class KVFull(EngineError):
    """The KV cache had no room for a step."""


class Engine(ABC):
    """Runs jobs for one served model."""

    name: str = ""
    can_complete_raw: bool = False
    """Takes raw prompts (text or token ids) for /v1/completions."""
    can_score_prompt: bool = False
    """Returns prompt log-probs (echo with logprobs)."""
    can_top_logprobs: bool = False
    """Returns the most likely alternatives of each token."""
    streams_tokens: bool = False
    """Tokens come out as they are sampled (else all at once when the completion is done)."""

    @property
    @abstractmethod
    def context_length(self) -> int: ...

    @abstractmethod
    def prepare(self, job: Job) -> None:
        """Render and tokenize the job's prompt in the caller's thread; EngineError when it cannot run."""

    @abstractmethod
    def submit(self, job: Job) -> None: ...

    @abstractmethod
    def token_text(self, token_id: int) -> tuple[str, bytes]:
        """A token as log-probs show it: its text (special tokens by name) and its raw bytes."""

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def decode(self, ids: list[int]) -> str: ...

    def count_tokens(self, messages: list[Message]) -> int:
        job = Job(params=SamplingParams(max_tokens=1), messages=messages)
        self.prepare(job)
        return len(job.prompt_ids or [])

    def close(self) -> None:
        """Stop the engine's threads (the model stays with its owner)."""


# ---- text of a choice --------------------------------------------------------------------------


class StopText:
    """A choice's visible text: bytes in, released text out; holds back what may begin a stop string and
    cuts the text at the first stop string (kept only with `include_stop`)."""

    def __init__(self, stops: list[str], include_stop: bool) -> None:
        self.stops, self.include_stop = stops, include_stop
        self.longest = max((len(s) for s in stops), default=0)
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.text = ""
        self.sent = 0
        self.stop: str | None = None

    def feed(self, data: bytes, final: bool = False) -> str:
        start = max(0, len(self.text) - self.longest + 1)
        self.text += self.decoder.decode(data, final=final)
        if self.stops:
            hits = [(i, s) for s in self.stops if (i := self.text.find(s, start)) >= 0]
            if hits:
                i, s = min(hits)
                self.stop = s
                return self._release(i + (len(s) if self.include_stop else 0))
            if not final:
                hold = next((k for k in range(min(self.longest - 1, len(self.text)), 0, -1)
                             if any(s.startswith(self.text[-k:]) for s in self.stops)), 0)
                return self._release(len(self.text) - hold)
        return self._release(len(self.text))

    def _release(self, end: int) -> str:
        out = self.text[self.sent: max(end, self.sent)]
        self.sent = max(end, self.sent)
        return out


# ---- token-level backends and the continuous-batching engine ---------------------------------


class Backend(ABC):
    """A model that evaluates tokens into per-sequence KV caches."""

    n_vocab: int
    eos_ids: set[int]
    max_seqs: int
    """Sequences (KV caches) it holds at once."""
    kv_capacity: int
    """Tokens its KV caches hold in all (sequences share it)."""
    max_batch_tokens: int
    """Most tokens one step evaluates (decode tokens plus prompt chunks)."""

    @property
    @abstractmethod
    def context_length(self) -> int: ...

    @abstractmethod
    def forward(self, entries: list[tuple[int, list[int], int, bool]]) -> list[np.ndarray]:
        """Evaluate `tokens` into sequence `seq` at positions from `pos` for each `(seq, tokens, pos, all)`;
        return per entry the logits rows [len(tokens) if all else 1, n_vocab] (float32)."""

    @abstractmethod
    def keep(self, seq: int, n: int) -> bool:
        """Drop sequence `seq`'s cache from position `n` on; False if this cache cannot (then it is cleared)."""

    @abstractmethod
    def fork(self, src: int, dst: int, n: int) -> None:
        """Make `dst`'s cache the first `n` positions of `src`'s."""

    @abstractmethod
    def render(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> list[int]: ...

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def piece(self, token_id: int) -> bytes:
        """The bytes a token adds to the visible text (b"" for special tokens)."""

    @abstractmethod
    def token_text(self, token_id: int) -> tuple[str, bytes]: ...

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.piece(i) for i in ids).decode("utf-8", errors="replace")

    def close(self) -> None:
        pass


class _Choice:
    def __init__(self, run: _Running, index: int, seq: int) -> None:
        self.run, self.job, self.seq = run, run.job, seq
        self.index = run.job.first_index + index
        seed = run.job.params.seed
        self.rng = np.random.default_rng(None if seed is None else (seed + index) % 2**64)
        self.ids: list[int] = []
        self.pending: int | None = None
        self.text = StopText(run.job.params.stop, run.job.include_stop)
        self.done = False
        self.released = False


class _Running:
    """A job in the engine: its prompt evaluation, then its choices."""

    def __init__(self, job: Job, seqs: list[int], cached: int, reserve: int) -> None:
        self.job, self.seqs, self.pos, self.reserve = job, seqs, cached, reserve
        self.prompt = job.prompt_ids or []
        self.choices = [_Choice(self, i, s) for i, s in enumerate(seqs)]
        self.prompt_lps: list[Any] = [None] if job.prompt_logprobs else []
        self.completion_tokens = 0
        self.leader: _Running | None = None
        """A running job evaluating this same prompt: this one waits for it and copies its cache."""
        self.followers: list[_Running] = []

    @property
    def prefilling(self) -> bool:
        return self.pos < len(self.prompt)


class TokenEngine(Engine):
    """Continuous batching over a token-level backend (see the module docstring)."""

    can_complete_raw = can_score_prompt = can_top_logprobs = streams_tokens = True

    def __init__(self, backend: Backend, name: str = "") -> None:
        self.backend, self.name = backend, name
        self.inbox: queue.Queue[Job | None] = queue.Queue()
        self.waiting: deque[Job] = deque()
        self.running: list[_Running] = []
        self.cache: list[list[int]] = [[] for _ in range(backend.max_seqs)]
        """Tokens each sequence's KV cache holds."""
        self.idle: dict[int, float] = {s: 0.0 for s in range(backend.max_seqs)}
        """Sequences no choice uses -> when they were last used (their caches serve later prompts)."""
        self.steps = 0
        self.prompt_tokens_evaluated = 0
        self._stopping = False
        self.thread = threading.Thread(target=self._loop, name=f"engine-{name}", daemon=True)
        self.thread.start()

    # ---- Engine ------------------------------------------------------------------------------

    @property
    def context_length(self) -> int:
        return self.backend.context_length

    def prepare(self, job: Job) -> None:
        if job.prompt_ids is None:
            job.prompt_ids = self.backend.render(job.messages or [], job.tools)
        if not job.prompt_ids:
            raise EngineError("the prompt is empty")
        if max(job.prompt_ids) >= self.backend.n_vocab:
            raise EngineError(f"token id {max(job.prompt_ids)} is outside the vocabulary ({self.backend.n_vocab})")
        room = self.context_length - len(job.prompt_ids)
        if room < 1:
            raise EngineError(f"the prompt is {len(job.prompt_ids)} tokens; this model's context is "
                              f"{self.context_length} tokens")
        if job.params.max_tokens > room:
            job.params = job.params.model_copy(update={"max_tokens": room})
        if len(job.prompt_ids) + job.n * job.params.max_tokens > self.backend.kv_capacity:
            raise EngineError(f"the prompt ({len(job.prompt_ids)} tokens) and n * max_tokens "
                              f"({job.n} * {job.params.max_tokens}) do not fit this server's KV cache of "
                              f"{self.backend.kv_capacity} tokens; ask for fewer")
        if job.n > self.backend.max_seqs:
            raise EngineError(f"n={job.n} is more than this engine's {self.backend.max_seqs} sequences")

    def submit(self, job: Job) -> None:
        self.inbox.put(job)

    def token_text(self, token_id: int) -> tuple[str, bytes]:
        return self.backend.token_text(token_id)

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(ids)

    def close(self) -> None:
        """Stop the loop (requests in flight fail) and free the backend's caches."""
        self._stopping = True
        self.inbox.put(None)
        self.thread.join(timeout=30)
        if not self.thread.is_alive():
            self.backend.close()

    # ---- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            try:
                block = not self.running and not self.waiting
                while True:
                    try:
                        job = self.inbox.get(block=block, timeout=None if block else 0)
                    except queue.Empty:
                        break
                    if job is None:
                        self._fail_all(RuntimeError("the server is shutting down"))
                        return
                    self.waiting.append(job)
                    block = False
                self._drop_cancelled()
                self._admit()
                if self.running:
                    self._step()
            except Exception as e:  # noqa: BLE001 - every job in flight learns of it; the engine goes on
                log.exception("engine %s failed a step", self.name)
                self._fail_all(e)

    def _fail_all(self, error: BaseException) -> None:
        for run in self.running:
            run.job.events.put(Failed(error))
            self._release(run)
        for job in self.waiting:
            job.events.put(Failed(error))
        self.running, self.waiting = [], deque()

    def _release(self, run: _Running) -> None:
        for c in run.choices:
            self._free(c)

    def _free(self, c: _Choice) -> None:
        if not c.released:
            c.released = True
            self.idle[c.seq] = time.monotonic()

    def _drop_cancelled(self) -> None:
        for job in [j for j in self.waiting if j.cancelled.is_set()]:
            self.waiting.remove(job)
        for run in [r for r in self.running if r.job.cancelled.is_set()]:
            log.info("engine %s: a client left; its %d choice(s) stop", self.name, len(run.choices))
            self.running.remove(run)
            if run.leader is not None:
                run.leader.followers.remove(run)
            elif run.prefilling:
                self.cache[run.seqs[0]] = run.prompt[: run.pos]  # its cache holds a partial prompt
                if run.followers:  # the first follower evaluates the prompt itself, the others follow it
                    heir, rest = run.followers[0], run.followers[1:]
                    heir.leader, heir.followers = None, rest
                    for f in rest:
                        f.leader = heir
                    self.prompt_tokens_evaluated += len(heir.prompt)
            self._release(run)

    def _used(self) -> int:
        return sum(len(self.cache[s]) for s in self.idle) + sum(r.reserve for r in self.running)

    def _admit(self) -> None:
        while self.waiting:
            job = self.waiting[0]
            if len(self.idle) < job.n:
                return
            prompt = job.prompt_ids or []
            leader = None if job.prompt_logprobs else next(
                (r for r in self.running if r.leader is None and r.prefilling and not r.job.prompt_logprobs
                 and r.prompt == prompt), None)
            if leader is not None:  # the same prompt is being evaluated: wait for it and copy its cache
                if not self._follow(job, leader):
                    return
                continue
            best, shared = self._best_cache(prompt) if not job.prompt_logprobs else (self._lru_idle(), 0)
            reserve = len(prompt) + job.n * job.max_new
            others = sorted((s for s in self.idle if s != best), key=lambda s: self.idle[s])[: job.n - 1]
            freed = sum(len(self.cache[s]) for s in [best, *others])
            while self._used() - freed + reserve > self.backend.kv_capacity:
                victims = sorted((s for s in self.idle if s not in others and s != best and self.cache[s]),
                                 key=lambda s: self.idle[s])
                if not victims:
                    if not self.running:  # nothing will free room: it cannot run (prepare checks the size)
                        self.waiting.popleft()
                        job.events.put(Failed(EngineError("the request does not fit the KV cache")))
                        break
                    return  # wait for running jobs to finish
                self._clear(victims[0])
            else:
                seqs = [best, *others]
                run = _Running(job, seqs, shared, reserve)
                self.waiting.popleft()
                for s in seqs:
                    del self.idle[s]
                self.running.append(run)
                if not self.backend.keep(best, shared):
                    shared = run.pos = 0
                self.cache[best] = prompt[:shared]
                for s in others:
                    self._clear(s)
                self.prompt_tokens_evaluated += len(prompt) - shared

    def _follow(self, job: Job, leader: _Running) -> bool:
        """Admit `job` as a follower of `leader` (same prompt); False when the KV cache has no room yet."""
        reserve = job.n * job.max_new
        seqs = sorted(self.idle, key=lambda s: self.idle[s])[: job.n]
        freed = sum(len(self.cache[s]) for s in seqs)
        if self._used() - freed + reserve > self.backend.kv_capacity:
            return False
        self.waiting.popleft()
        run = _Running(job, seqs, 0, reserve)
        run.leader = leader
        leader.followers.append(run)
        for s in seqs:
            del self.idle[s]
            self._clear(s)
        self.running.append(run)
        return True

    def _clear(self, seq: int) -> None:
        self.backend.keep(seq, 0)
        self.cache[seq] = []

    def _lru_idle(self) -> int:
        return min(self.idle, key=lambda s: self.idle[s])

    def _best_cache(self, prompt: list[int]) -> tuple[int, int]:
        """The idle sequence whose cache shares the longest prefix with `prompt` (at most all but its last
        token: the last one is evaluated for its logits); the least recently used when none shares."""
        best, shared = self._lru_idle(), 0
        p = np.asarray(prompt[:-1], dtype=np.int64)
        for s in self.idle:
            cached = self.cache[s]
            n = min(len(cached), len(p))
            if n <= shared:
                continue
            same = np.asarray(cached[:n], dtype=np.int64) == p[:n]
            k = n if same.all() else int(np.argmin(same))
            if k > shared:
                best, shared = s, k
        return best, shared

    def _step(self) -> None:
        backend = self.backend
        entries: list[tuple[int, list[int], int, bool]] = []
        owners: list[Any] = []
        for run in self.running:
            for c in run.choices:
                if not c.done and c.pending is not None:
                    entries.append((c.seq, [c.pending], len(self.cache[c.seq]), False))
                    owners.append(c)
        budget = max(backend.max_batch_tokens - len(entries), 0)
        for run in self.running:
            if run.prefilling and run.leader is None and budget > 0:
                chunk = run.prompt[run.pos: run.pos + budget]
                entries.append((run.seqs[0], chunk, run.pos, run.job.prompt_logprobs))
                owners.append(run)
                budget -= len(chunk)
        if not entries:
            return
        try:
            rows = backend.forward(entries)
        except KVFull:  # idle caches hold the room: drop them and try once more
            for s in [s for s in self.idle if self.cache[s]]:
                self._clear(s)
            rows = backend.forward(entries)
        self.steps += 1
        for (seq, tokens, _, _), owner, logits in zip(entries, owners, rows):
            self.cache[seq].extend(tokens)
            if isinstance(owner, _Choice):
                owner.pending = None
                self._sample(owner, logits[-1])
            else:
                self._prefilled(owner, tokens, logits)
        finished = [r for r in self.running if not r.prefilling and all(c.done for c in r.choices)]
        for run in finished:
            self.running.remove(run)
            self._release(run)
            run.job.events.put(Done(len(run.prompt), run.completion_tokens))

    def _prefilled(self, run: _Running, chunk: list[int], logits: np.ndarray) -> None:
        job = run.job
        if job.prompt_logprobs:  # row i predicts the token after chunk[i]
            start = run.pos
            for i in range(len(chunk)):
                nxt = start + i + 1
                if nxt < len(run.prompt):
                    row = logits[i]
                    lp_all = _log_softmax_at(row, run.prompt[nxt])
                    top = top_logprobs(row, lp_all[1], job.top_logprobs)
                    run.prompt_lps.append((lp_all[0], top))
        run.pos += len(chunk)
        if run.prefilling:
            return
        job.events.put(Prompt(list(run.prompt), run.prompt_lps if job.prompt_logprobs else None, job.first_index))
        followers, run.followers = run.followers, []
        forks = [c for c in run.choices[1:]] + [c for f in followers for c in f.choices]
        for c in forks:  # before any choice samples (and may finish and free the source sequence)
            self.backend.fork(run.seqs[0], c.seq, len(run.prompt))
            self.cache[c.seq] = list(run.prompt)
        for f in followers:
            f.pos, f.leader = len(f.prompt), None
            f.job.events.put(Prompt(list(f.prompt), None, f.job.first_index))
        for c in run.choices + [c for f in followers for c in f.choices]:
            self._sample(c, logits[-1])

    def _sample(self, c: _Choice, row: np.ndarray) -> None:
        job, run = c.job, c.run
        p = job.params
        token, lp, logz = sample_row(row, p.temperature, p.top_p, c.rng)
        top = top_logprobs(row, logz, job.top_logprobs) if job.top_logprobs else []
        c.ids.append(token)
        run.completion_tokens += 1
        if token in self.backend.eos_ids and not job.ignore_eos:
            job.events.put(Token(c.index, token, lp, top, ""))
            self._finish(c, "stop", None, c.text.feed(b"", final=True))
            return
        text = c.text.feed(self.backend.piece(token))
        job.events.put(Token(c.index, token, lp, top, text))
        if c.text.stop is not None:
            self._finish(c, "stop", c.text.stop, "")
        elif len(c.ids) >= p.max_tokens or len(self.cache[c.seq]) + 1 >= self.context_length:
            self._finish(c, "length", None, c.text.feed(b"", final=True))
        else:
            c.pending = token

    def _finish(self, c: _Choice, reason: str, stop: str | None, tail: str) -> None:
        c.done = True
        c.job.events.put(Finish(c.index, reason, stop, tail))
        self._free(c)


def _log_softmax_at(row: np.ndarray, token: int) -> tuple[float, float]:
    """(raw log-prob of `token`, the row's log normaliser)."""
    logz = log_normaliser(row)
    return float(row[token]) - logz, logz
