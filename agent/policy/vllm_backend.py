"""`vllm:MODEL[@ADAPTER]`: vLLM in this process (`vllm.LLM`) with LoRA enabled, for GPU rollouts.

Prompts are rendered with the model's chat template here (so token counts match the HF backend)
and sent as token ids; each completion comes back with its token ids and the raw log-prob of each
(`logprobs=0`: just the sampled token; `logprobs_mode="raw_logprobs"`). `load_adapter(path)` swaps
in a freshly trained LoRA adapter without restarting the engine: later requests carry a
`LoRARequest` with a new integer id. vllm is imported lazily: it needs a CUDA GPU and
`pip install evolve[gpu]`.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent.policy.base import Generation, Policy, PolicyError, SamplingParams, message_dicts
from records.trajectory import Message

log = logging.getLogger(__name__)

INSTALL_HINT = "the vllm backend needs a CUDA GPU and `pip install evolve[gpu]` (vllm); use hf:MODEL on CPU"


class VLLMConfig(BaseModel):
    """Options of the in-process vLLM backend."""

    model_config = ConfigDict(extra="forbid")

    adapter: str | None = None
    """LoRA adapter directory to use from the start (also `vllm:MODEL@ADAPTER`)."""
    dtype: str = "auto"
    """Weights dtype (`auto`, `bfloat16`, `float16`)."""
    max_model_len: int | None = None
    """Context length; None uses the model's."""
    gpu_memory_utilization: float = Field(default=0.85, gt=0.0, le=1.0)
    """Share of GPU memory vLLM may take (leave room for a trainer on the same GPU)."""
    max_lora_rank: int = 64
    """Largest LoRA rank an adapter may have."""
    tensor_parallel_size: int = 1
    """GPUs to shard the model over."""
    enforce_eager: bool = False
    """Skip CUDA graph capture (faster start, slower sampling)."""
    logprobs_mode: str | None = "raw_logprobs"
    """What vLLM reports as log-probs; `raw_logprobs` matches the other backends. None: vLLM's default."""
    engine_args: dict[str, Any] = Field(default_factory=dict)
    """Further `vllm.LLM` keyword arguments."""


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise PolicyError(f"{INSTALL_HINT} (import failed: {e})") from e
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a dependency
        has_cuda = False
    if not has_cuda:
        raise PolicyError(f"{INSTALL_HINT}: no CUDA GPU is visible")
    return vllm


_CURRENT = object()
"""`generate`'s default adapter: the one `load_adapter` set last."""


class VLLMPolicy(Policy):
    """vllm.LLM in this process; batched by vLLM's scheduler."""

    def __init__(self, model: str, **options: Any) -> None:
        self.config = VLLMConfig(**options)
        vllm = _import_vllm()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.spec = f"vllm:{model}"
        kwargs: dict[str, Any] = {
            "model": model,
            "enable_lora": True,
            "max_lora_rank": self.config.max_lora_rank,
            "dtype": self.config.dtype,
            "gpu_memory_utilization": self.config.gpu_memory_utilization,
            "tensor_parallel_size": self.config.tensor_parallel_size,
            "enforce_eager": self.config.enforce_eager,
        }
        if self.config.max_model_len:
            kwargs["max_model_len"] = self.config.max_model_len
        if self.config.logprobs_mode:
            kwargs["logprobs_mode"] = self.config.logprobs_mode
        kwargs.update(self.config.engine_args)
        try:
            self.llm = vllm.LLM(**kwargs)
        except (OSError, ValueError) as e:
            raise PolicyError(f"vllm cannot load {model!r}: {e}") from e
        self.tokenizer = self.llm.get_tokenizer()
        self._vllm = vllm
        self._lora: Any = None
        self._lora_id = 0
        self._lock = threading.Lock()
        if self.config.adapter:
            self.load_adapter(self.config.adapter)

    def load_adapter(self, path: str | Path) -> None:
        """Use the LoRA adapter at `path` for all later requests (no restart; a new LoRA id)."""
        from vllm.lora.request import LoRARequest

        path = str(Path(path).expanduser().resolve())
        if not Path(path, "adapter_config.json").exists():
            raise PolicyError(f"no PEFT adapter at {path!r} (adapter_config.json missing)")
        with self._lock:
            old = self._lora
            self._lora_id += 1
            self._lora = LoRARequest(f"adapter{self._lora_id}", self._lora_id, path)
            if old is not None:
                try:  # free the old adapter's slot; vLLM would otherwise evict it when full
                    self.llm.llm_engine.remove_lora(old.lora_int_id)
                except Exception as e:  # noqa: BLE001 - best effort, engine APIs vary across versions
                    log.debug("could not remove LoRA %s: %s", old.lora_int_id, e)
        log.info("vllm now samples with adapter %s (id %d)", path, self._lora_id)

    def _prompt_ids(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            message_dicts(messages), tools=tools, add_generation_prompt=True, tokenize=False
        )
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self._prompt_ids(messages, None))

    @property
    def context_length(self) -> int:
        return int(self.llm.llm_engine.model_config.max_model_len)

    def lora_request(self, path: str | Path) -> Any:
        """A `LoRARequest` for the adapter at `path`, registered once (the same id on every later call), for
        requests that name their own adapter (`VLLMAdapterView`) while the engine keeps running."""
        from vllm.lora.request import LoRARequest

        path = str(Path(path).expanduser().resolve())
        if not Path(path, "adapter_config.json").exists():
            raise PolicyError(f"no PEFT adapter at {path!r} (adapter_config.json missing)")
        with self._lock:
            known = getattr(self, "_by_path", None)
            if known is None:
                known = self._by_path = {}
            if path not in known:
                self._lora_id += 1
                known[path] = LoRARequest(f"adapter{self._lora_id}", self._lora_id, path)
            return known[path]

    def generate(
        self,
        conversations: list[list[Message]],
        params: SamplingParams,
        tools: list[dict[str, Any]] | None = None,
        lora_request: Any = _CURRENT,
    ) -> list[Generation]:
        """`lora_request`: the adapter of these requests (`lora_request(path)`; None: the base model); by default
        the one `load_adapter` set last."""
        prompts = [self._prompt_ids(c, tools) for c in conversations]
        sampling = [
            self._vllm.SamplingParams(
                n=1,
                max_tokens=params.max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                stop=params.stop or None,
                include_stop_str_in_output=True,  # Evolve keeps the stop string (see base.py)
                seed=None if params.seed is None else params.seed + i,
                logprobs=0,  # only the sampled token's log-prob
                skip_special_tokens=True,
            )
            for i in range(len(prompts))
        ]
        with self._lock:
            lora = self._lora if lora_request is _CURRENT else lora_request
        outputs = self.llm.generate(
            [{"prompt_token_ids": p} for p in prompts], sampling, use_tqdm=False, lora_request=lora
        )
        generations = []
        for prompt, out in zip(prompts, outputs):
            completion = out.outputs[0]
            ids = list(completion.token_ids)
            logprobs = None
            if completion.logprobs is not None:
                logprobs = [float(step[tid].logprob) for tid, step in zip(ids, completion.logprobs)]
            generations.append(
                Generation(
                    text=completion.text,
                    token_ids=ids,
                    logprobs=logprobs,
                    prompt_tokens=len(prompt),
                    completion_tokens=len(ids),
                    finish_reason=completion.finish_reason or "stop",
                )
            )
        return generations

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            del llm
            try:
                import gc

                import torch

                gc.collect()
                torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001
                pass


class VLLMAdapterView(Policy):
    """One LoRA adapter (or the base model, `adapter=None`) of a shared `VLLMPolicy`: many versions sample from
    one engine, each request carrying its own adapter, with no restart (`evolve loop` on a GPU)."""

    def __init__(self, engine: VLLMPolicy, adapter: str | Path | None, label: str = ""):
        self.engine = engine
        self.request = engine.lora_request(adapter) if adapter else None
        self.spec = label or engine.spec + (f"@{adapter}" if adapter else "")

    @property
    def context_length(self) -> int:
        return self.engine.context_length

    def count_tokens(self, messages: list[Message]) -> int:
        return self.engine.count_tokens(messages)

    def generate(self, conversations: list[list[Message]], params: SamplingParams,
                 tools: list[dict[str, Any]] | None = None) -> list[Generation]:
        return self.engine.generate(conversations, params, tools, lora_request=self.request)
