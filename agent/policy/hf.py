"""`hf:MODEL[@ADAPTER]`: a transformers causal LM in this process (CPU or GPU), batched sampling.

Prompts are rendered with the tokenizer's chat template, left-padded and sampled together with
`model.generate`. Each sampled token's log-probability is recorded under the RAW model distribution
(log-softmax of the logits at temperature 1, before temperature / top-p), which is exactly what a
trainer recomputes with one forward pass (see `agent.policy.base`). A PEFT LoRA adapter can be
loaded at start (`adapter=`) and swapped later with `load_adapter`.
"""

from __future__ import annotations

import logging
import os
import threading
import types
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from agent.policy.base import (END_OF_TURN_TOKENS, Generation, Policy, PolicyError, SamplingParams,
                               message_dicts, normalise_for_strict_template)
from agent.policy.embedded import EMBEDDED, embedded_model_dir
from records.trajectory import Message

log = logging.getLogger(__name__)

# For models without a chat template (base models): ChatML.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

class HFConfig(BaseModel):
    """Options of the transformers backend."""

    model_config = ConfigDict(extra="forbid")

    adapter: str | None = None
    """PEFT LoRA adapter directory to apply on top of the model (also `hf:MODEL@ADAPTER`)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype; `auto`: bfloat16 on a CUDA GPU that supports it, float32 otherwise."""
    device: str = "auto"
    """`auto` (cuda if available, else cpu), `cpu`, `cuda`, `cuda:1`, ..."""
    max_batch_size: int = 16
    """Most conversations sampled together; larger batches are split."""
    attn_implementation: str | None = None
    """Attention kernel (`sdpa`, `eager`, ...); None lets transformers pick."""


class _RawLogprobRecorder:
    """Logits processor recording the raw log-prob of each sampled token.

    It runs before temperature / top-p (custom processors come before the sampling warpers), so at
    step t it sees the raw logits; the token sampled from them is only known at step t+1 (the last
    column of `input_ids`), so it keeps one step of log-softmax and gathers lazily.
    """

    def __init__(self) -> None:
        self.prev = None  # log_softmax of the previous step's raw logits, [batch, vocab]
        self.logprobs: list[Any] = []  # one [batch] tensor per sampled token

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self.prev is not None:
            self.logprobs.append(self.prev.gather(1, input_ids[:, -1:]).squeeze(1))
        self.prev = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, last_tokens: Any) -> Any:
        """[batch, steps] log-probs, given the last sampled column."""
        import torch

        if self.prev is not None:
            self.logprobs.append(self.prev.gather(1, last_tokens[:, None]).squeeze(1))
            self.prev = None
        return torch.stack(self.logprobs, dim=1)


class _StopOnStrings:
    """Stopping criterion: a row is done once its generated text contains one of the stop strings."""

    def __init__(self, tokenizer: Any, stop: list[str], prompt_len: int) -> None:
        self.tokenizer, self.stop, self.prompt_len = tokenizer, stop, prompt_len
        self.window = max(len(s) for s in stop) + 8  # tokens: each decodes to >= 1 char (bytes: partial)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = []
        for row in input_ids[:, self.prompt_len :].tolist():
            tail = self.tokenizer.decode(row[-self.window :], skip_special_tokens=True)
            done.append(any(s in tail for s in self.stop))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _speed_up_small_batch_head(model: Any) -> None:
    """On CPU, compute the output layer as `(W @ x.T).T` for up to 64 rows.

    MKL's sgemm handles `x @ W.T` with few rows and a huge W (Gemma's 262k-token vocabulary) badly:
    batch 8 took ~4x longer than `W @ x.T` in our measurements, erasing the gain of batching. Same
    result up to float rounding; larger inputs (prefill of long prompts) keep the standard path.
    """
    import torch

    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        return

    def forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] > 64:
            return torch.nn.functional.linear(x, self.weight, self.bias)
        out = (self.weight @ flat.T).T
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], out.shape[-1])

    head.forward = types.MethodType(forward, head)


def _pick_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _pick_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


class HFPolicy(Policy):
    """A transformers model on CPU or GPU. `model`: a directory, an embedded name, or a cached hub id."""

    def __init__(self, model: str, *, loaded: tuple[Any, Any] | None = None, **options: Any) -> None:
        """`loaded`: an already loaded (model, tokenizer) to sample with instead of loading `model` (a
        trainer's live weights: sampling then always sees the current policy)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.config = HFConfig(**options)
        self.spec = f"hf:{model}"
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        self.device = _pick_device(self.config.device)
        dtype = _pick_dtype(self.config.dtype, self.device)
        if loaded is not None:
            self.model, self.tokenizer = loaded
            dtype = next(self.model.parameters()).dtype
        else:
            path = self._resolve(model)
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
                if self.config.attn_implementation:
                    kwargs["attn_implementation"] = self.config.attn_implementation
                self.model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
            except OSError as e:
                raise PolicyError(
                    f"cannot load model {model!r}: {e}. Pass a local model directory, an embedded model "
                    f"({', '.join(EMBEDDED)}), or download the model first (the hub is never contacted)."
                ) from e
            self.model.to(self.device).eval()
        if self.device == "cpu" and loaded is None:  # never patch a trainer's model
            _speed_up_small_batch_head(self.model)
        self.tokenizer.padding_side = "left"
        if not self.tokenizer.chat_template:
            log.warning("%s has no chat template: using ChatML", model)
            self.tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_ids = self._eos_ids()
        # Generation settings come only from SamplingParams: drop the checkpoint's sampling defaults
        # (top_k, top_p, repetition penalty...) that generate() would otherwise fill in.
        self.model.generation_config = GenerationConfig(
            bos_token_id=self.tokenizer.bos_token_id,
            eos_token_id=self.eos_ids,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        self._lock = threading.Lock()  # one generate / adapter swap at a time
        self._tok_lock = threading.Lock()
        self._adapter_count = 0
        if self.config.adapter:
            self.load_adapter(self.config.adapter)
        self._torch = torch
        log.info("loaded %s on %s (%s)", self.spec, self.device, dtype)

    @staticmethod
    def _resolve(model: str) -> str:
        if Path(model).expanduser().is_dir():
            return str(Path(model).expanduser())
        if model in EMBEDDED:
            return str(embedded_model_dir(model))
        if model.startswith((".", "/", "~")):
            raise PolicyError(f"model directory {model!r} does not exist")
        return model  # a hub id, loaded from the local cache only

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        for value in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            ids += [value] if isinstance(value, int) else list(value or [])
        vocab = self.tokenizer.get_vocab()
        specials = set(self.tokenizer.all_special_tokens) | set(self.tokenizer.added_tokens_encoder)
        for tok in END_OF_TURN_TOKENS:
            if tok in vocab and tok in specials and tok != self.tokenizer.bos_token:
                ids.append(vocab[tok])
        return sorted(set(ids))

    # ---- adapters ---------------------------------------------------------------------------

    def load_adapter(self, path: str | Path) -> None:
        """Apply the PEFT LoRA adapter at `path`, replacing any adapter loaded before."""
        from peft import PeftModel

        path = str(Path(path).expanduser())
        if not Path(path, "adapter_config.json").exists():
            raise PolicyError(f"no PEFT adapter at {path!r} (adapter_config.json missing)")
        self._adapter_count += 1
        name = f"adapter{self._adapter_count}"
        with self._lock:
            if isinstance(self.model, PeftModel):
                old = self.model.active_adapter
                self.model.load_adapter(path, adapter_name=name)
                self.model.set_adapter(name)
                self.model.delete_adapter(old)
            else:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)
            self.model.to(self.device).eval()
        self.adapter = path
        log.info("loaded adapter %s", path)

    # ---- prompts ----------------------------------------------------------------------------

    def render(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt text the chat template renders (with the assistant generation prompt)."""
        dicts = message_dicts(messages)
        try:
            return self.tokenizer.apply_chat_template(dicts, tools=tools, add_generation_prompt=True, tokenize=False)
        except Exception as first:  # jinja2 TemplateError: e.g. Gemma rejects `tool` / system turns
            try:
                return self.tokenizer.apply_chat_template(
                    normalise_for_strict_template(dicts), tools=tools, add_generation_prompt=True, tokenize=False
                )
            except Exception:
                raise PolicyError(f"the chat template of {self.spec} cannot render these messages: {first}") from first

    def prompt_ids(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """Token ids of the rendered prompt."""
        text = self.render(messages, tools)
        with self._tok_lock:  # fast tokenizers raise "Already borrowed" when encoding concurrently
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self.prompt_ids(messages))

    @property
    def context_length(self) -> int:
        config = self.model.config.get_text_config()
        n = getattr(config, "max_position_embeddings", None) or 2048
        tok_max = self.tokenizer.model_max_length
        return min(n, tok_max) if isinstance(tok_max, int) and tok_max < 10**7 else n

    # ---- sampling ---------------------------------------------------------------------------

    def generate(
        self,
        conversations: list[list[Message]],
        params: SamplingParams,
        tools: list[dict[str, Any]] | None = None,
    ) -> list[Generation]:
        prompts = [self.prompt_ids(c, tools) for c in conversations]
        out: list[Generation | None] = [None] * len(prompts)
        for i, p in enumerate(prompts):
            if len(p) >= self.context_length:  # no room to generate anything
                out[i] = Generation(text="", token_ids=[], logprobs=[], prompt_tokens=len(p), finish_reason="length")
        order = sorted((i for i in range(len(prompts)) if out[i] is None), key=lambda i: len(prompts[i]))
        size = self.config.max_batch_size
        with self._lock:
            for start in range(0, len(order), size):
                chunk = order[start : start + size]
                for i, gen in zip(chunk, self._generate_batch([prompts[i] for i in chunk], params)):
                    out[i] = gen
        return [g for g in out if g is not None]

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        torch = self._torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        max_new = min(params.max_tokens, self.context_length - max(len(p) for p in prompts))  # >= 1
        batch = self.tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt").to(self.device)
        width = batch["input_ids"].shape[1]
        greedy = params.temperature == 0.0
        config = GenerationConfig(
            max_new_tokens=max_new,
            do_sample=not greedy,
            temperature=None if greedy else params.temperature,
            top_p=None if greedy else params.top_p,
            top_k=None if greedy else 0,
            eos_token_id=self.eos_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
            return_dict_in_generate=True,
        )
        recorder = _RawLogprobRecorder()
        stopping = StoppingCriteriaList([_StopOnStrings(self.tokenizer, params.stop, width)] if params.stop else [])
        rng = nullcontext()
        if params.seed is not None:
            devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
            rng = torch.random.fork_rng(devices=devices)
        with rng, torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            result = self.model.generate(
                **batch,
                generation_config=config,
                logits_processor=LogitsProcessorList([recorder]),
                stopping_criteria=stopping,
            )
        new = result.sequences[:, width:]
        logprobs = recorder.finish(new[:, -1]).cpu().tolist()
        return [
            self._finish(ids, lps, len(prompt), params, max_new)
            for ids, lps, prompt in zip(new.cpu().tolist(), logprobs, prompts)
        ]

    def _finish(self, ids: list[int], lps: list[float], prompt_len: int, params: SamplingParams, max_new: int) -> Generation:
        """Cut one row at its end of sequence or first stop string; text and ids stay consistent."""
        decode = lambda n: self.tokenizer.decode(ids[:n], skip_special_tokens=True)  # noqa: E731
        eos = set(self.eos_ids)
        cut = next((i + 1 for i, t in enumerate(ids) if t in eos), None)
        finish = "stop" if cut is not None else ("length" if len(ids) >= max_new else "stop")
        cut = len(ids) if cut is None else cut
        text = decode(cut)
        hits = [(text.find(s), s) for s in params.stop if s in text]
        if hits:
            pos, stop = min(hits)
            end = pos + len(stop)
            lo, hi = 1, cut  # shortest prefix whose text reaches the end of the stop string
            while lo < hi:
                mid = (lo + hi) // 2
                if len(decode(mid)) >= end and stop in decode(mid):
                    hi = mid
                else:
                    lo = mid + 1
            cut, text, finish = lo, text[:end], "stop"
        return Generation(
            text=text,
            token_ids=ids[:cut],
            logprobs=lps[:cut],
            prompt_tokens=prompt_len,
            completion_tokens=cut,
            finish_reason=finish,
        )

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
