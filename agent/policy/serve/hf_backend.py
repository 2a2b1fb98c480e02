"""The transformers backend of `TokenEngine`: one KV cache (`DynamicCache`) per sequence, evaluated one
sequence at a time (on a CPU the llama.cpp backend is the fast one; this one serves `hf:` models and their
LoRA versions with streaming, `n`, top log-probs and prompt log-probs).

Several engines may share one model (LoRA versions of one base): they share `SharedModel`, whose lock
is held for a forward pass with the engine's adapter switched on.
"""

from __future__ import annotations

import copy
import re
import threading
from contextlib import nullcontext
from typing import Any

import numpy as np

from agent.policy.serve.engine import Backend
from records.trajectory import Message


class SharedModel:
    """A transformers model that several engines use in turn (LoRA adapters by name on one base)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.lock = threading.Lock()
        self.adapters: set[str] = set()

    def add_adapter(self, name: str, path: str) -> None:
        from peft import PeftModel

        with self.lock:
            model = self.policy.model
            if isinstance(model, PeftModel):
                model.load_adapter(path, adapter_name=name)
            else:
                self.policy.model = PeftModel.from_pretrained(model, path, adapter_name=name).eval()
            self.adapters.add(name)

    def remove_adapter(self, name: str) -> None:
        with self.lock:
            if name in self.adapters:
                self.adapters.discard(name)
                if self.adapters:
                    self.policy.model.delete_adapter(name)

    def using(self, adapter: str | None) -> Any:
        """The model with `adapter` on (None: the base weights alone); call under `lock`."""
        model = self.policy.model
        if not self.adapters:
            return nullcontext(model)
        if adapter is None:
            return _Disabled(model)
        model.set_adapter(adapter)
        return nullcontext(model)


class _Disabled:
    def __init__(self, model: Any) -> None:
        self.model, self.ctx = model, model.disable_adapter()

    def __enter__(self) -> Any:
        self.ctx.__enter__()
        return self.model

    def __exit__(self, *exc: Any) -> None:
        self.ctx.__exit__(*exc)


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the character a byte-level BPE token uses -> the byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _crop(cache: Any, n: int) -> bool:
    """Cut a DynamicCache back to its first `n` positions; False for caches that cannot (sliding windows)."""
    if any("sliding" in type(layer).__name__.lower() for layer in getattr(cache, "layers", [])):
        return n >= cache.get_seq_length()
    extra = cache.get_seq_length() - n
    if extra > 0:
        cache.crop(-extra)
    return True


class HFBackend(Backend):
    def __init__(self, shared: SharedModel, adapter: str | None = None, max_seqs: int = 32) -> None:
        import torch

        self.torch = torch
        self.shared, self.adapter = shared, adapter
        policy = shared.policy
        self.tok = policy.tokenizer
        self.n_vocab = int(policy.model.get_output_embeddings().weight.shape[0])
        self.eos_ids = set(policy.eos_ids)
        self.max_seqs = max_seqs
        self.kv_capacity = 1 << 40  # caches grow as needed
        self.max_batch_tokens = max(512, max_seqs)
        self.caches: dict[int, Any] = {}
        self.special = set(self.tok.all_special_ids) | {i for i in self.tok.added_tokens_decoder
                                                         if self.tok.added_tokens_decoder[i].special}
        decoder = getattr(getattr(self.tok, "backend_tokenizer", None), "decoder", None)
        self.byte_level = type(decoder).__name__ == "ByteLevel"
        self._bytes = _byte_decoder() if self.byte_level else {}
        self._texts: dict[int, tuple[str, bytes]] = {}

    @property
    def context_length(self) -> int:
        return self.shared.policy.context_length

    def forward(self, entries: list[tuple[int, list[int], int, bool]]) -> list[np.ndarray]:
        from transformers import DynamicCache

        torch = self.torch
        out = []
        with self.shared.lock, self.shared.using(self.adapter) as model, torch.inference_mode():
            device = next(model.parameters()).device
            for seq, tokens, pos, every in entries:
                cache = self.caches.get(seq)
                if cache is None or pos == 0:
                    cache = DynamicCache()
                ids = torch.tensor([tokens], device=device)
                result = model(input_ids=ids, past_key_values=cache, use_cache=True,
                               logits_to_keep=0 if every else 1)
                self.caches[seq] = result.past_key_values
                out.append(result.logits[0].float().cpu().numpy())
        return out

    def keep(self, seq: int, n: int) -> bool:
        cache = self.caches.get(seq)
        if cache is None or n == 0:
            self.caches.pop(seq, None)
            return True
        if not _crop(cache, n):
            self.caches.pop(seq, None)
            return False
        return True

    def fork(self, src: int, dst: int, n: int) -> None:
        with self.shared.lock:
            cache = copy.deepcopy(self.caches[src])
        if not _crop(cache, n):
            raise RuntimeError("this model's cache cannot be cut back to the prompt")
        self.caches[dst] = cache

    def render(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> list[int]:
        return self.shared.policy.prompt_ids(messages, tools)

    def close(self) -> None:
        self.caches.clear()

    def encode(self, text: str) -> list[int]:
        with self.shared.policy._tok_lock:
            return self.tok(text)["input_ids"]  # with the special tokens the tokenizer adds, as vLLM does

    def _raw(self, token_id: int) -> bytes:
        s = self.tok.convert_ids_to_tokens(token_id)
        if s is None:
            return b""
        if self.byte_level and all(c in self._bytes for c in s):
            return bytes(self._bytes[c] for c in s)
        if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", s):
            return bytes([int(s[3:5], 16)])
        return s.replace("\u2581", " ").encode()

    def piece(self, token_id: int) -> bytes:
        return b"" if token_id in self.special else self.token_text(token_id)[1]

    def token_text(self, token_id: int) -> tuple[str, bytes]:
        got = self._texts.get(token_id)
        if got is None:
            raw = self.tok.convert_ids_to_tokens(token_id).encode() if token_id in self.special else self._raw(token_id)
            got = self._texts[token_id] = (raw.decode("utf-8", errors="replace"), raw)
        return got
