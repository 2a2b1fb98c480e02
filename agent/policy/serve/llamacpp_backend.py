"""The llama.cpp backend of `TokenEngine`: one llama.cpp context holding many sequences' KV caches in one
unified cache, so each step decodes every running sequence in one `llama_decode` (as `llama-server` does).

It reuses a loaded `LlamaCppPolicy` for the weights (mapped once), the chat template, the tokenizer and the
end-of-turn tokens; only the context (KV cache) is its own.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agent.policy.serve.engine import Backend, EngineError, KVFull
from records.trajectory import Message

log = logging.getLogger(__name__)


class LlamaCppServeConfig(BaseModel):
    """How `evolve serve` runs a llama.cpp model."""

    model_config = ConfigDict(extra="forbid")

    max_seqs: int = Field(default=32, ge=1, le=256)
    """Sequences decoded together at most (requests times their `n`); more wait for a free one."""
    kv_tokens: int = Field(default=32768, ge=256)
    """Tokens the shared KV cache holds, all sequences together (idle sequences keep their prompts cached
    in it until the room is needed)."""
    max_batch_tokens: int = Field(default=512, ge=16)
    """Most tokens one step evaluates: a running sequence's next token each, plus chunks of new prompts."""
    threads: int | None = None
    """CPU threads; None: all cores this process may use."""
    swa_full: bool = False
    """Keep every position in sliding-window layers (Gemma 3). Off (as llama-server has it): those layers
    attend over their window only, which is faster on long prompts, but a cached prompt can then only be cut
    back within the window (otherwise it is evaluated again)."""


class LlamaCppBackend(Backend):
    def __init__(self, policy: Any, config: LlamaCppServeConfig | None = None) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self.cfg = cfg = config or LlamaCppServeConfig()
        self.policy = policy
        self.llm = policy.llm
        self._lib = llama_cpp
        self.n_vocab = self.llm.n_vocab()
        self.eos_ids = set(policy.eos_ids)
        self.max_seqs = cfg.max_seqs
        self.max_batch_tokens = max(cfg.max_batch_tokens, cfg.max_seqs)
        self.kv_capacity = cfg.kv_tokens
        threads = cfg.threads or len(os.sched_getaffinity(0))
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = cfg.kv_tokens
        params.n_batch = params.n_ubatch = self.max_batch_tokens
        params.n_seq_max = cfg.max_seqs
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = True
        params.swa_full = cfg.swa_full
        params.no_perf = True
        try:
            self.ctx = _internals.LlamaContext(model=self.llm._model, params=params, verbose=False)
        except ValueError as e:
            raise EngineError(f"llama.cpp cannot make a context of {cfg.kv_tokens} tokens for {cfg.max_seqs} "
                              f"sequences: {e}") from e
        self._ctx_len = min(int(policy.context_length), cfg.kv_tokens)
        self.batch = llama_cpp.llama_batch_init(self.max_batch_tokens, 0, 1)
        n = self.max_batch_tokens
        self._tok = np.ctypeslib.as_array(self.batch.token, shape=(n,))
        self._pos = np.ctypeslib.as_array(self.batch.pos, shape=(n,))
        self._nseq = np.ctypeslib.as_array(self.batch.n_seq_id, shape=(n,))
        self._out = np.ctypeslib.as_array(self.batch.logits, shape=(n,))
        self._seq_ptrs = [self.batch.seq_id[i] for i in range(n)]
        self._pieces: dict[int, bytes] = {}
        self._texts: dict[int, tuple[str, bytes]] = {}
        log.info("llama.cpp serving context: %d sequences, %d KV tokens, batch %d, %d threads",
                 cfg.max_seqs, cfg.kv_tokens, self.max_batch_tokens, threads)

    @property
    def context_length(self) -> int:
        return self._ctx_len

    def forward(self, entries: list[tuple[int, list[int], int, bool]]) -> list[np.ndarray]:
        lib = self._lib
        total = sum(len(t) for _, t, _, _ in entries)
        if total > self.max_batch_tokens:
            raise EngineError(f"a step of {total} tokens is over the batch size {self.max_batch_tokens}")
        i = 0
        outputs = []  # per entry: how many logits rows
        for seq, tokens, pos, every in entries:
            k = len(tokens)
            self._tok[i: i + k] = tokens
            self._pos[i: i + k] = np.arange(pos, pos + k)
            self._nseq[i: i + k] = 1
            self._out[i: i + k] = 1 if every else 0
            self._out[i + k - 1] = 1
            for j in range(i, i + k):
                self._seq_ptrs[j][0] = seq
            outputs.append(k if every else 1)
            i += k
        self.batch.n_tokens = i
        rc = lib.llama_decode(self.ctx.ctx, self.batch)
        if rc == 1:
            raise KVFull("the KV cache is full")
        if rc != 0:
            raise EngineError(f"llama_decode failed ({rc})")
        rows = np.ctypeslib.as_array(lib.llama_get_logits(self.ctx.ctx), shape=(sum(outputs), self.n_vocab))
        out, r = [], 0
        for k in outputs:  # views of llama.cpp's buffer: valid until the next decode (the engine is done by then)
            out.append(rows[r: r + k])
            r += k
        return out

    def keep(self, seq: int, n: int) -> bool:
        mem = self.ctx.memory
        if self._lib.llama_memory_seq_rm(mem, seq, n, -1):
            return True
        self._lib.llama_memory_seq_rm(mem, seq, 0, -1)
        return n == 0

    def fork(self, src: int, dst: int, n: int) -> None:
        mem = self.ctx.memory
        self._lib.llama_memory_seq_rm(mem, dst, 0, -1)
        self._lib.llama_memory_seq_cp(mem, src, dst, 0, n)

    def render(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> list[int]:
        return self.policy.prompt_ids(messages, tools)

    def encode(self, text: str) -> list[int]:
        """A raw prompt's tokens: with the model's BOS when its vocabulary asks for one, special tokens
        written as text parsed (as llama-server and vLLM tokenize prompts)."""
        return self.llm.tokenize(text.encode(), add_bos=True, special=True)

    def piece(self, token_id: int) -> bytes:
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self.llm.detokenize([token_id], special=False)
        return piece

    def token_text(self, token_id: int) -> tuple[str, bytes]:
        got = self._texts.get(token_id)
        if got is None:
            raw = self.llm.detokenize([token_id], special=True)
            got = self._texts[token_id] = (raw.decode("utf-8", errors="replace"), raw)
        return got

    def close(self) -> None:
        """Free the context (KV cache) and the batch; the policy keeps the weights."""
        if getattr(self, "batch", None) is not None:
            self._lib.llama_batch_free(self.batch)
            self.batch = None
            self.ctx.close()
