"""Batched sampling on llama.cpp from shared prompt prefixes: a GRPO group, or many prompts, in one pass.

`LlamaCppPolicy.generate` with several conversations (a GRPO group is the same prompt k times; the
tool-calling suite's prompts share their system text) runs them here, in one llama.cpp context with one
sequence per completion and a unified KV cache:

* Each distinct prompt is evaluated once, on sequence 0, reusing the longest prefix sequence 0 still holds
  from the prompt before it (the shared system text is evaluated once per call, or once per process when
  consecutive calls start alike); then its KV cells are shared (`llama_memory_seq_cp`, no copy) with the
  sequences of every completion of that prompt.
* All completions then advance together: one `llama_decode` per step evaluates one new token of every
  unfinished sequence, so the weights are read once per step for the whole batch instead of once per
  token (decoding a small model on a CPU is bound by reading its weights).
* Each completion samples from its own row of logits with its own seed, exactly as the one-at-a-time path
  does (`LlamaCppPolicy._sample`): its token ids and raw log-probs are its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.policy.base import Generation, SamplingParams

log = logging.getLogger(__name__)


@dataclass
class _Row:
    prompt: list[int]
    seq: int
    rng: np.random.Generator
    limit: int
    ids: list[int] = field(default_factory=list)
    lps: list[float] = field(default_factory=list)
    text: str = ""
    finish: str | None = None


def _common(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    same = np.asarray(a[:n]) == np.asarray(b[:n])
    return n if same.all() else int(np.argmin(same))


class BatchedDecoder:
    """A llama.cpp context of ``n_seq`` sequences (plus sequence 0, which holds the last prompt) on the
    weights of ``policy`` (a `LlamaCppPolicy`); see the module docstring."""

    def __init__(self, policy: Any, n_seq: int, n_ctx: int) -> None:
        from llama_cpp._internals import LlamaBatch, LlamaContext

        self.policy = policy
        self.n_seq = n_seq
        # The one-at-a-time contexts' settings (kernels, attention, KV types), so both paths compute alike.
        base = policy.llm.context_params
        params = type(base).from_buffer_copy(base)
        params.n_ctx = n_ctx
        params.n_seq_max = n_seq + 1
        params.kv_unified = True  # shared prompt cells are stored once
        params.swa_full = True  # sliding-window layers keep every position, so a held prefix can be reused
        self.ctx = LlamaContext(model=policy.llm._model, params=params, verbose=False)
        self.batch = LlamaBatch(n_tokens=max(policy.config.n_batch, n_seq), embd=0, n_seq_max=1, verbose=False)
        self.held: list[int] = []  # tokens sequence 0 holds
        self.n_vocab = policy.n_vocab
        self.prompt_tokens_evaluated = 0

    # --- llama.cpp calls ------------------------------------------------------------------------------
    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (token, position, sequence, wants logits) entries."""
        b = self.batch.batch
        b.n_tokens = len(entries)
        for i, (tok, pos, seq, logits) in enumerate(entries):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
            b.seq_id[i][0] = seq
        self.ctx.decode(self.batch)

    def _logits(self, i: int) -> np.ndarray:
        return np.ctypeslib.as_array(self.ctx.get_logits_ith(i), shape=(self.n_vocab,)).copy()

    def _prefill(self, prompt: list[int]) -> np.ndarray:
        """Evaluate ``prompt`` on sequence 0 (reusing what it holds); the logits after its last token."""
        common = min(_common(self.held, prompt), len(prompt) - 1)
        if not self.ctx.kv_cache_seq_rm(0, common, -1):
            self.ctx.kv_cache_seq_rm(0, -1, -1)
            common = 0
        step = self.policy.config.n_batch
        chunk: list[int] = []
        for start in range(common, len(prompt), step):
            chunk = prompt[start:start + step]
            last = start + len(chunk) == len(prompt)
            self._decode([(t, start + k, 0, last and k == len(chunk) - 1) for k, t in enumerate(chunk)])
        self.held = list(prompt)
        self.prompt_tokens_evaluated += len(prompt) - common
        return self._logits(len(chunk) - 1)

    # --- sampling -------------------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        """One completion per prompt (at most ``n_seq`` at once; more run in consecutive rounds)."""
        out: list[Generation] = []
        if not self.policy.config.cache_prompt:  # every call evaluates its prompts cold (a seed then repeats)
            self.held = []
        start = 0
        while start < len(prompts):  # as many rows as sequences and KV cells allow
            end, cells, seen = start, len(self.held), set()
            while end < len(prompts) and end - start < self.n_seq:
                key = tuple(prompts[end])
                need = (0 if key in seen else len(key)) + params.max_tokens
                if end > start and cells + need > self.ctx.n_ctx():
                    break
                cells, end = cells + need, end + 1
                seen.add(key)
            seeds = [None if params.seed is None else params.seed + k for k in range(start, end)]
            out += self._round(prompts[start:end], params, seeds)
            start = end
        return out

    def _round(self, prompts: list[list[int]], params: SamplingParams, seeds: list[int | None]) -> list[Generation]:
        policy = self.policy
        for s in range(1, self.n_seq + 1):
            self.ctx.kv_cache_seq_rm(s, -1, -1)
        room = self.policy.context_length
        rows = [_Row(p, k + 1, np.random.default_rng(seed), min(params.max_tokens, room - len(p)))
                for k, (p, seed) in enumerate(zip(prompts, seeds))]
        first: dict[tuple[int, ...], np.ndarray] = {}
        for row in rows:  # identical prompts are evaluated once; their rows share its cells
            if row.limit <= 0:  # no room left in the context: nothing to generate
                continue
            key = tuple(row.prompt)
            if key not in first:
                first[key] = self._prefill(row.prompt)
            self.ctx.kv_cache_seq_cp(0, row.seq, -1, -1)
        logits = {row.seq: first[tuple(row.prompt)] for row in rows if row.limit > 0}
        eos = set(policy.eos_ids)
        active = [r for r in rows if r.limit > 0]
        for r in rows:
            if r.limit <= 0:
                r.finish = "length"
        while active:
            for r in active:
                token, lp = policy._sample(logits[r.seq], params, r.rng)
                r.ids.append(token)
                r.lps.append(lp)
                if token in eos:
                    r.finish = "stop"
                elif params.stop:
                    text = policy.llm.detokenize(r.ids).decode("utf-8", errors="ignore")
                    hit = min((text.find(s) + len(s) for s in params.stop if s in text), default=None)
                    if hit is not None:
                        r.text, r.finish = text[:hit], "stop"
                if r.finish is None and len(r.ids) >= r.limit:
                    r.finish = "length"
            active = [r for r in active if r.finish is None]
            if not active:
                break
            self._decode([(r.ids[-1], len(r.prompt) + len(r.ids) - 1, r.seq, True) for r in active])
            logits = {r.seq: self._logits(i) for i, r in enumerate(active)}
        gens = []
        for r in rows:
            if not r.text:
                body = r.ids[:-1] if r.ids and r.ids[-1] in eos else r.ids
                r.text = policy.llm.detokenize(body).decode("utf-8", errors="ignore")
            gens.append(Generation(text=r.text, token_ids=r.ids, logprobs=r.lps, prompt_tokens=len(r.prompt),
                                   completion_tokens=len(r.ids), finish_reason=r.finish or "length"))
        return gens

    def close(self) -> None:
        self.batch.close()
        self.ctx.close()
