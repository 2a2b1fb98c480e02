"""The policies the loop's nodes act with: a node's spec -> a loaded, batching policy, a few kept in memory.

A node acts with its policy spec: the starting spec, or `version:ID` for trained weights. How a version samples
is `policies.rollout_backend`, chosen in the config and recorded on every trajectory's `policy`:

- `hf`: transformers (CPU or GPU): `version:ID` loads the base model with the version's adapter (or its full
  weights); trajectories say `version:ID`.
- `llamacpp`: the version exported to GGUF once (`evolve.train.gguf`, cached beside its weights) and run by
  llama.cpp on the CPU; trajectories say `llamacpp:version:ID` (the trainer recomputes llama.cpp's log-probs).
  The starting `hf:gemma3-270m` samples as the embedded GGUF itself.
- `vllm`: one vLLM engine of the base model for the whole loop; each version is a view that sends its LoRA
  adapter with its requests (no restart); trajectories say `vllm:version:ID`. Needs LoRA training and a GPU.
- `as-is`: every spec is loaded as written (scripted policies in tests).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from agent.batching import BatchingPolicy
from agent.policy.base import Policy
from evolve.errors import ConfigError
from evolve.loop.config import PolicyConfig


def default_loader(runs_root: Path) -> Callable[[str], Policy]:
    from evolve.run_cli import load_policy_spec

    return lambda spec: load_policy_spec(spec, runs_root)


class Policies:
    """Node spec -> loaded policy (LRU of `keep`; evicted ones are closed). Thread-safe."""

    def __init__(self, cfg: PolicyConfig, runs_root: Path, *, workers: int = 1, keep: int = 2,
                 load: Callable[[str], Policy] | None = None):
        self.cfg, self.runs_root, self.workers, self.keep = cfg, Path(runs_root), workers, keep
        self._load = load or default_loader(self.runs_root)
        self._cache: OrderedDict[str, Policy] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._vllm: Any = None

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
            policy = self._build(spec)
            wrapped: Policy = BatchingPolicy(policy, max_batch=max(self.workers, 1) * 8)
            wrapped.active = self.workers  # type: ignore[attr-defined]
            wrapped.spec = self.label(spec)
            with self._lock:
                self._cache[spec] = wrapped
                while len(self._cache) > self.keep:  # dropped, not closed: a thread may still be sampling with it
                    self._cache.popitem(last=False)
            return wrapped

    def _build(self, spec: str) -> Policy:
        backend = self.cfg.rollout_backend
        if backend == "as-is" or not spec.startswith(("version:", "hf:")):
            return self._load(spec)
        if backend == "hf":
            return self._load(spec)
        if backend == "llamacpp":
            from evolve.train.gguf import gguf_for_spec

            policy = self._load(f"llamacpp:{gguf_for_spec(spec, self.runs_root)}")
            policy.spec = self.label(spec)
            return policy
        return self._vllm_view(spec)

    def _vllm_view(self, spec: str) -> Policy:
        from agent.policy.vllm_backend import VLLMAdapterView
        from evolve.train.versions import get_version

        base_spec, adapter = spec, None
        if spec.startswith("version:"):
            v = get_version(spec.split(":", 1)[1], self.runs_root)
            if v.path and not v.adapter:
                raise ConfigError(f"{spec} holds full weights: vLLM rollouts swap LoRA adapters (train with "
                                  "training.lora: true, or use rollout_backend hf)")
            base_spec, adapter = v.base, (v.path or None)
        if self._vllm is None:
            from agent.policy import load_policy

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
    inner = getattr(policy, "inner", None)
    try:
        (inner or policy).close()
    except Exception:  # noqa: BLE001 - closing is best effort
        pass
