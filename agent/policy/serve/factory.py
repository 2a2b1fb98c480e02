"""Which engine serves a policy: continuous batching for llama.cpp and transformers models, whole
completions from `Policy.generate` for every other policy (or for any, with `engine="policy"`)."""

from __future__ import annotations

from typing import Any

from agent.policy.base import Policy
from agent.policy.serve.engine import Engine, TokenEngine
from agent.policy.serve.hf_backend import HFBackend, SharedModel
from agent.policy.serve.llamacpp_backend import LlamaCppBackend
from agent.policy.serve.policy_engine import PolicyEngine

ENGINES = ("auto", "policy")
"""`auto`: token-level engines where the backend has one; `policy`: always `Policy.generate`."""


def engine_factory(kind: str = "auto", *, llamacpp: Any = None, batch_wait_s: float = 0.01, max_batch: int = 16):
    """A `make_engine(policy, name, shared=None, adapter=None) -> (engine, shared)` for `Models`."""
    if kind not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {kind!r}")

    def make_engine(policy: Policy, name: str, shared: Any = None, adapter: str | None = None) -> tuple[Engine, Any]:
        if kind == "auto":
            classes = {c.__name__ for c in type(policy).__mro__}  # by name: no backend is imported to check
            if "LlamaCppPolicy" in classes:
                return TokenEngine(LlamaCppBackend(policy, llamacpp), name), None
            if "HFPolicy" in classes:
                shared = shared or SharedModel(policy)
                return TokenEngine(HFBackend(shared, adapter=adapter), name), shared
        return PolicyEngine(policy, name, batch_wait_s=batch_wait_s, max_batch=max_batch), None

    return make_engine
