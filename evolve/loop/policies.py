"""The policies the loop's nodes act with: a node's spec -> a loaded, batching policy, a few kept in memory.

A node acts with its policy spec: the starting spec, or `version:ID` for trained weights. How a version samples
is `policies.rollout_backend`, chosen in the config and recorded on every trajectory's `policy`:

- `hf`: transformers (CPU or GPU): `version:ID` loads the base model with the version's adapter (or its full
  weights); trajectories say `version:ID`.
- `llamacpp`: the version exported to GGUF once (the trainer's `evolve.train.gguf_export`, cached beside its
  weights) and run by llama.cpp on the CPU; trajectories say `llamacpp:version:ID` (the trainer recomputes
  llama.cpp's log-probs). The starting `hf:gemma3-270m` samples as the embedded GGUF itself.
- `vllm`: one vLLM engine of the base model for the whole loop; each version is a view that sends its LoRA
  adapter with its requests (no restart); trajectories say `vllm:version:ID`. Needs LoRA training and a GPU.
- `as-is`: every spec is loaded as written (scripted policies in tests).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from agent.batching import BatchingPolicy
from agent.policy import load_policy
from agent.policy.base import Generation, Policy, PolicyWrapper, SamplingParams
from agent.policy.embedded import EMBEDDED_GGUF
from agent.policy.vllm_backend import VLLMAdapterView
from evolve.errors import ConfigError
from evolve.loop.config import PolicyConfig
from evolve.policies import policy_loader
from evolve.train.versions import get_version
from records import Message


class Timed(PolicyWrapper):
    """Counts the seconds its policy spends in `generate` (the policy's own sampling compute; a batch counts once)."""

    def __init__(self, inner: Policy, clock: "Clock"):
        super().__init__(inner)
        self.clock = clock

    def generate(self, conversations: list[list[Message]], params: SamplingParams,
                 tools: list[dict[str, Any]] | None = None) -> list[Generation]:
        t = time.perf_counter()
        try:
            return self.inner.generate(conversations, params, tools)
        finally:
            self.clock.add("sampling", time.perf_counter() - t)

    def __getattr__(self, name: str) -> Any:  # backend extras (load_adapter, tokenizer, ...)
        return getattr(self.inner, name)


class Clock:
    """Seconds by kind (`sampling`, `loading`), summed over threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = {"sampling": 0.0, "loading": 0.0}

    def add(self, kind: str, seconds: float) -> None:
        with self._lock:
            self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self.seconds)


class Policies:
    """Node spec -> loaded policy (LRU of `keep`; evicted ones are dropped, not closed: a thread may still use one).
    Every policy's sampling time and every load's time are counted in `clock`. Thread-safe."""

    def __init__(self, cfg: PolicyConfig, runs_root: Path, *, keep: int = 2,
                 load: Callable[[str], Policy] | None = None):
        self.cfg, self.runs_root, self.keep = cfg, Path(runs_root), keep
        self._load = load or policy_loader(self.runs_root)
        self._cache: OrderedDict[str, Policy] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._vllm: Any = None
        self._batched: dict[str, BatchingPolicy] = {}
        self.clock = Clock()

    def label(self, spec: str) -> str:
        """What trajectories sampled by `spec` record as their policy."""
        backend = self.cfg.rollout_backend
        if spec.startswith("version:") and backend in ("llamacpp", "vllm"):
            return f"{backend}:{spec}"
        return spec

    def get(self, spec: str) -> Policy:
        """The loaded policy of a node spec (loading it, and evicting the least recently used, when needed)."""
        with self._lock:
            if spec in self._cache:
                self._cache.move_to_end(spec)
                return self._cache[spec]
            gate = self._loading.setdefault(spec, threading.Lock())
        with gate:  # one load per spec; others wait for it
            with self._lock:
                if spec in self._cache:
                    return self._cache[spec]
            t = time.perf_counter()
            policy = self._build(spec)
            self.clock.add("loading", time.perf_counter() - t)
            wrapped: Policy = Timed(policy, self.clock)
            wrapped.spec = self.label(spec)
            with self._lock:
                self._cache[spec] = wrapped
                while len(self._cache) > self.keep:  # dropped, not closed: a thread may still be sampling with it
                    old, _ = self._cache.popitem(last=False)
                    for key in [k for k in self._batched if k.startswith(f"{old}#batched")]:
                        del self._batched[key]
            return wrapped

    def batched(self, spec: str, callers: int) -> Policy:
        """`get(spec)` shared by `callers` threads whose calls are batched together (a SWE search's or gate's parallel
        episodes); one caller gets the policy itself (a batching leader would wait for callers that never come)."""
        policy = self.get(spec)
        if callers <= 1:
            return policy
        with self._lock:
            key = f"{spec}#batched{callers}"
            cached = self._batched.get(key)
            if cached is None or cached.inner is not policy:
                cached = BatchingPolicy(policy, max_batch=callers)
                cached.active = callers
                self._batched[key] = cached
            return cached

    def _build(self, spec: str) -> Policy:
        backend = self.cfg.rollout_backend
        if backend == "as-is" or not spec.startswith(("version:", "hf:")):
            return self._load(spec)
        if backend == "hf":
            return self._load(spec)
        if backend == "llamacpp":
            policy = self._load(self._gguf(spec))
            policy.spec = self.label(spec)
            return policy
        return self._vllm_view(spec)

    def _gguf(self, spec: str) -> str:
        """The `llamacpp:` spec that samples like `spec`: the embedded GGUF for the embedded model, else the
        version exported once beside its weights by the trainer's GGUF export (`evolve.train.gguf_export`)."""
        if spec.startswith("hf:") and spec[3:] in EMBEDDED_GGUF:
            return f"llamacpp:{spec[3:]}"
        if not spec.startswith("version:"):
            raise ConfigError(f"{spec}: llama.cpp rollouts need the embedded model or a version trained from it "
                              "(policies.rollout_backend: hf runs any transformers model)")
        v = get_version(spec.split(":", 1)[1], self.runs_root)
        if v.kind == "base" or not v.path:
            return self._gguf(v.base)
        out = Path(v.path).parent / "model-q8_0.gguf"
        if not out.exists():
            from evolve.train.gguf_export import export_policy  # imports torch: only when a GGUF is exported

            export_policy(spec, out, runs_root=self.runs_root, tensor_type="q8_0")
        return f"llamacpp:{out}"

    def _vllm_view(self, spec: str) -> Policy:
        base_spec, adapter = spec, None
        if spec.startswith("version:"):
            v = get_version(spec.split(":", 1)[1], self.runs_root)
            if v.path and not v.adapter:
                raise ConfigError(f"{spec} holds full weights: vLLM rollouts swap LoRA adapters (train with "
                                  "training.lora: true, or use rollout_backend hf)")
            base_spec, adapter = v.base, (v.path or None)
        if self._vllm is None:
            self._vllm = load_policy("vllm:" + base_spec.removeprefix("hf:"))
        return VLLMAdapterView(self._vllm, adapter, label=self.label(spec))

    def close(self) -> None:
        with self._lock:
            for p in self._cache.values():
                _close(p)
            self._cache.clear()
        if self._vllm is not None:
            _close(self._vllm)
            self._vllm = None


def _close(policy: Policy) -> None:
    while isinstance(policy, PolicyWrapper):
        policy = policy.inner
    try:
        policy.close()
    except Exception:  # noqa: BLE001 - closing is best effort
        pass
